//! Anthropic -> OpenAI: one test per mapping rule and refusal.

use serde_json::json;

use super::super::{AnthropicDefaults, ChatRequest, Part, Role};
use super::{a2o, anthropic, err_param};

#[test]
fn system_becomes_a_leading_system_message() {
    let mut body = anthropic(json!([{"role": "user", "content": "Hi"}]));
    body["system"] = json!("Be brief.");
    let o = a2o(body.clone()).unwrap();
    assert_eq!(
        o["messages"],
        json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ])
    );
    body["system"] = json!([
        {"type": "text", "text": "Be brief."},
        {"type": "text", "text": "Long cached context", "cache_control": {"type": "ephemeral"}},
    ]);
    let o = a2o(body.clone()).unwrap();
    assert_eq!(
        o["messages"][0],
        json!({"role": "system", "content": [
            {"type": "text", "text": "Be brief."},
            {"type": "text", "text": "Long cached context"},
        ]})
    );
    // cache_control survives a same-dialect trip.
    let same = ChatRequest::from_anthropic(&body)
        .unwrap()
        .to_anthropic(&AnthropicDefaults::default())
        .unwrap();
    assert_eq!(same["system"], body["system"]);
}

#[test]
fn images_become_image_url_parts() {
    let o = a2o(anthropic(json!([{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
        {"type": "text", "text": "Compare."},
    ]}])))
    .unwrap();
    assert_eq!(
        o["messages"][0]["content"],
        json!([
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {"type": "text", "text": "Compare."},
        ])
    );
    let file = a2o(anthropic(json!([{"role": "user", "content": [
        {"type": "text", "text": "see"},
        {"type": "image", "source": {"type": "file", "file_id": "file_1"}},
    ]}])));
    assert_eq!(err_param(file), "messages[0].content[1]");
}

#[test]
fn tool_use_and_tool_results() {
    let o = a2o(anthropic(json!([
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Let me check.", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
             "content": [{"type": "text", "text": "timeout"}]},
            {"type": "text", "text": "Summarize."},
        ]},
    ])))
    .unwrap();
    assert_eq!(
        o["messages"],
        json!([
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "toolu_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "toolu_2", "content": "timeout"},
            {"role": "user", "content": "Summarize."},
        ])
    );
}

#[test]
fn split_user_message_keeps_client_paths() {
    let body = anthropic(json!([
        {"role": "user", "content": "Go"},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "shot", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "here"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
            ]},
            {"type": "text", "text": "and"},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}},
        ]},
    ]));
    let req = ChatRequest::from_anthropic(&body).unwrap();
    let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::User]);
    assert!(matches!(req.messages[3].content[1], Part::Native { .. }));
    assert_eq!(
        err_param(req.to_openai()),
        "messages[2].content[0].content[1]"
    );
    let mut body = body;
    body["messages"][2]["content"][0]["content"] = json!("ok");
    assert_eq!(err_param(a2o(body)), "messages[2].content[2]");
}

#[test]
fn thinking_only_assistant_turn_is_dropped() {
    let o = a2o(anthropic(json!([
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "xyz"}]},
        {"role": "user", "content": "b"},
    ])))
    .unwrap();
    assert_eq!(
        o["messages"],
        json!([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    );
}

#[test]
fn tools_tool_choice_and_parallel() {
    let mut body = anthropic(json!([{"role": "user", "content": "x"}]));
    body["tools"] = json!([{
        "name": "f", "description": "does f",
        "input_schema": {"type": "object", "properties": {}},
        "cache_control": {"type": "ephemeral"},
    }]);
    body["tool_choice"] = json!({"type": "any", "disable_parallel_tool_use": true});
    let o = a2o(body.clone()).unwrap();
    assert_eq!(
        o["tools"],
        json!([{"type": "function", "function": {
            "name": "f", "description": "does f", "parameters": {"type": "object", "properties": {}},
        }}])
    );
    assert_eq!(o["tool_choice"], json!("required"));
    assert_eq!(o["parallel_tool_calls"], json!(false));
    for (choice, want) in [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "none"}), json!("none")),
        (
            json!({"type": "tool", "name": "f"}),
            json!({"type": "function", "function": {"name": "f"}}),
        ),
    ] {
        body["tool_choice"] = choice;
        let o = a2o(body.clone()).unwrap();
        assert_eq!(o["tool_choice"], want);
        assert!(o.get("parallel_tool_calls").is_none());
    }
    body["tools"] = json!([{"type": "web_search_20250305", "name": "web_search"}]);
    assert_eq!(err_param(a2o(body)), "tools[0]");
}

#[test]
fn sampling_limits_stream_and_user() {
    let mut body = anthropic(json!([{"role": "user", "content": "x"}]));
    body["stop_sequences"] = json!(["END"]);
    body["temperature"] = json!(0.3);
    body["top_p"] = json!(0.9);
    body["top_k"] = json!(40);
    body["stream"] = json!(true);
    body["metadata"] = json!({"user_id": "u-1"});
    body["service_tier"] = json!("auto");
    let o = a2o(body).unwrap();
    assert_eq!(
        o,
        json!({
            "model": "claude-sonnet-4-5",
            "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 1000,
            "temperature": 0.3,
            "top_p": 0.9,
            "stop": ["END"],
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "u-1",
        })
    );
}

#[test]
fn thinking_budget_becomes_effort() {
    let mut body = anthropic(json!([{"role": "user", "content": "x"}]));
    body["max_tokens"] = json!(64000);
    for (budget, effort) in [
        (1024, "low"),
        (2048, "low"),
        (5000, "medium"),
        (32000, "high"),
    ] {
        body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
        assert_eq!(
            a2o(body.clone()).unwrap()["reasoning_effort"],
            json!(effort)
        );
    }
    body["thinking"] = json!({"type": "disabled"});
    assert!(a2o(body.clone()).unwrap().get("reasoning_effort").is_none());
    body["thinking"] = json!({"type": "adaptive"});
    assert!(a2o(body.clone()).unwrap().get("reasoning_effort").is_none());
    // Same dialect: kept as sent.
    let same = ChatRequest::from_anthropic(&body)
        .unwrap()
        .to_anthropic(&AnthropicDefaults::default())
        .unwrap();
    assert_eq!(same["thinking"], json!({"type": "adaptive"}));
    // A budget not below max_tokens is the client's error.
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 64000});
    let e = ChatRequest::from_anthropic(&body)
        .unwrap()
        .to_anthropic(&AnthropicDefaults::default())
        .unwrap_err();
    assert_eq!(e.param(), "thinking.budget_tokens");
}

#[test]
fn anthropic_only_parameters_dropped_or_refused() {
    let mut body = anthropic(json!([{"role": "user", "content": "x"}]));
    body["context_management"] = json!({"edits": []});
    body["something_new"] = json!(true);
    let o = a2o(body.clone()).unwrap();
    assert!(o.get("context_management").is_none() && o.get("something_new").is_none());
    for k in ["container", "mcp_servers", "output_format"] {
        let mut b = body.clone();
        b[k] = json!({});
        let e = ChatRequest::from_anthropic(&b)
            .unwrap()
            .to_openai()
            .unwrap_err();
        assert_eq!(e.param(), k);
        let err = crate::Dialect::Anthropic.wire().error_body(&e.report());
        assert_eq!(err["error"]["type"], json!("invalid_request_error"));
    }
}

#[test]
fn malformed_bodies_name_the_field() {
    assert_eq!(err_param(a2o(json!({"messages": []}))), "model");
    assert_eq!(
        err_param(a2o(anthropic(json!([{"role": "critic", "content": "x"}])))),
        "messages[0].role"
    );
    assert_eq!(
        err_param(a2o(anthropic(json!([{"role": "user", "content": 5}])))),
        "messages[0].content"
    );
    let e = ChatRequest::from_openai(&json!([1])).unwrap_err();
    assert_eq!(e.param(), "");
}

#[test]
fn block_cache_control_kept_same_dialect_dropped_cross() {
    let body = anthropic(json!([{"role": "user", "content": [
        {"type": "text", "text": "big doc", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "question"},
    ]}]));
    let req = ChatRequest::from_anthropic(&body).unwrap();
    let same = req.to_anthropic(&AnthropicDefaults::default()).unwrap();
    assert_eq!(same["messages"], body["messages"]);
    assert_eq!(
        req.to_openai().unwrap()["messages"][0]["content"],
        json!([{"type": "text", "text": "big doc"}, {"type": "text", "text": "question"}])
    );
}
