//! Writing the unified model as an OpenAI Responses request body.
//!
//! The system prompt is `instructions`; messages become `input` items (an assistant turn
//! splits into `message`, `function_call` and, same-dialect only, `reasoning` items in its
//! order; each tool result is a `function_call_output`). From another dialect: function
//! tools are sent with `strict: false` unless the client said otherwise (Responses defaults
//! to strict), `store: false` (the client cannot use a stored response), another
//! provider's reasoning is left out, and stop sequences are refused (Responses has none).

use serde_json::{Map, Value, json};

use crate::dialect::Dialect;
use crate::openai_chat::request_out::extend;
use crate::openai_responses::request_in::RESPONSES;
use crate::request::EffortBudgets;
use crate::request::capability::Capabilities;
use crate::request::error::RequestError;
use crate::request::rules::{ANTHROPIC_ONLY, check};
use crate::request::unified::{
    ChatRequest, Effort, Head, ImageSource, Message, Part, Reasoning, Role, Tool, ToolChoice,
};
use crate::untrusted::untrusted;

const TARGET: Dialect = RESPONSES;

impl ChatRequest {
    /// Writes the request as an OpenAI Responses body for the family defaults of its model;
    /// see [`ChatRequest::to_responses_for`].
    pub fn to_responses(&self) -> Result<Value, RequestError> {
        self.to_responses_for(Capabilities::of(&self.model))
    }

    /// Writes the request as an OpenAI Responses body for a model with `caps`. Fails when
    /// the request holds something Responses cannot express.
    pub fn to_responses_for(&self, caps: Capabilities) -> Result<Value, RequestError> {
        self.write_responses(Head::of(self), caps)
    }

    /// [`ChatRequest::to_responses_for`] as sent to an upstream: for `model`, streaming.
    pub fn to_responses_upstream(
        &self,
        model: &str,
        caps: Capabilities,
    ) -> Result<Value, RequestError> {
        self.write_responses(Head::upstream(model), caps)
    }

    fn write_responses(&self, head: Head<'_>, caps: Capabilities) -> Result<Value, RequestError> {
        let same = self.source == Some(TARGET);
        let mut body = Map::new();
        if self.source == Some(Dialect::Anthropic) {
            check(&self.extra, ANTHROPIC_ONLY, TARGET)?;
        } else if !same {
            chat_extras(&self.extra, &mut body)?;
        }
        body.insert("model".into(), json!(head.model));
        if !self.system.is_empty() {
            let texts: Vec<&str> = self.system.iter().map(|p| p.text.as_str()).collect();
            body.insert("instructions".into(), json!(texts.join("\n\n")));
        }
        let mut input = Vec::new();
        for (i, m) in self.messages.iter().enumerate() {
            write_message(&mut input, m, i, same)?;
        }
        body.insert("input".into(), Value::Array(input));
        if !self.tools.is_empty() {
            let tools = self
                .tools
                .iter()
                .enumerate()
                .map(|(i, t)| write_tool(t, i, same))
                .collect::<Result<Vec<_>, _>>()?;
            body.insert("tools".into(), Value::Array(tools));
        }
        if let Some(choice) = &self.tool_choice {
            let v = match choice {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Tool { name } => json!({"type": "function", "name": name}),
            };
            body.insert("tool_choice".into(), v);
        }
        if let Some(p) = self.parallel_tool_calls
            && (!self.tools.is_empty() || same)
        {
            body.insert("parallel_tool_calls".into(), json!(p));
        }
        if let Some(n) = self.max_tokens {
            body.insert("max_output_tokens".into(), json!(n));
        }
        if let Some(t) = self.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(p) = self.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if !self.stop.is_empty() && !same {
            return Err(RequestError::unsupported(
                "stop",
                TARGET,
                "OpenAI Responses has no stop sequences",
            ));
        }
        if self.n.is_some_and(|n| n > 1) {
            return Err(RequestError::unsupported(
                "n",
                TARGET,
                "OpenAI Responses returns one answer per request",
            ));
        }
        body.insert("stream".into(), json!(head.stream));
        let reasoning = self.reasoning.as_ref();
        let effort = self
            .responses_effort()
            .filter(|_| caps.sends_reasoning(same));
        let mut r = Map::new();
        if let Some(e) = effort {
            r.insert("effort".into(), json!(e.as_str()));
        }
        if same && let Some(reasoning) = reasoning {
            r.extend(reasoning.extra.clone());
        } else if effort.is_some() && self.source == Some(Dialect::Anthropic) {
            // An Anthropic client that asked for thinking sees it: OpenAI shows reasoning
            // only as a summary, and only when asked.
            r.insert("summary".into(), json!("auto"));
        }
        if !r.is_empty() && caps.sends_reasoning(same) {
            body.insert("reasoning".into(), Value::Object(r));
        }
        if let Some(u) = &self.user {
            body.insert("user".into(), json!(u));
        }
        if same {
            for (k, v) in &self.extra {
                body.insert(k.clone(), v.clone());
            }
        } else {
            body.insert("store".into(), json!(false));
        }
        Ok(Value::Object(body))
    }

    /// The effort: the client's own, or from an Anthropic thinking budget.
    fn responses_effort(&self) -> Option<Effort> {
        let Reasoning {
            effort,
            budget_tokens,
            ..
        } = self.reasoning.as_ref()?;
        match (effort, budget_tokens) {
            (Some(e), _) => Some(*e),
            (None, Some(b)) => Some(EffortBudgets::default().effort_for_budget(*b)),
            _ => None,
        }
    }
}

fn refuse_native(path: String, raw: &Value) -> RequestError {
    let ty = raw.get("type").and_then(Value::as_str).unwrap_or("unknown");
    RequestError::unsupported(
        path,
        TARGET,
        format!(
            "content of type {} has no OpenAI Responses equivalent",
            untrusted(ty)
        ),
    )
}

fn image_json(source: &ImageSource, detail: Option<&String>) -> Value {
    let url = match source {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url { url } => url.clone(),
    };
    json!({
        "type": "input_image",
        "image_url": url,
        "detail": detail.map_or("auto", String::as_str),
    })
}

/// The fields of an item that rode on a part's extras (`item.id`, `item.status`).
fn item_fields(extra: &Map<String, Value>) -> (Map<String, Value>, Map<String, Value>) {
    let mut item = Map::new();
    let mut rest = Map::new();
    for (k, v) in extra {
        match k.strip_prefix("item.") {
            Some(key) => {
                item.insert(key.to_owned(), v.clone());
            }
            None => {
                rest.insert(k.clone(), v.clone());
            }
        }
    }
    (item, rest)
}

fn write_message(
    out: &mut Vec<Value>,
    m: &Message,
    i: usize,
    same: bool,
) -> Result<(), RequestError> {
    let role = match m.role {
        Role::User => "user",
        Role::System => "system",
        Role::Developer => "developer",
        Role::Assistant => return write_assistant(out, m, i, same),
        Role::Tool => return write_tool_results(out, m, i, same),
        Role::Native => {
            out.push(m.native_for(i, TARGET)?);
            return Ok(());
        }
    };
    let as_string = !same || m.origin.is_none_or(|o| o.as_string);
    let content = match m.content.as_slice() {
        // The common message, without building its part first: a conversation pays this
        // once per message (issue #14).
        [Part::Text { text, extra }] if as_string && (!same || extra.is_empty()) => {
            Value::String(text.clone())
        }
        _ => content_parts(m, i, same, as_string)?,
    };
    let mut v = json!({"role": role, "content": content});
    if same {
        // With the client's own `type`, or none for an "easy" message.
        extend(&mut v, &m.extra);
    } else {
        extend(&mut v, &Map::from_iter([("type".into(), json!("message"))]));
    }
    out.push(v);
    Ok(())
}

/// A user, system or developer message's content from its parts: one plain text as a
/// string when the client wrote a string (or across dialects), else the parts.
fn content_parts(
    m: &Message,
    i: usize,
    same: bool,
    as_string: bool,
) -> Result<Value, RequestError> {
    let mut parts = Vec::new();
    for (j, p) in m.content.iter().enumerate() {
        match p {
            Part::Text { text, extra } => {
                let mut v = json!({"type": "input_text", "text": text});
                if same {
                    extend(&mut v, extra);
                }
                parts.push(v);
            }
            Part::Image {
                source,
                detail,
                extra,
            } => {
                let mut v = image_json(source, detail.as_ref());
                if same {
                    extend(&mut v, extra);
                }
                parts.push(v);
            }
            Part::Native { dialect, raw } if *dialect == TARGET => parts.push(raw.clone()),
            Part::Reasoning { .. } | Part::RedactedReasoning { .. } => {}
            Part::Native { raw, .. } => return Err(refuse_native(m.part_path(i, j), raw)),
            Part::ToolCall { .. } | Part::ToolResult { .. } => {
                return Err(RequestError::invalid(
                    m.part_path(i, j),
                    "tool calls and results belong in assistant and tool messages",
                ));
            }
        }
    }
    let plain = m
        .content
        .iter()
        .all(|p| matches!(p, Part::Text { extra, .. } if !same || extra.is_empty()));
    Ok(if plain && parts.len() == 1 && as_string {
        parts.swap_remove(0)["text"].take()
    } else {
        Value::Array(parts)
    })
}

/// An "easy" message as the client wrote it: string content, and a `type` only if it had
/// one.
fn easy_message(v: &mut Value, typed: bool) {
    let Value::Object(msg) = v else {
        return;
    };
    let text = match msg.get("content") {
        Some(Value::Array(c)) => match c.as_slice() {
            [only] if only.as_object().is_some_and(|o| o.len() == 3) => only["text"].clone(),
            _ => return,
        },
        _ => return,
    };
    msg.insert("content".into(), text);
    if !typed {
        msg.shift_remove("type");
    }
}

/// An assistant turn: runs of text as `message` items, tool calls as `function_call` items,
/// same-dialect reasoning as `reasoning` items, in order.
fn write_assistant(
    out: &mut Vec<Value>,
    m: &Message,
    i: usize,
    same: bool,
) -> Result<(), RequestError> {
    let as_string = same && m.origin.is_some_and(|o| o.as_string);
    let typed = match m.content.first() {
        Some(Part::Text { extra, .. }) => extra.contains_key("item.type"),
        _ => true,
    };
    let mut message: Option<Value> = None;
    // The turn's first message item, when the client wrote it as an "easy" message.
    let mut easy = as_string;
    let mut flush = |message: &mut Option<Value>, out: &mut Vec<Value>| {
        if let Some(mut v) = message.take() {
            if std::mem::take(&mut easy) {
                easy_message(&mut v, typed);
            }
            out.push(v);
        }
    };
    for (j, p) in m.content.iter().enumerate() {
        match p {
            Part::Text { text, extra } => {
                let (item, rest) = item_fields(extra);
                let starts = same && !item.is_empty();
                if starts {
                    flush(&mut message, out);
                }
                let refusal = same && rest.get("type").and_then(Value::as_str) == Some("refusal");
                let mut part = if refusal {
                    json!({"type": "refusal", "refusal": text})
                } else {
                    json!({"type": "output_text", "text": text, "annotations": []})
                };
                if same {
                    extend(&mut part, &rest);
                }
                let msg = message.get_or_insert_with(|| {
                    let mut v = json!({"type": "message", "role": "assistant", "content": []});
                    if same {
                        extend(&mut v, &item);
                    }
                    v
                });
                if let Some(Value::Array(c)) = msg.get_mut("content") {
                    c.push(part);
                }
            }
            Part::ToolCall {
                id,
                name,
                arguments,
                extra,
            } => {
                flush(&mut message, out);
                let arguments = if arguments.is_empty() {
                    "{}"
                } else {
                    arguments
                };
                let mut v = json!({
                    "type": "function_call",
                    "call_id": id,
                    "name": name,
                    "arguments": arguments,
                });
                if same {
                    extend(&mut v, extra);
                }
                out.push(v);
            }
            Part::Reasoning { extra, .. } if same => {
                flush(&mut message, out);
                let mut v = json!({"type": "reasoning"});
                extend(&mut v, extra);
                out.push(v);
            }
            // Another provider's reasoning: Responses takes back only its own items.
            Part::Reasoning { .. } | Part::RedactedReasoning { .. } => {}
            Part::Native { dialect, raw } if *dialect == TARGET => {
                flush(&mut message, out);
                out.push(raw.clone());
            }
            Part::Native { raw, .. }
                if raw.get("type").and_then(Value::as_str) == Some("redacted_thinking") => {}
            Part::Native { raw, .. } => return Err(refuse_native(m.part_path(i, j), raw)),
            Part::Image { .. } | Part::ToolResult { .. } => {
                return Err(RequestError::unsupported(
                    m.part_path(i, j),
                    TARGET,
                    "an assistant message holds text and tool calls only",
                ));
            }
        }
    }
    flush(&mut message, out);
    Ok(())
}

fn write_tool_results(
    out: &mut Vec<Value>,
    m: &Message,
    i: usize,
    same: bool,
) -> Result<(), RequestError> {
    for (j, p) in m.content.iter().enumerate() {
        let Part::ToolResult {
            call_id,
            content,
            as_string,
            extra,
            ..
        } = p
        else {
            return Err(RequestError::invalid(
                m.part_path(i, j),
                "a tool message holds tool results only",
            ));
        };
        let mut texts = Vec::new();
        for (k, c) in content.iter().enumerate() {
            match c {
                Part::Text { text, .. } => texts.push(text.as_str()),
                _ => {
                    return Err(RequestError::unsupported(
                        format!("{}.content[{k}]", m.part_path(i, j)),
                        TARGET,
                        "function call outputs are text only here (no images or documents)",
                    ));
                }
            }
        }
        let output = if !same || *as_string {
            json!(texts.concat())
        } else {
            Value::Array(
                texts
                    .iter()
                    .map(|t| json!({"type": "input_text", "text": t}))
                    .collect(),
            )
        };
        let mut v = json!({"type": "function_call_output", "call_id": call_id, "output": output});
        if same {
            extend(&mut v, extra);
        }
        out.push(v);
    }
    Ok(())
}

fn write_tool(t: &Tool, i: usize, same: bool) -> Result<Value, RequestError> {
    match t {
        Tool::Function(f) => {
            let mut v = json!({"type": "function", "name": f.name});
            let mut add = Map::new();
            if let Some(d) = &f.description {
                add.insert("description".into(), json!(d));
            }
            let parameters = if f.parameters.is_null() && !same {
                json!({"type": "object", "properties": {}})
            } else {
                f.parameters.clone()
            };
            if !parameters.is_null() {
                add.insert("parameters".into(), parameters);
            }
            match (f.strict, same) {
                (Some(s), _) => {
                    add.insert("strict".into(), json!(s));
                }
                // Responses would hold the schema to strict mode, which most schemas
                // written for other dialects fail.
                (None, false) => {
                    add.insert("strict".into(), json!(false));
                }
                (None, true) => {}
            }
            if same {
                add.extend(f.extra.clone());
            }
            extend(&mut v, &add);
            Ok(v)
        }
        Tool::Native { dialect, raw } if *dialect == TARGET => Ok(raw.clone()),
        Tool::Native { raw, .. } => {
            let ty = raw.get("type").and_then(Value::as_str).unwrap_or("unknown");
            Err(RequestError::unsupported(
                format!("tools[{i}]"),
                TARGET,
                format!(
                    "server tool {} has no OpenAI Responses equivalent",
                    untrusted(ty)
                ),
            ))
        }
    }
}

/// Chat Completions parameters towards Responses: `response_format` becomes `text.format`,
/// the labels both APIs share pass, what Responses cannot do is refused, the rest (sampling
/// hints, `stream_options`, `store`) is dropped.
fn chat_extras(
    extra: &Map<String, Value>,
    body: &mut Map<String, Value>,
) -> Result<(), RequestError> {
    const SHARED: [&str; 4] = [
        "metadata",
        "service_tier",
        "prompt_cache_key",
        "safety_identifier",
    ];
    for (key, v) in extra {
        let refuse = |why: &str| Err(RequestError::unsupported(key.as_str(), TARGET, why));
        match key.as_str() {
            "response_format" => match v.get("type").and_then(Value::as_str) {
                Some("text") | None => {}
                Some("json_object") => {
                    body.insert("text".into(), json!({"format": {"type": "json_object"}}));
                }
                Some("json_schema") => {
                    let Some(Value::Object(schema)) = v.get("json_schema") else {
                        return refuse("a json_schema response format needs its json_schema");
                    };
                    let mut format = Map::from_iter([("type".into(), json!("json_schema"))]);
                    format.extend(schema.clone());
                    body.insert("text".into(), json!({"format": format}));
                }
                Some(other) => {
                    return refuse(&format!("unknown response format {}", untrusted(other)));
                }
            },
            k if SHARED.contains(&k) => {
                body.insert(key.clone(), v.clone());
            }
            "logit_bias" if v.as_object().is_some_and(|m| !m.is_empty()) => {
                return refuse("OpenAI Responses has no logit bias");
            }
            "logprobs" if v == &Value::Bool(true) => {
                return refuse("token log probabilities are not translated to OpenAI Responses");
            }
            "audio" => return refuse("OpenAI Responses answers with text here (no audio output)"),
            "modalities"
                if v.as_array()
                    .is_some_and(|a| a.iter().any(|m| m.as_str() != Some("text"))) =>
            {
                return refuse("OpenAI Responses answers with text here (no audio output)");
            }
            "functions" | "function_call" => {
                return refuse("legacy function calling is not translated; use tools");
            }
            "web_search_options" => {
                return refuse("use a web_search tool with an OpenAI Responses client instead");
            }
            "tool_choice" => {
                return refuse(
                    "only \"auto\", \"none\", \"required\" and a function are translated",
                );
            }
            _ => {}
        }
    }
    Ok(())
}
