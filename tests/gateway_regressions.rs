//! The gateway through real sockets, one test per known pitfall: finish reasons and blocks
//! across dialects, tool-call indices, usage, headers and keys per provider dialect, errors in
//! the door's dialect with their status, and letting go of the upstream when the client leaves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "common/gateway.rs"]
mod gw;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use futures_util::StreamExt;
use gw::{body_bytes, chat_body, json_of};
use providers::Dialect;
use serde_json::{Value, json};

/// The JSON data of every frame of an SSE body, with its `event:` name.
fn frames(body: &[u8]) -> Vec<(Option<String>, Value)> {
    let text = String::from_utf8_lossy(body).replace("\r\n", "\n");
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = Some(v.trim().to_owned());
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            }
        }
        if !data.is_empty() && data != "[DONE]" {
            out.push((event, serde_json::from_str(&data).unwrap()));
        }
    }
    out
}

async fn stream_frames(
    h: &gw::Harness,
    door: Dialect,
    headers: &[(&str, &str)],
    body: &Value,
) -> Vec<(Option<String>, Value)> {
    let response = h.chat(door, headers, body).await;
    assert_eq!(response.status(), 200);
    frames(&body_bytes(response).await)
}

fn stop_reason(frames: &[(Option<String>, Value)]) -> Option<String> {
    frames
        .iter()
        .rev()
        .filter(|(_, v)| v["type"] == "message_delta")
        .find_map(|(_, v)| v["delta"]["stop_reason"].as_str().map(str::to_owned))
}

/// An OpenAI-compatible stream: text, then a tool call, finish `stop` (some servers do).
const MIXED_STOP: &str = concat!(
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Checking.\",\"tool_calls\":[]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"q\\\": 1}\"}}]},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: [DONE]\n\n",
);

/// An OpenAI-compatible reasoning stream (`reasoning_content`, DeepSeek style) then text.
const REASONING_THEN_TEXT: &str = concat!(
    "data: {\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"reasoning_content\":\"Think \"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"reasoning_content\":\"hard.\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"First\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" answer.\"},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":5,\"total_tokens\":14}}\n\n",
    "data: [DONE]\n\n",
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_door_says_tool_use_after_mixed_text_and_tool_calls() {
    let h = gw::start().await;
    h.replay
        .insert_fixture(Dialect::OpenAi, "mixed_stop", MIXED_STOP.as_bytes());
    for model in [
        "openai/text_then_tool_calls_empty_array",
        "openai/mixed_stop",
    ] {
        let f = stream_frames(
            &h,
            Dialect::Anthropic,
            &[],
            &chat_body(Dialect::Anthropic, model, true),
        )
        .await;
        assert_eq!(
            stop_reason(&f).as_deref(),
            Some("tool_use"),
            "{model} streaming"
        );
        let r = h
            .chat(
                Dialect::Anthropic,
                &[],
                &chat_body(Dialect::Anthropic, model, false),
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(json_of(r).await["stop_reason"], "tool_use", "{model} whole");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_call_keeps_its_arguments_when_content_comes_with_empty_tool_calls() {
    let h = gw::start().await;
    let model = "openai/text_then_tool_calls_empty_array";
    let want = [
        ("get_weather", json!({"city": "Paris", "unit": "celsius"})),
        ("get_time", json!({"tz": "Europe/Paris"})),
    ];
    // Anthropic door, streaming: the input_json_delta fragments of each block add up.
    let f = stream_frames(
        &h,
        Dialect::Anthropic,
        &[],
        &chat_body(Dialect::Anthropic, model, true),
    )
    .await;
    let mut calls: Vec<(String, u64, String)> = Vec::new();
    for (_, v) in &f {
        if v["type"] == "content_block_start" && v["content_block"]["type"] == "tool_use" {
            calls.push((
                v["content_block"]["name"].as_str().unwrap().to_owned(),
                v["index"].as_u64().unwrap(),
                String::new(),
            ));
        }
        if v["delta"]["type"] == "input_json_delta" {
            let i = v["index"].as_u64().unwrap();
            let call = calls.iter_mut().find(|c| c.1 == i).unwrap();
            call.2
                .push_str(v["delta"]["partial_json"].as_str().unwrap());
        }
    }
    assert_eq!(calls.len(), 2, "{calls:?}");
    for ((name, _, args), (want_name, want_args)) in calls.iter().zip(&want) {
        assert_eq!(name, want_name);
        assert_eq!(&serde_json::from_str::<Value>(args).unwrap(), want_args);
    }
    // Both doors, not streaming.
    let r = h
        .chat(
            Dialect::Anthropic,
            &[],
            &chat_body(Dialect::Anthropic, model, false),
        )
        .await;
    let body = json_of(r).await;
    let uses: Vec<&Value> = body["content"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "tool_use")
        .collect();
    assert_eq!(uses.len(), 2);
    for (b, (name, args)) in uses.iter().zip(&want) {
        assert_eq!(b["name"], *name);
        assert_eq!(&b["input"], args);
    }
    let r = h
        .chat(
            Dialect::OpenAi,
            &[],
            &chat_body(Dialect::OpenAi, model, false),
        )
        .await;
    let body = json_of(r).await;
    let msg = &body["choices"][0]["message"];
    assert_eq!(msg["content"], "Let me check the weather and the time.");
    let tcs = msg["tool_calls"].as_array().unwrap();
    assert_eq!(tcs.len(), 2);
    for (c, (name, args)) in tcs.iter().zip(&want) {
        assert_eq!(c["function"]["name"], *name);
        let got: Value =
            serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(&got, args);
    }
}

/// (block type at each index) and the text of every delta, in order, for an Anthropic body.
fn check_anthropic_blocks(f: &[(Option<String>, Value)], want_thinking: &str, want_text: &str) {
    let mut open: Option<String> = None;
    let mut thinking = String::new();
    let mut text = String::new();
    let mut kinds = Vec::new();
    for (_, v) in f {
        match v["type"].as_str().unwrap_or_default() {
            "content_block_start" => {
                assert!(open.is_none(), "block opened while another is open: {v}");
                let kind = v["content_block"]["type"].as_str().unwrap().to_owned();
                kinds.push(kind.clone());
                open = Some(kind);
            }
            "content_block_delta" => {
                let kind = open.as_deref().expect("delta outside a block");
                match v["delta"]["type"].as_str().unwrap() {
                    "thinking_delta" => {
                        assert_eq!(kind, "thinking", "thinking outside a thinking block");
                        thinking.push_str(v["delta"]["thinking"].as_str().unwrap());
                    }
                    "text_delta" => {
                        assert_eq!(kind, "text", "text outside a text block");
                        text.push_str(v["delta"]["text"].as_str().unwrap());
                    }
                    "signature_delta" => assert_eq!(kind, "thinking"),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => open = None,
            _ => {}
        }
    }
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("thinking"),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|k| k == "text"), "{kinds:?}");
    assert_eq!(thinking, want_thinking);
    assert_eq!(text, want_text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_then_text_keeps_the_first_text_delta_and_thinking_stays_in_thinking_blocks() {
    let h = gw::start().await;
    h.replay.insert_fixture(
        Dialect::OpenAi,
        "reasoning_then_text",
        REASONING_THEN_TEXT.as_bytes(),
    );
    let f = stream_frames(
        &h,
        Dialect::Anthropic,
        &[],
        &chat_body(Dialect::Anthropic, "openai/reasoning_then_text", true),
    )
    .await;
    check_anthropic_blocks(&f, "Think hard.", "First answer.");
    // An Anthropic recording with thinking, same door.
    let fixture = streamgate::replay::fixture(Dialect::Anthropic, "thinking_short").unwrap();
    let (events, _) = providers::StreamDecoder::decode_all(Dialect::Anthropic, fixture);
    let m = providers::Assembler::assemble(&events);
    let f = stream_frames(
        &h,
        Dialect::Anthropic,
        &[],
        &chat_body(Dialect::Anthropic, "anthropic/thinking_short", true),
    )
    .await;
    check_anthropic_blocks(&f, &m.reasoning(), &m.text());
    // At the OpenAI door, reasoning travels as reasoning_content, never as content.
    let f = stream_frames(
        &h,
        Dialect::OpenAi,
        &[],
        &chat_body(Dialect::OpenAi, "anthropic/thinking_short", true),
    )
    .await;
    let content: String = f
        .iter()
        .filter_map(|(_, v)| v["choices"][0]["delta"]["content"].as_str())
        .collect();
    let reasoning: String = f
        .iter()
        .filter_map(|(_, v)| v["choices"][0]["delta"]["reasoning_content"].as_str())
        .collect();
    assert_eq!(content, m.text());
    assert_eq!(reasoning, m.reasoning());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_start_carries_usage_with_input_tokens() {
    let h = gw::start().await;
    for (model, want_input) in [
        ("anthropic/text_basic", None),
        ("openai/text_basic", Some(())),
    ] {
        let f = stream_frames(
            &h,
            Dialect::Anthropic,
            &[],
            &chat_body(Dialect::Anthropic, model, true),
        )
        .await;
        let (_, start) = f
            .iter()
            .find(|(_, v)| v["type"] == "message_start")
            .expect("message_start");
        let usage = &start["message"]["usage"];
        assert!(usage["input_tokens"].is_u64(), "{model}: {usage}");
        assert!(usage["output_tokens"].is_u64(), "{model}: {usage}");
        if want_input.is_some() {
            // OpenAI reports usage only at the end: the gateway's estimate fills the start.
            assert!(
                usage["input_tokens"].as_u64().unwrap() > 0,
                "{model}: {usage}"
            );
        } else {
            // The Anthropic recording's own count reaches the client at once.
            let fixture = streamgate::replay::fixture(Dialect::Anthropic, "text_basic").unwrap();
            let (_, first) = frames(fixture)
                .into_iter()
                .find(|(_, v)| v["type"] == "message_start")
                .unwrap();
            assert_eq!(
                usage["input_tokens"],
                first["message"]["usage"]["input_tokens"]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_door_tool_calls_always_carry_index() {
    let h = gw::start().await;
    for model in [
        "anthropic/tool_use_parallel_3",
        "openai/tool_calls_parallel",
        "openai/text_then_tool_calls_empty_array",
    ] {
        let f = stream_frames(
            &h,
            Dialect::OpenAi,
            &[],
            &chat_body(Dialect::OpenAi, model, true),
        )
        .await;
        let mut seen = 0;
        for (_, v) in &f {
            for tc in v["choices"][0]["delta"]["tool_calls"]
                .as_array()
                .into_iter()
                .flatten()
            {
                assert!(
                    tc["index"].is_u64(),
                    "{model}: tool call without index: {tc}"
                );
                seen += 1;
            }
        }
        assert!(seen > 0, "{model}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_usage_chunk_iff_include_usage() {
    let h = gw::start().await;
    for model in ["anthropic/text_basic", "openai/text_basic"] {
        for include in [Some(true), Some(false), None] {
            let mut body = chat_body(Dialect::OpenAi, model, true);
            match include {
                Some(v) => body["stream_options"] = json!({"include_usage": v}),
                None => {
                    body.as_object_mut().unwrap().remove("stream_options");
                }
            }
            let f = stream_frames(&h, Dialect::OpenAi, &[], &body).await;
            let usage_chunks = f.iter().filter(|(_, v)| v["usage"].is_object()).count();
            let want = usize::from(include == Some(true));
            assert_eq!(usage_chunks, want, "{model} include_usage={include:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_beta_reaches_anthropic_upstreams_only() {
    let h = gw::start().await;
    let beta = [("anthropic-beta", "fine-grained-tool-streaming-2025-05-14")];
    for door in Dialect::ALL {
        for model in ["anthropic/text_basic", "openai/text_basic"] {
            let r = h.chat(door, &beta, &chat_body(door, model, true)).await;
            assert_eq!(r.status(), 200);
            body_bytes(r).await;
            let rec = h.replay.requests().pop().unwrap();
            let got = rec.header("anthropic-beta");
            if rec.path == "/v1/messages" {
                assert_eq!(got, Some(beta[0].1), "{door} door -> {model}");
                assert_eq!(rec.header("anthropic-version"), Some("2023-06-01"));
            } else {
                assert_eq!(got, None, "{door} door -> {model}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keys_pass_through_only_when_allowed_and_only_within_a_dialect() {
    let h = gw::start_with(|c| {
        for p in c.providers.values_mut() {
            p.pass_through_client_key = true;
        }
    })
    .await;
    let auth = [("authorization", "Bearer sk-client-openai-123")];
    let r = h
        .chat(
            Dialect::OpenAi,
            &auth,
            &chat_body(Dialect::OpenAi, "openai/text_basic", true),
        )
        .await;
    body_bytes(r).await;
    let rec = h.replay.requests().pop().unwrap();
    assert_eq!(
        rec.header("authorization"),
        Some("Bearer sk-client-openai-123")
    );
    let r = h
        .chat(
            Dialect::OpenAi,
            &auth,
            &chat_body(Dialect::OpenAi, "anthropic/text_basic", true),
        )
        .await;
    body_bytes(r).await;
    let rec = h.replay.requests().pop().unwrap();
    assert_eq!(rec.path, "/v1/messages");
    for (name, value) in &rec.headers {
        assert!(
            !value
                .to_str()
                .unwrap_or_default()
                .contains("sk-client-openai-123"),
            "the OpenAI key reached Anthropic in {name}"
        );
    }
    // Anthropic door key to an Anthropic upstream.
    let r = h
        .chat(
            Dialect::Anthropic,
            &[("x-api-key", "sk-ant-client-9")],
            &chat_body(Dialect::Anthropic, "anthropic/text_basic", true),
        )
        .await;
    body_bytes(r).await;
    assert_eq!(
        h.replay.requests().pop().unwrap().header("x-api-key"),
        Some("sk-ant-client-9")
    );

    // By default (no pass-through) the client's key is not forwarded.
    let h = gw::start().await;
    let r = h
        .chat(
            Dialect::OpenAi,
            &auth,
            &chat_body(Dialect::OpenAi, "openai/text_basic", true),
        )
        .await;
    body_bytes(r).await;
    let rec = h.replay.requests().pop().unwrap();
    assert_eq!(rec.header("authorization"), None);
}

/// The configured key variable is read from the gateway's environment: a real `streamgate
/// serve` process gets unique variables (tests cannot set variables in their own process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_env_var_keys_are_sent_in_each_dialects_header() {
    let replay = streamgate::replay::spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let pid = std::process::id();
    let (oa_var, an_var) = (
        format!("SG_TEST_OA_KEY_{pid}"),
        format!("SG_TEST_AN_KEY_{pid}"),
    );
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [providers.openai]\ndialect = \"openai\"\nbase_url = \"{url}/v1\"\napi_key_env = \"{oa_var}\"\n\
         [providers.anthropic]\ndialect = \"anthropic\"\nbase_url = \"{url}\"\napi_key_env = \"{an_var}\"\n\
         [streams.journal]\nenabled = false\n",
        url = replay.url()
    );
    let path = std::env::temp_dir().join(format!("streamgate-keys-{pid}.toml"));
    std::fs::write(&path, config).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env(&oa_var, "sk-env-openai-777")
        .env(&an_var, "sk-env-anthropic-888")
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("addr=").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            }
        }
    });
    let addr = rx.recv_timeout(gw::BOUND);
    let result = async {
        let addr = addr.expect("the gateway did not say where it listens");
        let client = gw::client();
        for (path, body, extra) in [
            (
                "/v1/chat/completions",
                chat_body(Dialect::OpenAi, "openai/text_basic", true),
                None,
            ),
            (
                "/v1/messages",
                chat_body(Dialect::Anthropic, "anthropic/text_basic", true),
                Some("2023-06-01"),
            ),
        ] {
            let mut req = client
                .post(format!("http://{addr}{path}"))
                .header("content-type", "application/json")
                .body(serde_json::to_vec(&body).unwrap());
            if let Some(v) = extra {
                req = req.header("anthropic-version", v);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            body_bytes(r).await;
        }
        let recs = replay.requests();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            recs[0].header("authorization"),
            Some("Bearer sk-env-openai-777")
        );
        assert_eq!(recs[0].header("x-api-key"), None);
        assert_eq!(recs[1].header("x-api-key"), Some("sk-env-anthropic-888"));
        assert_eq!(recs[1].header("authorization"), None);
    };
    let outcome = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

fn assert_error_shape(door: Dialect, body: &Value) {
    match door {
        Dialect::OpenAi | Dialect::OpenAiResponses => {
            assert!(body["error"]["message"].is_string(), "{body}")
        }
        Dialect::Anthropic => {
            assert_eq!(body["type"], "error", "{body}");
            assert!(body["error"]["type"].is_string(), "{body}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_come_in_the_door_dialect_with_their_status() {
    let h = gw::start_with(|c| {
        c.server.max_body_bytes = 4096;
        // A 7 s Retry-After does not fit in this budget: the 429 goes to the client at once.
        c.streaming.retry_policy.time_to_fallback_ms = 3000;
        // A provider's 404 is its route's failure: every door asking the same missing model
        // must not open that route's breaker (its 503 is tested elsewhere).
        c.streaming.circuit_breaker.failure_threshold = 1000;
    })
    .await;
    for door in Dialect::ALL {
        let path = gw::door_path(door);
        // Malformed JSON.
        let r = h.post(path, door, &[], b"{not json".to_vec()).await;
        assert_eq!(r.status(), 400, "{door}");
        assert_error_shape(door, &json_of(r).await);
        // Unknown model.
        let r = h
            .chat(door, &[], &chat_body(door, "nobody/knows", true))
            .await;
        assert_eq!(r.status(), 404, "{door}");
        assert_error_shape(door, &json_of(r).await);
        // Too large.
        let mut big = chat_body(door, "openai/text_basic", true);
        big["metadata"] = json!({ "padding": "x".repeat(10_000) });
        let r = h.chat(door, &[], &big).await;
        assert_eq!(r.status(), 413, "{door}");
        assert_error_shape(door, &json_of(r).await);
        // Upstream 4xx passes through, in the client's dialect.
        for model in ["openai/no_such_recording", "anthropic/no_such_recording"] {
            for stream in [true, false] {
                let r = h.chat(door, &[], &chat_body(door, model, stream)).await;
                assert_eq!(r.status(), 404, "{door} {model}");
                let body = json_of(r).await;
                assert_error_shape(door, &body);
                assert!(body.to_string().contains("no_such_recording"), "{body}");
            }
        }
        // Upstream 429 with Retry-After.
        let r = h
            .chat(
                door,
                &[],
                &chat_body(door, "anthropic/status=429,retry_after=7:text_basic", true),
            )
            .await;
        assert_eq!(r.status(), 429, "{door}");
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("7")
        );
        assert_error_shape(door, &json_of(r).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_variable_is_a_5xx_naming_it_without_leaking_keys() {
    let var = format!("SG_TEST_UNSET_KEY_{}_{}", std::process::id(), line!());
    let v = var.clone();
    let h = gw::start_with(move |c| {
        c.providers.get_mut("openai").unwrap().api_key_env = Some(v.clone());
        c.providers.get_mut("anthropic").unwrap().api_key_env = Some(v);
    })
    .await;
    for door in Dialect::ALL {
        for model in ["openai/text_basic", "anthropic/text_basic"] {
            let headers = [
                ("authorization", "Bearer sk-secret-client-555"),
                ("x-api-key", "sk-secret-client-555"),
            ];
            let r = h.chat(door, &headers, &chat_body(door, model, true)).await;
            assert!(
                r.status().is_server_error(),
                "{door} {model}: {}",
                r.status()
            );
            let text = String::from_utf8(body_bytes(r).await).unwrap();
            assert!(text.contains(&var), "{text}");
            assert!(!text.contains("sk-secret-client-555"), "{text}");
            assert_error_shape(door, &serde_json::from_str(&text).unwrap());
        }
    }
    assert!(h.replay.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_upstream_is_502_and_a_silent_one_504() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let h = gw::start_with(move |c| {
        let p = c.providers.get_mut("openai").unwrap();
        p.base_url = format!("http://127.0.0.1:{port}/v1");
        p.connect_timeout_ms = 2000;
        c.providers
            .get_mut("anthropic")
            .unwrap()
            .first_byte_timeout_ms = 300;
        // Every door meets the same dead provider: its breaker must not open between doors
        // (that would be a 503, tested elsewhere).
        c.streaming.circuit_breaker.failure_threshold = 1000;
    })
    .await;
    for door in Dialect::ALL {
        let r = h
            .chat(door, &[], &chat_body(door, "openai/text_basic", true))
            .await;
        assert_eq!(r.status(), 502, "{door}");
        assert_error_shape(door, &json_of(r).await);
        for model in ["anthropic/stall:text_basic", "anthropic/hang:text_basic"] {
            let r = h.chat(door, &[], &chat_body(door, model, true)).await;
            assert_eq!(r.status(), 504, "{door} {model}");
            assert_error_shape(door, &json_of(r).await);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_the_upstream() {
    let h = gw::start().await;
    for (i, door) in Dialect::ALL.into_iter().enumerate() {
        let model = "anthropic/drip=20:pause_turn_web_search_long";
        let r = h.chat(door, &[], &chat_body(door, model, true)).await;
        assert_eq!(r.status(), 200);
        let mut stream = r.bytes_stream();
        let first = stream.next().await.expect("a first chunk").unwrap();
        assert!(!first.is_empty());
        assert_eq!(h.replay.streams_opened(), i + 1);
        assert_eq!(
            h.replay.streams_closed(),
            i,
            "the upstream ended before the client left"
        );
        drop(stream);
        // The recording takes minutes at this pace: closing now can only be the gateway
        // letting go of the upstream.
        assert!(
            h.replay
                .wait_streams_closed(i + 1, Duration::from_secs(10))
                .await,
            "{door}: the upstream stream is still open after the client left"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_models_and_health() {
    let h = gw::start().await;
    let body = json!({"model": "openai/text_basic", "messages": [{"role": "user", "content": "12345678"}], "system": "abcd"});
    let r = h
        .post(
            "/v1/messages/count_tokens",
            Dialect::Anthropic,
            &[],
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await["input_tokens"], 3);
    assert!(
        h.replay.requests().is_empty(),
        "an OpenAI route is estimated, not asked"
    );

    let r = h.client.get(h.url("/v1/models")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ids: Vec<String> = json_of(r).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    for (alias, _) in streamgate::replay::DEMO_ALIASES {
        assert!(ids.iter().any(|i| i == alias), "{alias} not in {ids:?}");
    }
    let r = h.client.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    // The demo alias answers.
    let r = h
        .chat(
            Dialect::OpenAi,
            &[],
            &chat_body(Dialect::OpenAi, "demo", false),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        json_of(r).await["choices"][0]["finish_reason"],
        "tool_calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_json_prints_one_line_and_serves() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_streamgate"))
        .args(["demo", "--listen", "127.0.0.1:0", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(gw::BOUND);
    let result = async {
        let first = first.expect("no first line");
        let v: Value = serde_json::from_str(&first).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["gateway", "replay"], "{first}");
        let gateway = v["gateway"].as_str().unwrap();
        assert!(gateway.starts_with("http://127.0.0.1:") && !gateway.ends_with(":0"));
        let client = gw::client();
        let r = client
            .post(format!("{gateway}/v1/messages"))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(serde_json::to_vec(&chat_body(Dialect::Anthropic, "demo", false)).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(json_of(r).await["stop_reason"], "tool_use");
    };
    let outcome = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    // Nothing but the first line went to standard output.
    assert!(
        rx.recv_timeout(Duration::from_secs(5)).is_err(),
        "more on stdout"
    );
}
