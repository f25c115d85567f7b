//! The one registry that names every wire dialect.
//!
//! Everything the gateway does differently per dialect goes through [`WireDialect`]: its
//! doors, its upstream calls, its error answers, the CLI's `events` / `convert` and the
//! replay server. Adding a dialect is a module implementing the trait plus one arm in
//! [`get`] (docs/dialects.md walks through it).

use crate::dialect::Dialect;
pub use crate::wire_dialect::{UpstreamSettings, WireDialect};
use crate::{anthropic, openai_chat, openai_responses};

/// The dialect of routes every door shares (`GET /v1/models`, the stream hub) when the
/// request's headers do not say otherwise: OpenAI's, the one most clients speak.
pub const DEFAULT_DOOR: Dialect = Dialect::OpenAi;

/// A dialect's implementation: registered once in [`get`].
pub fn get(dialect: Dialect) -> &'static dyn WireDialect {
    match dialect {
        Dialect::OpenAi => &openai_chat::OpenAiChat,
        Dialect::Anthropic => &anthropic::AnthropicMessages,
        Dialect::OpenAiResponses => &openai_responses::OpenAiResponses,
    }
}

/// Every registered dialect, in [`Dialect::ALL`] order.
pub fn all() -> impl Iterator<Item = &'static dyn WireDialect> {
    Dialect::ALL.into_iter().map(get)
}

impl Dialect {
    /// This dialect's implementation (see [`get`]).
    pub fn wire(self) -> &'static dyn WireDialect {
        get(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_answers_for_each_dialect() {
        for d in Dialect::ALL {
            assert_eq!(get(d).dialect(), d);
        }
        let names: Vec<Dialect> = all().map(|w| w.dialect()).collect();
        assert_eq!(names, Dialect::ALL);
    }

    #[test]
    fn door_paths_are_distinct_across_dialects() {
        let mut paths: Vec<&str> = all().flat_map(|w| w.door_paths().iter().copied()).collect();
        let n = paths.len();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), n, "two dialects claim one door path");
        for w in all() {
            assert!(!w.door_paths().is_empty(), "{} has no door", w.dialect());
            assert!(w.door_paths().iter().all(|p| p.starts_with('/')));
        }
    }
}
