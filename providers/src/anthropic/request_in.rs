//! Reading an Anthropic Messages request body into the unified model.

use serde_json::Value;

use crate::dialect::Dialect;
use crate::request::error::RequestError;
use crate::request::fields::{Obj, Path, kind, peek_str};
use crate::request::tree::Tree;
use crate::request::unified::{
    ChatRequest, FunctionTool, ImageSource, Message, Origin, Part, Reasoning, Role, SystemPart,
    Tool, ToolChoice,
};
use crate::untrusted::untrusted;

impl ChatRequest {
    /// Reads an Anthropic Messages request body (`POST /v1/messages`).
    ///
    /// A user message holding `tool_result` blocks becomes [`Role::Tool`] message(s) for
    /// the tool results and [`Role::User`] message(s) for the rest, in order. Fields the
    /// unified model does not interpret are kept in [`ChatRequest::extra`].
    /// Copies `body`; [`ChatRequest::from_anthropic_value`] takes it over.
    pub fn from_anthropic(body: &Value) -> Result<ChatRequest, RequestError> {
        ChatRequest::from_anthropic_value(body.clone())
    }

    /// [`ChatRequest::from_anthropic`] taking the body over: its strings move into the
    /// request, nothing is copied.
    pub fn from_anthropic_value(body: Value) -> Result<ChatRequest, RequestError> {
        ChatRequest::from_anthropic_tree(body.into())
    }

    /// [`ChatRequest::from_anthropic`] of a body read as a [`Tree`] (a door's, by [`crate::parse::parse`]).
    pub fn from_anthropic_tree(body: Tree) -> Result<ChatRequest, RequestError> {
        let mut o = Obj::new(body, Path::Root)?;
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
            Some(Tree::String(s)) => vec![SystemPart::text(s)],
            Some(Tree::Array(blocks)) => {
                req.system_blocks = true;
                blocks
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| read_system_block(b, Path::top("system").index(i)))
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
        for (i, m) in messages.into_iter().enumerate() {
            read_message(&mut req.messages, m, i)?;
        }
        if let Some(tools) = o.arr("tools")? {
            req.tools = tools
                .into_iter()
                .enumerate()
                .map(|(i, t)| read_tool(t, Path::top("tools").index(i)))
                .collect::<Result<_, _>>()?;
        }
        if let Some(raw) = o.take("tool_choice") {
            if peek_str(&raw, "type").is_some_and(|t| !KNOWN_CHOICES.contains(&t)) {
                // A newer choice: same-dialect passthrough, refused by the other.
                o.put("tool_choice", raw);
            } else {
                let mut tc = Obj::new(raw, Path::top("tool_choice"))?;
                req.tool_choice = Some(match tc.req_str("type")?.as_str() {
                    "auto" => ToolChoice::Auto,
                    "none" => ToolChoice::None,
                    "any" => ToolChoice::Required,
                    "tool" => ToolChoice::Tool {
                        name: tc.req_str("name")?,
                    },
                    other => {
                        return Err(RequestError::invalid(
                            "tool_choice.type",
                            format!("unknown tool choice {}", untrusted(other)),
                        ));
                    }
                });
                match tc.bool("disable_parallel_tool_use")? {
                    Some(true) => req.parallel_tool_calls = Some(false),
                    Some(false) => tc.put("disable_parallel_tool_use", Tree::Bool(false)),
                    None => {}
                }
                // Fields of a known choice that the model does not interpret: merged
                // back into it same-dialect.
                if let Some(rest) = tc.rest_tree() {
                    o.put("tool_choice", rest);
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
                    Tree::String(s) => Ok(s),
                    other => Err(RequestError::invalid(
                        Path::top("stop_sequences").index(i),
                        format!("expected a string, got {}", kind(&other)),
                    )),
                })
                .collect::<Result<_, _>>()?;
        }
        req.stream = o.bool("stream")?.unwrap_or(false);
        if let Some(mut md) = o.obj("metadata")? {
            req.user = md.str("user_id")?;
            if let Some(rest) = md.rest_tree() {
                o.put("metadata", rest);
            }
        }
        if let Some(thinking) = o.take("thinking") {
            let mut t = Obj::new(thinking, Path::top("thinking"))?;
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

fn read_system_block(b: Tree, path: Path<'_>) -> Result<SystemPart, RequestError> {
    let mut o = Obj::new(b, path)?;
    match o.req_str("type")?.as_str() {
        "text" => Ok(SystemPart {
            text: o.req_str("text")?,
            cache_control: o.take("cache_control").map(Value::from),
            extra: o.rest(),
        }),
        other => Err(RequestError::invalid(
            o.path("type"),
            format!("system blocks must be text, got {}", untrusted(other)),
        )),
    }
}

fn read_message(out: &mut Vec<Message>, m: Tree, i: usize) -> Result<(), RequestError> {
    let messages = Path::top("messages");
    let path = messages.index(i);
    let origin = |part_offset, as_string| {
        Some(Origin {
            index: i,
            part_offset,
            as_string,
        })
    };
    if peek_str(&m, "role").is_some_and(|r| !["user", "assistant", "system"].contains(&r)) {
        out.push(Message {
            origin: origin(0, false),
            ..Message::new(Role::Native, vec![native(m)])
        });
        return Ok(());
    }
    let mut o = Obj::new(m, path)?;
    let role = match o.req_str("role")?.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        // A mid-conversation system turn.
        "system" => Role::System,
        other => {
            return Err(RequestError::invalid(
                o.path("role"),
                format!("unknown role {}", untrusted(other)),
            ));
        }
    };
    let content = o.take("content");
    let content_path = o.path("content");
    let mut as_string = false;
    let parts = match content {
        None => Vec::new(),
        Some(Tree::String(s)) => {
            as_string = true;
            vec![Part::text(s)]
        }
        Some(Tree::Array(blocks)) => blocks
            .into_iter()
            .enumerate()
            .map(|(j, b)| read_block(b, content_path.index(j)))
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
    let mut extra = o.rest();
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
                    // On the first piece only: the pieces are joined again (extras merged)
                    // when written back, and a copy per piece would let a message of many
                    // alternating blocks multiply its extras.
                    extra: std::mem::take(&mut extra),
                    origin: origin(j, as_string),
                    ..Message::new(want, vec![part])
                });
            }
        }
    }
    out.extend(current);
    Ok(())
}

/// Tool choices read into the unified model; others are kept whole.
const KNOWN_CHOICES: &[&str] = &["auto", "none", "any", "tool"];

/// Block types read into the unified model; others are kept whole.
const KNOWN_BLOCKS: &[&str] = &[
    "text",
    "image",
    "tool_use",
    "tool_result",
    "thinking",
    "redacted_thinking",
];

/// Image sources read into the unified model, with the fields each has.
const KNOWN_SOURCES: &[(&str, &[&str])] = &[
    ("base64", &["type", "media_type", "data"]),
    ("url", &["type", "url"]),
];

/// Whether a block is kept whole ([`native`]) rather than read: a block type the model does
/// not know, an image of a source it does not know (Files API, newer sources, or a field it
/// does not know), a redacted thinking block with fields besides its data. Decided before
/// the block is taken over, so keeping it whole needs no copy; a malformed block is not
/// kept whole (reading it reports the error).
fn kept_whole(b: &Tree) -> bool {
    let Some(ty) = peek_str(b, "type") else {
        return false;
    };
    match ty {
        "image" => {
            let Some(source) = b.get("source").filter(|s| s.is_object()) else {
                return false;
            };
            match source.get("type").and_then(Tree::as_str) {
                None => false,
                Some(st) => KNOWN_SOURCES
                    .iter()
                    .find(|(known, _)| *known == st)
                    .is_none_or(|(_, fields)| source.keys().any(|k| !fields.contains(&k))),
            }
        }
        "redacted_thinking" => {
            peek_str(b, "data").is_some() && b.keys().any(|k| k != "type" && k != "data")
        }
        other => !KNOWN_BLOCKS.contains(&other),
    }
}

fn read_block(b: Tree, path: Path<'_>) -> Result<Part, RequestError> {
    if kept_whole(&b) {
        return Ok(native(b));
    }
    let mut o = Obj::new(b, path)?;
    let ty = o.req_str("type")?;
    let part = match ty.as_str() {
        "text" => Part::Text {
            text: o.req_str("text")?,
            extra: o.rest(),
        },
        "image" => {
            let mut s = o.req_obj("source")?;
            // Other sources and fields were kept whole above.
            let source = match s.req_str("type")?.as_str() {
                "base64" => ImageSource::Base64 {
                    media_type: s.req_str("media_type")?,
                    data: s.req_str("data")?,
                },
                "url" => ImageSource::Url {
                    url: s.req_str("url")?,
                },
                other => {
                    return Err(RequestError::invalid(
                        s.path("type"),
                        format!("unknown image source {}", untrusted(other)),
                    ));
                }
            };
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
                .unwrap_or_else(|| Tree::Object(Default::default()));
            if !input.is_object() {
                return Err(RequestError::invalid(
                    o.path("input"),
                    format!("expected an object, got {}", kind(&input)),
                ));
            }
            Part::ToolCall {
                id,
                name,
                arguments: Value::from(input).to_string(),
                extra: o.rest(),
            }
        }
        "tool_result" => {
            let call_id = o.req_str("tool_use_id")?;
            let content = o.take("content");
            let content_path = o.path("content");
            let mut as_string = false;
            let content = match content {
                None => Vec::new(),
                Some(Tree::String(s)) => {
                    as_string = true;
                    vec![Part::text(s)]
                }
                Some(Tree::Array(blocks)) => blocks
                    .into_iter()
                    .enumerate()
                    .map(|(k, b)| read_block(b, content_path.index(k)))
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
                    o.put("is_error", Tree::Bool(false));
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
        // Fields the model does not know were kept whole above.
        "redacted_thinking" => Part::RedactedReasoning {
            data: o.req_str("data")?,
        },
        // document, search_result, server_tool_use, ...: kept whole above.
        other => {
            return Err(RequestError::invalid(
                o.path("type"),
                format!("unknown block type {}", untrusted(other)),
            ));
        }
    };
    Ok(part)
}

fn native(b: Tree) -> Part {
    Part::Native {
        dialect: Dialect::Anthropic,
        raw: b.into(),
    }
}

fn read_tool(t: Tree, path: Path<'_>) -> Result<Tool, RequestError> {
    if peek_str(&t, "type").is_some_and(|ty| ty != "custom") {
        // Server tools (web_search_20250305, bash_20250124, ...).
        return Ok(Tool::Native {
            dialect: Dialect::Anthropic,
            raw: t.into(),
        });
    }
    let mut o = Obj::new(t, path)?;
    if o.str("type")?.is_some() {
        // Said explicitly: kept same-dialect.
        o.put("type", Tree::String("custom".into()));
    }
    Ok(Tool::Function(FunctionTool {
        name: o.req_str("name")?,
        description: o.str("description")?,
        parameters: o.take("input_schema").map(Value::from).ok_or_else(|| {
            RequestError::invalid(o.path("input_schema"), "required field is missing")
        })?,
        strict: o.bool("strict")?,
        cache_control: o.take("cache_control").map(Value::from),
        extra: o.rest(),
    }))
}
