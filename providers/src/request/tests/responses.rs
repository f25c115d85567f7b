//! OpenAI Responses request translation: every recorded request body, seeded random
//! requests, and the rules for what only Responses can do.

use serde_json::{Value, json};

use super::{REASONS, Rng, word};
use crate::dialect::Dialect;
use crate::request::{AnthropicDefaults, ChatRequest, Part, RequestError, Role};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/openai_responses/");

/// Top-level `null`s say nothing: a body read and written back may leave them out.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn r2r(body: &Value) -> Value {
    ChatRequest::from_responses(body)
        .unwrap()
        .to_responses_for(REASONS)
        .unwrap()
}

/// What every dialect must carry: who says what, tool calls and results, tools.
fn gist(req: &ChatRequest) -> Vec<String> {
    let mut out: Vec<String> = req
        .system
        .iter()
        .map(|s| format!("system {}", s.text))
        .collect();
    for m in &req.messages {
        for p in &m.content {
            let role = match m.role {
                // Chat keeps system messages in place; Anthropic hoists them.
                Role::System | Role::Developer => "system",
                r => match r {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                    _ => "tool",
                },
            };
            match p {
                Part::Text { text, .. } if !text.is_empty() => out.push(format!("{role} {text}")),
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                    ..
                } => {
                    let args: Value = serde_json::from_str(arguments).unwrap_or(json!({}));
                    out.push(format!("call {id} {name} {args}"));
                }
                Part::ToolResult {
                    call_id, content, ..
                } => {
                    let texts: Vec<String> = content
                        .iter()
                        .filter_map(|c| match c {
                            Part::Text { text, .. } => Some(text.clone()),
                            _ => None,
                        })
                        .collect();
                    out.push(format!("result {call_id} {}", texts.concat()));
                }
                Part::Image { source, .. } => out.push(format!("{role} image {source:?}")),
                _ => {}
            }
        }
    }
    for t in &req.tools {
        if let crate::request::Tool::Function(f) = t {
            out.push(format!("tool {} {}", f.name, f.parameters));
        }
    }
    out.push(format!("choice {:?}", req.tool_choice));
    out.push(format!("max {:?}", req.max_tokens));
    out
}

fn fixtures() -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = std::fs::read_dir(DIR)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .map(|n| {
            let body = serde_json::from_str(&std::fs::read_to_string(format!("{DIR}{n}")).unwrap())
                .unwrap();
            (n, body)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 4, "request fixtures missing");
    out
}

/// Every recorded request reaches a Responses upstream as the client wrote it, and reaches
/// Chat and Anthropic upstreams meaning the same (or is refused for what they cannot do).
#[test]
fn recorded_requests_round_trip_and_cross() {
    for (name, body) in fixtures() {
        assert_eq!(without_nulls(&r2r(&body)), without_nulls(&body), "{name}");
        let req = ChatRequest::from_responses(&body).unwrap();
        let hosted = req
            .tools
            .iter()
            .any(|t| matches!(t, crate::request::Tool::Native { .. }));
        let anthropic = req
            .clone()
            .to_anthropic_for(&AnthropicDefaults::default(), REASONS);
        if hosted {
            assert!(
                matches!(&anthropic, Err(RequestError::Unsupported { param, .. }) if param == "tools[0]"),
                "{name}: {anthropic:?}"
            );
            continue;
        }
        let anthropic = anthropic.unwrap_or_else(|e| panic!("{name}: {e}"));
        let back = ChatRequest::from_anthropic(&anthropic).unwrap();
        let mut want = gist(&req);
        let mut got = gist(&back);
        // Anthropic requires a cap; the default fills in when the client had none.
        want.retain(|l| !l.starts_with("max "));
        got.retain(|l| !l.starts_with("max "));
        assert_eq!(got, want, "{name} via anthropic");
        let chat = req.clone().to_openai_for(REASONS).unwrap();
        let back = ChatRequest::from_openai(&chat).unwrap();
        let mut got = gist(&back);
        got.retain(|l| !l.starts_with("max "));
        assert_eq!(got, want, "{name} via chat");
        // And back into Responses from either.
        let again = back.to_responses_for(REASONS).unwrap();
        let again = ChatRequest::from_responses(&again).unwrap();
        let mut got = gist(&again);
        got.retain(|l| !l.starts_with("max "));
        assert_eq!(got, want, "{name} chat -> responses");
    }
}

/// The recorded reasoning settings and passthrough fields survive the same-dialect trip.
#[test]
fn recorded_fields_are_read_into_the_model() {
    let body: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DIR}usage_reasoning_function_call.json")).unwrap(),
    )
    .unwrap();
    let req = ChatRequest::from_responses(&body).unwrap();
    assert_eq!(
        req.reasoning
            .as_ref()
            .and_then(|r| r.effort)
            .map(|e| e.as_str()),
        Some("low")
    );
    assert_eq!(req.tool_choice, Some(crate::request::ToolChoice::Required));
    assert_eq!(req.extra["service_tier"], "flex");
    assert!(req.stream && req.include_usage);
    let text: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}text_basic.json")).unwrap())
            .unwrap();
    let req = ChatRequest::from_responses(&text).unwrap();
    assert_eq!(req.messages.len(), 3);
    assert_eq!(req.messages[1].role, Role::Assistant);
    assert!(
        matches!(&req.messages[1].content[0], Part::ToolCall { name, .. } if name == "get_capital")
    );
    assert_eq!(req.messages[2].role, Role::Tool);
}

/// A random but valid Responses request: every item kind, every modelled field.
fn random_request(rng: &mut Rng) -> Value {
    let mut input = Vec::new();
    let mut calls = 0;
    for _ in 0..1 + rng.below(6) {
        match rng.below(7) {
            0 => input.push(json!({"role": "user", "content": word(rng)})),
            1 => input.push(json!({
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": word(rng)},
                    {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
                ],
            })),
            2 => input.push(json!({
                "type": "message",
                "role": "assistant",
                "id": format!("msg_{}", rng.below(100)),
                "status": "completed",
                "content": if rng.below(4) == 0 {
                    json!([{"type": "refusal", "refusal": word(rng)}])
                } else {
                    json!([{"type": "output_text", "text": word(rng), "annotations": []}])
                },
            })),
            3 => {
                calls += 1;
                let id = format!("call_{calls}");
                input.push(json!({
                    "type": "function_call",
                    "call_id": id,
                    "name": "lookup",
                    "arguments": json!({"q": word(rng)}).to_string(),
                }));
                input.push(json!({
                    "type": "function_call_output",
                    "call_id": id,
                    "output": word(rng),
                }));
            }
            4 => input.push(json!({
                "type": "message",
                "role": "developer",
                "content": word(rng),
            })),
            5 if rng.below(2) == 0 => {
                input.push(json!({"role": "user", "content": word(rng)}));
                input.push(json!({"role": "assistant", "content": word(rng)}));
            }
            _ => input.push(json!({
                "type": "reasoning",
                "id": format!("rs_{}", rng.below(100)),
                "summary": [{"type": "summary_text", "text": word(rng)}],
                "encrypted_content": "gAAAA",
            })),
        }
    }
    let mut body = json!({"model": "gpt-5", "input": input});
    let m = body.as_object_mut().unwrap();
    if rng.below(2) == 0 {
        m.insert("instructions".into(), json!(word(rng)));
    }
    if rng.below(2) == 0 {
        m.insert(
            "tools".into(),
            json!([{
                "type": "function",
                "name": "lookup",
                "description": word(rng),
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                "strict": rng.below(2) == 0,
            }]),
        );
        let choice = match rng.below(4) {
            0 => json!("auto"),
            1 => json!("required"),
            2 => json!("none"),
            _ => json!({"type": "function", "name": "lookup"}),
        };
        m.insert("tool_choice".into(), choice);
        m.insert("parallel_tool_calls".into(), json!(rng.below(2) == 0));
    }
    if rng.below(2) == 0 {
        m.insert("max_output_tokens".into(), json!(3000 + rng.below(5000)));
    }
    if rng.below(2) == 0 {
        m.insert("temperature".into(), json!(0.5));
        m.insert("top_p".into(), json!(0.9));
    }
    if rng.below(2) == 0 {
        let effort = ["low", "medium", "high"][rng.below(3) as usize];
        m.insert(
            "reasoning".into(),
            json!({"effort": effort, "summary": "auto"}),
        );
    }
    if rng.below(2) == 0 {
        m.insert("metadata".into(), json!({"k": word(rng)}));
        m.insert("store".into(), json!(rng.below(2) == 0));
    }
    m.insert("stream".into(), json!(rng.below(2) == 0));
    body
}

#[test]
fn random_requests_round_trip_within_responses_and_across() {
    let mut rng = Rng(0x2e5_7075);
    for case in 0..400 {
        let body = random_request(&mut rng);
        // Within the dialect: the body as written.
        assert_eq!(r2r(&body), body, "case {case}");
        let req = ChatRequest::from_responses(&body).unwrap();
        let want = gist(&req);
        // Across: Chat and Anthropic carry the same conversation, and it comes back.
        let chat = req.clone().to_openai_for(REASONS).unwrap();
        let from_chat = ChatRequest::from_openai(&chat).unwrap();
        assert_eq!(gist(&from_chat), want, "case {case} via chat: {chat}");
        let back = from_chat.to_responses_for(REASONS).unwrap();
        assert_eq!(
            gist(&ChatRequest::from_responses(&back).unwrap()),
            want,
            "case {case} chat -> responses: {back}"
        );
        // Towards another dialect nothing is stored, and reasoning is not invented.
        assert_eq!(back["store"], false, "case {case}");
        let anthropic = req
            .clone()
            .to_anthropic_for(&AnthropicDefaults::default(), REASONS)
            .unwrap();
        let from_anthropic = ChatRequest::from_anthropic(&anthropic).unwrap();
        let mut got = gist(&from_anthropic);
        let mut want_a = want.clone();
        for v in [&mut got, &mut want_a] {
            v.retain(|l| !l.starts_with("max "));
        }
        // Anthropic merges consecutive turns of one role and hoists system text; compare
        // what was said, in order, per speaker.
        let said = |v: &[String], who: &str| -> Vec<String> {
            v.iter().filter(|l| l.starts_with(who)).cloned().collect()
        };
        for who in ["user", "assistant", "call", "result", "tool ", "choice"] {
            assert_eq!(
                said(&got, who),
                said(&want_a, who),
                "case {case} via anthropic {who}"
            );
        }
        // Encrypted reasoning never leaves OpenAI.
        assert!(!anthropic.to_string().contains("gAAAA"), "case {case}");
        assert!(!chat.to_string().contains("gAAAA"), "case {case}");
    }
}

#[test]
fn what_only_responses_can_do_is_refused_elsewhere() {
    let body = json!({
        "model": "gpt-5",
        "input": "hi",
        "previous_response_id": "resp_1",
    });
    let req = ChatRequest::from_responses(&body).unwrap();
    let e = req.check_responses_route(Dialect::Anthropic).unwrap_err();
    assert_eq!(e.param(), "previous_response_id");
    assert!(matches!(e, RequestError::Unsupported { .. }));
    assert_eq!(r2r(&body)["previous_response_id"], "resp_1");

    let schema = json!({
        "model": "gpt-5",
        "input": "hi",
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
    });
    let req = ChatRequest::from_responses(&schema).unwrap();
    assert_eq!(
        req.check_responses_route(Dialect::Anthropic)
            .unwrap_err()
            .param(),
        "text.format"
    );
    assert_eq!(r2r(&schema)["text"], schema["text"]);
    // A string input is one user message.
    assert_eq!(
        r2r(&schema)["input"],
        json!([{"role": "user", "content": "hi"}])
    );
    let bad = json!({"model": "m", "input": "hi", "text": {"format": {"type": "json_schema"}}});
    assert_eq!(
        ChatRequest::from_responses(&bad).unwrap_err().param(),
        "text.format.schema"
    );

    let hosted = json!({
        "model": "gpt-5",
        "input": [
            {"role": "user", "content": "search"},
            {"type": "web_search_call", "id": "ws_1", "status": "completed"},
        ],
        "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
    });
    assert_eq!(r2r(&hosted)["tools"], hosted["tools"]);
    assert_eq!(r2r(&hosted)["input"], hosted["input"]);
    let req = ChatRequest::from_responses(&hosted).unwrap();
    let e = req
        .to_anthropic_for(&AnthropicDefaults::default(), REASONS)
        .unwrap_err();
    assert!(matches!(e, RequestError::Unsupported { .. }), "{e}");

    // A Chat or Anthropic request with stop sequences or several choices cannot be sent.
    let chat =
        json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stop": ["x"]});
    let e = ChatRequest::from_openai(&chat)
        .unwrap()
        .to_responses()
        .unwrap_err();
    assert_eq!(e.param(), "stop");
    let chat = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "n": 2});
    let e = ChatRequest::from_openai(&chat)
        .unwrap()
        .to_responses()
        .unwrap_err();
    assert_eq!(e.param(), "n");
}

/// An Anthropic conversation with thinking, tools and an image reaches Responses with its
/// meaning, its thinking left out (Anthropic's signature means nothing to OpenAI).
#[test]
fn anthropic_requests_reach_responses() {
    let body = json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 2000,
        "system": "be brief",
        "thinking": {"type": "enabled", "budget_tokens": 1500},
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "found"},
            ]},
        ],
    });
    let req = ChatRequest::from_anthropic(&body).unwrap();
    let out = req.to_responses_for(REASONS).unwrap();
    assert_eq!(out["instructions"], "be brief");
    assert_eq!(out["max_output_tokens"], 2000);
    assert_eq!(
        out["reasoning"],
        json!({"effort": "low", "summary": "auto"})
    );
    assert_eq!(out["store"], false);
    assert_eq!(out["tools"][0]["strict"], false);
    let input = out["input"].as_array().unwrap();
    assert_eq!(
        input[0]["content"][1]["image_url"],
        "data:image/png;base64,AAAA"
    );
    assert_eq!(input[1]["type"], "function_call");
    assert_eq!(input[1]["call_id"], "toolu_1");
    assert_eq!(input[2]["type"], "function_call_output");
    assert_eq!(input[2]["output"], "found");
    assert!(!out.to_string().contains("sig"), "{out}");
    let back = ChatRequest::from_responses(&out).unwrap();
    assert_eq!(gist(&back), gist(&req));
}

/// A Chat client's structured output reaches a Responses upstream as `text.format`; what
/// Responses cannot do is refused, never dropped.
#[test]
fn chat_parameters_reach_responses() {
    let chat = json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}, "strict": true}},
        "metadata": {"k": "v"},
        "seed": 7,
    });
    let out = ChatRequest::from_openai(&chat)
        .unwrap()
        .to_responses()
        .unwrap();
    assert_eq!(
        out["text"],
        json!({"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}, "strict": true}})
    );
    assert_eq!(out["metadata"], json!({"k": "v"}));
    assert!(out.get("seed").is_none());
    for (key, v) in [
        ("logit_bias", json!({"50256": -100})),
        ("audio", json!({"voice": "alloy"})),
        ("functions", json!([])),
    ] {
        let mut body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
        body[key] = v;
        let e = ChatRequest::from_openai(&body)
            .unwrap()
            .to_responses()
            .unwrap_err();
        assert_eq!(e.param(), key);
    }
}
