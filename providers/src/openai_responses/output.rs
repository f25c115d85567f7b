//! The output items and the response object, as both the stream's events and the
//! non-streaming body show them.

use serde_json::{Value, json};

use super::DIALECT;
use super::wire::{InputDetails, OutputDetails, WireUsage};
use crate::error::EncodeError;
use crate::event::{ErrorInfo, Extra, FinishReason, StreamEnd, Usage};

/// One output item being built.
#[derive(Debug, Clone)]
pub(super) struct OutItem {
    pub(super) id: String,
    pub(super) open: bool,
    pub(super) kind: OutKind,
}

/// What an output item holds, as far as written.
#[derive(Debug, Clone)]
pub(super) enum OutKind {
    Message {
        parts: Vec<PartOut>,
    },
    Reasoning {
        text: String,
        part_open: bool,
        encrypted: Option<String>,
    },
    Call {
        call_id: String,
        name: String,
        args: String,
        /// The model ran out of tokens inside the arguments.
        truncated: bool,
    },
    Native {
        added: Value,
        done: Option<Value>,
    },
}

/// One content part of a message item.
#[derive(Debug, Clone)]
pub(super) struct PartOut {
    pub(super) refusal: bool,
    pub(super) text: String,
    pub(super) annotations: Vec<Value>,
    pub(super) open: bool,
}

impl PartOut {
    pub(super) fn json(&self) -> Value {
        if self.refusal {
            json!({"type": "refusal", "refusal": self.text})
        } else {
            json!({
                "type": "output_text",
                "text": self.text,
                "annotations": self.annotations,
                "logprobs": [],
            })
        }
    }
}

impl OutItem {
    /// The item as `output_item.added` / `done` and the response's `output` show it.
    pub(super) fn json(&self, status: &str) -> Value {
        match &self.kind {
            OutKind::Message { parts } => json!({
                "id": self.id,
                "type": "message",
                "status": status,
                "role": "assistant",
                "content": if status == "in_progress" {
                    Vec::new()
                } else {
                    parts.iter().map(PartOut::json).collect()
                },
            }),
            OutKind::Reasoning {
                text, encrypted, ..
            } => {
                let mut item = json!({
                    "id": self.id,
                    "type": "reasoning",
                    "summary": if text.is_empty() || status == "in_progress" {
                        Vec::new()
                    } else {
                        vec![json!({"type": "summary_text", "text": text})]
                    },
                });
                if let (Some(e), Value::Object(m)) = (encrypted, &mut item) {
                    m.insert("encrypted_content".to_owned(), Value::String(e.clone()));
                }
                item
            }
            OutKind::Call {
                call_id,
                name,
                args,
                truncated,
            } => json!({
                "id": self.id,
                "type": "function_call",
                "status": if *truncated && status != "in_progress" { "incomplete" } else { status },
                "arguments": if status == "in_progress" { "" } else { args.as_str() },
                "call_id": call_id,
                "name": name,
            }),
            OutKind::Native { added, done } => match (status, done) {
                ("in_progress", _) => added.clone(),
                (_, Some(done)) => done.clone(),
                (_, None) => {
                    let mut item = added.clone();
                    if let Value::Object(m) = &mut item {
                        m.insert("status".to_owned(), Value::String(status.to_owned()));
                    }
                    item
                }
            },
        }
    }
}

pub(super) fn json_err(source: serde_json::Error) -> EncodeError {
    EncodeError::Json {
        dialect: DIALECT,
        source,
    }
}

pub(super) fn out_of_order(what: impl Into<String>) -> EncodeError {
    EncodeError::OutOfOrder {
        dialect: DIALECT,
        what: what.into(),
    }
}

pub(super) fn unsupported_choice() -> EncodeError {
    EncodeError::Unsupported {
        dialect: DIALECT,
        what: "more than one choice".to_owned(),
    }
}

/// The item id a same-dialect block header carried.
pub(super) fn extra_id(extra: Option<&Extra>) -> Option<&str> {
    extra?.get("id")?.as_str().filter(|s| !s.is_empty())
}

fn wire_usage(u: &Usage) -> WireUsage {
    let input = u.input_tokens.unwrap_or(0);
    let output = u.output_tokens.unwrap_or(0);
    WireUsage {
        input_tokens: Some(input),
        input_tokens_details: Some(InputDetails {
            cached_tokens: Some(u.cache_read_tokens.unwrap_or(0)),
        }),
        output_tokens: Some(output),
        output_tokens_details: Some(OutputDetails {
            reasoning_tokens: Some(u.reasoning_tokens.unwrap_or(0)),
        }),
        total_tokens: Some(input.saturating_add(output)),
    }
}

/// What a finished answer's response object says about its end.
pub(super) struct Ending<'a> {
    pub(super) status: &'static str,
    pub(super) incomplete: Option<&'static str>,
    pub(super) error: Option<&'a ErrorInfo>,
}

impl<'a> Ending<'a> {
    pub(super) fn of(end: Option<&StreamEnd>, error: Option<&'a ErrorInfo>) -> Self {
        let reason = match (end, error) {
            (_, Some(_)) => FinishReason::Error,
            (Some(end), None) => end.reason,
            (None, None) => FinishReason::Error,
        };
        let (status, incomplete) = match reason {
            FinishReason::Length => ("incomplete", Some("max_output_tokens")),
            FinishReason::ContentFilter => ("incomplete", Some("content_filter")),
            FinishReason::Error => ("failed", None),
            FinishReason::Stop
            | FinishReason::ToolCalls
            | FinishReason::Refusal
            | FinishReason::PauseTurn => ("completed", None),
        };
        Ending {
            status,
            incomplete,
            error,
        }
    }
}

/// Who answers: the response object's identity.
pub(super) struct Head<'a> {
    pub(super) id: &'a str,
    pub(super) model: &'a str,
    pub(super) created: u64,
}

/// The response object.
pub(super) fn response_json(
    head: Head<'_>,
    status: &str,
    output: Vec<Value>,
    usage: Option<&Usage>,
    incomplete: Option<&str>,
    error: Option<&ErrorInfo>,
) -> Result<Value, EncodeError> {
    let usage = match usage {
        Some(u) => serde_json::to_value(wire_usage(u)).map_err(json_err)?,
        None => Value::Null,
    };
    Ok(json!({
        "id": head.id,
        "object": "response",
        "created_at": head.created,
        "status": status,
        "error": error.map(|e| json!({"code": e.code, "message": e.message})),
        "incomplete_details": incomplete.map(|r| json!({"reason": r})),
        "instructions": null,
        "metadata": {},
        "model": head.model,
        "output": output,
        "parallel_tool_calls": true,
        "temperature": null,
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "usage": usage,
    }))
}

/// Items finished before the end take the response's status word for "done".
pub(super) fn status_of_done(status: &str) -> &'static str {
    match status {
        "completed" => "completed",
        _ => "incomplete",
    }
}

/// A message item holding one finished part.
pub(super) fn message_of(part: PartOut) -> OutKind {
    OutKind::Message { parts: vec![part] }
}
