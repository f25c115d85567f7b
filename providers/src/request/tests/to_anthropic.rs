//! OpenAI -> Anthropic: one test per mapping rule and refusal.

use serde_json::json;

use super::super::{AnthropicDefaults, ChatRequest, EffortBudgets, RequestError};
use super::{err_param, o2a, openai};
use crate::dialect::Dialect;

#[test]
fn system_and_developer_messages_are_hoisted() {
    let a = o2a(openai(json!([
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Late rule."},
        {"role": "assistant", "content": "Hello"},
    ])))
    .unwrap();
    assert_eq!(
        a["system"],
        json!([
            {"type": "text", "text": "Be brief."},
            {"type": "text", "text": "Use metric."},
            {"type": "text", "text": "Late rule."},
        ])
    );
    assert_eq!(
        a["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
        ])
    );
    let a = o2a(openai(json!([
        {"role": "system", "content": "Only one."},
        {"role": "user", "content": "Hi"},
    ])))
    .unwrap();
    assert_eq!(a["system"], json!("Only one."));
}

#[test]
fn images_data_url_and_http_url() {
    let a = o2a(openai(json!([{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]}])))
    .unwrap();
    assert_eq!(
        a["messages"][0]["content"],
        json!([
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ])
    );
    let bad = o2a(openai(json!([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.jpg"}},
    ]}])));
    assert_eq!(err_param(bad), "messages[0].content[0].image_url.url");
}

#[test]
fn tool_calls_become_tool_use_and_results_merge() {
    let a = o2a(openai(json!([
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
            {"id": "call.2", "type": "function", "function": {"name": "weather", "arguments": ""}},
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "call.2", "content": [{"type": "text", "text": "21C"}]},
        {"role": "user", "content": "Thanks"},
        {"role": "user", "content": "And tomorrow?"},
    ])))
    .unwrap();
    assert_eq!(
        a["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "weather", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "21C"},
                {"type": "text", "text": "Thanks"},
                {"type": "text", "text": "And tomorrow?"},
            ]},
        ])
    );
}

#[test]
fn invalid_tool_arguments_are_refused() {
    let call = |args: &str| {
        o2a(openai(json!([
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": args}},
            ]},
        ])))
    };
    let e = call("{\"city\":").unwrap_err();
    assert_eq!(e.param(), "messages[1].tool_calls[0].function.arguments");
    assert!(e.to_string().contains("not valid JSON"), "{e}");
    let e = call("[1,2]").unwrap_err();
    assert!(e.to_string().contains("must be a JSON object"), "{e}");
}

#[test]
fn empty_assistant_text_is_left_out() {
    let a = o2a(openai(json!([
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        ]},
    ])))
    .unwrap();
    assert_eq!(
        a["messages"][1]["content"],
        json!([{"type": "tool_use", "id": "c", "name": "f", "input": {}}])
    );
}

#[test]
fn tools_and_tool_choice() {
    let mut body = openai(json!([{"role": "user", "content": "x"}]));
    body["tools"] = json!([
        {"type": "function", "function": {"name": "f", "description": "does f", "parameters": {"type": "object", "properties": {"a": {"type": "string"}}}, "strict": true}},
        {"type": "function", "function": {"name": "g"}},
    ]);
    let a = o2a(body.clone()).unwrap();
    assert_eq!(
        a["tools"],
        json!([
            {"name": "f", "description": "does f", "input_schema": {"type": "object", "properties": {"a": {"type": "string"}}}},
            {"name": "g", "input_schema": {"type": "object", "properties": {}}},
        ])
    );
    assert!(a.get("tool_choice").is_none());
    for (choice, want) in [
        (json!("auto"), json!({"type": "auto"})),
        (json!("none"), json!({"type": "none"})),
        (json!("required"), json!({"type": "any"})),
        (
            json!({"type": "function", "function": {"name": "g"}}),
            json!({"type": "tool", "name": "g"}),
        ),
    ] {
        body["tool_choice"] = choice;
        assert_eq!(o2a(body.clone()).unwrap()["tool_choice"], want);
    }
    body["tool_choice"] = json!("required");
    body["parallel_tool_calls"] = json!(false);
    assert_eq!(
        o2a(body.clone()).unwrap()["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    body.as_object_mut().unwrap().remove("tool_choice");
    assert_eq!(
        o2a(body.clone()).unwrap()["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    body["tool_choice"] =
        json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": []}});
    assert_eq!(err_param(o2a(body.clone())), "tool_choice");
    // Kept for an OpenAI upstream.
    let same = ChatRequest::from_openai(&body)
        .unwrap()
        .to_openai()
        .unwrap();
    assert_eq!(same["tool_choice"], body["tool_choice"]);
    body["tool_choice"] = json!("auto");
    body["tools"][1] = json!({"type": "custom", "custom": {"name": "x"}});
    assert_eq!(err_param(o2a(body)), "tools[1]");
}

#[test]
fn stop_and_max_tokens() {
    let mut body = openai(json!([{"role": "user", "content": "x"}]));
    body["stop"] = json!("END");
    let a = o2a(body.clone()).unwrap();
    assert_eq!(a["stop_sequences"], json!(["END"]));
    assert_eq!(a["max_tokens"], json!(4096), "default cap");
    body["stop"] = json!(["A", "B"]);
    body["max_completion_tokens"] = json!(300);
    let a = o2a(body.clone()).unwrap();
    assert_eq!(a["stop_sequences"], json!(["A", "B"]));
    assert_eq!(a["max_tokens"], json!(300));
    body["max_tokens"] = json!(200);
    assert_eq!(err_param(o2a(body.clone())), "max_tokens");
    body.as_object_mut()
        .unwrap()
        .remove("max_completion_tokens");
    assert_eq!(o2a(body).unwrap()["max_tokens"], json!(200));
}

#[test]
fn temperature_above_one_is_refused() {
    let mut body = openai(json!([{"role": "user", "content": "x"}]));
    body["temperature"] = json!(0.7);
    body["top_p"] = json!(0.9);
    let a = o2a(body.clone()).unwrap();
    assert_eq!(
        (a["temperature"].clone(), a["top_p"].clone()),
        (json!(0.7), json!(0.9))
    );
    body["temperature"] = json!(1.5);
    let e = ChatRequest::from_openai(&body)
        .unwrap()
        .to_anthropic(&AnthropicDefaults::default())
        .unwrap_err();
    assert!(matches!(
        &e,
        RequestError::Unsupported {
            target: Dialect::Anthropic,
            ..
        }
    ));
    assert_eq!(e.param(), "temperature");
    assert!(e.to_string().contains("1.5"), "{e}");
}

#[test]
fn reasoning_effort_becomes_a_thinking_budget() {
    let mut body = openai(json!([{"role": "user", "content": "x"}]));
    body["reasoning_effort"] = json!("medium");
    let a = o2a(body.clone()).unwrap();
    assert_eq!(
        a["thinking"],
        json!({"type": "enabled", "budget_tokens": 8192})
    );
    assert_eq!(
        a["max_tokens"],
        json!(4096 + 8192),
        "room for budget and answer"
    );
    // The client's cap wins: the budget shrinks to half of it.
    body["reasoning_effort"] = json!("high");
    body["max_completion_tokens"] = json!(4000);
    let a = o2a(body.clone()).unwrap();
    assert_eq!(a["thinking"]["budget_tokens"], json!(2000));
    assert_eq!(a["max_tokens"], json!(4000));
    body["max_completion_tokens"] = json!(20000);
    assert_eq!(
        o2a(body.clone()).unwrap()["thinking"]["budget_tokens"],
        json!(16384)
    );
    body["max_completion_tokens"] = json!(1000);
    assert_eq!(err_param(o2a(body.clone())), "max_completion_tokens");
    body["reasoning_effort"] = json!("none");
    assert!(o2a(body.clone()).unwrap().get("thinking").is_none());
    body["reasoning_effort"] = json!("extreme");
    assert_eq!(err_param(o2a(body.clone())), "reasoning_effort");
    // Custom table.
    body["reasoning_effort"] = json!("low");
    body.as_object_mut()
        .unwrap()
        .remove("max_completion_tokens");
    let d = AnthropicDefaults {
        default_max_tokens: 1000,
        budgets: EffortBudgets {
            low: 3000,
            ..EffortBudgets::default()
        },
    };
    let a = ChatRequest::from_openai(&body)
        .unwrap()
        .to_anthropic_for(&d, super::REASONS)
        .unwrap();
    assert_eq!(a["thinking"]["budget_tokens"], json!(3000));
    assert_eq!(a["max_tokens"], json!(4000));
}

#[test]
fn stream_user_and_n() {
    let mut body = openai(json!([{"role": "user", "content": "x"}]));
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    body["user"] = json!("u-42");
    body["n"] = json!(1);
    let a = o2a(body.clone()).unwrap();
    assert_eq!(a["stream"], json!(true));
    assert!(a.get("stream_options").is_none());
    assert_eq!(a["metadata"], json!({"user_id": "u-42"}));
    assert!(a.get("n").is_none());
    body["n"] = json!(2);
    assert_eq!(err_param(o2a(body)), "n");
}

#[test]
fn openai_only_parameters_dropped_or_refused() {
    let base = openai(json!([{"role": "user", "content": "x"}]));
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        b[k] = v;
        o2a(b)
    };
    for (k, v) in [
        ("seed", json!(7)),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(0.5)),
        ("logprobs", json!(false)),
        ("top_logprobs", json!(3)),
        ("logit_bias", json!({})),
        ("response_format", json!({"type": "text"})),
        ("service_tier", json!("auto")),
        ("store", json!(true)),
        ("modalities", json!(["text"])),
        ("some_future_field", json!(1)),
    ] {
        let a = with(k, v).unwrap();
        assert!(a.get(k).is_none(), "{k} should be dropped");
    }
    for (k, v) in [
        ("response_format", json!({"type": "json_object"})),
        (
            "response_format",
            json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}),
        ),
        ("logprobs", json!(true)),
        ("logit_bias", json!({"1234": -100})),
        ("modalities", json!(["text", "audio"])),
        ("audio", json!({"voice": "alloy", "format": "wav"})),
        ("web_search_options", json!({})),
        ("functions", json!([{"name": "f"}])),
    ] {
        let e = ChatRequest::from_openai(&{
            let mut b = base.clone();
            b[k] = v;
            b
        })
        .unwrap()
        .to_anthropic(&AnthropicDefaults::default())
        .unwrap_err();
        assert_eq!(e.param(), k);
        assert_eq!(
            crate::Dialect::OpenAi.wire().error_body(&e.report())["error"]["param"],
            json!(k)
        );
    }
}

#[test]
fn unsupported_content_parts_are_refused_with_their_path() {
    let body = openai(json!([
        {"role": "system", "content": "s"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [
            {"type": "text", "text": "listen"},
            {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
        ]},
    ]));
    assert_eq!(err_param(o2a(body)), "messages[3].content[1]");
}

#[test]
fn empty_tool_result_has_no_content() {
    let a = o2a(openai(json!([
        {"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "c", "content": ""},
    ])))
    .unwrap();
    assert_eq!(
        a["messages"][2],
        json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c"}]})
    );
}
