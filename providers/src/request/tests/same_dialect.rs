//! What the gateway does not know passes within a dialect and is translated or refused
//! across; mid-conversation system turns; unsigned thinking; reasoning only where the model
//! reasons.

use serde_json::{Value, json};

use super::super::{AnthropicDefaults, Capabilities, ChatRequest, RequestError};
use super::{Rng, a2o, err_param, word};

/// An Anthropic body saying everything the writer always writes (`stream`).
fn anthropic(messages: Value) -> Value {
    let mut body = super::anthropic(messages);
    body["stream"] = json!(false);
    body
}

/// An OpenAI body saying everything the writer always writes (`stream`).
fn openai(messages: Value) -> Value {
    let mut body = super::openai(messages);
    body["stream"] = json!(false);
    body
}

fn a2a(body: &Value) -> Value {
    ChatRequest::from_anthropic(body)
        .unwrap()
        .to_anthropic(&AnthropicDefaults::default())
        .unwrap()
}

fn o2o(body: &Value) -> Value {
    ChatRequest::from_openai(body).unwrap().to_openai().unwrap()
}

const NO: Capabilities = Capabilities {
    reasons: Some(false),
};
const UNKNOWN: Capabilities = Capabilities { reasons: None };

#[test]
fn anthropic_system_turns_stay_in_place_and_become_openai_system_messages() {
    let body = anthropic(json!([
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Auto-approve mode is on."},
        {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "text", "text": "next"}]},
        {"role": "system", "content": [
            {"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}
        ]},
    ]));
    assert_eq!(a2a(&body), body);
    let o = a2o(body).unwrap();
    let roles: Vec<&str> = o["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "system", "assistant", "user", "system"]);
    assert_eq!(o["messages"][1]["content"], "Auto-approve mode is on.");
    // cache_control is Anthropic's: dropped, the text stays.
    assert_eq!(o["messages"][4]["content"], "Be brief.");
}

#[test]
fn a_system_turn_with_an_image_is_refused_towards_openai() {
    let body = anthropic(json!([
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [
            {"type": "text", "text": "see"},
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
        ]},
    ]));
    let e = a2o(body).unwrap_err();
    assert_eq!(e.param(), "messages[1].content[1]");
    // Claude Code resends without its system turns on a 400 whose message says "not
    // supported" and matches /role .{0,2}system/i (Anthropic's own "role 'system' is not
    // supported on this model").
    let message = crate::Dialect::Anthropic.wire().error_body(&e.report())["error"]["message"]
        .as_str()
        .unwrap()
        .to_lowercase();
    let role_system = message.match_indices("role ").any(|(at, _)| {
        (0..=2).any(|gap| {
            message
                .get(at + 5 + gap..)
                .is_some_and(|rest| rest.starts_with("system"))
        })
    });
    assert!(
        message.contains("not supported") && role_system,
        "{message}"
    );
}

#[test]
fn unknown_roles_pass_within_a_dialect_and_are_refused_across() {
    let body = anthropic(json!([
        {"role": "user", "content": "hi"},
        {"role": "critic", "content": [{"type": "verdict", "ok": true}], "weight": 2},
        {"role": "user", "content": "again"},
    ]));
    assert_eq!(a2a(&body), body);
    let e = ChatRequest::from_anthropic(&body)
        .unwrap()
        .to_openai()
        .unwrap_err();
    assert_eq!(e.param(), "messages[1].role");
    assert!(e.to_string().contains("critic"), "{e}");
    // The refusal is an Anthropic-shaped 400 body at the Anthropic door.
    let b = crate::Dialect::Anthropic.wire().error_body(&e.report());
    assert_eq!(b["type"], "error");
    assert_eq!(b["error"]["type"], "invalid_request_error");

    let body = openai(json!([
        {"role": "user", "content": "hi"},
        {"role": "function", "name": "f", "content": "42"},
        {"role": "tool_summary", "content": "x"},
    ]));
    assert_eq!(o2o(&body), body);
    let e = ChatRequest::from_openai(&body)
        .unwrap()
        .to_anthropic(&AnthropicDefaults::default())
        .unwrap_err();
    assert!(matches!(e, RequestError::Unsupported { .. }));
    assert_eq!(e.param(), "messages[1].role");
}

#[test]
fn unknown_fields_and_blocks_pass_within_anthropic() {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1000,
        "system": [{"type": "text", "text": "only block", "citations": null, "x_tag": 1}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "q", "x_hint": "a"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                    "data": "AAAA", "x_crop": [1, 2]}},
                {"type": "hologram", "payload": {"z": 1}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig", "x_meta": 1},
                {"type": "redacted_thinking", "data": "enc", "x_meta": 2},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}, "caller": {"type": "direct"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "r"}], "is_error": false},
                {"type": "text", "text": "and?"},
            ]},
        ],
        "tools": [{"type": "custom", "name": "f", "input_schema": {"type": "object"}, "defer_loading": true}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": false, "x_pref": 1},
        "thinking": {"type": "adaptive", "display": "summarized"},
        "output_config": {"effort": "high"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "x_future": {"a": [1]},
        "stream": true,
    });
    assert_eq!(a2a(&body), body);
}

#[test]
fn an_unknown_tool_choice_passes_within_anthropic_and_is_refused_across() {
    let mut body = anthropic(json!([{"role": "user", "content": "hi"}]));
    body["tools"] = json!([{"name": "f", "input_schema": {"type": "object"}}]);
    body["tool_choice"] = json!({"type": "auto_plus", "hint": 1});
    assert_eq!(a2a(&body), body);
    assert_eq!(err_param(a2o(body.clone())), "tool_choice");
    // Unknown fields of a known choice are dropped across, not refused.
    body["tool_choice"] = json!({"type": "any", "x_pref": 1});
    assert_eq!(a2o(body).unwrap()["tool_choice"], "required");
}

#[test]
fn empty_signatures_are_unsigned() {
    let body = anthropic(json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "cut mid-w", "signature": ""},
            {"type": "text", "text": "partial"},
        ]},
        {"role": "user", "content": "go on"},
    ]));
    let out = a2a(&body);
    assert_eq!(
        out["messages"][1]["content"],
        json!([{"type": "text", "text": "partial"}]),
        "no thinking block without a signature"
    );
    let out = ChatRequest::from_anthropic(&body).unwrap();
    assert!(matches!(
        &out.messages[1].content[0],
        super::super::Part::Reasoning {
            signature: None,
            ..
        }
    ));
}

#[test]
fn reasoning_reaches_only_models_that_reason() {
    let mut body = anthropic(json!([{"role": "user", "content": "hi"}]));
    body["model"] = json!("gpt-4o");
    body["max_tokens"] = json!(8000);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 4000});
    let req = ChatRequest::from_anthropic(&body).unwrap();
    // Family default of gpt-4o: no reasoning.
    assert!(req.to_openai().unwrap().get("reasoning_effort").is_none());
    let mut o3 = req.clone();
    o3.model = "o3".into();
    assert_eq!(o3.to_openai().unwrap()["reasoning_effort"], "medium");
    // An unknown model gets no invented reasoning across dialects.
    assert!(
        req.to_openai_for(UNKNOWN)
            .unwrap()
            .get("reasoning_effort")
            .is_none()
    );
    // Anthropic to a Claude that does not think: thinking left out, max_tokens as asked.
    let mut haiku = body.clone();
    haiku["model"] = json!("claude-3-5-haiku-20241022");
    let out = a2a(&haiku);
    assert!(out.get("thinking").is_none());
    assert_eq!(out["max_tokens"], 8000);
    // Same dialect, unknown model: the client's own setting passes.
    let req = ChatRequest::from_anthropic(&haiku).unwrap();
    let out = req
        .to_anthropic_for(&AnthropicDefaults::default(), UNKNOWN)
        .unwrap();
    assert_eq!(out["thinking"], body["thinking"]);
    // OpenAI client, config says the model does not reason.
    let mut body = openai(json!([{"role": "user", "content": "hi"}]));
    body["model"] = json!("my-local-model");
    body["reasoning_effort"] = json!("high");
    let req = ChatRequest::from_openai(&body).unwrap();
    assert_eq!(req.to_openai().unwrap(), body, "unknown: passes");
    assert!(
        req.to_openai_for(NO)
            .unwrap()
            .get("reasoning_effort")
            .is_none()
    );
}

#[test]
fn adaptive_thinking_takes_its_effort_from_output_config() {
    let mut body = anthropic(json!([{"role": "user", "content": "hi"}]));
    body["thinking"] = json!({"type": "adaptive"});
    body["model"] = json!("o4-mini");
    assert!(a2o(body.clone()).unwrap().get("reasoning_effort").is_none());
    for (effort, want) in [
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("max", "high"),
    ] {
        body["output_config"] = json!({"effort": effort});
        let o = a2o(body.clone()).unwrap();
        assert_eq!(o["reasoning_effort"], want, "{effort}");
        assert!(o.get("output_config").is_none());
    }
}

#[test]
fn thinking_with_unknown_fields_is_still_dropped_towards_openai() {
    let body = anthropic(json!([
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "t", "signature": "s", "x_meta": 1},
            {"type": "redacted_thinking", "data": "enc", "x_meta": 2},
            {"type": "text", "text": "answer"},
        ]},
        {"role": "user", "content": "more"},
    ]));
    assert_eq!(a2a(&body), body);
    let o = a2o(body).unwrap();
    assert_eq!(
        o["messages"][1],
        json!({"role": "assistant", "content": "answer"})
    );
}

/// A random OpenAI conversation: every role that holds text, content written as a string or
/// as text parts (with fields the gateway does not know, or without), messages with fields of
/// their own.
fn random_conversation(rng: &mut Rng) -> Value {
    const ROLES: [&str; 4] = ["user", "assistant", "system", "developer"];
    let messages: Vec<Value> = (0..1 + rng.below(6))
        .map(|_| {
            let content = match rng.below(3) {
                0 => json!(word(rng)),
                _ => Value::Array(
                    (0..1 + rng.below(2))
                        .map(|_| {
                            let mut part = json!({"type": "text", "text": word(rng)});
                            if rng.below(2) == 0 {
                                part["cache_control"] = json!({"type": "ephemeral"});
                            }
                            part
                        })
                        .collect(),
                ),
            };
            let mut m = json!({"role": ROLES[rng.below(4) as usize], "content": content});
            if rng.below(3) == 0 {
                m["name"] = json!(word(rng));
            }
            m
        })
        .collect();
    openai(Value::Array(messages))
}

/// Text messages of every shape come back as they were written within OpenAI, and as a string
/// of the same text across (from Anthropic, the single text part of a message becomes the
/// OpenAI message's string content).
#[test]
fn text_messages_keep_their_shape_within_openai_and_become_strings_across() {
    let mut rng = Rng(0x7e57);
    for case in 0..500 {
        let body = random_conversation(&mut rng);
        assert_eq!(o2o(&body), body, "case {case}");
    }
    for case in 0..500 {
        let text = word(&mut rng);
        let content = match rng.below(2) {
            0 => json!(text),
            _ => json!([{"type": "text", "text": text}]),
        };
        let role = ["user", "assistant"][rng.below(2) as usize];
        let body = anthropic(json!([{"role": role, "content": content}]));
        let o = super::a2o(body).unwrap();
        assert_eq!(
            o["messages"][0],
            json!({"role": role, "content": text}),
            "case {case}"
        );
    }
}
