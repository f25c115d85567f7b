//! Output caps end to end: `max_output_tokens` and `max_n` on a gateway key and on an alias.
//! Over random caps and requests, at both doors and to upstreams of both dialects, the
//! request the replay upstream receives asks for the smaller of the client's `max_tokens`
//! and the tighter cap (the cap when the client asked for none), in the upstream's own
//! field; an `n` above its cap is a 400 in the door's dialect naming `n`, and nothing reaches
//! the upstream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::num::NonZeroU32;

use gw::{chat_body, json_of};
use providers::Dialect;
use serde_json::{Value, json};
use streamgate::config::ModelConfig;
use streamgate::keys::{GatewayKeyConfig, generate, hex, sha256};

/// The capped aliases and the upstream dialect each routes to.
const ALIASES: [(&str, &str, Dialect); 2] = [
    ("capped-openai", "openai/text_basic", Dialect::OpenAi),
    (
        "capped-anthropic",
        "anthropic/text_simple",
        Dialect::Anthropic,
    ),
];

/// The caps of one round: the key's and the aliases'.
struct Caps {
    key_tokens: Option<u32>,
    key_n: Option<u32>,
    alias_tokens: Option<u32>,
    alias_n: Option<u32>,
}

impl Caps {
    fn tokens(&self) -> Option<u32> {
        tighter(self.key_tokens, self.alias_tokens)
    }

    fn n(&self) -> Option<u32> {
        tighter(self.key_n, self.alias_n)
    }
}

fn tighter(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The `max_tokens` an upstream request of `dialect` carries, and in which field.
fn upstream_max_tokens(dialect: Dialect, body: &Value) -> Option<u64> {
    match dialect {
        Dialect::OpenAi => {
            let legacy = body.get("max_tokens").and_then(Value::as_u64);
            let current = body.get("max_completion_tokens").and_then(Value::as_u64);
            assert!(
                legacy.is_none() || current.is_none(),
                "both fields sent: {body}"
            );
            legacy.or(current)
        }
        Dialect::Anthropic => body.get("max_tokens").and_then(Value::as_u64),
        Dialect::OpenAiResponses => body.get("max_output_tokens").and_then(Value::as_u64),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_reach_the_upstream_request_at_every_door() {
    let mut rng = fastrand::Rng::with_seed(0xca95);
    let cap = |rng: &mut fastrand::Rng, hi: u32| rng.bool().then(|| rng.u32(1..hi));
    for round in 0..4 {
        let caps = Caps {
            key_tokens: cap(&mut rng, 5000),
            key_n: cap(&mut rng, 5),
            alias_tokens: if round == 0 {
                None
            } else {
                cap(&mut rng, 5000)
            },
            alias_n: cap(&mut rng, 5),
        };
        let key = generate().unwrap();
        let h = gw::start_with(|c| {
            c.keys.insert(
                "capped".into(),
                GatewayKeyConfig {
                    sha256: Some(hex(&sha256(&key))),
                    max_output_tokens: caps.key_tokens.and_then(NonZeroU32::new),
                    max_n: caps.key_n.and_then(NonZeroU32::new),
                    ..GatewayKeyConfig::default()
                },
            );
            for (alias, route, _) in ALIASES {
                c.models.insert(
                    alias.into(),
                    ModelConfig {
                        route: route.into(),
                        fallbacks: Vec::new(),
                        reasoning: None,
                        hedge_after_ms: None,
                        max_output_tokens: caps.alias_tokens.and_then(NonZeroU32::new),
                        max_n: caps.alias_n.and_then(NonZeroU32::new),
                    },
                );
            }
        })
        .await;
        let auth = format!("Bearer {key}");
        // The key's caps show in /admin/keys.
        let admin = json_of(h.client.get(h.url("/admin/keys")).send().await.unwrap()).await;
        let listed = &admin["data"][0];
        assert_eq!(listed["name"], "capped", "{admin}");
        assert_eq!(
            listed["max_output_tokens"],
            json!(caps.key_tokens),
            "{admin}"
        );
        assert_eq!(listed["max_n"], json!(caps.key_n), "{admin}");
        for _ in 0..12 {
            let door = Dialect::ALL[rng.usize(..Dialect::ALL.len())];
            let (alias, _, upstream) = ALIASES[rng.usize(..2)];
            let asked = rng.bool().then(|| rng.u32(1..8000));
            let mut body = chat_body(door, alias, rng.bool());
            let obj = body.as_object_mut().unwrap();
            obj.remove("max_tokens");
            if let Some(asked) = asked {
                let field = match door {
                    Dialect::OpenAi if rng.bool() => "max_completion_tokens",
                    Dialect::OpenAiResponses => "max_output_tokens",
                    _ => "max_tokens",
                };
                obj.insert(field.into(), json!(asked));
            }
            // `n` only where both dialects agree it can go: OpenAI to OpenAI.
            let n = (door == Dialect::OpenAi && upstream == Dialect::OpenAi && rng.bool())
                .then(|| rng.u32(1..7));
            if let Some(n) = n {
                obj.insert("n".into(), json!(n));
            }
            let what = format!(
                "{door} -> {alias}: {body}, caps {:?} / n {:?}",
                caps.tokens(),
                caps.n()
            );
            let before = h.replay.requests().len();
            let response = h.chat(door, &[("authorization", &auth)], &body).await;
            let status = response.status().as_u16();
            let answer = gw::body_bytes(response).await;
            if let (Some(n), Some(max)) = (n, caps.n())
                && n > max
            {
                assert_eq!(status, 400, "{what}");
                let error: Value = serde_json::from_slice(&answer).unwrap();
                assert_eq!(error["error"]["param"], "n", "{what}: {error}");
                assert_eq!(h.replay.requests().len(), before, "{what}: sent upstream");
                continue;
            }
            assert_eq!(status, 200, "{what}: {}", String::from_utf8_lossy(&answer));
            let sent = h.replay.requests();
            let sent = &sent.last().unwrap().body;
            let want = match (asked, caps.tokens()) {
                (Some(a), Some(c)) => Some(a.min(c)),
                (a, c) => c.or(a),
            };
            match want {
                Some(want) => assert_eq!(
                    upstream_max_tokens(upstream, sent),
                    Some(u64::from(want)),
                    "{what}: sent {sent}"
                ),
                // Neither cap nor request: OpenAI gets none, Anthropic the gateway's default.
                None if upstream == Dialect::OpenAi => {
                    assert_eq!(upstream_max_tokens(upstream, sent), None, "{what}: {sent}")
                }
                None => assert!(upstream_max_tokens(upstream, sent).is_some(), "{what}"),
            }
            assert_eq!(
                sent.get("n").and_then(Value::as_u64),
                n.map(u64::from),
                "{what}: sent {sent}"
            );
        }
    }
}

/// Without gateway keys an alias's cap applies alone: the 400 is OpenAI's error shape, with
/// `param: "n"`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_n_over_the_alias_cap_is_a_400_in_the_openai_dialect() {
    let h = gw::start_with(|c| {
        c.models.insert(
            "one-answer".into(),
            ModelConfig {
                route: "openai/text_basic".into(),
                fallbacks: Vec::new(),
                reasoning: None,
                hedge_after_ms: None,
                max_output_tokens: None,
                max_n: NonZeroU32::new(1),
            },
        );
    })
    .await;
    let mut body = chat_body(Dialect::OpenAi, "one-answer", false);
    body["n"] = json!(2);
    let r = h.chat(Dialect::OpenAi, &[], &body).await;
    assert_eq!(r.status(), 400);
    let error = json_of(r).await;
    assert_eq!(error["error"]["type"], "invalid_request_error", "{error}");
    assert_eq!(error["error"]["param"], "n", "{error}");
    assert!(h.replay.requests().is_empty());
}
