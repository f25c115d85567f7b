//! Gateway keys through real sockets: every door asks for a key once keys are configured and
//! answers 401 in its own dialect without one; made-up keys never authenticate; a key limited
//! to some models gets 403 for the others; per-key limits count the authenticated key, however
//! it is sent; the WebSocket door takes the key as a subprotocol and never echoes it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::num::NonZeroU32;

use futures_util::{SinkExt, StreamExt};
use gw::{chat_body, json_of};
use providers::Dialect;
use streamgate::config::Config;
use streamgate::keys::{GatewayKeyConfig, generate, hex, sha256};
use streamgate::ws::{ClientDecoder, ClientFrame, Compression, DecoderLimits, Incoming};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

const MODEL: &str = "anthropic/text_simple";
const OTHER_MODEL: &str = "openai/text_basic";

/// Two keys: `full` may use anything; `narrow` only [`MODEL`], 3 requests a minute.
struct Keys {
    full: String,
    narrow: String,
}

fn add_keys(c: &mut Config) -> Keys {
    let full = generate().unwrap();
    let narrow = generate().unwrap();
    c.keys.insert(
        "full".into(),
        GatewayKeyConfig {
            sha256: Some(hex(&sha256(&full))),
            ..GatewayKeyConfig::default()
        },
    );
    c.keys.insert(
        "narrow".into(),
        GatewayKeyConfig {
            sha256: Some(hex(&sha256(&narrow))),
            models: vec![MODEL.into()],
            requests_per_minute: NonZeroU32::new(3),
            ..GatewayKeyConfig::default()
        },
    );
    Keys { full, narrow }
}

async fn start() -> (gw::Harness, Keys) {
    let mut keys = None;
    let h = gw::start_with(|c| keys = Some(add_keys(c))).await;
    (h, keys.unwrap())
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Asserts a 401 in `door`'s dialect whose body does not contain `presented`.
async fn assert_401(r: reqwest::Response, door: Dialect, presented: &str, what: &str) {
    assert_eq!(r.status(), 401, "{what}");
    let body = json_of(r).await;
    match door {
        Dialect::OpenAi | Dialect::OpenAiResponses => {
            assert_eq!(
                body["error"]["type"], "invalid_request_error",
                "{what}: {body}"
            );
            assert_eq!(body["error"]["code"], "invalid_api_key", "{what}: {body}");
        }
        Dialect::Anthropic => {
            assert_eq!(body["type"], "error", "{what}: {body}");
            assert_eq!(
                body["error"]["type"], "authentication_error",
                "{what}: {body}"
            );
        }
    }
    if !presented.is_empty() {
        assert!(!body.to_string().contains(presented), "{what}: key echoed");
    }
}

/// Every door of the gateway, asked with `headers`: `(door dialect, response)`.
async fn every_door(
    h: &gw::Harness,
    headers: &[(&str, &str)],
) -> Vec<(Dialect, String, reqwest::Response)> {
    let mut out = Vec::new();
    for door in Dialect::ALL {
        let r = h.chat(door, headers, &chat_body(door, MODEL, false)).await;
        out.push((door, format!("{door} chat"), r));
    }
    let count = serde_json::to_vec(&chat_body(Dialect::Anthropic, MODEL, false)).unwrap();
    let r = h
        .post(
            "/v1/messages/count_tokens",
            Dialect::Anthropic,
            headers,
            count,
        )
        .await;
    out.push((Dialect::Anthropic, "count_tokens".into(), r));
    let mut streams = headers.to_vec();
    streams.push(("streamgate-dialect", "openai"));
    let body = serde_json::to_vec(&chat_body(Dialect::OpenAi, MODEL, true)).unwrap();
    let r = h.post("/v1/streams", Dialect::OpenAi, &streams, body).await;
    out.push((Dialect::OpenAi, "POST /v1/streams".into(), r));
    for (method, path) in [
        (reqwest::Method::GET, "/v1/streams/abc"),
        (reqwest::Method::DELETE, "/v1/streams/abc"),
        (reqwest::Method::GET, "/v1/models"),
    ] {
        let mut request = h.client.request(method.clone(), h.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        out.push((
            Dialect::OpenAi,
            format!("{method} {path}"),
            request.send().await.unwrap(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_door_refuses_a_missing_key_with_401_in_its_dialect() {
    let (h, keys) = start().await;
    for (door, what, r) in every_door(&h, &[]).await {
        assert_401(r, door, "", &what).await;
    }
    // The same doors let a configured key in, sent the way each SDK sends it.
    let auth = bearer(&keys.full);
    for headers in [
        vec![("authorization", auth.as_str())],
        vec![("x-api-key", keys.full.as_str())],
    ] {
        for (_, what, r) in every_door(&h, &headers).await {
            // Past authentication: 200, or the stream-id door's 404 for a stream never made.
            let status = r.status().as_u16();
            assert!(
                status == 200 || (status == 404 && what.contains("/abc")),
                "{what}: {status}"
            );
        }
    }
}

/// Made-up keys of every kind: random text, near misses of a real key (one character
/// changed, cut, extended, its hash itself), huge ones. None gets in, at any door, and none is
/// echoed in the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_made_up_key_authenticates() {
    let (h, keys) = start().await;
    let mut rng = fastrand::Rng::with_seed(0x6b657973);
    let real = keys.full.clone();
    let mut made_up = vec![
        hex(&sha256(&real)),
        real[..real.len() - 1].to_owned(),
        format!("{real}0"),
        real.to_uppercase(),
        "sg-".repeat(300),
    ];
    for _ in 0..40 {
        let mut k = real.clone().into_bytes();
        let at = rng.usize(3..k.len());
        let was = k[at];
        while k[at] == was {
            k[at] = b"0123456789abcdef"[rng.usize(..16)];
        }
        made_up.push(String::from_utf8(k).unwrap());
        let len = rng.usize(1..80);
        made_up.push((0..len).map(|_| rng.alphanumeric()).collect());
    }
    for key in &made_up {
        let door = if rng.bool() {
            Dialect::OpenAi
        } else {
            Dialect::Anthropic
        };
        let auth = bearer(key);
        let header = match rng.u8(..2) {
            0 => ("authorization", auth.as_str()),
            _ => ("x-api-key", key.as_str()),
        };
        let r = h
            .chat(door, &[header], &chat_body(door, MODEL, false))
            .await;
        assert_401(r, door, key, &format!("made-up key {key:?}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_outside_the_keys_list_gets_403_in_the_doors_dialect() {
    let (h, keys) = start().await;
    let auth = bearer(&keys.narrow);
    for door in Dialect::ALL {
        let r = h
            .chat(
                door,
                &[("authorization", &auth)],
                &chat_body(door, OTHER_MODEL, false),
            )
            .await;
        assert_eq!(r.status(), 403, "{door}");
        let body = json_of(r).await;
        match door {
            Dialect::OpenAi | Dialect::OpenAiResponses => {
                assert_eq!(body["error"]["code"], "permission_denied", "{body}")
            }
            Dialect::Anthropic => assert_eq!(body["error"]["type"], "permission_error", "{body}"),
        }
    }
    // The full key may use it; the narrow key sees only its model in the list.
    let r = h
        .chat(
            Dialect::OpenAi,
            &[("authorization", &bearer(&keys.full))],
            &chat_body(Dialect::OpenAi, OTHER_MODEL, false),
        )
        .await;
    assert_eq!(r.status(), 200);
    let list = |key: String| {
        let request = h
            .client
            .get(h.url("/v1/models"))
            .header("authorization", bearer(&key));
        async move {
            let list = json_of(request.send().await.unwrap()).await;
            let ids: Vec<String> = list["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned())
                .collect();
            ids
        }
    };
    let all = list(keys.full.clone()).await;
    let narrow = list(keys.narrow.clone()).await;
    assert!(
        !all.is_empty() && narrow.len() < all.len(),
        "{all:?} {narrow:?}"
    );
    assert!(narrow.iter().all(|id| id == MODEL), "{narrow:?}");
}

/// The narrow key's 3 requests a minute hold however the key is sent and whatever else the
/// request carries (provider keys that would have been a new identity before, made-up gateway
/// keys in between): the limit counts the authenticated key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_limits_count_the_authenticated_key() {
    let (h, keys) = start().await;
    let auth = bearer(&keys.narrow);
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..12 {
        let provider_key = format!("sk-rotating-{i}");
        let door = if i % 2 == 0 {
            Dialect::OpenAi
        } else {
            Dialect::Anthropic
        };
        let headers: Vec<(&str, &str)> = if i % 3 == 0 {
            vec![
                ("x-api-key", &keys.narrow),
                ("streamgate-provider-key", &provider_key),
            ]
        } else {
            vec![
                ("authorization", &auth),
                ("streamgate-provider-key", &provider_key),
            ]
        };
        // A made-up key in between is refused and changes nothing.
        let fake = generate().unwrap();
        let r = h
            .chat(
                door,
                &[("x-api-key", &fake)],
                &chat_body(door, MODEL, false),
            )
            .await;
        assert_eq!(r.status(), 401);
        let r = h.chat(door, &headers, &chat_body(door, MODEL, false)).await;
        match r.status().as_u16() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, limited), (3, 9));
    // Another key has its own budget.
    let r = h
        .chat(
            Dialect::OpenAi,
            &[("authorization", &bearer(&keys.full))],
            &chat_body(Dialect::OpenAi, MODEL, false),
        )
        .await;
    assert_eq!(r.status(), 200);
}

fn ws_request(
    h: &gw::Harness,
    offer: Option<&str>,
    headers: &[(&str, &str)],
) -> tungstenite::handshake::client::Request {
    let mut request = format!("ws://{}/v1/ws", h.gateway)
        .into_client_request()
        .unwrap();
    if let Some(offer) = offer {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", offer.parse().unwrap());
    }
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_takes_the_key_as_a_subprotocol_and_never_echoes_it() {
    let (h, keys) = start().await;
    // Without a key, or with a wrong one: 401 before the upgrade, the key not in the body.
    let wrong = format!("streamgate.key.{}", generate().unwrap());
    for offer in [None, Some("streamgate.v1"), Some(wrong.as_str())] {
        let request = ws_request(&h, offer, &[]);
        let Err(tungstenite::Error::Http(response)) =
            tokio_tungstenite::connect_async(request).await
        else {
            panic!("{offer:?}: a connection without a valid key must be refused");
        };
        assert_eq!(response.status(), 401, "{offer:?}");
        let body =
            String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
        assert!(
            body.contains("invalid_api_key") && !body.contains("sg-"),
            "{body}"
        );
    }
    // The key next to the subprotocol spoken (a browser's `new WebSocket(url, [...])`: it
    // needs one chosen, so the key never comes alone), before or after it: the answer names
    // the spoken one, never the key.
    let key_offer = format!("streamgate.key.{}", keys.narrow);
    for (offer, want) in [
        (format!("streamgate.v1,{key_offer}"), Some("streamgate.v1")),
        (
            format!("{key_offer}, streamgate.v1+gzip"),
            Some("streamgate.v1+gzip"),
        ),
    ] {
        let request = ws_request(&h, Some(&offer), &[]);
        let (mut ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        let answered = response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(answered.as_deref(), want, "{offer}");
        let c = answered
            .as_deref()
            .and_then(streamgate::ws::negotiate)
            .unwrap_or(Compression::None);
        let mut decoder = ClientDecoder::new(c, DecoderLimits::default());
        // A model the key may not use is refused; its own model streams.
        for (model, allowed) in [(OTHER_MODEL, false), (MODEL, true)] {
            let frame = ClientFrame::Start {
                id: None,
                dialect: Some(Dialect::Anthropic),
                request: chat_body(Dialect::Anthropic, model, true),
                detach: false,
            };
            let message = match streamgate::ws::encode_client_frame(c, &frame) {
                streamgate::ws::Message::Text(t) => Message::Text(t.into()),
                streamgate::ws::Message::Binary(b) => Message::Binary(b.into()),
            };
            ws.send(message).await.unwrap();
            let incoming = loop {
                let next = tokio::time::timeout(gw::BOUND, ws.next())
                    .await
                    .unwrap()
                    .unwrap()
                    .unwrap();
                let data = match next {
                    Message::Text(t) => streamgate::ws::Message::Text(t.as_str().to_owned()),
                    Message::Binary(b) => streamgate::ws::Message::Binary(b.to_vec()),
                    _ => continue,
                };
                if let Some(incoming) = decoder.decode(data).unwrap() {
                    break incoming;
                }
            };
            match (allowed, incoming) {
                (true, Incoming::Started { .. }) => {}
                (false, Incoming::Error { message, .. }) => {
                    assert!(message.contains("may not use"), "{message}")
                }
                (allowed, other) => panic!("{model} (allowed {allowed}): {other:?}"),
            }
        }
    }
    // A valid key next to nothing we speak: refused (400) without naming the key.
    let request = ws_request(&h, Some(&format!("streamgate.v2, {key_offer}")), &[]);
    let Err(tungstenite::Error::Http(response)) = tokio_tungstenite::connect_async(request).await
    else {
        panic!("an offer of nothing we speak must be refused");
    };
    assert_eq!(response.status(), 400);
    let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).into_owned();
    assert!(
        body.contains("streamgate.v2") && !body.contains(&keys.narrow),
        "{body}"
    );
    // A non-browser client may send the key as a header instead.
    let auth = bearer(&keys.full);
    let request = ws_request(&h, None, &[("authorization", &auth)]);
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_the_gateway_stays_open() {
    let h = gw::start().await;
    for (_, what, r) in every_door(&h, &[]).await {
        let status = r.status().as_u16();
        assert!(
            status == 200 || (status == 404 && what.contains("/abc")),
            "{what}: {status}"
        );
    }
}

/// Total tokens a non-streaming answer reports, in either dialect.
fn usage_total(door: Dialect, body: &serde_json::Value) -> u64 {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    match door {
        Dialect::OpenAi => {
            n(&body["usage"]["prompt_tokens"]) + n(&body["usage"]["completion_tokens"])
        }
        Dialect::Anthropic | Dialect::OpenAiResponses => {
            n(&body["usage"]["input_tokens"]) + n(&body["usage"]["output_tokens"])
        }
    }
}

/// A day budget smaller than one answer: the first answer goes (the budget was not yet
/// spent), is settled with its real usage, and every later request of that key is a 429 in
/// its door's dialect until the UTC day ends; `/admin/keys` shows that spend, never the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_day_budget_refuses_with_429_and_shows_in_admin() {
    let mut keys = None;
    let h = gw::start_with(|c| {
        let k = add_keys(c);
        c.keys.get_mut("full").unwrap().budget_tokens_per_day = std::num::NonZeroU64::new(5);
        c.keys.get_mut("narrow").unwrap().budget_tokens_per_month =
            std::num::NonZeroU64::new(1_000_000);
        keys = Some(k);
    })
    .await;
    let keys = keys.unwrap();
    let auth = bearer(&keys.full);
    let r = h
        .chat(
            Dialect::Anthropic,
            &[("authorization", &auth)],
            &chat_body(Dialect::Anthropic, MODEL, false),
        )
        .await;
    assert_eq!(r.status(), 200);
    let used = usage_total(Dialect::Anthropic, &json_of(r).await);
    assert!(used > 5, "the recording reports {used} tokens");
    // The spend is settled when the answer's run ends, just after its body went out.
    let admin = |h: &gw::Harness| {
        let request = h.client.get(h.url("/admin/keys"));
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let mut text = admin(&h).await;
    for _ in 0..100 {
        if text.contains(&format!("\"spent_tokens_today\":{used}")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        text = admin(&h).await;
    }
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let full = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "full")
        .unwrap();
    assert_eq!(full["spent_tokens_today"], used, "{list}");
    assert_eq!(full["spent_tokens_this_month"], used, "{list}");
    assert_eq!(full["budget_tokens_per_day"], 5, "{list}");
    for secret in [
        &keys.full,
        &keys.narrow,
        &hex(&sha256(&keys.full)),
        &hex(&sha256(&keys.narrow)),
    ] {
        assert!(
            !text.contains(secret.as_str()),
            "admin shows a key or its hash"
        );
    }
    for door in Dialect::ALL {
        let r = h
            .chat(
                door,
                &[("authorization", &auth)],
                &chat_body(door, MODEL, false),
            )
            .await;
        assert_eq!(r.status(), 429, "{door}");
        let after: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=86_400).contains(&after), "{after}");
        let body = json_of(r).await;
        match door {
            Dialect::OpenAi | Dialect::OpenAiResponses => {
                assert_eq!(body["error"]["code"], "insufficient_quota", "{body}")
            }
            Dialect::Anthropic => assert_eq!(body["error"]["type"], "rate_limit_error", "{body}"),
        }
    }
    // The other key's budget is its own.
    let r = h
        .chat(
            Dialect::OpenAi,
            &[("authorization", &bearer(&keys.narrow))],
            &chat_body(Dialect::OpenAi, MODEL, false),
        )
        .await;
    assert_eq!(r.status(), 200);
}

/// `POST /v1/streams` with `key`, for `model`, with the client's own `id` if any.
async fn start_stream(h_url: &str, key: &str, model: &str, id: Option<&str>) -> reqwest::Response {
    let mut request = gw::client()
        .post(format!("{h_url}/v1/streams"))
        .header("authorization", bearer(key))
        .header("streamgate-dialect", "openai")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&chat_body(Dialect::OpenAi, model, true)).unwrap());
    if let Some(id) = id {
        request = request.header("streamgate-stream-id", id);
    }
    request.send().await.unwrap()
}

/// The `stream` of every envelope of a native SSE body.
fn envelope_ids(body: &[u8]) -> Vec<String> {
    let mut reader = gw::NativeReader::default();
    reader.feed(body);
    reader
        .envelopes()
        .iter()
        .map(|e| e.stream.clone())
        .collect()
}

/// Ids clients choose, generated: each key may use any, the other key never reaches it (404
/// like an id never used, for GET and DELETE), and both keys may hold the same id at once,
/// each seeing its own stream under the id it chose.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_belong_to_the_key_that_started_them() {
    let mut keys = None;
    let h = gw::start_with(|c| {
        keys = Some(add_keys(c));
        c.keys.get_mut("narrow").unwrap().requests_per_minute = None;
    })
    .await;
    let keys = keys.unwrap();
    let base = format!("http://{}", h.gateway);
    let mut rng = fastrand::Rng::with_seed(0x6f776e);
    const ID_CHARS: &[u8] = b"abcXYZ019._:-";
    for round in 0..12 {
        let len = rng.usize(1..24);
        let id: String = (0..len)
            .map(|_| char::from(ID_CHARS[rng.usize(..ID_CHARS.len())]))
            .collect();
        let (owner, other) = if round % 2 == 0 {
            (&keys.full, &keys.narrow)
        } else {
            (&keys.narrow, &keys.full)
        };
        let r = start_stream(&base, owner, MODEL, Some(&id)).await;
        assert_eq!(r.status(), 200, "{id}");
        assert_eq!(gw::stream_id(&r), id);
        let ids = envelope_ids(&gw::body_bytes(r).await);
        assert!(!ids.is_empty() && ids.iter().all(|s| *s == id), "{ids:?}");
        // The other key: 404, the same answer as for an id nobody used.
        let never = format!("{id}-never");
        for (method, what) in [
            (reqwest::Method::GET, &id),
            (reqwest::Method::DELETE, &id),
            (reqwest::Method::GET, &never),
        ] {
            let r = h
                .client
                .request(method.clone(), h.url(&format!("/v1/streams/{what}")))
                .header("authorization", bearer(other))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{method} {what}");
            let body = json_of(r).await;
            assert_eq!(body["error"]["code"], "stream_not_found", "{body}");
        }
        // The owner still has it, not cancelled by the other's DELETE.
        let r = h
            .client
            .get(h.url(&format!("/v1/streams/{id}?after=0")))
            .header("authorization", bearer(owner))
            .send()
            .await
            .unwrap();
        assert!(r.status() == 200 || r.status() == 204, "{}", r.status());
        // The other key may take the same id for its own stream.
        let r = start_stream(&base, other, MODEL, Some(&id)).await;
        assert_eq!(r.status(), 200, "the same id under another key");
        assert_eq!(gw::stream_id(&r), id);
        gw::body_bytes(r).await;
    }
    // Generated ids: 128 random bits each, never repeated.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..8 {
        let r = start_stream(&base, &keys.full, MODEL, None).await;
        let id = gw::stream_id(&r);
        let random = id.strip_prefix("st_").unwrap();
        assert!(
            random.len() >= 32 && random.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        assert!(seen.insert(id));
        gw::body_bytes(r).await;
    }
}

/// A WebSocket client of one key cannot resume or cancel another key's stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_resume_and_cancel_see_only_the_keys_own_streams() {
    let (h, keys) = start().await;
    let base = format!("http://{}", h.gateway);
    let r = start_stream(&base, &keys.full, MODEL, Some("mine")).await;
    gw::body_bytes(r).await;
    let offer = format!("streamgate.v1, streamgate.key.{}", keys.narrow);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_request(&h, Some(&offer), &[]))
        .await
        .unwrap();
    let mut decoder = ClientDecoder::new(Compression::None, DecoderLimits::default());
    for frame in [
        ClientFrame::Resume {
            stream: "mine".into(),
            after: None,
        },
        ClientFrame::Cancel {
            stream: "mine".into(),
        },
    ] {
        let streamgate::ws::Message::Text(text) =
            streamgate::ws::encode_client_frame(Compression::None, &frame)
        else {
            panic!("uncompressed frames are text");
        };
        ws.send(Message::Text(text.into())).await.unwrap();
        let incoming = loop {
            let next = tokio::time::timeout(gw::BOUND, ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            if let Message::Text(t) = next
                && let Some(incoming) = decoder
                    .decode(streamgate::ws::Message::Text(t.as_str().to_owned()))
                    .unwrap()
            {
                break incoming;
            }
        };
        match incoming {
            Incoming::Error { code, .. } => {
                assert_eq!(code, streamgate::ws::ErrorCode::UnknownStream, "{frame:?}")
            }
            other => panic!("{frame:?}: {other:?}"),
        }
    }
    // Its owner resumes it.
    let r = h
        .client
        .get(h.url("/v1/streams/mine"))
        .header("authorization", bearer(&keys.full))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Ownership survives a restart on the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_survives_a_restart() {
    let replay = streamgate::replay::spawn(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let journal = tempfile::tempdir().unwrap();
    let mut config = replay.config();
    config.streams.journal.dir = journal.path().to_owned();
    let keys = add_keys(&mut config);
    let (addr, stop) = gw::serve_gateway(config.clone()).await;
    let r = start_stream(&format!("http://{addr}"), &keys.full, MODEL, Some("kept")).await;
    assert_eq!(r.status(), 200);
    gw::body_bytes(r).await;
    let _ = stop.send(());
    // The first gateway's hub goes when its last task does: wait for the journal's lock.
    let mut state = None;
    for _ in 0..500 {
        match streamgate::server::AppState::new(config.clone()) {
            Ok(s) => {
                state = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    let state = state.expect("the journal reopens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(streamgate::server::serve(
        state,
        listener,
        std::future::pending(),
    ));
    let get = |key: String| async move {
        gw::client()
            .get(format!("http://{addr}/v1/streams/kept"))
            .header("authorization", bearer(&key))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(get(keys.narrow.clone()).await, 404);
    assert_eq!(get(keys.full.clone()).await, 200);
}

/// With gateway keys and a pass-through provider: the gateway key authenticates and never
/// leaves the gateway; the client's provider key comes in `streamgate-provider-key` and
/// reaches only a provider of its door's dialect; without it the configured key is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_provider_keys_travel_apart_from_the_gateway_key() {
    let mut keys = None;
    let h = gw::start_with(|c| {
        keys = Some(add_keys(c));
        for p in c.providers.values_mut() {
            p.pass_through_client_key = true;
        }
    })
    .await;
    let keys = keys.unwrap();
    let auth = bearer(&keys.full);
    let provider_key = "sk-client-own-provider-key-77";
    for (door, model, header) in [
        (Dialect::OpenAi, "openai/text_basic", "authorization"),
        (Dialect::Anthropic, "anthropic/text_basic", "x-api-key"),
    ] {
        let gateway_key: (&str, &str) = match door {
            Dialect::OpenAi | Dialect::OpenAiResponses => ("authorization", &auth),
            Dialect::Anthropic => ("x-api-key", &keys.full),
        };
        let r = h
            .chat(
                door,
                &[gateway_key, ("streamgate-provider-key", provider_key)],
                &chat_body(door, model, true),
            )
            .await;
        assert_eq!(r.status(), 200, "{door}");
        gw::body_bytes(r).await;
        let rec = h.replay.requests().pop().unwrap();
        let sent = rec.header(header).unwrap_or_default().to_owned();
        assert!(
            sent.ends_with(provider_key),
            "{door}: upstream got {header}: {sent}"
        );
        for (name, value) in &rec.headers {
            let value = value.to_str().unwrap_or_default();
            assert!(
                !value.contains(&keys.full),
                "{door}: the gateway key reached the provider in {name}"
            );
        }
    }
    // The provider key of one dialect never reaches the other's provider.
    let r = h
        .chat(
            Dialect::OpenAi,
            &[
                ("authorization", &auth),
                ("streamgate-provider-key", provider_key),
            ],
            &chat_body(Dialect::OpenAi, "anthropic/text_basic", true),
        )
        .await;
    gw::body_bytes(r).await;
    let rec = h.replay.requests().pop().unwrap();
    for (name, value) in &rec.headers {
        let value = value.to_str().unwrap_or_default();
        assert!(
            !value.contains(provider_key) && !value.contains(&keys.full),
            "{name}: {value}"
        );
    }
}
