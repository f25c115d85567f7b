//! Reading an Anthropic Messages request body into the unified model.

use serde_json::Value;

use super::error::RequestError;
use super::fields::{Obj, idx, kind};
use super::unified::{
    ChatRequest, FunctionTool, ImageSource, Message, Origin, Part, Reasoning, Role, SystemPart,
    Tool, ToolChoice,
};
use crate::dialect::Dialect;

impl ChatRequest {
    /// Reads an Anthropic Messages request body (`POST /v1/messages`).
    ///
    /// A user message holding `tool_result` blocks becomes [`Role::Tool`] message(s) for
    /// the tool results and [`Role::User`] message(s) for the rest, in order. Fields the
    /// unified model does not interpret are kept in [`ChatRequest::extra`].
    pub fn from_anthropic(body: &Value) -> Result<ChatRequest, RequestError> {
        let mut o = Obj::new(body, "")?;
        let mut req = ChatRequest {
            model: o.req_str("model")?,
            source: Some(Dialect::Anthropic),
            // Anthropic streams always report usage.
            include_usage: true,
            ..ChatRequest::default()
        };
        req.max_tokens = o.u32("max_tokens")?;
        req.system = match o.take("system") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![SystemPart::text(s)],
            Some(Value::Array(blocks)) => {
                req.system_blocks = true;
                blocks
                    .iter()
                    .enumerate()
                    .map(|(i, b)| read_system_block(b, &idx("system", i)))
                    .collect::<Result<_, _>>()?
            }
            Some(other) => {
                return Err(RequestError::invalid(
                    "system",
                    format!(
                        "expected a string or an array of text blocks, got {}",
                        kind(&other)
                    ),
                ));
            }
        };
        let messages = o
            .arr("messages")?
            .ok_or_else(|| RequestError::invalid("messages", "required field is missing"))?;
        for (i, m) in messages.iter().enumerate() {
            read_message(&mut req.messages, m, i)?;
        }
        if let Some(tools) = o.arr("tools")? {
            req.tools = tools
                .iter()
                .enumerate()
                .map(|(i, t)| read_tool(t, &idx("tools", i)))
                .collect::<Result<_, _>>()?;
        }
        if let Some(raw) = o.take("tool_choice") {
            let mut tc = Obj::new(&raw, "tool_choice")?;
            let choice = match tc.req_str("type")?.as_str() {
                "auto" => Some(ToolChoice::Auto),
                "none" => Some(ToolChoice::None),
                "any" => Some(ToolChoice::Required),
                "tool" => Some(ToolChoice::Tool {
                    name: tc.req_str("name")?,
                }),
                // A newer choice: same-dialect passthrough, refused by the other.
                _ => None,
            };
            match choice {
                None => o.put("tool_choice", raw),
                Some(choice) => {
                    req.tool_choice = Some(choice);
                    match tc.bool("disable_parallel_tool_use")? {
                        Some(true) => req.parallel_tool_calls = Some(false),
                        Some(false) => tc.put("disable_parallel_tool_use", Value::Bool(false)),
                        None => {}
                    }
                    // Fields of a known choice that the model does not interpret: merged
                    // back into it same-dialect.
                    let rest = tc.rest();
                    if !rest.is_empty() {
                        o.put("tool_choice", Value::Object(rest));
                    }
                }
            }
        }
        req.temperature = o.f64("temperature")?;
        req.top_p = o.f64("top_p")?;
        req.top_k = o.u32("top_k")?;
        if let Some(stops) = o.arr("stop_sequences")? {
            req.stop = stops
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    other => Err(RequestError::invalid(
                        idx("stop_sequences", i),
                        format!("expected a string, got {}", kind(&other)),
                    )),
                })
                .collect::<Result<_, _>>()?;
        }
        req.stream = o.bool("stream")?.unwrap_or(false);
        if let Some(mut md) = o.obj("metadata")? {
            req.user = md.str("user_id")?;
            let rest = md.rest();
            if !rest.is_empty() {
                o.put("metadata", Value::Object(rest));
            }
        }
        if let Some(thinking) = o.take("thinking") {
            let mut t = Obj::new(&thinking, "thinking")?;
            let ty = t.req_str("type")?;
            let budget_tokens = match ty.as_str() {
                "enabled" => t.u32("budget_tokens")?,
                _ => None,
            };
            req.reasoning = Some(Reasoning {
                effort: None,
                budget_tokens,
                // `adaptive`, `disabled` and newer forms are kept by name.
                mode: budget_tokens.is_none().then_some(ty),
                extra: t.rest(),
            });
        }
        req.extra = o.rest();
        Ok(req)
    }
}

fn read_system_block(b: &Value, path: &str) -> Result<SystemPart, RequestError> {
    let mut o = Obj::new(b, path)?;
    match o.req_str("type")?.as_str() {
        "text" => Ok(SystemPart {
            text: o.req_str("text")?,
            cache_control: o.take("cache_control"),
            extra: o.rest(),
        }),
        other => Err(RequestError::invalid(
            o.path("type"),
            format!("system blocks must be text, got {other:?}"),
        )),
    }
}

fn read_message(out: &mut Vec<Message>, m: &Value, i: usize) -> Result<(), RequestError> {
    let path = idx("messages", i);
    let mut o = Obj::new(m, &path)?;
    let origin = |part_offset, as_string| {
        Some(Origin {
            index: i,
            part_offset,
            as_string,
        })
    };
    let role = match o.req_str("role")?.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        // A mid-conversation system turn.
        "system" => Role::System,
        _ => {
            out.push(Message {
                origin: origin(0, false),
                ..Message::new(Role::Native, vec![native(m)])
            });
            return Ok(());
        }
    };
    let content_path = o.path("content");
    let mut as_string = false;
    let parts = match o.take("content") {
        None => Vec::new(),
        Some(Value::String(s)) => {
            as_string = true;
            vec![Part::text(s)]
        }
        Some(Value::Array(blocks)) => blocks
            .iter()
            .enumerate()
            .map(|(j, b)| read_block(b, &idx(&content_path, j)))
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(RequestError::invalid(
                content_path,
                format!(
                    "expected a string or an array of content blocks, got {}",
                    kind(&other)
                ),
            ));
        }
    };
    let extra = o.rest();
    if role != Role::User || parts.is_empty() {
        out.push(Message {
            extra,
            origin: origin(0, as_string),
            ..Message::new(role, parts)
        });
        return Ok(());
    }
    // Split a user message into runs of tool results (Role::Tool) and other blocks.
    let mut current: Option<Message> = None;
    for (j, part) in parts.into_iter().enumerate() {
        let want = if matches!(part, Part::ToolResult { .. }) {
            Role::Tool
        } else {
            Role::User
        };
        match &mut current {
            Some(msg) if msg.role == want => msg.content.push(part),
            _ => {
                out.extend(current.take());
                current = Some(Message {
                    extra: extra.clone(),
                    origin: origin(j, as_string),
                    ..Message::new(want, vec![part])
                });
            }
        }
    }
    out.extend(current);
    Ok(())
}

fn read_block(b: &Value, path: &str) -> Result<Part, RequestError> {
    let mut o = Obj::new(b, path)?;
    let ty = o.req_str("type")?;
    let part = match ty.as_str() {
        "text" => Part::Text {
            text: o.req_str("text")?,
            extra: o.rest(),
        },
        "image" => {
            let raw_source = o.take("source").ok_or_else(|| {
                RequestError::invalid(o.path("source"), "required field is missing")
            })?;
            let mut s = Obj::new(&raw_source, &o.path("source"))?;
            let source = match s.req_str("type")?.as_str() {
                "base64" => ImageSource::Base64 {
                    media_type: s.req_str("media_type")?,
                    data: s.req_str("data")?,
                },
                "url" => ImageSource::Url {
                    url: s.req_str("url")?,
                },
                // Files API and newer sources: same-dialect only.
                _ => return Ok(native(b)),
            };
            if !s.rest().is_empty() {
                // A source field the model does not know: kept whole, same-dialect only.
                return Ok(native(b));
            }
            Part::Image {
                source,
                detail: None,
                extra: o.rest(),
            }
        }
        "tool_use" => {
            let id = o.req_str("id")?;
            let name = o.req_str("name")?;
            let input = o
                .take("input")
                .unwrap_or_else(|| Value::Object(Default::default()));
            if !input.is_object() {
                return Err(RequestError::invalid(
                    o.path("input"),
                    format!("expected an object, got {}", kind(&input)),
                ));
            }
            Part::ToolCall {
                id,
                name,
                arguments: input.to_string(),
                extra: o.rest(),
            }
        }
        "tool_result" => {
            let call_id = o.req_str("tool_use_id")?;
            let content_path = o.path("content");
            let mut as_string = false;
            let content = match o.take("content") {
                None => Vec::new(),
                Some(Value::String(s)) => {
                    as_string = true;
                    vec![Part::text(s)]
                }
                Some(Value::Array(blocks)) => blocks
                    .iter()
                    .enumerate()
                    .map(|(k, b)| read_block(b, &idx(&content_path, k)))
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(RequestError::invalid(
                        content_path,
                        format!(
                            "expected a string or an array of blocks, got {}",
                            kind(&other)
                        ),
                    ));
                }
            };
            let is_error = match o.bool("is_error")? {
                Some(false) => {
                    // Said explicitly: kept same-dialect.
                    o.put("is_error", Value::Bool(false));
                    false
                }
                other => other.unwrap_or(false),
            };
            Part::ToolResult {
                call_id,
                content,
                is_error,
                as_string,
                extra: o.rest(),
            }
        }
        "thinking" => Part::Reasoning {
            text: o.req_str("thinking")?,
            // A block cut before its `signature_delta` comes back with `""`: unsigned.
            signature: o.str("signature")?.filter(|s| !s.is_empty()),
            extra: o.rest(),
        },
        "redacted_thinking" => {
            let data = o.req_str("data")?;
            if o.rest().is_empty() {
                Part::RedactedReasoning { data }
            } else {
                // Fields the model does not know: kept whole, same-dialect only.
                native(b)
            }
        }
        // document, search_result, server_tool_use, web_search_tool_result, ...
        _ => native(b),
    };
    Ok(part)
}

fn native(b: &Value) -> Part {
    Part::Native {
        dialect: Dialect::Anthropic,
        raw: b.clone(),
    }
}

fn read_tool(t: &Value, path: &str) -> Result<Tool, RequestError> {
    let mut o = Obj::new(t, path)?;
    match o.str("type")?.as_deref() {
        None => {}
        // Said explicitly: kept same-dialect.
        Some("custom") => o.put("type", Value::String("custom".into())),
        // Server tools (web_search_20250305, bash_20250124, ...).
        Some(_) => {
            return Ok(Tool::Native {
                dialect: Dialect::Anthropic,
                raw: t.clone(),
            });
        }
    }
    Ok(Tool::Function(FunctionTool {
        name: o.req_str("name")?,
        description: o.str("description")?,
        parameters: o.take("input_schema").ok_or_else(|| {
            RequestError::invalid(o.path("input_schema"), "required field is missing")
        })?,
        strict: o.bool("strict")?,
        cache_control: o.take("cache_control"),
        extra: o.rest(),
    }))
}
