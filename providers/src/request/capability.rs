//! What the model a request is written for can take, as far as translation cares: today,
//! whether it reasons. Sending reasoning parameters to a model that does not reason is a 400
//! from the real APIs (`reasoning_effort` to `gpt-4o`, `thinking` to `claude-3-5-haiku`).

/// What the target model can take. [`Capabilities::of`] gives the family defaults; the
/// gateway overrides them per provider or alias (`reasoning = true|false`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Whether the model reasons (takes OpenAI `reasoning_effort`, Anthropic `thinking`);
    /// `None` when not known.
    pub reasons: Option<bool>,
}

impl Capabilities {
    /// The family defaults for a model name (see [`reasons_by_family`]).
    pub fn of(model: &str) -> Self {
        Capabilities {
            reasons: reasons_by_family(model),
        }
    }

    /// Whether a request's reasoning settings are written. A model known to reason gets
    /// them, one known not to never does; for an unknown one, the client's own settings pass
    /// within its dialect (the client named its model) but are not invented by translation.
    pub(crate) fn sends_reasoning(self, same_dialect: bool) -> bool {
        self.reasons.unwrap_or(same_dialect)
    }
}

/// Whether a model reasons, by its family: `o1`, `o3`, `o4`, `gpt-5` (not its `-chat`
/// variants, which are unknown), `gpt-oss`, `codex-`, `claude-3-7` and the Claude 4 and later
/// names reason; `gpt-4*` (`gpt-4o`, `gpt-4.1`), `gpt-3.5`, `chatgpt-`, `claude-3*`,
/// `claude-2`, `claude-instant` do not; anything else is unknown. A router prefix
/// (`openai/gpt-4o`) and a cloud prefix (`us.anthropic.claude-...`) are ignored.
pub fn reasons_by_family(model: &str) -> Option<bool> {
    let name = model
        .rsplit('/')
        .next()
        .unwrap_or(model)
        .to_ascii_lowercase();
    let name = match name.find("claude-") {
        Some(at) => &name[at..],
        None => name.as_str(),
    };
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| name.starts_with(p));
    if starts(&["claude-3-7"]) {
        Some(true)
    } else if starts(&["claude-3", "claude-2", "claude-instant"]) {
        Some(false)
    } else if starts(&["claude-"]) {
        Some(true)
    } else if starts(&["gpt-5"]) {
        (!name.contains("-chat")).then_some(true)
    } else if starts(&["o1", "o3", "o4", "gpt-oss", "codex-"]) {
        Some(true)
    } else if starts(&["gpt-4", "gpt-3", "chatgpt-"]) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        for m in [
            "o1",
            "o3-mini",
            "o4-mini-2025-04-16",
            "gpt-5",
            "gpt-5-nano",
            "gpt-5.1",
            "gpt-oss-120b",
            "openai/o3",
            "claude-3-7-sonnet-20250219",
            "claude-sonnet-4-5-20250929",
            "claude-opus-4-1",
            "claude-haiku-4-5",
            "us.anthropic.claude-sonnet-4-20250514-v1:0",
        ] {
            assert_eq!(reasons_by_family(m), Some(true), "{m}");
        }
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1",
            "gpt-4-turbo",
            "gpt-3.5-turbo",
            "chatgpt-4o-latest",
            "openrouter/openai/gpt-4o",
            "claude-3-5-haiku-20241022",
            "claude-3-opus-20240229",
            "claude-2.1",
        ] {
            assert_eq!(reasons_by_family(m), Some(false), "{m}");
        }
        for m in [
            "llama-3.1-70b",
            "deepseek-chat",
            "gpt-5-chat-latest",
            "text_basic",
            "",
        ] {
            assert_eq!(reasons_by_family(m), None, "{m}");
        }
    }

    #[test]
    fn unknown_models_keep_only_the_clients_own_settings() {
        let unknown = Capabilities { reasons: None };
        assert!(unknown.sends_reasoning(true));
        assert!(!unknown.sends_reasoning(false));
        let no = Capabilities {
            reasons: Some(false),
        };
        assert!(!no.sends_reasoning(true));
        let yes = Capabilities {
            reasons: Some(true),
        };
        assert!(yes.sends_reasoning(false));
    }
}
