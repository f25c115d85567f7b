//! Writing the unified model as an Anthropic Messages request body.

use serde_json::{Map, Value, json};

use crate::dialect::Dialect;
use crate::openai_chat::request_in::check_arguments;
use crate::openai_chat::request_out::extend;
use crate::request::AnthropicDefaults;
use crate::request::capability::Capabilities;
use crate::request::error::RequestError;
use crate::request::rules::{OPENAI_ONLY, check};
use crate::request::unified::{
    ChatRequest, Head, ImageSource, Part, Role, SystemPart, Tool, ToolChoice,
};
use crate::untrusted::untrusted;

const TARGET: Dialect = Dialect::Anthropic;

/// Anthropic's smallest thinking budget.
pub const MIN_THINKING_BUDGET: u32 = 1024;

impl ChatRequest {
    /// Writes the request as an Anthropic Messages body for the family defaults of its
    /// model ([`Capabilities::of`]); see [`ChatRequest::to_anthropic_for`].
    pub fn to_anthropic(&self, defaults: &AnthropicDefaults) -> Result<Value, RequestError> {
        self.to_anthropic_for(defaults, Capabilities::of(&self.model))
    }

    /// Writes the request as an Anthropic Messages body for a model with `caps`;
    /// `defaults` fills what Anthropic requires and the request may lack (`max_tokens`, the
    /// thinking budget of an effort).
    ///
    /// Fails when the request holds something Anthropic cannot express (see the decision
    /// table in [`crate::request`]).
    pub fn to_anthropic_for(
        &self,
        defaults: &AnthropicDefaults,
        caps: Capabilities,
    ) -> Result<Value, RequestError> {
        self.write_anthropic(Head::of(self), defaults, caps)
    }

    /// [`ChatRequest::to_anthropic_for`] as sent to an upstream: for `model`, streaming,
    /// whatever the request says (without a copy of the request to change it).
    pub fn to_anthropic_upstream(
        &self,
        model: &str,
        defaults: &AnthropicDefaults,
        caps: Capabilities,
    ) -> Result<Value, RequestError> {
        self.write_anthropic(Head::upstream(model), defaults, caps)
    }

    fn write_anthropic(
        &self,
        head: Head<'_>,
        defaults: &AnthropicDefaults,
        caps: Capabilities,
    ) -> Result<Value, RequestError> {
        let same = self.source == Some(TARGET);
        if let Some(n) = self.n.filter(|&n| n > 1) {
            return Err(RequestError::unsupported(
                "n",
                TARGET,
                format!("Anthropic returns one answer per request (n = {n}); send {n} requests"),
            ));
        }
        if let Some(t) = self.temperature.filter(|&t| t > 1.0) {
            return Err(RequestError::unsupported(
                "temperature",
                TARGET,
                format!("Anthropic accepts a temperature from 0 to 1, got {t}"),
            ));
        }
        if !same {
            check(&self.extra, OPENAI_ONLY, TARGET)?;
        }
        let mut body = Map::new();
        body.insert("model".into(), json!(head.model));
        let (thinking, max_tokens) = self.thinking(defaults, same, caps)?;
        body.insert("max_tokens".into(), json!(max_tokens));
        if let Some(system) = self.system_value(same)? {
            body.insert("system".into(), system);
        }
        body.insert("messages".into(), Value::Array(self.messages_value(same)?));
        if !self.tools.is_empty() {
            let mut tools = Vec::new();
            for (i, t) in self.tools.iter().enumerate() {
                tools.push(write_tool(t, i, same)?);
            }
            body.insert("tools".into(), Value::Array(tools));
        }
        if (same || !self.tools.is_empty())
            && let Some(tc) = self.tool_choice_value()
        {
            body.insert("tool_choice".into(), tc);
        }
        if let Some(t) = self.temperature {
            body.insert("temperature".into(), json!(t));
        }
        if let Some(p) = self.top_p {
            body.insert("top_p".into(), json!(p));
        }
        if let Some(k) = self.top_k {
            body.insert("top_k".into(), json!(k));
        }
        if !self.stop.is_empty() {
            body.insert("stop_sequences".into(), json!(self.stop));
        }
        body.insert("stream".into(), json!(head.stream));
        if let Some(u) = &self.user {
            body.insert("metadata".into(), json!({"user_id": u}));
        }
        if let Some(t) = thinking {
            body.insert("thinking".into(), t);
        }
        if same {
            for (k, v) in &self.extra {
                match (body.get_mut(k), v) {
                    (Some(have @ Value::Object(_)), Value::Object(add)) => extend(have, add),
                    _ => {
                        body.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        Ok(Value::Object(body))
    }

    /// The `thinking` object and the `max_tokens` to send.
    fn thinking(
        &self,
        d: &AnthropicDefaults,
        same: bool,
        caps: Capabilities,
    ) -> Result<(Option<Value>, u32), RequestError> {
        let cap = self.max_tokens.unwrap_or(d.default_max_tokens);
        let Some(r) = self
            .reasoning
            .as_ref()
            .filter(|_| caps.sends_reasoning(same))
        else {
            return Ok((None, cap));
        };
        let (budget, explicit) = match (r.budget_tokens, r.effort) {
            (Some(b), _) => (b, true),
            (None, Some(e)) => match d.budgets.budget(e) {
                Some(b) => (b, false),
                None => return Ok((None, cap)),
            },
            // `adaptive` and other modes: Anthropic's own words, so only to Anthropic.
            (None, None) => {
                let thinking = r.mode.as_ref().filter(|_| same).map(|mode| {
                    let mut t = json!({"type": mode});
                    extend(&mut t, &r.extra);
                    t
                });
                return Ok((thinking, cap));
            }
        };
        let max_param = if self.legacy_max_tokens || same {
            "max_tokens"
        } else {
            "max_completion_tokens"
        };
        let (budget, max_tokens) = match self.max_tokens {
            // No cap from the client: room for the budget plus the default answer.
            None => (budget, d.default_max_tokens.saturating_add(budget)),
            Some(m) if budget < m => (budget, m),
            Some(m) if explicit => {
                return Err(RequestError::invalid(
                    "thinking.budget_tokens",
                    format!("budget_tokens ({budget}) must be less than max_tokens ({m})"),
                ));
            }
            // The client's cap wins: the effort's budget shrinks to half of it.
            Some(m) => {
                let b = (m / 2).max(MIN_THINKING_BUDGET);
                if b >= m {
                    return Err(RequestError::unsupported(
                        max_param,
                        TARGET,
                        format!(
                            "reasoning needs an output cap above {MIN_THINKING_BUDGET} tokens \
                             on Anthropic (thinking budget minimum), got {m}"
                        ),
                    ));
                }
                (b, m)
            }
        };
        let mut t = json!({"type": "enabled", "budget_tokens": budget});
        if same {
            extend(&mut t, &r.extra);
        }
        Ok((Some(t), max_tokens))
    }

    /// The top-level `system`: the leading parts, plus, from OpenAI, the later system
    /// messages hoisted (an Anthropic request keeps its mid-conversation system turns in
    /// place).
    fn system_value(&self, same: bool) -> Result<Option<Value>, RequestError> {
        let mut parts: Vec<&SystemPart> = self.system.iter().collect();
        let mut hoisted: Vec<SystemPart> = Vec::new();
        let system_messages = self
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !same && matches!(m.role, Role::System | Role::Developer));
        for (i, m) in system_messages {
            for (j, p) in m.content.iter().enumerate() {
                match p {
                    Part::Text { text, .. } => hoisted.push(SystemPart::text(text.clone())),
                    _ => {
                        return Err(RequestError::unsupported(
                            m.part_path(i, j),
                            TARGET,
                            "Anthropic system prompts hold text only",
                        ));
                    }
                }
            }
        }
        parts.extend(&hoisted);
        parts.retain(|p| !p.text.is_empty());
        let plain = |p: &SystemPart| p.cache_control.is_none() && (!same || p.extra.is_empty());
        Ok(match parts.as_slice() {
            [] => None,
            [one] if plain(one) && !(same && self.system_blocks) => Some(json!(one.text)),
            many => Some(Value::Array(
                many.iter()
                    .map(|p| {
                        let mut b = json!({"type": "text", "text": p.text});
                        let mut add = Map::new();
                        if let Some(cc) = &p.cache_control {
                            add.insert("cache_control".into(), cc.clone());
                        }
                        if same {
                            add.extend(p.extra.clone());
                        }
                        extend(&mut b, &add);
                        b
                    })
                    .collect(),
            )),
        })
    }

    /// Messages with tool results in user turns and empty turns left out. Towards
    /// Anthropic from OpenAI, consecutive turns of the same role are merged (Anthropic wants
    /// alternation); within Anthropic only the pieces of one client message are joined
    /// again, so the client's turns reach the upstream as sent.
    fn messages_value(&self, same: bool) -> Result<Vec<Value>, RequestError> {
        let mut out: Vec<Turn> = Vec::new();
        for (i, m) in self.messages.iter().enumerate() {
            let role = match m.role {
                Role::User | Role::Tool => "user",
                Role::Assistant => "assistant",
                Role::System if same => "system",
                Role::System | Role::Developer => continue,
                Role::Native => {
                    out.push(Turn::Verbatim(m.native_for(i, TARGET)?));
                    continue;
                }
            };
            let mut blocks = Vec::new();
            for (j, p) in m.content.iter().enumerate() {
                if let Some(b) = write_block(p, &m.part_path(i, j), same)? {
                    blocks.push(b);
                }
            }
            if blocks.is_empty() {
                continue;
            }
            let extra = if same { m.extra.clone() } else { Map::new() };
            let index = m.origin.map(|o| o.index);
            match out.last_mut() {
                Some(Turn::Built {
                    role: r,
                    index: at,
                    blocks: have,
                    extra: x,
                    ..
                }) if *r == role && (!same || at.is_none() || index.is_none() || *at == index) => {
                    have.extend(blocks);
                    x.extend(extra);
                }
                _ => out.push(Turn::Built {
                    role,
                    index,
                    blocks,
                    extra,
                    as_string: same && m.origin.is_some_and(|o| o.as_string),
                }),
            }
        }
        Ok(out.into_iter().map(Turn::into_value).collect())
    }

    fn tool_choice_value(&self) -> Option<Value> {
        let no_parallel = self.parallel_tool_calls == Some(false);
        let mut v = match &self.tool_choice {
            Some(ToolChoice::None) => return Some(json!({"type": "none"})),
            Some(ToolChoice::Auto) => json!({"type": "auto"}),
            Some(ToolChoice::Required) => json!({"type": "any"}),
            Some(ToolChoice::Tool { name }) => json!({"type": "tool", "name": name}),
            None if no_parallel => json!({"type": "auto"}),
            None => return None,
        };
        if no_parallel {
            extend(
                &mut v,
                &Map::from_iter([("disable_parallel_tool_use".into(), json!(true))]),
            );
        }
        Some(v)
    }
}

/// One turn of the Anthropic `messages` being written.
enum Turn {
    /// A message of a role the gateway does not know, as the client wrote it.
    Verbatim(Value),
    /// A turn built from unified messages.
    Built {
        role: &'static str,
        /// Index of the client message it comes from, if any.
        index: Option<usize>,
        blocks: Vec<Value>,
        extra: Map<String, Value>,
        /// The client wrote its content as a string.
        as_string: bool,
    },
}

impl Turn {
    fn into_value(self) -> Value {
        match self {
            Turn::Verbatim(v) => v,
            Turn::Built {
                role,
                mut blocks,
                extra,
                as_string,
                ..
            } => {
                let content = match blocks.as_mut_slice() {
                    [only] if as_string && is_plain_text(only) => only["text"].take(),
                    _ => Value::Array(blocks),
                };
                let mut v = json!({"role": role, "content": content});
                extend(&mut v, &extra);
                v
            }
        }
    }
}

/// `{"type": "text", "text": ...}` and nothing else.
fn is_plain_text(block: &Value) -> bool {
    block.as_object().is_some_and(|b| {
        b.len() == 2
            && b.get("type").and_then(Value::as_str) == Some("text")
            && b["text"].is_string()
    })
}

/// Anthropic tool ids must match `^[a-zA-Z0-9_-]+$`; other characters become `_`
/// (the same way for a call and its result, so the pair still matches).
pub(crate) fn sanitize_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_block(p: &Part, path: &str, same: bool) -> Result<Option<Value>, RequestError> {
    let with = |mut v: Value, extra: &Map<String, Value>| {
        if same {
            extend(&mut v, extra);
        }
        v
    };
    let v = match p {
        // Anthropic rejects empty text blocks.
        Part::Text { text, .. } if text.is_empty() => return Ok(None),
        Part::Text { text, extra } => with(json!({"type": "text", "text": text}), extra),
        Part::Image { source, extra, .. } => {
            let source = match source {
                ImageSource::Base64 { media_type, data } => {
                    json!({"type": "base64", "media_type": media_type, "data": data})
                }
                ImageSource::Url { url } => json!({"type": "url", "url": url}),
            };
            with(json!({"type": "image", "source": source}), extra)
        }
        Part::ToolCall {
            id,
            name,
            arguments,
            extra,
        } => {
            let input = check_arguments(arguments, &format!("{path}.arguments"))?;
            with(
                json!({"type": "tool_use", "id": sanitize_id(id), "name": name, "input": input}),
                extra,
            )
        }
        Part::ToolResult {
            call_id,
            content,
            is_error,
            as_string,
            extra,
        } => {
            let mut v = json!({"type": "tool_result", "tool_use_id": sanitize_id(call_id)});
            let mut add = Map::new();
            match content.as_slice() {
                // The client's own string, kept as it was.
                [Part::Text { text, .. }] if same && *as_string => {
                    add.insert("content".into(), json!(text));
                }
                // Empty result: no content (Anthropic rejects empty text blocks).
                [] => {}
                [Part::Text { text, .. }] if text.is_empty() => {}
                [Part::Text { text, .. }] if !same => {
                    add.insert("content".into(), json!(text));
                }
                parts => {
                    let mut blocks = Vec::new();
                    for (k, c) in parts.iter().enumerate() {
                        blocks.extend(write_block(c, &format!("{path}.content[{k}]"), same)?);
                    }
                    add.insert("content".into(), Value::Array(blocks));
                }
            }
            if *is_error {
                add.insert("is_error".into(), json!(true));
            }
            extend(&mut v, &add);
            with(v, extra)
        }
        Part::Reasoning {
            text,
            signature: Some(sig),
            extra,
        } if !sig.is_empty() => with(
            json!({"type": "thinking", "thinking": text, "signature": sig}),
            extra,
        ),
        // Unsigned thinking (none, or empty: cut before its signature) cannot be sent back
        // to Anthropic.
        Part::Reasoning { .. } => return Ok(None),
        Part::RedactedReasoning { data } => json!({"type": "redacted_thinking", "data": data}),
        Part::Native {
            dialect: Dialect::Anthropic,
            raw,
        } => raw.clone(),
        Part::Native { raw, .. } => {
            let ty = raw.get("type").and_then(Value::as_str).unwrap_or("unknown");
            return Err(RequestError::unsupported(
                path,
                TARGET,
                format!(
                    "OpenAI content part of type {} has no Anthropic equivalent",
                    untrusted(ty)
                ),
            ));
        }
    };
    Ok(Some(v))
}

fn write_tool(t: &Tool, i: usize, same: bool) -> Result<Value, RequestError> {
    match t {
        Tool::Function(f) => {
            let schema = if f.parameters.is_null() {
                json!({"type": "object", "properties": {}})
            } else {
                f.parameters.clone()
            };
            let mut v = json!({"name": f.name});
            let mut add = Map::new();
            if let Some(d) = &f.description {
                add.insert("description".into(), json!(d));
            }
            add.insert("input_schema".into(), schema);
            if let Some(cc) = &f.cache_control {
                add.insert("cache_control".into(), cc.clone());
            }
            if same {
                if let Some(s) = f.strict {
                    add.insert("strict".into(), json!(s));
                }
                add.extend(f.extra.clone());
            }
            extend(&mut v, &add);
            Ok(v)
        }
        Tool::Native {
            dialect: Dialect::Anthropic,
            raw,
        } => Ok(raw.clone()),
        Tool::Native { raw, .. } => {
            let ty = raw.get("type").and_then(Value::as_str).unwrap_or("unknown");
            Err(RequestError::unsupported(
                format!("tools[{i}]"),
                TARGET,
                format!(
                    "OpenAI tool of type {} has no Anthropic equivalent",
                    untrusted(ty)
                ),
            ))
        }
    }
}
