//! Reading an OpenAI Responses request body (`POST /v1/responses`) into the unified model.
//!
//! `instructions` is the system prompt; `input` items become messages: `message` items by
//! role, `function_call` and `reasoning` items join the assistant turn they belong to (Chat
//! Completions and Anthropic need a turn's tool calls in one message), each
//! `function_call_output` is a tool message. Item ids, statuses and encrypted reasoning stay
//! in part extras for a Responses upstream; items of other kinds (hosted tool calls, item
//! references, ...) are kept whole. Rules for another upstream: `docs/translation.md`.
//!
//! # Decisions
//!
//! | Responses | unified / other dialects |
//! |---|---|
//! | `instructions` | the system prompt (Chat: a leading `system` message; Anthropic: `system`) |
//! | `input` `message` items | messages by role (`user`, `assistant`, `system`, `developer`); `input_text` / `output_text` parts are text, a `refusal` part is the assistant's text, `input_image` with an `image_url` is an image (`detail` kept for Chat); file, file-id image and audio parts are kept whole (refused by other dialects) |
//! | `function_call` / `function_call_output` | a tool call in the assistant turn it follows (a turn's calls are one Chat message, one Anthropic turn) / a tool result (text; `output` given as `input_text` parts is joined) |
//! | `reasoning` items | unsigned reasoning in the assistant turn: dropped by Chat and Anthropic writers (OpenAI's `encrypted_content` means nothing to another provider); written back whole to Responses |
//! | other items (`web_search_call`, `item_reference`, ...) | kept whole; refused by other dialects |
//! | `tools` | `function` tools are function tools; hosted tools are kept whole and refused by other dialects |
//! | `tool_choice` | `auto` / `none` / `required` / `{"type":"function","name"}`; other forms same-dialect only |
//! | `max_output_tokens`, `temperature`, `top_p`, `parallel_tool_calls`, `user`, `stream` | the same unified fields; a stream always reports usage |
//! | `reasoning.effort` | the effort (to Anthropic as a thinking budget); `reasoning.summary` same-dialect only |
//! | `text.format` | `text` passes; `json_schema` (checked: needs a `schema` object) and `json_object` are same-dialect only and refused elsewhere |
//! | `metadata`, `store`, `service_tier`, `include`, `truncation`, `prompt_cache_key`, `safety_identifier`, ... | same-dialect only; dropped elsewhere |

use serde_json::Value;

use crate::dialect::Dialect;
use crate::openai_chat::request_in::{check_arguments, parse_image_url};
use crate::request::error::RequestError;
use crate::request::fields::{Obj, Path, kind, peek_str};
use crate::request::tree::{Tree, object};
use crate::request::unified::{
    ChatRequest, Effort, FunctionTool, Message, Origin, Part, Reasoning, Role, SystemPart, Tool,
    ToolChoice,
};
use crate::untrusted::untrusted;

/// The Responses dialect, as requests name it.
pub(crate) const RESPONSES: Dialect = Dialect::OpenAiResponses;

/// Top-level fields that only a Responses upstream can honour, refused towards another one
/// ([`ChatRequest::check_responses_route`]): silently dropping them would change the answer.
const RESPONSES_ONLY: &[(&str, &str)] = &[
    (
        "previous_response_id",
        "the conversation is stored at OpenAI; send the whole input instead, or route to an \
         OpenAI Responses provider",
    ),
    (
        "conversation",
        "the conversation is stored at OpenAI; send the whole input instead, or route to an \
         OpenAI Responses provider",
    ),
    (
        "prompt",
        "stored prompt templates live at OpenAI; send instructions and input instead",
    ),
    (
        "background",
        "background responses are an OpenAI Responses feature",
    ),
];

impl ChatRequest {
    /// Reads an OpenAI Responses request body. Copies `body`; see
    /// [`ChatRequest::from_responses_value`].
    pub fn from_responses(body: &Value) -> Result<ChatRequest, RequestError> {
        ChatRequest::from_responses_value(body.clone())
    }

    /// [`ChatRequest::from_responses`] taking the body over.
    pub fn from_responses_value(body: Value) -> Result<ChatRequest, RequestError> {
        ChatRequest::from_responses_tree(body.into())
    }

    /// [`ChatRequest::from_responses`] of a body read as a [`Tree`] (a door's, by [`crate::parse::parse`]).
    pub fn from_responses_tree(body: Tree) -> Result<ChatRequest, RequestError> {
        let mut o = Obj::new(body, Path::Root)?;
        let mut req = ChatRequest {
            model: o.req_str("model")?,
            source: Some(RESPONSES),
            ..ChatRequest::default()
        };
        match o.take("instructions") {
            None => {}
            Some(Tree::String(s)) if s.is_empty() => {
                o.put("instructions", Tree::String(s));
            }
            Some(Tree::String(s)) => req.system.push(SystemPart::text(s)),
            Some(other) => {
                return Err(RequestError::invalid(
                    "instructions",
                    format!("expected a string, got {}", kind(&other)),
                ));
            }
        }
        match o.take("input") {
            None => {}
            Some(Tree::String(s)) => req.messages.push(Message {
                origin: Some(Origin {
                    index: 0,
                    part_offset: 0,
                    as_string: true,
                }),
                ..Message::new(Role::User, vec![Part::text(s)])
            }),
            Some(Tree::Array(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    read_item(&mut req.messages, item, i)?;
                }
            }
            Some(other) => {
                return Err(RequestError::invalid(
                    "input",
                    format!(
                        "expected a string or an array of items, got {}",
                        kind(&other)
                    ),
                ));
            }
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
                // Hosted tools, allowed_tools, mcp, custom: same-dialect passthrough only.
                None => o.put("tool_choice", choice),
            }
        }
        req.parallel_tool_calls = o.bool("parallel_tool_calls")?;
        req.max_tokens = o.u32("max_output_tokens")?;
        req.temperature = o.f64("temperature")?;
        req.top_p = o.f64("top_p")?;
        req.stream = o.bool("stream")?.unwrap_or(false);
        // A Responses stream always ends with its usage.
        req.include_usage = req.stream;
        if let Some(mut r) = o.obj("reasoning")? {
            let effort = match r.str("effort")? {
                None => None,
                Some(e) => Some(Effort::parse(&e).ok_or_else(|| {
                    RequestError::invalid(
                        r.path("effort"),
                        format!(
                            "unknown effort {} (expected none, minimal, low, medium, high or xhigh)",
                            untrusted(&e)
                        ),
                    )
                })?),
            };
            let extra = r.rest();
            if effort.is_some() || !extra.is_empty() {
                req.reasoning = Some(Reasoning {
                    effort,
                    extra,
                    ..Reasoning::default()
                });
            }
        }
        req.user = o.str("user")?;
        if let Some(mut text) = o.obj("text")? {
            if let Some(format) = text.take("format") {
                check_format(&format)?;
                text.put("format", format);
            }
            if let Some(rest) = text.rest_tree() {
                o.put("text", rest);
            }
        }
        req.extra = o.rest();
        Ok(req)
    }

    /// Refuses what only a Responses upstream can honour, for a request read by
    /// [`ChatRequest::from_responses`] that is routed to `target`: stored conversations
    /// (`previous_response_id`, `conversation`), stored prompts, background mode, and
    /// structured output (`text.format` other than `text`, which the unified model does not
    /// carry). A no-op for other requests and for a Responses upstream. Hosted tools and
    /// items are refused by the target's writer.
    pub fn check_responses_route(&self, target: Dialect) -> Result<(), RequestError> {
        if self.source != Some(RESPONSES) || target == RESPONSES {
            return Ok(());
        }
        for (key, why) in RESPONSES_ONLY {
            match self.extra.get(*key) {
                None | Some(Value::Null) | Some(Value::Bool(false)) => {}
                Some(_) => return Err(RequestError::unsupported(*key, target, *why)),
            }
        }
        let format = self
            .extra
            .get("text")
            .and_then(|t| t.get("format"))
            .and_then(|f| f.get("type"))
            .and_then(Value::as_str);
        if format.is_some_and(|f| f != "text") {
            return Err(RequestError::unsupported(
                "text.format",
                target,
                "structured output is not translated; use an OpenAI Responses upstream",
            ));
        }
        Ok(())
    }
}

fn check_format(format: &Tree) -> Result<(), RequestError> {
    match format.get("type").and_then(Tree::as_str) {
        Some("text" | "json_object") => Ok(()),
        Some("json_schema") => match format.get("schema") {
            Some(Tree::Object(_)) => Ok(()),
            _ => Err(RequestError::invalid(
                "text.format.schema",
                "a json_schema format needs a schema object",
            )),
        },
        Some(other) => Err(RequestError::invalid(
            "text.format.type",
            format!("unknown format {}", untrusted(other)),
        )),
        None => Err(RequestError::invalid(
            "text.format.type",
            "required field is missing",
        )),
    }
}

fn origin(i: usize, as_string: bool) -> Option<Origin> {
    Some(Origin {
        index: i,
        part_offset: 0,
        as_string,
    })
}

/// The assistant message that an assistant-side item joins: the last one, when the turn is
/// still the assistant's.
fn assistant_turn(messages: &mut Vec<Message>, i: usize) -> &mut Message {
    let joins = messages.last().is_some_and(|m| m.role == Role::Assistant);
    if !joins {
        messages.push(Message {
            origin: origin(i, false),
            ..Message::new(Role::Assistant, Vec::new())
        });
    }
    let last = messages.len() - 1;
    &mut messages[last]
}

fn read_item(messages: &mut Vec<Message>, item: Tree, i: usize) -> Result<(), RequestError> {
    let input = Path::top("input");
    let path = input.index(i);
    let ty = match peek_str(&item, "type") {
        Some(t) => t.to_owned(),
        // An "easy" input message: `{role, content}` without a type.
        None if item.get("role").is_some() => "message".to_owned(),
        None => {
            return Err(RequestError::invalid(
                path.key("type"),
                "item without a type",
            ));
        }
    };
    match ty.as_str() {
        "message" => read_message(messages, item, i, path),
        "function_call" => {
            let mut o = Obj::new(item, path)?;
            o.str("type")?;
            let call_id = o.req_str("call_id")?;
            let name = o.req_str("name")?;
            let arguments = o.str("arguments")?.unwrap_or_default();
            check_arguments(&arguments, &o.path("arguments"))?;
            let part = Part::ToolCall {
                id: call_id,
                name,
                arguments,
                extra: o.rest(),
            };
            assistant_turn(messages, i).content.push(part);
            Ok(())
        }
        "function_call_output" => {
            let mut o = Obj::new(item, path)?;
            o.str("type")?;
            let call_id = o.req_str("call_id")?;
            let (texts, as_string) = match o.take("output") {
                None => (Vec::new(), true),
                Some(Tree::String(s)) => (vec![s], true),
                Some(other) => (output_texts(other, o.path("output"))?, false),
            };
            let result = Part::ToolResult {
                call_id,
                content: texts.into_iter().map(Part::text).collect(),
                is_error: false,
                as_string,
                extra: o.rest(),
            };
            messages.push(Message {
                origin: origin(i, as_string),
                ..Message::new(Role::Tool, vec![result])
            });
            Ok(())
        }
        "reasoning" => {
            let text = match item.get("summary") {
                Some(Tree::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Tree::as_str))
                    .collect::<Vec<_>>()
                    .join("\n\n"),
                _ => String::new(),
            };
            let Tree::Object(members) = item else {
                return Err(RequestError::invalid(path, "expected an object"));
            };
            // No signature: OpenAI's encrypted reasoning means nothing to another provider
            // (the other writers drop unsigned reasoning); the item goes back whole to a
            // Responses upstream.
            let mut extra = object(members);
            extra.shift_remove("type");
            let part = Part::Reasoning {
                text,
                signature: None,
                extra,
            };
            assistant_turn(messages, i).content.push(part);
            Ok(())
        }
        _ => {
            // Hosted tool calls and their outputs, item references, and anything newer:
            // written back to a Responses upstream, refused by the others.
            messages.push(Message {
                origin: origin(i, false),
                ..Message::new(
                    Role::Native,
                    vec![Part::Native {
                        dialect: RESPONSES,
                        raw: item.into(),
                    }],
                )
            });
            Ok(())
        }
    }
}

/// A `function_call_output.output` given as content parts: their texts.
fn output_texts(v: Tree, path: Path<'_>) -> Result<Vec<String>, RequestError> {
    let Tree::Array(parts) = v else {
        return Err(RequestError::invalid(
            path,
            format!("expected a string or an array of parts, got {}", kind(&v)),
        ));
    };
    let mut texts = Vec::new();
    for (j, p) in parts.into_iter().enumerate() {
        let part_path = path.index(j);
        match peek_str(&p, "type") {
            Some("input_text" | "output_text") => {
                let mut o = Obj::new(p, part_path)?;
                texts.push(o.req_str("text")?);
            }
            _ => {
                return Err(RequestError::unsupported(
                    part_path,
                    RESPONSES,
                    "function call outputs other than text are not translated",
                ));
            }
        }
    }
    Ok(texts)
}

fn read_message(
    messages: &mut Vec<Message>,
    item: Tree,
    i: usize,
    path: Path<'_>,
) -> Result<(), RequestError> {
    let mut o = Obj::new(item, path)?;
    // `type` stays in the extras: an "easy" message has none, and is written back so.
    let role = o.req_str("role")?;
    let role = match role.as_str() {
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "system" => Role::System,
        "developer" => Role::Developer,
        other => {
            return Err(RequestError::invalid(
                o.path("role"),
                format!("unknown role {}", untrusted(other)),
            ));
        }
    };
    let content = o.take("content");
    let content_path = o.path("content");
    let (parts, as_string) = match content {
        None => (Vec::new(), false),
        Some(Tree::String(s)) => (vec![Part::text(s)], true),
        Some(Tree::Array(items)) => (
            items
                .into_iter()
                .enumerate()
                .map(|(j, p)| read_part(p, content_path.index(j)))
                .collect::<Result<Vec<_>, _>>()?,
            false,
        ),
        Some(other) => {
            return Err(RequestError::invalid(
                content_path,
                format!(
                    "expected a string or an array of content parts, got {}",
                    kind(&other)
                ),
            ));
        }
    };
    let extra = o.rest();
    if role == Role::Assistant {
        // The item's id and status ride on its first part, so that the parts of one item
        // are written back as one item.
        let mut parts = parts;
        if let Some(Part::Text { extra: first, .. }) = parts.first_mut() {
            for (k, v) in &extra {
                first.insert(format!("item.{k}"), v.clone());
            }
        }
        let turn = assistant_turn(messages, i);
        if turn.content.is_empty() {
            turn.origin = origin(i, as_string);
        }
        turn.content.extend(parts);
        return Ok(());
    }
    messages.push(Message {
        extra,
        origin: origin(i, as_string),
        ..Message::new(role, parts)
    });
    Ok(())
}

fn read_part(p: Tree, path: Path<'_>) -> Result<Part, RequestError> {
    match peek_str(&p, "type") {
        Some("input_text" | "output_text") => {
            let mut o = Obj::new(p, path)?;
            let ty = o.req_str("type")?;
            let text = o.req_str("text")?;
            let mut extra = o.rest();
            if ty == "output_text" {
                extra.insert("type".to_owned(), Value::String(ty));
            }
            Ok(Part::Text { text, extra })
        }
        Some("refusal") => {
            // What the assistant said: text to another dialect, a refusal part again here.
            let mut o = Obj::new(p, path)?;
            let ty = o.req_str("type")?;
            let text = o.req_str("refusal")?;
            let mut extra = o.rest();
            extra.insert("type".to_owned(), Value::String(ty));
            Ok(Part::Text { text, extra })
        }
        Some("input_image") if p.get("image_url").is_some_and(Tree::is_string) => {
            let mut o = Obj::new(p, path)?;
            o.str("type")?;
            let url = o.req_str("image_url")?;
            let source = parse_image_url(&url).ok_or_else(|| {
                RequestError::invalid(
                    o.path("image_url"),
                    "expected an http(s) URL or a data:<media type>;base64,<data> URL",
                )
            })?;
            Ok(Part::Image {
                source,
                detail: o.str("detail")?,
                extra: o.rest(),
            })
        }
        // Files, images by file id, audio: same-dialect only.
        Some(_) => Ok(Part::Native {
            dialect: RESPONSES,
            raw: p.into(),
        }),
        None => Err(RequestError::invalid(
            path.key("type"),
            "required field is missing",
        )),
    }
}

fn read_tool(t: Tree, path: Path<'_>) -> Result<Tool, RequestError> {
    if peek_str(&t, "type") != Some("function") {
        if !t.is_object() {
            return Err(RequestError::invalid(
                path,
                format!("expected an object, got {}", kind(&t)),
            ));
        }
        // web_search, file_search, code_interpreter, mcp, custom, ...
        return Ok(Tool::Native {
            dialect: RESPONSES,
            raw: t.into(),
        });
    }
    let mut o = Obj::new(t, path)?;
    o.str("type")?;
    Ok(Tool::Function(FunctionTool {
        name: o.req_str("name")?,
        description: o.str("description")?,
        parameters: o.take("parameters").map_or(Value::Null, Value::from),
        strict: o.bool("strict")?,
        cache_control: None,
        extra: o.rest(),
    }))
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
            let name = v.get("name")?.as_str()?;
            Some(ToolChoice::Tool {
                name: name.to_owned(),
            })
        }
        _ => None,
    }
}
