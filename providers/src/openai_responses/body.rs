//! An assembled answer -> the non-streaming OpenAI Responses body.

use serde_json::Value;

use super::DIALECT;
use super::output::{
    Ending, Head, OutItem, OutKind, PartOut, extra_id, message_of, response_json, status_of_done,
    unsupported_choice,
};
use crate::assemble::{BlockContent, Message};
use crate::error::EncodeError;
use crate::event::Usage;

/// The non-streaming response body for an assembled answer.
pub fn response_body(message: &Message) -> Result<Value, EncodeError> {
    let same = message.start.as_ref().is_some_and(|s| s.dialect == DIALECT);
    let mut items: Vec<OutItem> = Vec::with_capacity(message.blocks.len());
    for block in &message.blocks {
        if block.choice > 0 {
            return Err(unsupported_choice());
        }
        let id_from = |prefix: &str| match (same, extra_id(block.extra.as_ref())) {
            (true, Some(id)) => id.to_owned(),
            _ => format!("{prefix}_{}", block.index),
        };
        let (id, kind) = match &block.content {
            BlockContent::Text { text, native, .. } => {
                let annotations = if same {
                    native
                        .iter()
                        .filter(|d| {
                            d.get("type").and_then(Value::as_str)
                                == Some("response.output_text.annotation.added")
                        })
                        .filter_map(|d| d.get("annotation").cloned())
                        .collect()
                } else {
                    Vec::new()
                };
                let part = PartOut {
                    refusal: false,
                    text: text.clone(),
                    annotations,
                    open: false,
                };
                (id_from("msg"), message_of(part))
            }
            BlockContent::Refusal { text } => (
                id_from("msg"),
                message_of(PartOut {
                    refusal: true,
                    text: text.clone(),
                    annotations: Vec::new(),
                    open: false,
                }),
            ),
            BlockContent::Reasoning { text, signature } => (
                id_from("rs"),
                OutKind::Reasoning {
                    text: text.clone(),
                    part_open: false,
                    encrypted: signature.clone().filter(|_| same),
                },
            ),
            BlockContent::RedactedReasoning { .. } => continue,
            BlockContent::ToolCall {
                id,
                name,
                arguments,
                truncated,
            } => (
                id_from("fc"),
                OutKind::Call {
                    call_id: id.clone(),
                    name: name.clone(),
                    args: arguments.clone(),
                    truncated: *truncated,
                },
            ),
            BlockContent::Native { block: b, deltas } => {
                if !same {
                    continue;
                }
                let done = deltas
                    .iter()
                    .rev()
                    .find(|d| {
                        d.get("type").and_then(Value::as_str) == Some("response.output_item.done")
                    })
                    .and_then(|d| d.get("item").cloned());
                let id = b
                    .get("id")
                    .and_then(Value::as_str)
                    .map_or_else(|| format!("item_{}", block.index), str::to_owned);
                (
                    id,
                    OutKind::Native {
                        added: b.clone(),
                        done,
                    },
                )
            }
        };
        // Parts of one same-dialect message item stay together.
        if let (OutKind::Message { parts }, Some(last)) = (&kind, items.last_mut())
            && let OutKind::Message { parts: into } = &mut last.kind
            && same
            && last.id == id
        {
            into.extend(parts.iter().cloned());
            continue;
        }
        items.push(OutItem {
            id,
            open: false,
            kind,
        });
    }
    let ending = Ending::of(message.end.as_ref(), message.error.as_ref());
    let head = match &message.start {
        Some(s) => Head {
            id: &s.id,
            model: &s.model,
            created: s.created.unwrap_or(0),
        },
        None => Head {
            id: "",
            model: "",
            created: 0,
        },
    };
    let output = items
        .iter()
        .map(|i| i.json(status_of_done(ending.status)))
        .collect();
    let usage = (message.usage != Usage::default()).then_some(&message.usage);
    response_json(
        head,
        ending.status,
        output,
        usage,
        ending.incomplete,
        ending.error,
    )
}
