//! Token estimates for when a provider cannot say: one token per 4 bytes of every text the
//! model reads (system, messages, tool calls and results, tool definitions), rounded up; an
//! image counts 1,000 tokens. Used by count_tokens over non-Anthropic routes and for the input
//! count an Anthropic client needs in `message_start` before an OpenAI-dialect upstream reports
//! its usage at the end.

use providers::request::{ChatRequest, Part};

/// Bytes of text the model reads, over 4, rounded up.
pub fn input_tokens(request: &ChatRequest) -> u64 {
    fn part_bytes(part: &Part) -> usize {
        match part {
            Part::Text { text, .. } => text.len(),
            Part::ToolCall {
                name, arguments, ..
            } => name.len() + arguments.len(),
            Part::ToolResult { content, .. } => content.iter().map(part_bytes).sum(),
            Part::Reasoning { text, .. } => text.len(),
            // An image costs roughly a thousand tokens whatever its encoding.
            Part::Image { .. } => 4000,
            Part::RedactedReasoning { data } => data.len(),
            Part::Native { raw, .. } => raw.to_string().len(),
        }
    }
    let system: usize = request.system.iter().map(|s| s.text.len()).sum();
    let messages: usize = request
        .messages
        .iter()
        .flat_map(|m| m.content.iter())
        .map(part_bytes)
        .sum();
    let tools: usize = request
        .tools
        .iter()
        .map(|t| serde_json::to_string(t).map(|s| s.len()).unwrap_or(0))
        .sum();
    (system + messages + tools).div_ceil(4) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn estimate_counts_every_text_the_model_reads() {
        let request = ChatRequest::from_anthropic(&json!({
            "model": "m", "max_tokens": 10,
            "system": "abcd",
            "messages": [{"role": "user", "content": "12345678"}]
        }))
        .unwrap();
        assert_eq!(input_tokens(&request), 3);
    }
}
