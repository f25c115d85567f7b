//! Each dialect's request translator (`providers::request`): a client's JSON body -> the
//! unified request -> both dialects, for a model known to reason, known not to, and unknown.
//! Byte 0: bit 0 picks the door's dialect (OpenAI, Anthropic).
#![no_main]

use libfuzzer_sys::fuzz_target;
use providers::request::{AnthropicDefaults, Capabilities, ChatRequest};
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let [head, body @ ..] = data else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let parsed = if head & 1 == 0 {
        ChatRequest::from_openai(&value)
    } else {
        ChatRequest::from_anthropic(&value)
    };
    let Ok(request) = parsed else {
        return;
    };
    let defaults = AnthropicDefaults::default();
    for reasons in [None, Some(true), Some(false)] {
        let caps = Capabilities { reasons };
        let _ = request.to_openai_for(caps);
        let _ = request.to_anthropic_for(&defaults, caps);
    }
    let _ = request.to_openai();
    let _ = request.to_anthropic(&defaults);
});
