//! `streamgate tail`: follows one stream of the native door to its end with the reference
//! client ([`crate::client`]), printing its events as they come.
//!
//! Output, by default: the answer's text (`text.delta`, `refusal.delta`) inline on standard
//! output, so `streamgate tail ID > answer.txt` keeps just the text; every other event as a
//! one-line marker `[SEQ TYPE key=value ...]` on standard error. With `--json`: each
//! envelope as one JSON line on standard output. Reconnects are logged on standard error.

use std::io::{self, ErrorKind, Write};
use std::path::Path;

use futures_util::StreamExt;
use providers::{AgentEvent, Envelope, FinishReason};
use serde_json::Value;

use super::pump::Outcome;
use super::report;
use crate::client::{ClientError, Reconnect, StreamClient};
use crate::config::Config;

/// Longest value shown in a marker, in characters.
const MARKER_VALUE_CHARS: usize = 80;

/// What `tail` was asked to do.
#[derive(Debug)]
pub(super) struct Tail<'a> {
    /// The stream.
    pub id: &'a str,
    /// Start after this seq (from the first event when None).
    pub after: Option<u64>,
    /// The gateway's base URL.
    pub url: &'a str,
    /// Configuration file for `[streaming.reconnect]`.
    pub config: Option<&'a Path>,
    /// One envelope JSON per line instead of text and markers.
    pub json: bool,
}

/// Runs `tail`: 0 when the stream ended with a `stream.end` whose reason is not `error` (or
/// was already finished after `after`), 1 when it ended in error or the client gave up, 2
/// for an unknown stream, a seq beyond its end, a bad URL or configuration.
pub(super) fn run(tail: &Tail<'_>) -> Outcome {
    let reconnect = match Config::load(tail.config) {
        Ok(config) => config.streaming.reconnect,
        Err(e) => {
            report(&e.to_string());
            return Outcome::Bad;
        }
    };
    let client = match StreamClient::new(tail.url, reconnect) {
        Ok(client) => client.on_reconnect(log_reconnect),
        Err(e) => {
            report(&e.chain());
            return Outcome::Bad;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            report(&format!("cannot start the runtime: {e}"));
            return Outcome::Bad;
        }
    };
    runtime.block_on(follow(&client, tail))
}

/// Follows the stream, printing each event; the outcome of how it ended.
async fn follow(client: &StreamClient, tail: &Tail<'_>) -> Outcome {
    let mut events = client.follow(tail.id, tail.after);
    let mut printer = Printer::new(tail.json);
    let mut end = None;
    while let Some(item) = events.next().await {
        match item {
            Ok(envelope) => {
                if let AgentEvent::StreamEnd(e) = &envelope.event {
                    end = Some(e.reason);
                }
                if let Err(e) = printer.print(&envelope) {
                    return write_failed(&e);
                }
            }
            Err(e) => {
                // The text so far ends its line before the error is told.
                let _ = printer.finish();
                report(&e.chain());
                return match e {
                    ClientError::NotFound { .. }
                    | ClientError::SeqBeyondEnd { .. }
                    | ClientError::InvalidUrl { .. } => Outcome::Bad,
                    _ => Outcome::Failed,
                };
            }
        }
    }
    if let Err(e) = printer.finish() {
        return write_failed(&e);
    }
    match end {
        Some(FinishReason::Error) => Outcome::Failed,
        Some(_) => Outcome::Complete,
        None => {
            let after = tail
                .after
                .map_or(String::new(), |a| format!(" after seq {a}"));
            report(&format!(
                "stream {} is finished and has no event{after}",
                tail.id
            ));
            Outcome::Complete
        }
    }
}

/// A closed standard output (`| head`) ends the run quietly.
fn write_failed(e: &io::Error) -> Outcome {
    if e.kind() == ErrorKind::BrokenPipe {
        Outcome::Complete
    } else {
        report(&format!("writing output: {e}"));
        Outcome::Bad
    }
}

/// The reconnect log line on standard error.
fn log_reconnect(r: &Reconnect<'_>) {
    let from = r
        .after
        .map_or_else(|| "from the start".to_owned(), |a| format!("after seq {a}"));
    report(&format!(
        "stream {}: {}; reconnecting {from} in {} ms (attempt {} of {})",
        r.stream,
        r.cause.chain(),
        r.delay.as_millis(),
        r.attempt,
        r.max_attempts
    ));
}

/// Prints events: JSON lines, or text and markers.
struct Printer {
    json: bool,
    /// Whether the text on standard output does not end with a newline.
    mid_line: bool,
}

impl Printer {
    fn new(json: bool) -> Self {
        Printer {
            json,
            mid_line: false,
        }
    }

    fn print(&mut self, envelope: &Envelope) -> io::Result<()> {
        let mut stdout = io::stdout().lock();
        if self.json {
            let line = serde_json::to_string(envelope).map_err(io::Error::other)?;
            writeln!(stdout, "{line}")?;
            return stdout.flush();
        }
        match &envelope.event {
            AgentEvent::TextDelta { text, .. } | AgentEvent::RefusalDelta { text, .. } => {
                stdout.write_all(text.as_bytes())?;
                if !text.is_empty() {
                    self.mid_line = !text.ends_with('\n');
                }
                stdout.flush()
            }
            _ => {
                if matches!(
                    envelope.event,
                    AgentEvent::BlockEnd { .. } | AgentEvent::StreamEnd(_)
                ) {
                    self.end_line(&mut stdout)?;
                }
                drop(stdout);
                let mut stderr = io::stderr().lock();
                writeln!(stderr, "{}", marker(envelope))
            }
        }
    }

    /// Ends the text's last line, if it is open.
    fn finish(&mut self) -> io::Result<()> {
        self.end_line(&mut io::stdout().lock())
    }

    fn end_line(&mut self, stdout: &mut impl Write) -> io::Result<()> {
        if self.mid_line {
            self.mid_line = false;
            stdout.write_all(b"\n")?;
            stdout.flush()?;
        }
        Ok(())
    }
}

/// `[SEQ TYPE key=value ...]`: the envelope's fields but `stream`, `seq` and `type`; plain
/// words bare, other values as JSON, each cut at [`MARKER_VALUE_CHARS`].
fn marker(envelope: &Envelope) -> String {
    let mut text = format!("[{} {}", envelope.seq, envelope.event.kind());
    if let Ok(Value::Object(fields)) = serde_json::to_value(&envelope.event) {
        for (key, value) in fields.iter().filter(|(k, _)| k.as_str() != "type") {
            let shown = match value {
                Value::String(s)
                    if !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._:/-@".contains(c)) =>
                {
                    s.clone()
                }
                other => other.to_string(),
            };
            text.push(' ');
            text.push_str(key);
            text.push('=');
            if shown.chars().count() > MARKER_VALUE_CHARS {
                text.extend(shown.chars().take(MARKER_VALUE_CHARS));
                text.push('…');
            } else {
                text.push_str(&shown);
            }
        }
    }
    text.push(']');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use providers::event::StreamEnd;

    #[test]
    fn markers_show_fields_bare_or_as_json_and_cut_long_values() {
        let end = Envelope {
            stream: "st_a".into(),
            seq: 9,
            event: AgentEvent::StreamEnd(Box::new(StreamEnd {
                reason: FinishReason::Stop,
                provider_reason: Some("end_turn".into()),
                stop_sequence: None,
                other_choices: Vec::new(),
                extra: None,
            })),
        };
        assert_eq!(
            marker(&end),
            "[9 stream.end reason=stop provider_reason=end_turn]"
        );
        let delta = Envelope {
            stream: "st_a".into(),
            seq: 3,
            event: AgentEvent::ToolCallDelta {
                index: 1,
                arguments: ("{\"city\": \"".to_owned() + &"x".repeat(100)).into(),
            },
        };
        let m = marker(&delta);
        assert!(
            m.starts_with("[3 tool_call.delta index=1 arguments=\"{\\\"city"),
            "{m}"
        );
        assert!(m.ends_with("…]"), "{m}");
    }
}
