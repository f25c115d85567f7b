//! The OpenAI Responses door's own rules (docs/translation.md): stored state
//! (`previous_response_id`, `conversation`, `background`) reaches a Responses provider as
//! sent and is refused, before any provider is asked, on a route to another dialect; `store`
//! passes to a Responses provider only.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use providers::Dialect;
use serde_json::{Value, json};

const DOOR: Dialect = Dialect::OpenAiResponses;

/// A Responses request continuing a stored conversation, `store` as given.
fn continuing(model: &str, stream: bool, id: &str, store: bool) -> Value {
    json!({
        "model": model,
        "input": [{"role": "user", "content": "and then?"}],
        "previous_response_id": id,
        "store": store,
        "stream": stream,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_state_reaches_a_responses_provider_and_is_refused_elsewhere() {
    let h = gw::start().await;
    let mut rng = fastrand::Rng::with_seed(0x5e5_0d00);
    for case in 0..12 {
        let id = format!("resp_{:016x}", rng.u64(..));
        let stream = case % 2 == 0;
        let store = rng.bool();
        // Same dialect: passed as sent.
        let before = h.replay.requests().len();
        let body = continuing("openai-responses/text_basic", stream, &id, store);
        let r = h.chat(DOOR, &[], &body).await;
        assert_eq!(r.status(), 200, "{id}");
        let _ = gw::body_bytes(r).await;
        let sent = h.replay.requests();
        assert_eq!(sent.len(), before + 1, "{id}");
        let upstream = &sent[before];
        assert_eq!(upstream.path, "/v1/responses");
        assert_eq!(upstream.body["previous_response_id"], json!(id));
        assert_eq!(upstream.body["store"], json!(store));

        // Another dialect has no stored responses: a 400 naming the field, nothing sent.
        for model in ["openai/text_basic", "anthropic/text_basic"] {
            let r = h
                .chat(DOOR, &[], &continuing(model, stream, &id, store))
                .await;
            assert_eq!(r.status(), 400, "{model}");
            let err = gw::json_of(r).await;
            assert_eq!(err["error"]["param"], "previous_response_id", "{err}");
            assert!(err["error"]["message"].is_string(), "{err}");
            assert_eq!(h.replay.requests().len(), before + 1, "{model} was asked");
        }

        // Without stored state, `store` is dropped for another dialect.
        let mut plain = continuing("openai/text_basic", stream, &id, true);
        plain
            .as_object_mut()
            .unwrap()
            .remove("previous_response_id");
        let r = h.chat(DOOR, &[], &plain).await;
        assert_eq!(r.status(), 200);
        let _ = gw::body_bytes(r).await;
        let sent = h.replay.requests();
        let upstream = sent.last().unwrap();
        assert_eq!(upstream.path, "/v1/chat/completions");
        assert!(upstream.body.get("store").is_none(), "{}", upstream.body);
        assert!(
            upstream.body.get("previous_response_id").is_none(),
            "{}",
            upstream.body
        );
    }
}
