//! OpenAI streaming bodies made in a test, for `Replay::insert_fixture`: an answer of the
//! given content deltas, as long or as large as a test needs.
//!
//! Use with `#[path = "common/openai_deltas.rs"] mod openai_deltas;`.

use serde_json::{Value, json};

/// An OpenAI chat-completions SSE body: the assistant role, one content delta per text, the
/// `stop` finish and `[DONE]`.
pub fn openai_deltas(texts: impl IntoIterator<Item = String>) -> String {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-made", "object": "chat.completion.chunk", "created": 1,
               "model": "gpt-4o", "choices": [{"index": 0, "delta": delta,
               "logprobs": null, "finish_reason": finish}]})
    };
    let mut body = String::new();
    let mut frame = |delta, finish| body.push_str(&format!("data: {}\n\n", chunk(delta, finish)));
    frame(json!({"role": "assistant", "content": ""}), Value::Null);
    for text in texts {
        frame(json!({ "content": text }), Value::Null);
    }
    frame(json!({}), json!("stop"));
    body.push_str("data: [DONE]\n\n");
    body
}
