//! Token estimates for when a provider cannot say: one token per 4 bytes of every text the
//! model reads (system, messages, tool calls and results, tool definitions), rounded up; an
//! image counts 1,000 tokens. Used by count_tokens over non-Anthropic routes, by the rate
//! limiter's borrow, for the input count an Anthropic client needs in `message_start` before an
//! OpenAI-dialect upstream reports its usage at the end, and for the usage of an attempt that
//! ended before its provider reported it ([`Produced`], [`complete`]).

use providers::request::{ChatRequest, Part};
use providers::{AgentEvent, Usage, UsageBasis};

/// Bytes per estimated token.
const BYTES_PER_TOKEN: usize = 4;

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
    tokens(system + messages + tools)
}

fn tokens(bytes: usize) -> u64 {
    bytes.div_ceil(BYTES_PER_TOKEN) as u64
}

/// What one attempt generated, as far as its events show: the bytes of its text, refusal and
/// reasoning, and of the tool calls it produced (names and argument fragments), counted as
/// they arrive, whether or not they reached the client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Produced {
    bytes: usize,
}

impl Produced {
    /// Counts `event` if the model generated it.
    pub fn add(&mut self, event: &AgentEvent) {
        let n = match event {
            AgentEvent::TextDelta { text, .. }
            | AgentEvent::RefusalDelta { text, .. }
            | AgentEvent::ReasoningDelta { text, .. } => text.len(),
            AgentEvent::ToolCallStart { name, .. } => name.len(),
            AgentEvent::ToolCallDelta { arguments, .. } => arguments.len(),
            _ => 0,
        };
        self.bytes = self.bytes.saturating_add(n);
    }

    /// Estimated output tokens.
    pub fn tokens(&self) -> u64 {
        tokens(self.bytes)
    }
}

/// The usage of an attempt that finished (sent its `stream.end`): `reported`, with only what
/// its provider never reported estimated (input as `input`, output as what it `produced`). A
/// finished attempt's own counts stand, even below the estimate.
pub fn fill(reported: &Usage, input: u64, produced: Produced) -> Usage {
    let mut usage = reported.clone();
    if usage.input_tokens.is_none() {
        usage.input_tokens = Some(input);
        usage.basis = UsageBasis::Estimated;
    }
    if usage.output_tokens.is_none() {
        usage.output_tokens = Some(produced.tokens());
        usage.basis = UsageBasis::Estimated;
    }
    usage
}

/// The usage of an attempt that ended before its provider finished reporting: `reported`
/// (what it did report), with the input estimated as `input` when it reported none, and the
/// output as what it `produced` when that is more than it reported (a count reported at the
/// start, such as Anthropic's `message_start`, cannot cover what came after). Marked
/// [`UsageBasis::Estimated`] when an estimate was used.
pub fn complete(reported: &Usage, input: u64, produced: Produced) -> Usage {
    let mut usage = reported.clone();
    if usage.input_tokens.is_none() {
        usage.input_tokens = Some(input);
        usage.basis = UsageBasis::Estimated;
    }
    let output = produced.tokens();
    if usage.output_tokens.is_none_or(|n| n < output) {
        usage.output_tokens = Some(output);
        usage.basis = UsageBasis::Estimated;
    }
    usage
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

    proptest::proptest! {
        #[test]
        fn complete_and_fill_keep_reports_and_estimate_only_what_is_missing_or_short(
            input in proptest::option::of(0u64..100_000),
            output in proptest::option::of(0u64..100_000),
            estimate in 0u64..100_000,
            texts in proptest::collection::vec("\\PC{0,40}", 0..20),
        ) {
            let mut produced = Produced::default();
            let mut bytes = 0;
            for text in &texts {
                bytes += text.len();
                produced.add(&AgentEvent::TextDelta { index: 0, text: text.as_str().into(), extra: None });
                // Events the model did not generate count nothing.
                produced.add(&AgentEvent::BlockEnd { index: 0 });
            }
            proptest::prop_assert_eq!(produced.tokens(), bytes.div_ceil(4) as u64);
            let reported = Usage { input_tokens: input, output_tokens: output, ..Usage::default() };
            let done = complete(&reported, estimate, produced);
            proptest::prop_assert_eq!(done.input_tokens, Some(input.unwrap_or(estimate)));
            let out = output.unwrap_or(0).max(produced.tokens());
            proptest::prop_assert_eq!(done.output_tokens, Some(out));
            let estimated = input.is_none() || output.is_none_or(|n| n < produced.tokens());
            proptest::prop_assert_eq!(done.basis == UsageBasis::Estimated, estimated);
            let filled = fill(&reported, estimate, produced);
            proptest::prop_assert_eq!(filled.input_tokens, Some(input.unwrap_or(estimate)));
            proptest::prop_assert_eq!(filled.output_tokens, Some(output.unwrap_or(produced.tokens())));
            let estimated = input.is_none() || output.is_none();
            proptest::prop_assert_eq!(filled.basis == UsageBasis::Estimated, estimated);
        }
    }
}
