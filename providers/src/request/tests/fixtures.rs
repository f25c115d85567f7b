//! Every fixture request converts to the other dialect and back with its messages, tools
//! and system prompt intact, and to its own dialect unchanged.

use std::path::PathBuf;

use serde_json::{Value, json};

use super::super::{AnthropicDefaults, ChatRequest, Part, Role, Tool};

fn load(dir: &str) -> Vec<(String, Value)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(dir);
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            out.push((name, serde_json::from_str(&text).unwrap()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(!out.is_empty(), "no fixtures in {}", root.display());
    out
}

/// What must survive a trip through the other dialect: system texts, messages with
/// consecutive same-role turns merged (reasoning and extras left out), tools.
fn essence(r: &ChatRequest) -> Value {
    let mut system: Vec<String> = r.system.iter().map(|p| p.text.clone()).collect();
    let mut messages: Vec<(Role, Vec<Value>)> = Vec::new();
    for m in &r.messages {
        let parts: Vec<Value> = m
            .content
            .iter()
            .filter_map(|p| match p {
                Part::Text { text, .. } if text.is_empty() => None,
                Part::Text { text, .. } => Some(json!({"text": text})),
                Part::Image { source, .. } => Some(json!({"image": source})),
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                    ..
                } => {
                    let args: Value = serde_json::from_str(arguments).unwrap();
                    Some(json!({"call": [id, name, args]}))
                }
                Part::ToolResult {
                    call_id, content, ..
                } => Some(json!({"result": [call_id, content.len()]})),
                Part::Reasoning { .. } | Part::RedactedReasoning { .. } => None,
                Part::Native { raw, .. } => Some(raw.clone()),
            })
            .collect();
        if matches!(m.role, Role::System | Role::Developer) {
            system.extend(
                parts
                    .iter()
                    .filter_map(|p| p["text"].as_str().map(String::from)),
            );
            continue;
        }
        match messages.last_mut() {
            Some((role, have)) if *role == m.role => have.extend(parts),
            _ if parts.is_empty() => {}
            _ => messages.push((m.role, parts)),
        }
    }
    let tools: Vec<Value> = r
        .tools
        .iter()
        .map(|t| match t {
            Tool::Function(f) => json!([f.name, f.description, f.parameters]),
            Tool::Native { raw, .. } => raw.clone(),
        })
        .collect();
    json!({"system": system, "messages": messages, "tools": tools})
}

/// Fixtures refused by the other dialect, and the parameter named.
const REFUSED: &[(&str, &str)] = &[
    ("openai_chat/finish_length", "response_format"),
    ("openai_chat/json_object_long", "response_format"),
    ("openai_chat/n3_multiple_choices", "n"),
    ("openai_chat/refusal", "response_format"),
    ("openai_chat/logprobs", "logprobs"),
    ("anthropic/pause_turn_web_search_long", "tools[0]"),
];

fn refused(name: &str) -> Option<&'static str> {
    REFUSED.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

#[test]
fn openai_fixtures_same_dialect_unchanged() {
    for (name, body) in load("openai_chat") {
        let req = ChatRequest::from_openai(&body).unwrap();
        assert_eq!(req.to_openai().unwrap(), body, "{name}");
    }
}

#[test]
fn anthropic_fixtures_same_dialect_unchanged() {
    for (name, body) in load("anthropic") {
        let req = ChatRequest::from_anthropic(&body).unwrap();
        let out = req.to_anthropic(&AnthropicDefaults::default()).unwrap();
        assert_eq!(out, body, "{name}");
    }
}

#[test]
fn openai_fixtures_round_trip_through_anthropic() {
    let d = AnthropicDefaults::default();
    for (name, body) in load("openai_chat") {
        let name = format!("openai_chat/{name}");
        let req = ChatRequest::from_openai(&body).unwrap();
        let there = req.to_anthropic(&d);
        if let Some(param) = refused(&name) {
            assert_eq!(there.unwrap_err().param(), param, "{name}");
            continue;
        }
        let there = there.unwrap();
        let back = ChatRequest::from_anthropic(&there).unwrap();
        assert_eq!(essence(&back), essence(&req), "{name}");
        // And the OpenAI body written from it reads back the same.
        let again = ChatRequest::from_openai(&back.to_openai().unwrap()).unwrap();
        assert_eq!(essence(&again), essence(&req), "{name}");
        assert_eq!(again.stream, req.stream, "{name}");
        assert_eq!(again.tool_choice, req.tool_choice, "{name}");
        // Anthropic requires a cap: the default fills in.
        let cap = req.max_tokens.or(Some(d.default_max_tokens));
        assert_eq!(again.max_tokens, cap, "{name}");
    }
}

#[test]
fn anthropic_fixtures_round_trip_through_openai() {
    let d = AnthropicDefaults::default();
    for (name, body) in load("anthropic") {
        let name = format!("anthropic/{name}");
        let req = ChatRequest::from_anthropic(&body).unwrap();
        let there = req.to_openai();
        if let Some(param) = refused(&name) {
            assert_eq!(there.unwrap_err().param(), param, "{name}");
            continue;
        }
        let there = there.unwrap();
        let back = ChatRequest::from_openai(&there).unwrap();
        assert_eq!(essence(&back), essence(&req), "{name}");
        let again = ChatRequest::from_anthropic(&back.to_anthropic(&d).unwrap()).unwrap();
        assert_eq!(essence(&again), essence(&req), "{name}");
        assert_eq!(again.max_tokens, req.max_tokens, "{name}");
        assert_eq!(again.stop, req.stop, "{name}");
        assert_eq!(again.temperature, req.temperature, "{name}");
        assert_eq!(again.reasoning.is_some(), req.reasoning.is_some(), "{name}");
    }
}
