//! The request that asks an upstream to continue a broken answer.
//!
//! Two ways, chosen per attempt:
//! - **Prefill** (Anthropic's native support): the text the client already has goes back as
//!   the final assistant message, and the model writes what comes after it.
//! - **Instruction** (OpenAI-dialect servers, and models that reject a prefill): the partial
//!   answer goes back as an assistant turn, followed by a user turn asking to continue it
//!   exactly; the splicer removes whatever the model repeats.
//!
//! Either way reasoning is switched off (providers reject a prefill with thinking enabled, and
//! the reasoning of the broken attempt was already streamed), and a break inside a tool call
//! forces that tool, so that a continuation never turns an expected call into prose.

use std::borrow::Cow;

use providers::request::{ChatRequest, Message, Part, Role, ToolChoice};

use crate::splice::Continuation;

/// How a continuation is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Partial answer as the final assistant message.
    Prefill,
    /// Partial answer as an assistant turn, then a user turn asking to continue.
    Instruction,
}

/// The user turn of [`Mode::Instruction`].
pub const CONTINUE_INSTRUCTION: &str = "Your previous answer was cut off. Continue it exactly \
where it stopped: do not repeat anything already written, do not add any preamble or comment.";

/// `original` rewritten to continue after `cont`.
pub fn continue_request<'a>(
    original: &'a ChatRequest,
    cont: &Continuation,
    mode: Mode,
) -> Cow<'a, ChatRequest> {
    if !cont.output_started {
        // The request as the client sent it: no copy (it can be tens of megabytes).
        return Cow::Borrowed(original);
    }
    let mut request = original.clone();
    request.reasoning = None;
    if let Some(name) = &cont.in_tool_call
        && request
            .tools
            .iter()
            .any(|t| tool_name(t) == Some(name.as_str()))
    {
        request.tool_choice = Some(ToolChoice::Tool { name: name.clone() });
    }
    if !cont.prefix.is_empty() {
        request.messages.push(Message::new(
            Role::Assistant,
            vec![Part::text(cont.prefix.clone())],
        ));
        if mode == Mode::Instruction {
            request.messages.push(Message::new(
                Role::User,
                vec![Part::text(CONTINUE_INSTRUCTION)],
            ));
        }
    }
    Cow::Owned(request)
}

fn tool_name(tool: &providers::request::Tool) -> Option<&str> {
    match tool {
        providers::request::Tool::Function(f) => Some(&f.name),
        providers::request::Tool::Native { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn original() -> ChatRequest {
        ChatRequest::from_anthropic(&json!({
            "model": "m", "max_tokens": 100,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": "weather in Paris?"}]
        }))
        .unwrap()
    }

    #[test]
    fn prefill_appends_the_partial_answer_and_drops_thinking() {
        let cont = Continuation {
            prefix: "Let me check".into(),
            trimmed: " ".into(),
            in_tool_call: None,
            output_started: true,
        };
        let original = original();
        let r = continue_request(&original, &cont, Mode::Prefill);
        assert!(r.reasoning.is_none());
        let last = r.messages.last().unwrap();
        assert_eq!(last.role, Role::Assistant);
        assert_eq!(last.content, vec![Part::text("Let me check")]);
        let body = r.to_anthropic(&Default::default()).unwrap();
        assert!(body.get("thinking").is_none());
        assert_eq!(body["messages"][1]["role"], "assistant");
    }

    #[test]
    fn instruction_mode_asks_to_continue_and_a_cut_call_is_forced() {
        let cont = Continuation {
            prefix: "Let me check.".into(),
            trimmed: String::new(),
            in_tool_call: Some("get_weather".into()),
            output_started: true,
        };
        let original = original();
        let r = continue_request(&original, &cont, Mode::Instruction);
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::User]);
        assert_eq!(
            r.tool_choice,
            Some(ToolChoice::Tool {
                name: "get_weather".into()
            })
        );
    }

    #[test]
    fn nothing_sent_means_a_plain_restart() {
        let original = original();
        let r = continue_request(&original, &Continuation::default(), Mode::Prefill);
        assert!(
            matches!(r, Cow::Borrowed(_)),
            "no copy when nothing was sent yet"
        );
        assert_eq!(*r, original);
    }
}
