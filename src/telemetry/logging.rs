//! The tracing subscriber: stderr, in `[log] format`, filtered by `RUST_LOG` or else
//! `[log] level`.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// `[log] level` (or `RUST_LOG`) is not a tracing filter.
    #[error("[log] level {level:?} is not a log filter: {reason}")]
    Level {
        /// The filter as written.
        level: String,
        /// The parser's words.
        reason: String,
    },
}

/// The filter in force: `RUST_LOG` when set (and not empty), else `[log] level`.
pub fn filter(config: &LogConfig) -> Result<EnvFilter, LogError> {
    let level = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| config.level.clone());
    EnvFilter::try_new(&level).map_err(|e| LogError::Level {
        reason: e.to_string(),
        level,
    })
}

/// Installs the subscriber `config` describes. A second call (tests, the demo) keeps the
/// first subscriber.
pub fn init(config: &LogConfig) -> Result<(), LogError> {
    let filter = filter(config)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_table_parses_and_refuses_what_it_does_not_know() {
        let parse = |text: &str| toml::from_str::<LogConfig>(text);
        assert_eq!(parse("").unwrap(), LogConfig::default());
        let json = parse("format = \"json\"\nlevel = \"debug\"\naccess = false").unwrap();
        assert_eq!(json.format, LogFormat::Json);
        assert_eq!(json.level, "debug");
        assert!(!json.access);
        assert!(parse("format = \"xml\"").is_err());
        assert!(parse("colour = true").is_err());
    }

    #[test]
    fn a_level_that_is_no_filter_is_an_error() {
        // RUST_LOG would override the level under test.
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        let bad = LogConfig {
            level: "info,[=".into(),
            ..LogConfig::default()
        };
        assert!(matches!(filter(&bad), Err(LogError::Level { .. })));
        assert!(filter(&LogConfig::default()).is_ok());
    }
}
