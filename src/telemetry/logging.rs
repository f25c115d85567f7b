//! The tracing subscriber: stderr, in `[log] format`, filtered by `RUST_LOG` or else
//! `[log] level`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use super::log_time::LogTime;
use super::log_writer::{self, LogWriter, LogWriterGuard};
use super::otlp::{OtlpError, OtlpGuard};
use super::plain_fields::PlainFields;
use crate::config::telemetry::OtlpConfig;
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
    /// `[telemetry.otlp]` could not be started.
    #[error(transparent)]
    Otlp(#[from] OtlpError),
    /// The log writer thread could not be started.
    #[error("the log writer thread could not start: {0}")]
    Writer(#[source] std::io::Error),
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

/// The writer of the installed subscriber, for [`flush_before_exit`].
static INSTALLED: std::sync::OnceLock<LogWriter> = std::sync::OnceLock::new();

/// Writes the log lines still buffered (waiting at most 200 ms), for a process about to call
/// `std::process::exit`, which drops no [`LogGuard`].
pub fn flush_before_exit() {
    if let Some(writer) = INSTALLED.get() {
        writer.close(std::time::Duration::from_millis(200));
    }
}

/// What must live as long as logging: the log writer thread (lines still queued are written
/// when it drops) and the OTLP exporter (its last spans are sent when it drops).
#[derive(Debug)]
pub struct LogGuard {
    _writer: LogWriterGuard,
    _traces: Option<OtlpGuard>,
}

/// Installs the subscriber `config` describes, with the OTLP trace exporter when `otlp` is
/// set. `RUST_LOG` / `[log] level` filter the log lines only; the exporter has its own filter
/// (docs/observability.md, "Traces"). Lines are formatted where they happen and written to
/// stderr by a thread of their own, in batches ([`log_writer`]: one wake-up and one write per
/// batch, not per line, so the access log costs a stream little). A second call (tests, the
/// demo) keeps the first subscriber.
pub fn init(config: &LogConfig, otlp: Option<&OtlpConfig>) -> Result<LogGuard, LogError> {
    let filter = filter(config)?;
    let (writer, worker) = log_writer::spawn(
        std::io::stderr(),
        "streamgate-log",
        log_writer::MAX_BUFFERED_BYTES,
    )
    .map_err(LogError::Writer)?;
    let closer = writer.clone();
    let (text, json) = match config.format {
        LogFormat::Text => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_timer(LogTime)
                    .fmt_fields(PlainFields)
                    .with_writer(writer)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .with_filter(filter),
            ),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_timer(LogTime)
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(writer)
                    .with_filter(filter),
            ),
        ),
    };
    let (traces, guard) = match super::otlp::layer(otlp)? {
        Some((layer, guard)) => (Some(layer), Some(guard)),
        None => (None, None),
    };
    let installed = tracing_subscriber::registry()
        .with(text)
        .with(json)
        .with(traces)
        .try_init();
    if installed.is_ok() {
        let _ = INSTALLED.set(closer);
    }
    Ok(LogGuard {
        _writer: worker,
        _traces: guard,
    })
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
