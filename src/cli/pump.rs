//! The read -> decode -> print loop shared by `events` and `convert`, and their two sinks.

use std::io::{self, ErrorKind, Read, Write};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use providers::event::ErrorInfo;
use providers::{
    AgentEvent, DecodeError, Dialect, EncodeError, EncodeOptions, Stamper, StreamDecoder,
    StreamEncoder,
};

use super::report;

/// Bytes asked of the input per read.
const CHUNK: usize = 64 * 1024;

/// Stream id used when neither `--stream-id` nor a `stream.start` gave one (the body failed
/// before the answer started).
const UNKNOWN_STREAM: &str = "unknown";

/// How a run ended; maps to the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The stream was complete (or the reader of our output went away).
    Complete,
    /// The stream was cut, or the provider reported an error inside it.
    Failed,
    /// Malformed input, unreadable input, or output that cannot be produced.
    Bad,
}

impl Outcome {
    pub(super) fn code(self) -> ExitCode {
        match self {
            Outcome::Complete => ExitCode::SUCCESS,
            Outcome::Failed => ExitCode::from(1),
            Outcome::Bad => ExitCode::from(2),
        }
    }
}

/// Why a sink could not take events.
#[derive(Debug)]
pub(super) enum SinkError {
    /// Writing stdout failed.
    Io(io::Error),
    /// The target dialect refused an event.
    Encode(EncodeError),
    /// An event did not serialize.
    Json(serde_json::Error),
}

impl From<io::Error> for SinkError {
    fn from(e: io::Error) -> Self {
        SinkError::Io(e)
    }
}

/// Where decoded events go.
pub(super) trait Sink {
    /// Prints `event`.
    fn event(&mut self, event: AgentEvent) -> Result<(), SinkError>;
    /// Flushes what was printed so far.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Prints the terminal failure: `error` then `stream.end{reason: error}`.
    fn fail(&mut self, error: ErrorInfo) -> Result<(), SinkError> {
        let [error, end] = AgentEvent::terminal_failure(error);
        self.event(error)?;
        self.event(end)
    }
}

/// Reads `input` chunk by chunk, decodes it as `dialect` and prints through `sink`.
pub(super) fn pump(
    input: &mut dyn Read,
    name: &str,
    dialect: Dialect,
    sink: &mut dyn Sink,
) -> Outcome {
    let mut decoder = StreamDecoder::new(dialect);
    let mut buf = vec![0u8; CHUNK];
    let mut events = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                // Print what we have, then give up on the input.
                let _ = sink.flush();
                report(&format!("cannot read {name}: {e}"));
                return Outcome::Bad;
            }
        };
        let fed = decoder.feed(&buf[..n], &mut events);
        if let Err(outcome) = drain(&mut events, sink).and_then(|()| flushed(sink)) {
            return outcome;
        }
        if let Err(e) = fed {
            return failed(name, &e, sink);
        }
    }
    let finished = decoder.finish(&mut events);
    if let Err(outcome) = drain(&mut events, sink) {
        return outcome;
    }
    match finished {
        Ok(()) => match flushed(sink) {
            Ok(()) => Outcome::Complete,
            Err(outcome) => outcome,
        },
        Err(e) => failed(name, &e, sink),
    }
}

/// Prints the pending events.
fn drain(events: &mut Vec<AgentEvent>, sink: &mut dyn Sink) -> Result<(), Outcome> {
    for event in events.drain(..) {
        sink.event(event).map_err(sink_failed)?;
    }
    Ok(())
}

fn flushed(sink: &mut dyn Sink) -> Result<(), Outcome> {
    sink.flush().map_err(sink_failed)
}

/// Ends the output after a decode error: terminal error events, stderr line, exit code.
fn failed(name: &str, error: &DecodeError, sink: &mut dyn Sink) -> Outcome {
    let outcome = match error {
        DecodeError::Incomplete { .. } | DecodeError::Upstream { .. } => Outcome::Failed,
        DecodeError::Malformed { .. } | DecodeError::TooLarge { .. } => Outcome::Bad,
    };
    let printed = sink
        .fail(error.to_error_info())
        .map_err(sink_failed)
        .and_then(|()| flushed(sink));
    report(&format!("{name}: {error}"));
    match printed {
        Err(Outcome::Bad) => Outcome::Bad,
        _ => outcome,
    }
}

/// Reports a sink failure. A closed stdout (`| head`) ends the run quietly.
fn sink_failed(e: SinkError) -> Outcome {
    match e {
        SinkError::Io(e) if e.kind() == ErrorKind::BrokenPipe => Outcome::Complete,
        SinkError::Io(e) => {
            report(&format!("writing output: {e}"));
            Outcome::Bad
        }
        SinkError::Encode(e) => {
            report(&e.to_string());
            Outcome::Bad
        }
        SinkError::Json(e) => {
            report(&format!("serializing an event: {e}"));
            Outcome::Bad
        }
    }
}

/// `events`: one JSON line per event, in its envelope.
pub(super) struct EventsSink<W: Write> {
    out: io::BufWriter<W>,
    stream_id: Option<String>,
    stamper: Option<Stamper>,
}

impl<W: Write> EventsSink<W> {
    pub(super) fn new(out: W, stream_id: Option<String>) -> Self {
        EventsSink {
            out: io::BufWriter::new(out),
            stream_id,
            stamper: None,
        }
    }
}

impl<W: Write> Sink for EventsSink<W> {
    fn event(&mut self, event: AgentEvent) -> Result<(), SinkError> {
        let stamper = self.stamper.get_or_insert_with(|| {
            let id = match (&self.stream_id, &event) {
                (Some(id), _) => id.clone(),
                (None, AgentEvent::StreamStart(start)) => start.id.clone(),
                (None, _) => UNKNOWN_STREAM.to_owned(),
            };
            Stamper::new(id)
        });
        let envelope = stamper.stamp(event);
        serde_json::to_writer(&mut self.out, &envelope).map_err(|e| {
            if e.is_io() {
                SinkError::Io(io::Error::from(e))
            } else {
                SinkError::Json(e)
            }
        })?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush()?;
        Ok(())
    }
}

/// `convert`: the events re-encoded as the target dialect's SSE body.
pub(super) struct ConvertSink<W: Write> {
    out: io::BufWriter<W>,
    to: Dialect,
    encoder: StreamEncoder,
    buf: Vec<u8>,
}

impl<W: Write> ConvertSink<W> {
    pub(super) fn new(out: W, to: Dialect, include_usage: bool) -> Self {
        ConvertSink {
            out: io::BufWriter::new(out),
            to,
            encoder: StreamEncoder::new(to, EncodeOptions { include_usage }),
            buf: Vec::new(),
        }
    }
}

impl<W: Write> Sink for ConvertSink<W> {
    fn event(&mut self, mut event: AgentEvent) -> Result<(), SinkError> {
        if let AgentEvent::StreamStart(start) = &mut event
            && start.created.is_none()
            && self.to.wire().stamps_created()
        {
            start.created = Some(unix_now());
        }
        self.buf.clear();
        self.encoder
            .event(&event, &mut self.buf)
            .map_err(SinkError::Encode)?;
        self.out.write_all(&self.buf)?;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.out.flush()?;
        Ok(())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Hands out `step` bytes per read, then fails with `fail` (if any) at the end.
    struct Trickle<'a> {
        body: &'a [u8],
        step: usize,
        fail: bool,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.body.is_empty() {
                return if self.fail {
                    Err(io::Error::other("connection reset"))
                } else {
                    Ok(0)
                };
            }
            let n = self.step.min(buf.len()).min(self.body.len());
            buf[..n].copy_from_slice(&self.body[..n]);
            self.body = &self.body[n..];
            Ok(n)
        }
    }

    const BODY: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"m\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    fn events_of(step: usize, fail: bool) -> (Outcome, String) {
        let mut out = Vec::new();
        let outcome = {
            let mut sink = EventsSink::new(&mut out, None);
            let mut input = Trickle {
                body: BODY,
                step,
                fail,
            };
            pump(&mut input, "test", Dialect::Anthropic, &mut sink)
        };
        (outcome, String::from_utf8(out).unwrap())
    }

    #[test]
    fn tiny_reads_print_what_one_big_read_prints() {
        let (whole, expected) = events_of(usize::MAX, false);
        assert_eq!(whole, Outcome::Complete);
        assert!(expected.starts_with("{\"stream\":\"msg_1\",\"seq\":0,\"type\":\"stream.start\""));
        for step in [1, 2, 5, 17] {
            assert_eq!(
                events_of(step, false),
                (Outcome::Complete, expected.clone())
            );
        }
    }

    #[test]
    fn a_read_error_is_exit_2_after_printing_what_decoded() {
        let (outcome, out) = events_of(7, true);
        assert_eq!(outcome, Outcome::Bad);
        assert!(out.contains("stream.end"), "{out}");
    }

    #[test]
    fn convert_stamps_created_for_openai() {
        let mut out = Vec::new();
        let outcome = {
            let mut sink = ConvertSink::new(&mut out, Dialect::OpenAi, true);
            let mut input = Trickle {
                body: BODY,
                step: 64,
                fail: false,
            };
            pump(&mut input, "test", Dialect::Anthropic, &mut sink)
        };
        assert_eq!(outcome, Outcome::Complete);
        let (events, result) = StreamDecoder::decode_all(Dialect::OpenAi, &out);
        result.unwrap();
        match events.first() {
            Some(AgentEvent::StreamStart(s)) => assert!(s.created.unwrap_or(0) > 1_600_000_000),
            other => panic!("{other:?}"),
        }
    }
}
