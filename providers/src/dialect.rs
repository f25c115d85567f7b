//! The wire dialects streamgate speaks, upstream and at its doors.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A provider wire format. The enum grows with the roadmap (OpenAI Responses, Gemini).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Dialect {
    /// OpenAI Chat Completions (`POST /v1/chat/completions`) and compatible servers.
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic Messages (`POST /v1/messages`).
    #[serde(rename = "anthropic")]
    Anthropic,
    /// OpenAI Responses (`POST /v1/responses`).
    #[serde(rename = "openai-responses")]
    OpenAiResponses,
}

impl Dialect {
    /// Every dialect, for table-driven code and tests.
    pub const ALL: [Dialect; 3] = [
        Dialect::OpenAi,
        Dialect::Anthropic,
        Dialect::OpenAiResponses,
    ];

    /// The name used in config, on the CLI and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
            Dialect::OpenAiResponses => "openai-responses",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dialect name that is not one we speak.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dialect {} (expected {})", crate::untrusted::untrusted(.0), expected())]
pub struct UnknownDialect(pub String);

/// `"a", "b" or "c"`: every name, for the error.
fn expected() -> String {
    let names: Vec<String> = Dialect::ALL.iter().map(|d| format!("\"{d}\"")).collect();
    match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl FromStr for Dialect {
    type Err = UnknownDialect;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dialect::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| UnknownDialect(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in Dialect::ALL {
            assert_eq!(d.as_str().parse::<Dialect>(), Ok(d));
            assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{d}\""));
        }
        let e = "gemini".parse::<Dialect>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown dialect \"gemini\" (expected \"openai\", \"anthropic\" or \"openai-responses\")"
        );
    }
}
