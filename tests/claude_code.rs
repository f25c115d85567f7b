//! Claude Code as it ships, at the Anthropic door: every request of `fixtures/claude_code/`
//! (its beta headers, system turns inside `messages`, tools, `context_management`,
//! `output_config`, adaptive and budgeted thinking) reaches an Anthropic upstream as sent and
//! an OpenAI upstream translated, and generated requests full of roles, blocks and fields the
//! gateway does not know pass within their dialect unchanged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use providers::Dialect;
use providers::request::{AnthropicDefaults, ChatRequest, EffortBudgets, RequestError};
use serde_json::{Value, json};
use streamgate::config::{Config, ModelConfig};
use streamgate::replay;

/// One recorded request: its headers and body.
struct Case {
    name: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Case {
    fn headers(&self) -> Vec<(&str, &str)> {
        self.headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    fn model(&self) -> &str {
        self.body["model"].as_str().unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/claude_code");
    let mut out: Vec<Case> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let headers = v["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(n, v)| (n.clone(), v.as_str().unwrap().to_owned()))
                .collect();
            Case {
                name: p.file_name().unwrap().to_string_lossy().into_owned(),
                headers,
                body: v["body"].clone(),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!out.is_empty(), "no fixtures in {}", dir.display());
    out
}

/// Equal JSON, numbers compared by value: `1` and `1.0` are one JSON number (the gateway reads
/// `temperature` as a float).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// What an Anthropic upstream must receive for `body`: the body itself, with the route's
/// model, streaming on, and thinking blocks cut before their signature left out (Anthropic
/// refuses an empty signature).
fn expected_anthropic(body: &Value, model: &str) -> Value {
    let mut want = body.clone();
    want["model"] = json!(model);
    want["stream"] = json!(true);
    for m in want["messages"].as_array_mut().unwrap() {
        if let Some(blocks) = m["content"].as_array_mut() {
            blocks.retain(|b| !(b["type"] == "thinking" && b["signature"] == ""));
        }
    }
    want
}

/// An alias per fixture model, to `route`.
fn aliases(c: &mut Config, cases: &[Case], route: &str) {
    for case in cases {
        c.models.insert(
            case.model().to_owned(),
            ModelConfig {
                route: route.to_owned(),
                fallbacks: Vec::new(),
                reasoning: None,
                hedge_after_ms: None,
                max_output_tokens: None,
                max_n: None,
            },
        );
    }
}

/// Sends `case` through the Anthropic door and returns what the upstream received.
async fn send(h: &gw::Harness, case: &Case, body: &Value) -> replay::Recorded {
    let before = h.replay.requests().len();
    let r = h.chat(Dialect::Anthropic, &case.headers(), body).await;
    let status = r.status();
    let bytes = gw::body_bytes(r).await;
    assert_eq!(
        status,
        200,
        "{}: {}",
        case.name,
        String::from_utf8_lossy(&bytes)
    );
    let (events, end) = gw::decode(Dialect::Anthropic, &bytes);
    assert_eq!(end, Ok(()), "{}", case.name);
    assert!(
        !gw::seen_events(&events, true).text.is_empty(),
        "{}: no answer",
        case.name
    );
    let requests = h.replay.requests();
    assert_eq!(
        requests.len(),
        before + 1,
        "{}: one upstream request",
        case.name
    );
    requests.into_iter().next_back().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_requests_reach_an_anthropic_upstream_as_sent() {
    let cases = cases();
    let h = gw::start_with(|c| aliases(c, &cases, "anthropic/cc-upstream")).await;
    let fixture = replay::fixture(Dialect::Anthropic, "text_basic").unwrap();
    h.replay
        .insert_fixture(Dialect::Anthropic, "cc-upstream", fixture);
    for case in &cases {
        let got = send(&h, case, &case.body).await;
        assert_eq!(got.path, "/v1/messages", "{}", case.name);
        let want = expected_anthropic(&case.body, "cc-upstream");
        assert!(
            same_json(&got.body, &want),
            "{}: upstream body differs\n got: {}\nwant: {}",
            case.name,
            got.body,
            want
        );
        for header in ["anthropic-beta", "anthropic-version"] {
            assert_eq!(
                got.header(header),
                case.header(header),
                "{} {header}",
                case.name
            );
        }
    }
}

/// Roles in order, tool results counted as the user's turn, repeats folded: the shape of a
/// conversation in either dialect.
fn role_runs<'a>(roles: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for r in roles.map(|r| if r == "tool" { "user" } else { r }) {
        if out.last() != Some(&r) {
            out.push(r);
        }
    }
    out
}

/// Texts of an Anthropic or OpenAI content value (string or text blocks).
fn texts(content: &Value) -> Vec<&str> {
    match content {
        Value::String(s) => vec![s.as_str()],
        Value::Array(blocks) => blocks.iter().filter_map(|b| b["text"].as_str()).collect(),
        _ => Vec::new(),
    }
}

/// The `reasoning_effort` an OpenAI model that reasons gets for a Claude Code body.
fn effort_for(body: &Value) -> Option<&'static str> {
    let thinking = &body["thinking"];
    match thinking["type"].as_str()? {
        "enabled" => {
            let budget = u32::try_from(thinking["budget_tokens"].as_u64()?).ok()?;
            Some(EffortBudgets::default().effort_for_budget(budget).as_str())
        }
        "adaptive" => match body["output_config"]["effort"].as_str()? {
            "max" | "high" => Some("high"),
            "medium" => Some("medium"),
            "low" => Some("low"),
            _ => None,
        },
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_requests_translate_for_an_openai_upstream() {
    let cases = cases();
    let h = gw::start_with(|c| {
        aliases(c, &cases, "openai/gpt-4o");
        c.models.insert(
            "cc-reasoning".into(),
            ModelConfig {
                route: "openai/o3".into(),
                fallbacks: Vec::new(),
                reasoning: None,
                hedge_after_ms: None,
                max_output_tokens: None,
                max_n: None,
            },
        );
    })
    .await;
    let fixture = replay::fixture(Dialect::OpenAi, "text_basic").unwrap();
    for model in ["gpt-4o", "o3"] {
        h.replay.insert_fixture(Dialect::OpenAi, model, fixture);
    }
    for case in &cases {
        let name = &case.name;
        let got = send(&h, case, &case.body).await;
        assert_eq!(got.path, "/v1/chat/completions", "{name}");
        let b = &got.body;
        assert_eq!(b["model"], "gpt-4o", "{name}");
        // gpt-4o does not reason: nothing of Claude's thinking reaches it.
        assert!(b.get("reasoning_effort").is_none(), "{name}: {b}");
        for key in [
            "thinking",
            "context_management",
            "output_config",
            "metadata",
            "system",
        ] {
            assert!(b.get(key).is_none(), "{name}: {key} went to OpenAI");
        }
        assert_eq!(got.header("anthropic-beta"), None, "{name}");
        assert_eq!(
            b["max_completion_tokens"], case.body["max_tokens"],
            "{name}"
        );
        let tools = case.body["tools"].as_array().map_or(0, Vec::len);
        assert_eq!(b["tools"].as_array().map_or(0, Vec::len), tools, "{name}");
        // System turns are system messages where they stood, after the top-level system.
        let sent = case.body["messages"].as_array().unwrap();
        let messages = b["messages"].as_array().unwrap();
        let mut want_roles = Vec::new();
        let mut want_system: Vec<Vec<&str>> = Vec::new();
        if let Some(system) = case.body.get("system") {
            want_roles.push("system");
            want_system.push(texts(system));
        }
        for m in sent {
            want_roles.push(m["role"].as_str().unwrap());
            if m["role"] == "system" {
                want_system.push(texts(&m["content"]));
            }
        }
        assert_eq!(
            role_runs(messages.iter().map(|m| m["role"].as_str().unwrap())),
            role_runs(want_roles.into_iter()),
            "{name}"
        );
        let got_system: Vec<Vec<&str>> = messages
            .iter()
            .filter(|m| m["role"] == "system")
            .map(|m| texts(&m["content"]))
            .collect();
        assert_eq!(got_system, want_system, "{name}");
        // Positive control: the same request to a model that reasons carries its effort.
        let mut body = case.body.clone();
        body["model"] = json!("cc-reasoning");
        let got = send(&h, case, &body).await;
        assert_eq!(
            got.body.get("reasoning_effort").and_then(Value::as_str),
            effort_for(&case.body),
            "{name} to o3"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_translated_is_an_anthropic_worded_400() {
    let h = gw::start().await;
    let body = json!({
        "model": "openai/text_basic",
        "max_tokens": 100,
        "stream": true,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "critic", "content": "too long"},
        ],
    });
    let r = h.chat(Dialect::Anthropic, &[], &body).await;
    assert_eq!(r.status(), 400);
    let v = gw::json_of(r).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("messages[1].role") && message.contains("critic"),
        "{message}"
    );
    assert!(h.replay.requests().is_empty(), "nothing went upstream");
    // The same turn to an Anthropic upstream passes as it is.
    let mut body = body;
    body["model"] = json!("anthropic/text_basic");
    let r = h.chat(Dialect::Anthropic, &[], &body).await;
    assert_eq!(r.status(), 200);
    gw::body_bytes(r).await;
    let got = h.replay.requests().pop().unwrap();
    assert_eq!(got.body["messages"], body["messages"]);
}

// ---- Generated requests: what the gateway does not know passes within its dialect. ----

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        "[a-z ]{0,8}".prop_map(Value::from),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,5}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Fields no dialect has (yet): `x_...` keys with any values.
fn unknown_fields() -> impl Strategy<Value = BTreeMap<String, Value>> {
    prop::collection::btree_map("x_[a-z]{1,6}", any_json(), 0..3)
}

fn with_fields(mut v: Value, fields: BTreeMap<String, Value>) -> Value {
    if let Value::Object(m) = &mut v {
        m.extend(fields);
    }
    v
}

fn text() -> impl Strategy<Value = String> {
    "[A-Za-z][a-z .]{0,12}"
}

/// A block or message kind the gateway does not know, and whether it is one.
type Gen = (Value, bool);

fn anthropic_text_block() -> impl Strategy<Value = Value> {
    (text(), unknown_fields()).prop_map(|(t, f)| with_fields(json!({"type": "text", "text": t}), f))
}

fn anthropic_unknown_block() -> impl Strategy<Value = Value> {
    ("x_block_[a-z]{1,4}", unknown_fields()).prop_map(|(ty, f)| with_fields(json!({"type": ty}), f))
}

fn anthropic_content() -> impl Strategy<Value = Gen> {
    prop_oneof![
        text().prop_map(|t| (json!(t), false)),
        (
            prop::collection::vec(anthropic_text_block(), 1..3),
            prop::option::of(anthropic_unknown_block())
        )
            .prop_map(|(mut blocks, unknown)| {
                let has = unknown.is_some();
                blocks.extend(unknown);
                (Value::Array(blocks), has)
            }),
    ]
}

/// One Anthropic turn: its message and whether it holds a kind the gateway does not know.
fn anthropic_turn(i: usize) -> impl Strategy<Value = Gen> {
    let id = format!("toolu_{i}");
    let user = (anthropic_content(), unknown_fields())
        .prop_map(|((c, u), f)| (with_fields(json!({"role": "user", "content": c}), f), u));
    let system =
        anthropic_content().prop_map(|(c, u)| (json!({"role": "system", "content": c}), u));
    let assistant = (
        prop::option::of((text(), "[A-Za-z0-9]{1,12}", unknown_fields())),
        anthropic_text_block(),
        prop::option::of((any_json(), unknown_fields())),
        unknown_fields(),
    )
        .prop_map(move |(thinking, text_block, call, f)| {
            let mut blocks = Vec::new();
            if let Some((t, sig, tf)) = thinking {
                blocks.push(with_fields(
                    json!({"type": "thinking", "thinking": t, "signature": sig}),
                    tf,
                ));
            }
            blocks.push(text_block);
            if let Some((input, cf)) = call {
                blocks.push(with_fields(
                    json!({"type": "tool_use", "id": id, "name": "f", "input": {"v": input}}),
                    cf,
                ));
            }
            (
                with_fields(json!({"role": "assistant", "content": blocks}), f),
                false,
            )
        });
    let result = (
        anthropic_content(),
        unknown_fields(),
        prop::option::of(anthropic_text_block()),
    )
        .prop_map(move |((c, u), rf, after)| {
            let mut blocks = vec![with_fields(
                json!({"type": "tool_result", "tool_use_id": format!("toolu_{i}"), "content": c}),
                rf,
            )];
            blocks.extend(after);
            (json!({"role": "user", "content": blocks}), u)
        });
    let unknown_role = ("x_role_[a-z]{1,4}", any_json(), unknown_fields())
        .prop_map(|(r, c, f)| (with_fields(json!({"role": r, "content": c}), f), true));
    prop_oneof![4 => user, 2 => system, 4 => assistant, 2 => result, 1 => unknown_role]
}

fn anthropic_body() -> impl Strategy<Value = Gen> {
    let turns = (1usize..7).prop_flat_map(|n| (0..n).map(anthropic_turn).collect::<Vec<_>>());
    let system = prop::option::of(prop_oneof![
        text().prop_map(Value::from),
        prop::collection::vec(
            (text(), any::<bool>(), unknown_fields()).prop_map(|(t, cache, f)| {
                let mut b = json!({"type": "text", "text": t});
                if cache {
                    b["cache_control"] = json!({"type": "ephemeral"});
                }
                with_fields(b, f)
            }),
            1..3
        )
        .prop_map(Value::Array),
    ]);
    let thinking = prop::option::of(prop_oneof![
        (1024u32..2000, unknown_fields())
            .prop_map(|(b, f)| with_fields(json!({"type": "enabled", "budget_tokens": b}), f)),
        unknown_fields().prop_map(|f| with_fields(json!({"type": "adaptive"}), f)),
    ]);
    let tools = prop::collection::vec(
        (any::<bool>(), unknown_fields()).prop_map(|(custom, f)| {
            let mut t = json!({"name": "f", "input_schema": {"type": "object"}});
            if custom {
                t["type"] = json!("custom");
            }
            with_fields(t, f)
        }),
        0..2,
    );
    (
        turns,
        system,
        thinking,
        tools,
        any::<bool>(),
        unknown_fields(),
    )
        .prop_map(|(turns, system, thinking, tools, stream, f)| {
            let unknown = turns.iter().any(|(_, u)| *u);
            let messages: Vec<Value> = turns.into_iter().map(|(m, _)| m).collect();
            let mut body = json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 4000,
                "messages": messages,
                "stream": stream,
            });
            if let Some(s) = system {
                body["system"] = s;
            }
            if let Some(t) = thinking {
                body["thinking"] = t;
            }
            if !tools.is_empty() {
                body["tools"] = Value::Array(tools);
            }
            (with_fields(body, f), unknown)
        })
}

fn openai_message(i: usize) -> impl Strategy<Value = Gen> {
    let part = (text(), unknown_fields())
        .prop_map(|(t, f)| with_fields(json!({"type": "text", "text": t}), f));
    let unknown_part = ("x_part_[a-z]{1,4}", unknown_fields())
        .prop_map(|(ty, f)| with_fields(json!({"type": ty}), f));
    let user = (
        prop_oneof![
            text().prop_map(|t| (json!(t), false)),
            (
                prop::collection::vec(part, 1..3),
                prop::option::of(unknown_part)
            )
                .prop_map(|(mut parts, unknown)| {
                    let has = unknown.is_some();
                    parts.extend(unknown);
                    (Value::Array(parts), has)
                }),
        ],
        unknown_fields(),
    )
        .prop_map(|((c, u), f)| (with_fields(json!({"role": "user", "content": c}), f), u));
    let id = format!("call_{i}");
    let assistant =
        (text(), prop::option::of(any_json()), unknown_fields()).prop_map(move |(t, call, f)| {
            let mut m = json!({"role": "assistant", "content": t});
            if let Some(v) = call {
                let arguments = json!({"v": v}).to_string();
                m["tool_calls"] = json!([{"id": id, "type": "function",
                    "function": {"name": "f", "arguments": arguments}}]);
            }
            (with_fields(m, f), false)
        });
    let tool = (text(), unknown_fields()).prop_map(move |(t, f)| {
        (
            with_fields(
                json!({"role": "tool", "tool_call_id": format!("call_{i}"), "content": t}),
                f,
            ),
            false,
        )
    });
    let unknown_role = ("x_role_[a-z]{1,4}", any_json(), unknown_fields())
        .prop_map(|(r, c, f)| (with_fields(json!({"role": r, "content": c}), f), true));
    prop_oneof![4 => user, 4 => assistant, 2 => tool, 1 => unknown_role]
}

/// A system or developer message, as a string or parts (text, or a kind no dialect has yet),
/// named or not.
fn openai_system() -> impl Strategy<Value = Gen> {
    let part = (text(), unknown_fields())
        .prop_map(|(t, f)| with_fields(json!({"type": "text", "text": t}), f));
    let unknown_part = ("x_part_[a-z]{1,4}", unknown_fields())
        .prop_map(|(ty, f)| with_fields(json!({"type": ty}), f));
    (
        prop_oneof![Just("system"), Just("developer")],
        prop_oneof![
            text().prop_map(|t| (Value::from(t), false)),
            (
                prop::collection::vec(part, 1..3),
                prop::option::of(unknown_part)
            )
                .prop_map(|(mut parts, unknown)| {
                    let has = unknown.is_some();
                    parts.extend(unknown);
                    (Value::Array(parts), has)
                }),
        ],
        unknown_fields(),
    )
        .prop_map(|(role, (content, unknown), f)| {
            (
                with_fields(json!({"role": role, "content": content}), f),
                unknown,
            )
        })
}

fn openai_body() -> impl Strategy<Value = Gen> {
    let messages = (1usize..7).prop_flat_map(|n| (0..n).map(openai_message).collect::<Vec<_>>());
    (
        prop::collection::vec(openai_system(), 0..3),
        messages,
        prop::option::of((0usize..7, openai_system())),
        any::<bool>(),
        unknown_fields(),
    )
        .prop_map(|(leading, turns, late, stream, f)| {
            let unknown = turns.iter().chain(&leading).any(|(_, u)| *u)
                || late.as_ref().is_some_and(|(_, (_, u))| *u);
            let mut messages: Vec<Value> = leading.into_iter().map(|(m, _)| m).collect();
            let mut turns: Vec<Value> = turns.into_iter().map(|(m, _)| m).collect();
            if let Some((at, (m, _))) = late {
                turns.insert(at.min(turns.len()), m);
            }
            messages.extend(turns);
            let body = json!({"model": "gpt-4o", "messages": messages, "stream": stream});
            (with_fields(body, f), unknown)
        })
}

fn unsupported(e: &RequestError) -> bool {
    matches!(e, RequestError::Unsupported { .. })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn anthropic_requests_pass_to_anthropic_unchanged((body, unknown) in anthropic_body()) {
        let req = ChatRequest::from_anthropic(&body).unwrap();
        let out = req.to_anthropic(&AnthropicDefaults::default()).unwrap();
        prop_assert_eq!(&out, &body);
        // Across: translated when everything has a mapping, refused (never garbled) when a
        // role or block has none.
        match req.to_openai() {
            Ok(o) => {
                prop_assert!(!unknown, "an unknown role or block reached OpenAI: {}", o);
                let mids = body["messages"].as_array().unwrap().iter()
                    .filter(|m| m["role"] == "system").count();
                let lead = usize::from(body.get("system").is_some_and(|s| !texts(s).is_empty()));
                let systems = o["messages"].as_array().unwrap().iter()
                    .filter(|m| m["role"] == "system").count();
                prop_assert_eq!(systems, lead + mids);
            }
            Err(e) => {
                prop_assert!(unknown && unsupported(&e), "{}", e);
                prop_assert!(e.param().starts_with("messages["), "{}", e.param());
            }
        }
    }

    #[test]
    fn openai_requests_pass_to_openai_unchanged((body, unknown) in openai_body()) {
        let req = ChatRequest::from_openai(&body).unwrap();
        prop_assert_eq!(&req.to_openai().unwrap(), &body);
        match req.to_anthropic(&AnthropicDefaults::default()) {
            Ok(a) => prop_assert!(!unknown, "an unknown role or part reached Anthropic: {}", a),
            Err(e) => prop_assert!(unknown && unsupported(&e), "{}", e),
        }
    }
}

#[test]
fn an_empty_object_is_not_mistaken_for_a_field() {
    // The generators' `with_fields` must not drop keys: a sanity check of the harness itself.
    let v = with_fields(json!({"a": 1}), BTreeMap::from([("x_b".into(), json!({}))]));
    assert_eq!(v, json!({"a": 1, "x_b": {}}));
    assert!(same_json(&json!({"t": 1}), &json!({"t": 1.0})));
    assert!(!same_json(&json!({"t": 1}), &json!({"t": 2})));
    assert!(!same_json(&json!({"t": 1}), &json!({"t": 1, "u": 2})));
}
