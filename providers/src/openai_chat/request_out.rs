//! Writing the unified model as an OpenAI Chat Completions request body.

use serde_json::{Map, Value, json};

use crate::dialect::Dialect;
use crate::request::EffortBudgets;
use crate::request::capability::Capabilities;
use crate::request::error::RequestError;
use crate::request::rules::{ANTHROPIC_ONLY, check};
use crate::request::unified::{
    ChatRequest, Effort, Head, ImageSource, Message, Part, Reasoning, Role, Tool, ToolChoice,
};
use crate::untrusted::untrusted;

const TARGET: Dialect = Dialect::OpenAi;

impl ChatRequest {
    /// Writes the request as an OpenAI Chat Completions body for the family defaults of its
    /// model ([`Capabilities::of`]); see [`ChatRequest::to_openai_for`].
    pub fn to_openai(&self) -> Result<Value, RequestError> {
        self.to_openai_for(Capabilities::of(&self.model))
    }

    /// Writes the request as an OpenAI Chat Completions body for a model with `caps`.
    ///
    /// Fails when the request holds something OpenAI cannot express (see the decision
    /// table in [`crate::request`]).
    pub fn to_openai_for(&self, caps: Capabilities) -> Result<Value, RequestError> {
        self.write_openai(Head::of(self), caps)
    }

    /// [`ChatRequest::to_openai_for`] as sent to an upstream: for `model`, streaming with
    /// usage, whatever the request says (without a copy of the request to change it).
    pub fn to_openai_upstream(
        &self,
        model: &str,
        caps: Capabilities,
    ) -> Result<Value, RequestError> {
        self.write_openai(Head::upstream(model), caps)
    }

    fn write_openai(&self, head: Head<'_>, caps: Capabilities) -> Result<Value, RequestError> {
        let same = self.source == Some(TARGET);
        if !same {
            check(&self.extra, ANTHROPIC_ONLY, TARGET)?;
        }
        let mut body = Map::new();
        body.insert("model".into(), json!(head.model));
        let mut messages = Vec::new();
        if !self.system.is_empty() {
            let texts: Vec<&str> = self.system.iter().map(|p| p.text.as_str()).collect();
            messages.push(json!({"role": "system", "content": text_content(&texts)}));
        }
        for (i, m) in self.messages.iter().enumerate() {
            write_message(&mut messages, m, i, same)?;
        }
        body.insert("messages".into(), Value::Array(messages));
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
                ToolChoice::Tool { name } => {
                    json!({"type": "function", "function": {"name": name}})
                }
            };
            body.insert("tool_choice".into(), v);
        }
        if let Some(p) = self.parallel_tool_calls
            && (!self.tools.is_empty() || same)
        {
            body.insert("parallel_tool_calls".into(), json!(p));
        }
        if let Some(n) = self.max_tokens {
            let key = if same && self.legacy_max_tokens {
                "max_tokens"
            } else {
                "max_completion_tokens"
            };
            body.insert(key.into(), json!(n));
        }
        if let Some(t) = self.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(p) = self.top_p {
            body.insert("top_p".into(), json!(p));
        }
        // top_k: OpenAI has none; dropped.
        if !self.stop.is_empty() {
            body.insert("stop".into(), json!(self.stop));
        }
        body.insert("stream".into(), json!(head.stream));
        if head.stream && head.include_usage {
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        if let Some(e) = self.effort().filter(|_| caps.sends_reasoning(same)) {
            body.insert("reasoning_effort".into(), json!(e.as_str()));
        }
        if let Some(u) = &self.user {
            body.insert("user".into(), json!(u));
        }
        if let Some(n) = self.n {
            body.insert("n".into(), json!(n));
        }
        if same {
            for (k, v) in &self.extra {
                merge(&mut body, k, v);
            }
        }
        Ok(Value::Object(body))
    }

    /// The OpenAI reasoning effort: the client's own, or from Anthropic's thinking budget,
    /// or, for adaptive thinking, from Anthropic's `output_config.effort` (`max` is `high`).
    fn effort(&self) -> Option<Effort> {
        let Reasoning {
            effort,
            budget_tokens,
            mode,
            ..
        } = self.reasoning.as_ref()?;
        match (effort, budget_tokens, mode.as_deref()) {
            (Some(e), _, _) => Some(*e),
            (None, Some(b), _) => Some(EffortBudgets::default().effort_for_budget(*b)),
            (None, None, Some("adaptive")) => {
                match self.extra.get("output_config")?.get("effort")?.as_str()? {
                    "max" => Some(Effort::High),
                    e => Effort::parse(e).filter(|e| *e != Effort::None),
                }
            }
            _ => None,
        }
    }
}

/// Inserts a passthrough field, merging objects (`stream_options`).
fn merge(body: &mut Map<String, Value>, key: &str, v: &Value) {
    match (body.get_mut(key), v) {
        (Some(Value::Object(have)), Value::Object(add)) => {
            for (k, x) in add {
                have.insert(k.clone(), x.clone());
            }
        }
        _ => {
            body.insert(key.to_owned(), v.clone());
        }
    }
}

/// A string for one text, an array of text parts otherwise.
fn text_content(texts: &[&str]) -> Value {
    match texts {
        [one] => json!(one),
        many => Value::Array(
            many.iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect(),
        ),
    }
}

fn refuse_native(path: String, raw: &Value) -> RequestError {
    let ty = raw.get("type").and_then(Value::as_str).unwrap_or("unknown");
    RequestError::unsupported(
        path,
        TARGET,
        format!(
            "Anthropic content block of type {} has no OpenAI equivalent",
            untrusted(ty)
        ),
    )
}

fn write_message(
    out: &mut Vec<Value>,
    m: &Message,
    i: usize,
    same: bool,
) -> Result<(), RequestError> {
    let role = match m.role {
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::System | Role::Developer => {
            // An OpenAI client's own system parts pass as they are.
            if let Some(j) = m
                .content
                .iter()
                .position(|p| !same && !matches!(p, Part::Text { .. }))
            {
                // Worded as Anthropic words its own refusal of a system turn ("role
                // 'system' is not supported ..."): Claude Code then resends without it.
                return Err(RequestError::unsupported(
                    m.part_path(i, j),
                    TARGET,
                    "role 'system' is not supported with content other than text \
                     (OpenAI system messages hold text only)",
                ));
            }
            if m.role == Role::System {
                "system"
            } else {
                "developer"
            }
        }
        Role::Tool => return write_tool_results(out, m, i, same),
        Role::Native => {
            out.push(m.native_for(i, TARGET)?);
            return Ok(());
        }
    };
    // One plain text is a string, unless the client wrote it as an array.
    let as_string = !same || m.origin.is_none_or(|o| o.as_string);
    if as_string
        && let [Part::Text { text, extra }] = m.content.as_slice()
        && (!same || extra.is_empty())
    {
        // The common message, written as the loop below would write it without building
        // its part first: a conversation pays this once per message (issue #14).
        let mut v = json!({"role": role, "content": text});
        if same {
            extend(&mut v, &m.extra);
        }
        out.push(v);
        return Ok(());
    }
    let mut parts: Vec<Value> = Vec::new();
    let mut plain = true; // every part is a text part without extras
    let mut calls = Vec::new();
    for (j, p) in m.content.iter().enumerate() {
        match p {
            Part::Text { text, extra } => {
                let mut v = json!({"type": "text", "text": text});
                if same && !extra.is_empty() {
                    plain = false;
                    extend(&mut v, extra);
                }
                parts.push(v);
            }
            Part::Image {
                source,
                detail,
                extra,
            } => {
                plain = false;
                let url = match source {
                    ImageSource::Base64 { media_type, data } => {
                        format!("data:{media_type};base64,{data}")
                    }
                    ImageSource::Url { url } => url.clone(),
                };
                let mut image_url = json!({"url": url});
                if let Some(d) = detail {
                    extend(
                        &mut image_url,
                        &Map::from_iter([("detail".into(), json!(d))]),
                    );
                }
                let mut v = json!({"type": "image_url", "image_url": image_url});
                if same {
                    extend(&mut v, extra);
                }
                parts.push(v);
            }
            Part::ToolCall {
                id,
                name,
                arguments,
                extra,
            } => {
                let mut v = json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                });
                if same {
                    extend(&mut v, extra);
                }
                calls.push(v);
            }
            // Thinking from an earlier Anthropic turn: OpenAI cannot take it back.
            Part::Reasoning { .. } | Part::RedactedReasoning { .. } => {}
            Part::Native { dialect, raw } if *dialect != TARGET && is_thinking(raw) => {}
            Part::Native {
                dialect: Dialect::OpenAi,
                raw,
            } => {
                plain = false;
                parts.push(raw.clone());
            }
            Part::Native { raw, .. } => return Err(refuse_native(m.part_path(i, j), raw)),
            Part::ToolResult { .. } => {
                return Err(RequestError::invalid(
                    m.part_path(i, j),
                    "a tool result belongs in a tool message",
                ));
            }
        }
    }
    if parts.is_empty() && calls.is_empty() && !m.content.is_empty() {
        // Only reasoning, which OpenAI cannot take: the whole message goes.
        return Ok(());
    }
    let content = if plain && parts.len() == 1 && as_string {
        parts.swap_remove(0)["text"].take()
    } else if parts.is_empty() && (!calls.is_empty() || m.role == Role::Assistant) {
        Value::Null
    } else {
        Value::Array(parts)
    };
    let mut v = json!({"role": role, "content": content});
    if !calls.is_empty() {
        extend(
            &mut v,
            &Map::from_iter([("tool_calls".into(), Value::Array(calls))]),
        );
    }
    if same {
        extend(&mut v, &m.extra);
    }
    out.push(v);
    Ok(())
}

/// An Anthropic `redacted_thinking` block kept whole (it had fields the gateway does not
/// know): dropped like any thinking.
fn is_thinking(raw: &Value) -> bool {
    raw.get("type").and_then(Value::as_str) == Some("redacted_thinking")
}

/// One OpenAI `tool` message per tool result.
fn write_tool_results(
    out: &mut Vec<Value>,
    m: &Message,
    i: usize,
    same: bool,
) -> Result<(), RequestError> {
    for (j, p) in m.content.iter().enumerate() {
        let Part::ToolResult {
            call_id, content, ..
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
                        "OpenAI tool results hold text only (no images or documents)",
                    ));
                }
            }
        }
        let content = match texts.as_slice() {
            [] => json!(""),
            [one] if !same || m.origin.is_none_or(|o| o.as_string) => json!(one),
            t => Value::Array(
                t.iter()
                    .map(|t| json!({"type": "text", "text": t}))
                    .collect(),
            ),
        };
        let mut v = json!({"role": "tool", "tool_call_id": call_id, "content": content});
        if same {
            extend(&mut v, &m.extra);
        }
        out.push(v);
    }
    Ok(())
}

fn write_tool(t: &Tool, i: usize, same: bool) -> Result<Value, RequestError> {
    match t {
        Tool::Function(f) => {
            let mut func = json!({"name": f.name});
            let mut add = Map::new();
            if let Some(d) = &f.description {
                add.insert("description".into(), json!(d));
            }
            if !f.parameters.is_null() {
                add.insert("parameters".into(), f.parameters.clone());
            }
            if let Some(s) = f.strict {
                add.insert("strict".into(), json!(s));
            }
            if same {
                add.extend(f.extra.clone());
            }
            extend(&mut func, &add);
            Ok(json!({"type": "function", "function": func}))
        }
        Tool::Native {
            dialect: Dialect::OpenAi,
            raw,
        } => Ok(raw.clone()),
        Tool::Native { raw, .. } => {
            let ty = raw.get("type").and_then(Value::as_str).unwrap_or("unknown");
            Err(RequestError::unsupported(
                format!("tools[{i}]"),
                TARGET,
                format!(
                    "Anthropic server tool {} has no OpenAI Chat equivalent",
                    untrusted(ty)
                ),
            ))
        }
    }
}

/// Adds the fields of `add` to the object `v`.
pub(crate) fn extend(v: &mut Value, add: &Map<String, Value>) {
    if let Value::Object(m) = v {
        for (k, x) in add {
            m.insert(k.clone(), x.clone());
        }
    }
}
