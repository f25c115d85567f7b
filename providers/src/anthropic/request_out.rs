//! Writing the unified model as an Anthropic Messages request body.

use std::fmt;

use serde_json::{Map, Value};

use crate::dialect::Dialect;
use crate::json_out::Out;
use crate::openai_chat::request_in::check_arguments;
use crate::openai_chat::request_out::text_part;
use crate::request::AnthropicDefaults;
use crate::request::capability::Capabilities;
use crate::request::error::RequestError;
use crate::request::rules::{OPENAI_ONLY, check};
use crate::request::unified::{
    ChatRequest, Head, ImageSource, Message, Part, Role, Tool, ToolChoice,
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
            .map(Value::from)
    }

    /// [`ChatRequest::to_anthropic_for`] as sent to an upstream, as its bytes: for `model`,
    /// streaming, whatever the request says (without a copy of the request to change it, nor
    /// of its text: see [`Out`]).
    pub fn to_anthropic_upstream(
        &self,
        model: &str,
        defaults: &AnthropicDefaults,
        caps: Capabilities,
    ) -> Result<Vec<u8>, RequestError> {
        self.write_anthropic(Head::upstream(model), defaults, caps)
            .map(|body| body.to_vec())
    }

    fn write_anthropic<'a>(
        &'a self,
        head: Head<'a>,
        defaults: &AnthropicDefaults,
        caps: Capabilities,
    ) -> Result<Out<'a>, RequestError> {
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
        let mut body = Out::object([("model", head.model.into())]);
        let (thinking, max_tokens) = self.thinking(defaults, same, caps)?;
        body.insert("max_tokens", max_tokens.into());
        if let Some(system) = self.system_value(same)? {
            body.insert("system", system);
        }
        body.insert("messages", Out::Array(self.messages_value(same)?));
        if !self.tools.is_empty() {
            let mut tools = Vec::with_capacity(self.tools.len());
            for (i, t) in self.tools.iter().enumerate() {
                tools.push(write_tool(t, i, same)?);
            }
            body.insert("tools", Out::Array(tools));
        }
        if (same || !self.tools.is_empty())
            && let Some(tc) = self.tool_choice_value()
        {
            body.insert("tool_choice", tc);
        }
        if let Some(t) = self.temperature {
            body.insert("temperature", t.into());
        }
        if let Some(p) = self.top_p {
            body.insert("top_p", p.into());
        }
        if let Some(k) = self.top_k {
            body.insert("top_k", k.into());
        }
        if !self.stop.is_empty() {
            body.insert(
                "stop_sequences",
                Out::Array(self.stop.iter().map(Out::from).collect()),
            );
        }
        body.insert("stream", head.stream.into());
        if let Some(u) = &self.user {
            body.insert("metadata", Out::object([("user_id", u.into())]));
        }
        if let Some(t) = thinking {
            body.insert("thinking", t);
        }
        if same {
            for (k, v) in &self.extra {
                body.merge(k, v);
            }
        }
        Ok(body)
    }

    /// The `thinking` object and the `max_tokens` to send.
    fn thinking(
        &self,
        d: &AnthropicDefaults,
        same: bool,
        caps: Capabilities,
    ) -> Result<(Option<Out<'_>>, u32), RequestError> {
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
                    let mut t = Out::object([("type", mode.into())]);
                    t.extend(&r.extra);
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
        let mut t = Out::object([("type", "enabled".into()), ("budget_tokens", budget.into())]);
        if same {
            t.extend(&r.extra);
        }
        Ok((Some(t), max_tokens))
    }

    /// The top-level `system`: the leading parts, plus, from OpenAI, the later system
    /// messages hoisted (an Anthropic request keeps its mid-conversation system turns in
    /// place).
    fn system_value(&self, same: bool) -> Result<Option<Out<'_>>, RequestError> {
        let mut parts: Vec<SystemText<'_>> = self
            .system
            .iter()
            .map(|p| SystemText {
                text: &p.text,
                cache_control: p.cache_control.as_ref(),
                extra: Some(&p.extra),
            })
            .collect();
        let system_messages = self
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !same && matches!(m.role, Role::System | Role::Developer));
        for (i, m) in system_messages {
            for (j, p) in m.content.iter().enumerate() {
                match p {
                    Part::Text { text, .. } => parts.push(SystemText {
                        text,
                        cache_control: None,
                        extra: None,
                    }),
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
        parts.retain(|p| !p.text.is_empty());
        let plain = |p: &SystemText<'_>| {
            p.cache_control.is_none() && (!same || p.extra.is_none_or(Map::is_empty))
        };
        Ok(match parts.as_slice() {
            [] => None,
            [one] if plain(one) && !(same && self.system_blocks) => Some(one.text.into()),
            many => Some(Out::Array(
                many.iter()
                    .map(|p| {
                        let mut b = text_part(p.text);
                        if let Some(cc) = p.cache_control {
                            b.insert("cache_control", Out::Value(cc));
                        }
                        if same && let Some(extra) = p.extra {
                            b.extend(extra);
                        }
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
    fn messages_value(&self, same: bool) -> Result<Vec<Out<'_>>, RequestError> {
        let mut out: Vec<Turn<'_>> = Vec::new();
        for (i, m) in self.messages.iter().enumerate() {
            let role = match m.role {
                Role::User | Role::Tool => "user",
                Role::Assistant => "assistant",
                Role::System if same => "system",
                Role::System | Role::Developer => continue,
                Role::Native => {
                    out.push(Turn::Verbatim(m.native_raw(i, TARGET)?));
                    continue;
                }
            };
            let mut blocks = Vec::new();
            for (j, p) in m.content.iter().enumerate() {
                if let Some(b) = write_block(p, &PartPath(m, i, j), same)? {
                    blocks.push(b);
                }
            }
            if blocks.is_empty() {
                continue;
            }
            let extra = if same { vec![&m.extra] } else { Vec::new() };
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
        Ok(out.into_iter().map(Turn::into_out).collect())
    }

    fn tool_choice_value(&self) -> Option<Out<'_>> {
        let no_parallel = self.parallel_tool_calls == Some(false);
        let ty = |ty: &'static str| Out::object([("type", ty.into())]);
        let mut v = match &self.tool_choice {
            Some(ToolChoice::None) => return Some(ty("none")),
            Some(ToolChoice::Auto) => ty("auto"),
            Some(ToolChoice::Required) => ty("any"),
            Some(ToolChoice::Tool { name }) => {
                Out::object([("type", "tool".into()), ("name", name.into())])
            }
            None if no_parallel => ty("auto"),
            None => return None,
        };
        if no_parallel {
            v.insert("disable_parallel_tool_use", true.into());
        }
        Some(v)
    }
}

/// A part of the top-level system prompt: the request's own, or the text of a system message
/// hoisted there (no cache control, no fields of its own).
struct SystemText<'a> {
    text: &'a str,
    cache_control: Option<&'a Value>,
    extra: Option<&'a Map<String, Value>>,
}

/// The client's path of part `j` of message `i`, rendered only for an error.
struct PartPath<'a>(&'a Message, usize, usize);

impl fmt::Display for PartPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.part_path(self.1, self.2))
    }
}

/// A path below a part's, rendered only for an error.
enum Below<'a> {
    /// `path.content[k]`.
    Content(&'a dyn fmt::Display, usize),
    /// `path.arguments`.
    Arguments(&'a dyn fmt::Display),
}

impl fmt::Display for Below<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Below::Content(path, k) => write!(f, "{path}.content[{k}]"),
            Below::Arguments(path) => write!(f, "{path}.arguments"),
        }
    }
}

/// One turn of the Anthropic `messages` being written.
enum Turn<'a> {
    /// A message of a role the gateway does not know, as the client wrote it.
    Verbatim(&'a Value),
    /// A turn built from unified messages.
    Built {
        role: &'static str,
        /// Index of the client message it comes from, if any.
        index: Option<usize>,
        blocks: Vec<Out<'a>>,
        /// The fields of its messages, set in order.
        extra: Vec<&'a Map<String, Value>>,
        /// The client wrote its content as a string.
        as_string: bool,
    },
}

impl<'a> Turn<'a> {
    fn into_out(self) -> Out<'a> {
        match self {
            Turn::Verbatim(v) => Out::Value(v),
            Turn::Built {
                role,
                mut blocks,
                extra,
                as_string,
                ..
            } => {
                let content = match blocks.as_mut_slice() {
                    [only] if as_string => match plain_text(only) {
                        Some(text) => text,
                        None => Out::Array(blocks),
                    },
                    _ => Out::Array(blocks),
                };
                let mut v = Out::object([("role", role.into()), ("content", content)]);
                for x in extra {
                    v.extend(x);
                }
                v
            }
        }
    }
}

/// The text of `{"type": "text", "text": ...}` and nothing else.
fn plain_text<'a>(block: &mut Out<'a>) -> Option<Out<'a>> {
    match block {
        Out::Object(members) => match members.as_mut_slice() {
            [
                ("type", Out::Str("text")),
                ("text", text @ (Out::Str(_) | Out::String(_))),
            ] => Some(std::mem::replace(text, Out::Null)),
            _ => None,
        },
        _ => None,
    }
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

fn write_block<'a>(
    p: &'a Part,
    path: &dyn fmt::Display,
    same: bool,
) -> Result<Option<Out<'a>>, RequestError> {
    let with = |mut v: Out<'a>, extra: &'a Map<String, Value>| {
        if same {
            v.extend(extra);
        }
        v
    };
    let v = match p {
        // Anthropic rejects empty text blocks.
        Part::Text { text, .. } if text.is_empty() => return Ok(None),
        Part::Text { text, extra } => with(text_part(text), extra),
        Part::Image { source, extra, .. } => {
            let source = match source {
                ImageSource::Base64 { media_type, data } => Out::object([
                    ("type", "base64".into()),
                    ("media_type", media_type.into()),
                    ("data", data.into()),
                ]),
                ImageSource::Url { url } => {
                    Out::object([("type", "url".into()), ("url", url.into())])
                }
            };
            with(
                Out::object([("type", "image".into()), ("source", source)]),
                extra,
            )
        }
        Part::ToolCall {
            id,
            name,
            arguments,
            extra,
        } => {
            let input = check_arguments(arguments, &Below::Arguments(path))?;
            with(
                Out::object([
                    ("type", "tool_use".into()),
                    ("id", Out::String(sanitize_id(id))),
                    ("name", name.into()),
                    ("input", Out::Owned(Value::Object(input))),
                ]),
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
            let mut v = Out::object([
                ("type", "tool_result".into()),
                ("tool_use_id", Out::String(sanitize_id(call_id))),
            ]);
            match content.as_slice() {
                // The client's own string, kept as it was.
                [Part::Text { text, .. }] if same && *as_string => {
                    v.insert("content", text.into());
                }
                // Empty result: no content (Anthropic rejects empty text blocks).
                [] => {}
                [Part::Text { text, .. }] if text.is_empty() => {}
                [Part::Text { text, .. }] if !same => {
                    v.insert("content", text.into());
                }
                parts => {
                    let mut blocks = Vec::new();
                    for (k, c) in parts.iter().enumerate() {
                        blocks.extend(write_block(c, &Below::Content(path, k), same)?);
                    }
                    v.insert("content", Out::Array(blocks));
                }
            }
            if *is_error {
                v.insert("is_error", true.into());
            }
            with(v, extra)
        }
        Part::Reasoning {
            text,
            signature: Some(sig),
            extra,
        } if !sig.is_empty() => with(
            Out::object([
                ("type", "thinking".into()),
                ("thinking", text.into()),
                ("signature", sig.into()),
            ]),
            extra,
        ),
        // Unsigned thinking (none, or empty: cut before its signature) cannot be sent back
        // to Anthropic.
        Part::Reasoning { .. } => return Ok(None),
        Part::RedactedReasoning { data } => {
            Out::object([("type", "redacted_thinking".into()), ("data", data.into())])
        }
        Part::Native {
            dialect: Dialect::Anthropic,
            raw,
        } => Out::Value(raw),
        Part::Native { raw, .. } => {
            let ty = raw.get("type").and_then(Value::as_str).unwrap_or("unknown");
            return Err(RequestError::unsupported(
                path.to_string(),
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

/// An empty object schema, for a tool without parameters.
static EMPTY_SCHEMA: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| serde_json::json!({"type": "object", "properties": {}}));

fn write_tool(t: &Tool, i: usize, same: bool) -> Result<Out<'_>, RequestError> {
    match t {
        Tool::Function(f) => {
            let schema = if f.parameters.is_null() {
                &*EMPTY_SCHEMA
            } else {
                &f.parameters
            };
            let mut v = Out::object([("name", (&f.name).into())]);
            if let Some(d) = &f.description {
                v.insert("description", d.into());
            }
            v.insert("input_schema", Out::Value(schema));
            if let Some(cc) = &f.cache_control {
                v.insert("cache_control", Out::Value(cc));
            }
            if same {
                if let Some(s) = f.strict {
                    v.insert("strict", s.into());
                }
                v.extend(&f.extra);
            }
            Ok(v)
        }
        Tool::Native {
            dialect: Dialect::Anthropic,
            raw,
        } => Ok(Out::Value(raw)),
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
