//! The bytes of the native door's SSE answers -> the stream's envelopes, in order and once
//! each: sans-I/O, one [`Sequencer`] per followed stream, across all of its connections.

use std::collections::VecDeque;

use providers::sse::SseParser;
use providers::{AgentEvent, Envelope};

use super::ClientError;

/// Decodes the answers of one stream and keeps its seqs continuous: an event the client
/// already has (a seq below the next one expected) is dropped, an event past it is a
/// [`ClientError::Gap`]. After `stream.end`, nothing more is taken.
#[derive(Debug)]
pub(crate) struct Sequencer {
    /// The stream every envelope must belong to.
    stream: String,
    /// The seq expected next (one past the last one handed out).
    next: u64,
    /// Whether `stream.end` was handed out.
    ended: bool,
    /// The current connection's SSE parser; a fresh one per connection, so that the half
    /// frame a broken connection left behind is never glued to the next answer's bytes.
    parser: SseParser,
}

impl Sequencer {
    /// A sequencer for `stream` whose next event is the one after `after` (the first one
    /// when None).
    pub(crate) fn new(stream: String, after: Option<u64>) -> Self {
        Sequencer {
            stream,
            next: after.map_or(0, |a| a.saturating_add(1)),
            ended: false,
            parser: SseParser::new(),
        }
    }

    /// The seq of the last event handed out (or the one resumed after), for `Last-Event-ID`.
    pub(crate) fn last(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }

    /// Whether `stream.end` was handed out.
    pub(crate) fn ended(&self) -> bool {
        self.ended
    }

    /// A new connection starts: whatever the previous one left unfinished is discarded.
    pub(crate) fn reconnected(&mut self) {
        self.parser = SseParser::new();
    }

    /// Decodes `bytes` of the current connection, appending each new event to `out`.
    /// Events decoded before an error stay in `out`.
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        out: &mut VecDeque<Envelope>,
    ) -> Result<(), ClientError> {
        let Sequencer {
            stream,
            next,
            ended,
            parser,
        } = self;
        parser.feed::<ClientError>(bytes, &mut |frame| {
            if !frame.has_data || *ended {
                return Ok(());
            }
            let envelope: Envelope = serde_json::from_str(frame.data).map_err(|e| {
                ClientError::Protocol(format!(
                    "frame at line {} is not an event envelope: {e}",
                    frame.line
                ))
            })?;
            if envelope.stream != *stream {
                return Err(ClientError::Protocol(format!(
                    "an event of stream {:?} while following {stream:?}",
                    envelope.stream
                )));
            }
            if let Some(id) = frame.id
                && id != itoa::Buffer::new().format(envelope.seq)
            {
                return Err(ClientError::Protocol(format!(
                    "SSE id {id:?} is not the event's seq {}",
                    envelope.seq
                )));
            }
            if envelope.seq < *next {
                // Already handed out (a server replaying more than asked): never twice.
                return Ok(());
            }
            if envelope.seq > *next {
                return Err(ClientError::Gap {
                    stream: stream.clone(),
                    expected: *next,
                    got: envelope.seq,
                });
            }
            *next += 1;
            *ended = matches!(envelope.event, AgentEvent::StreamEnd(_));
            out.push_back(envelope);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn frame(stream: &str, seq: u64, event: &str) -> String {
        format!(
            "id: {seq}\nevent: {event}\ndata: {{\"stream\":\"{stream}\",\"seq\":{seq},\"type\":\"{event}\"}}\n\n"
        )
    }

    fn seqs(out: &VecDeque<Envelope>) -> Vec<u64> {
        out.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn frames_split_anywhere_come_out_once_in_order() {
        let body: String = (0..4).map(|s| frame("st_a", s, "heartbeat")).collect();
        for cut in 0..body.len() {
            let mut seq = Sequencer::new("st_a".into(), None);
            let mut out = VecDeque::new();
            seq.feed(&body.as_bytes()[..cut], &mut out).unwrap();
            seq.feed(&body.as_bytes()[cut..], &mut out).unwrap();
            assert_eq!(seqs(&out), [0, 1, 2, 3], "cut at {cut}");
            assert_eq!(seq.last(), Some(3));
        }
    }

    #[test]
    fn a_half_frame_of_a_broken_connection_is_dropped_and_duplicates_skipped() {
        let mut seq = Sequencer::new("st_a".into(), None);
        let mut out = VecDeque::new();
        let first = frame("st_a", 0, "heartbeat") + &frame("st_a", 1, "heartbeat")[..20];
        seq.feed(first.as_bytes(), &mut out).unwrap();
        assert_eq!(seq.last(), Some(0));
        seq.reconnected();
        // The server replays 0 again (more than asked): skipped, then 1 and 2 come.
        let second: String = (0..3).map(|s| frame("st_a", s, "heartbeat")).collect();
        seq.feed(second.as_bytes(), &mut out).unwrap();
        assert_eq!(seqs(&out), [0, 1, 2]);
    }

    #[test]
    fn a_skipped_seq_is_a_gap() {
        let mut seq = Sequencer::new("st_a".into(), Some(4));
        let mut out = VecDeque::new();
        let body = frame("st_a", 5, "heartbeat") + &frame("st_a", 7, "heartbeat");
        let err = seq.feed(body.as_bytes(), &mut out).unwrap_err();
        assert!(
            matches!(
                err,
                ClientError::Gap {
                    expected: 6,
                    got: 7,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(seqs(&out), [5], "what came before the gap is kept");
    }

    #[test]
    fn foreign_streams_bad_ids_and_bad_json_are_protocol_errors() {
        let mut out = VecDeque::new();
        let other = frame("st_b", 0, "heartbeat");
        let e = Sequencer::new("st_a".into(), None).feed(other.as_bytes(), &mut out);
        assert!(matches!(e, Err(ClientError::Protocol(_))), "{e:?}");
        let bad_id = frame("st_a", 0, "heartbeat").replacen("id: 0", "id: 9", 1);
        let e = Sequencer::new("st_a".into(), None).feed(bad_id.as_bytes(), &mut out);
        assert!(matches!(e, Err(ClientError::Protocol(_))), "{e:?}");
        let e = Sequencer::new("st_a".into(), None).feed(b"data: {nope\n\n", &mut out);
        assert!(matches!(e, Err(ClientError::Protocol(_))), "{e:?}");
        assert!(out.is_empty());
    }

    #[test]
    fn nothing_is_taken_after_stream_end() {
        let mut seq = Sequencer::new("st_a".into(), None);
        let mut out = VecDeque::new();
        let end = "id: 0\nevent: stream.end\ndata: {\"stream\":\"st_a\",\"seq\":0,\"type\":\"stream.end\",\"reason\":\"stop\"}\n\n";
        let body = end.to_owned() + &frame("st_a", 1, "heartbeat");
        seq.feed(body.as_bytes(), &mut out).unwrap();
        assert!(seq.ended());
        assert_eq!(seqs(&out), [0]);
    }
}
