//! Reading an OpenAI Chat Completions request body into the unified model.

use std::fmt;

use serde_json::{Map, Value};

use crate::dialect::Dialect;
use crate::request::error::RequestError;
use crate::request::fields::{Obj, Path, kind, peek_str, text_parts};
use crate::request::tree::Tree;
use crate::request::unified::{
    ChatRequest, Effort, FunctionTool, ImageSource, Message, Origin, Part, Reasoning, Role, Tool,
    ToolChoice,
};
use crate::untrusted::untrusted;

impl ChatRequest {
    /// Reads an OpenAI Chat Completions request body (`POST /v1/chat/completions`).
    ///
    /// Fields the unified model does not interpret are kept in [`ChatRequest::extra`].
    /// Copies `body`; [`ChatRequest::from_openai_value`] takes it over.
    pub fn from_openai(body: &Value) -> Result<ChatRequest, RequestError> {
        ChatRequest::from_openai_value(body.clone())
    }

    /// [`ChatRequest::from_openai`] taking the body over: its strings move into the request,
    /// nothing is copied.
    pub fn from_openai_value(body: Value) -> Result<ChatRequest, RequestError> {
        ChatRequest::from_openai_tree(body.into())
    }

    /// [`ChatRequest::from_openai`] of a body read as a [`Tree`] (a door's, by [`crate::parse::parse`]).
    pub fn from_openai_tree(body: Tree) -> Result<ChatRequest, RequestError> {
        let mut o = Obj::new(body, Path::Root)?;
        let mut req = ChatRequest {
            model: o.req_str("model")?,
            source: Some(Dialect::OpenAi),
            ..ChatRequest::default()
        };
        let messages = o
            .arr("messages")?
            .ok_or_else(|| RequestError::invalid("messages", "required field is missing"))?;
        for (i, m) in messages.into_iter().enumerate() {
            read_message(&mut req, m, i)?;
        }
        if let Some(tools) = o.arr("tools")? {
            req.tools = tools
                .into_iter()
                .enumerate()
                .map(|(i, t)| read_tool(t, Path::top("tools").index(i)))
                .collect::<Result<_, _>>()?;
        }
        if let Some(choice) = o.take("tool_choice") {
            match read_tool_choice(&choice) {
                Some(c) => req.tool_choice = Some(c),
                // allowed_tools, custom, ...: same-dialect passthrough only.
                None => o.put("tool_choice", choice),
            }
        }
        req.parallel_tool_calls = o.bool("parallel_tool_calls")?;
        let legacy = o.u32("max_tokens")?;
        let current = o.u32("max_completion_tokens")?;
        req.max_tokens = match (legacy, current) {
            (Some(_), Some(_)) => {
                return Err(RequestError::invalid(
                    "max_tokens",
                    "set either max_tokens or max_completion_tokens, not both",
                ));
            }
            (Some(n), None) => {
                req.legacy_max_tokens = true;
                Some(n)
            }
            (None, n) => n,
        };
        req.temperature = o.f64("temperature")?;
        req.top_p = o.f64("top_p")?;
        req.stop = match o.take("stop") {
            None => Vec::new(),
            Some(Tree::String(s)) => vec![s],
            Some(Tree::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Tree::String(s) => Ok(s),
                    other => Err(RequestError::invalid(
                        Path::top("stop").index(i),
                        format!("expected a string, got {}", kind(&other)),
                    )),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(RequestError::invalid(
                    "stop",
                    format!(
                        "expected a string or an array of strings, got {}",
                        kind(&other)
                    ),
                ));
            }
        };
        req.stream = o.bool("stream")?.unwrap_or(false);
        if let Some(mut so) = o.obj("stream_options")? {
            req.include_usage = so.bool("include_usage")?.unwrap_or(false);
            if let Some(rest) = so.rest_tree() {
                o.put("stream_options", rest);
            }
        }
        if let Some(e) = o.str("reasoning_effort")? {
            let effort = Effort::parse(&e).ok_or_else(|| {
                RequestError::invalid(
                    "reasoning_effort",
                    format!(
                        "unknown effort {} (expected none, minimal, low, medium, high or xhigh)",
                        untrusted(&e)
                    ),
                )
            })?;
            req.reasoning = Some(Reasoning {
                effort: Some(effort),
                ..Reasoning::default()
            });
        }
        req.user = o.str("user")?;
        req.n = o.u32("n")?;
        req.extra = o.rest();
        Ok(req)
    }
}

/// Roles read into the unified model; others are kept whole.
const KNOWN_ROLES: &[&str] = &["system", "developer", "user", "assistant", "tool"];

fn read_message(req: &mut ChatRequest, m: Tree, i: usize) -> Result<(), RequestError> {
    let messages = Path::top("messages");
    let path = messages.index(i);
    if peek_str(&m, "role").is_some_and(|r| !KNOWN_ROLES.contains(&r)) {
        // Legacy `function` and newer roles: same-dialect passthrough, refused by the
        // other.
        req.messages.push(Message {
            origin: Some(Origin {
                index: i,
                part_offset: 0,
                as_string: matches!(m.get("content"), Some(Tree::String(_))),
            }),
            ..Message::new(
                Role::Native,
                vec![Part::Native {
                    dialect: Dialect::OpenAi,
                    raw: m.into(),
                }],
            )
        });
        return Ok(());
    }
    let mut o = Obj::new(m, path)?;
    let role = o.req_str("role")?;
    let content = o.take("content");
    let origin = Some(Origin {
        index: i,
        part_offset: 0,
        as_string: matches!(content, Some(Tree::String(_))),
    });
    let message = match role.as_str() {
        "system" | "developer" => {
            let parts = match content {
                None => Vec::new(),
                Some(Tree::String(s)) => vec![Part::text(s)],
                Some(Tree::Array(items)) => items
                    .into_iter()
                    .enumerate()
                    .map(|(j, p)| read_text_part(p, o.path("content").index(j)))
                    .collect::<Result<_, _>>()?,
                Some(other) => return Err(not_content(o.path("content"), &other)),
            };
            let role = if role == "system" {
                Role::System
            } else {
                Role::Developer
            };
            Message::new(role, parts)
        }
        "user" => {
            let parts = match content {
                None => Vec::new(),
                Some(Tree::String(s)) => vec![Part::text(s)],
                Some(Tree::Array(items)) => items
                    .into_iter()
                    .enumerate()
                    .map(|(j, p)| read_user_part(p, o.path("content").index(j)))
                    .collect::<Result<_, _>>()?,
                Some(other) => return Err(not_content(o.path("content"), &other)),
            };
            Message::new(Role::User, parts)
        }
        "assistant" => {
            let mut parts = match content {
                None => Vec::new(),
                Some(Tree::String(s)) => vec![Part::text(s)],
                Some(Tree::Array(items)) => items
                    .into_iter()
                    .enumerate()
                    .map(|(j, p)| read_text_part(p, o.path("content").index(j)))
                    .collect::<Result<_, _>>()?,
                Some(other) => return Err(not_content(o.path("content"), &other)),
            };
            if let Some(calls) = o.arr("tool_calls")? {
                let calls_path = o.path("tool_calls");
                for (k, c) in calls.into_iter().enumerate() {
                    parts.push(read_tool_call(c, calls_path.index(k))?);
                }
            }
            Message::new(Role::Assistant, parts)
        }
        "tool" => {
            let call_id = o.req_str("tool_call_id")?;
            let texts = match content {
                Some(c) => text_parts(c, o.path("content"))?,
                None => Vec::new(),
            };
            let result =
                Part::tool_result(call_id, texts.into_iter().map(Part::text).collect(), false);
            Message::new(Role::Tool, vec![result])
        }
        // Unknown roles were kept whole above.
        other => {
            return Err(RequestError::invalid(
                o.path("role"),
                format!("unknown role {}", untrusted(other)),
            ));
        }
    };
    req.messages.push(Message {
        extra: o.rest(),
        origin,
        ..message
    });
    Ok(())
}

fn not_content(path: Path<'_>, v: &Tree) -> RequestError {
    RequestError::invalid(
        path,
        format!(
            "expected a string or an array of content parts, got {}",
            kind(v)
        ),
    )
}

fn read_user_part(p: Tree, path: Path<'_>) -> Result<Part, RequestError> {
    if peek_str(&p, "type").is_some_and(|t| t != "text" && t != "image_url") {
        return Ok(Part::Native {
            dialect: Dialect::OpenAi,
            raw: p.into(),
        });
    }
    let mut o = Obj::new(p, path)?;
    let ty = o.req_str("type")?;
    match ty.as_str() {
        "text" => Ok(Part::Text {
            text: o.req_str("text")?,
            extra: o.rest(),
        }),
        "image_url" => {
            let mut img = o.req_obj("image_url")?;
            let url = img.req_str("url")?;
            let source = parse_image_url(&url).ok_or_else(|| {
                RequestError::invalid(
                    img.path("url"),
                    "expected an http(s) URL or a data:<media type>;base64,<data> URL",
                )
            })?;
            Ok(Part::Image {
                source,
                detail: img.str("detail")?,
                extra: o.rest(),
            })
        }
        other => Err(RequestError::invalid(
            o.path("type"),
            format!("unknown part type {}", untrusted(other)),
        )),
    }
}

/// A part of assistant or system content: text, or kept whole.
fn read_text_part(p: Tree, path: Path<'_>) -> Result<Part, RequestError> {
    if peek_str(&p, "type").is_some_and(|t| t != "text") {
        // `refusal` parts and anything newer: same-dialect only.
        return Ok(Part::Native {
            dialect: Dialect::OpenAi,
            raw: p.into(),
        });
    }
    let mut o = Obj::new(p, path)?;
    o.req_str("type")?;
    Ok(Part::Text {
        text: o.req_str("text")?,
        extra: o.rest(),
    })
}

/// `data:image/png;base64,...` or `http(s)://...`.
pub(crate) fn parse_image_url(url: &str) -> Option<ImageSource> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',')?;
        let media_type = meta.strip_suffix(";base64")?;
        if media_type.is_empty() {
            return None;
        }
        return Some(ImageSource::Base64 {
            media_type: media_type.to_owned(),
            data: data.to_owned(),
        });
    }
    let lower = url
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Some(ImageSource::Url {
            url: url.to_owned(),
        });
    }
    None
}

fn read_tool_call(c: Tree, path: Path<'_>) -> Result<Part, RequestError> {
    let mut o = Obj::new(c, path)?;
    let id = o.req_str("id")?;
    match o.str("type")?.as_deref() {
        None | Some("function") => {}
        Some(other) => {
            return Err(RequestError::invalid(
                o.path("type"),
                format!(
                    "unsupported tool call type {} (expected \"function\")",
                    untrusted(other)
                ),
            ));
        }
    }
    let mut f = o.req_obj("function")?;
    let name = f.req_str("name")?;
    let arguments = f.str("arguments")?.unwrap_or_default();
    check_arguments(&arguments, &f.path("arguments"))?;
    Ok(Part::ToolCall {
        id,
        name,
        arguments,
        extra: o.rest(),
    })
}

/// Tool call arguments must be the JSON text of an object; an empty string means `{}`.
/// `path` is a [`Path`] when reading, rendered only on an error.
pub(crate) fn check_arguments(
    arguments: &str,
    path: &dyn fmt::Display,
) -> Result<Map<String, Value>, RequestError> {
    if arguments.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(RequestError::invalid(
            path.to_string(),
            format!(
                "tool call arguments must be a JSON object, got {}",
                kind(&other.into())
            ),
        )),
        Err(e) => Err(RequestError::invalid(
            path.to_string(),
            format!("tool call arguments are not valid JSON: {e}"),
        )),
    }
}

fn read_tool(t: Tree, path: Path<'_>) -> Result<Tool, RequestError> {
    // Anything but a function tool (a missing type included) is kept whole; a type that is
    // not a string is an error below.
    let kept_whole = t.is_object()
        && match t.get("type") {
            None | Some(Tree::Null) => true,
            Some(Tree::String(ty)) => ty != "function",
            Some(_) => false,
        };
    if kept_whole {
        return Ok(Tool::Native {
            dialect: Dialect::OpenAi,
            raw: t.into(),
        });
    }
    let mut o = Obj::new(t, path)?;
    o.str("type")?;
    let mut f = o.req_obj("function")?;
    let tool = FunctionTool {
        name: f.req_str("name")?,
        description: f.str("description")?,
        parameters: f.take("parameters").map_or(Value::Null, Value::from),
        strict: f.bool("strict")?,
        cache_control: None,
        extra: f.rest(),
    };
    Ok(Tool::Function(tool))
}

/// The modelled tool choices; `None` for forms kept as passthrough.
fn read_tool_choice(v: &Tree) -> Option<ToolChoice> {
    match v {
        Tree::String(s) => match s.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Required),
            _ => None,
        },
        Tree::Object(_) if v.get("type").and_then(Tree::as_str) == Some("function") => {
            let name = v.get("function")?.get("name")?.as_str()?;
            Some(ToolChoice::Tool {
                name: name.to_owned(),
            })
        }
        _ => None,
    }
}
