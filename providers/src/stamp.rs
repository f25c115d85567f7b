//! The event envelope: which stream an event belongs to and its place in it.

use serde::{Deserialize, Serialize};

use crate::event::AgentEvent;

/// An [`AgentEvent`] with its stream id and seq, as it travels to clients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Stream id.
    pub stream: String,
    /// Position in the stream: 0, 1, 2, ... without gaps.
    pub seq: u64,
    /// The event.
    #[serde(flatten)]
    pub event: AgentEvent,
}

/// Hands out consecutive seqs for one stream.
#[derive(Debug, Clone)]
pub struct Stamper {
    stream: String,
    next: u64,
}

impl Stamper {
    /// A stamper for `stream`, starting at seq 0.
    pub fn new(stream: impl Into<String>) -> Self {
        Self::resume(stream, 0)
    }

    /// A stamper that continues a stream at `next` (after a resume or a crash).
    pub fn resume(stream: impl Into<String>, next: u64) -> Self {
        Stamper {
            stream: stream.into(),
            next,
        }
    }

    /// Wraps `event` with the next seq.
    pub fn stamp(&mut self, event: AgentEvent) -> Envelope {
        let seq = self.next;
        self.next += 1;
        Envelope {
            stream: self.stream.clone(),
            seq,
            event,
        }
    }

    /// The seq the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqs_are_consecutive_and_envelope_is_flat() {
        let mut s = Stamper::new("s1");
        let a = s.stamp(AgentEvent::Heartbeat);
        let b = s.stamp(AgentEvent::Heartbeat);
        assert_eq!((a.seq, b.seq, s.next_seq()), (0, 1, 2));
        let json = serde_json::to_string(&b).unwrap();
        assert_eq!(json, r#"{"stream":"s1","seq":1,"type":"heartbeat"}"#);
        let back: Envelope = serde_json::from_str(&json).unwrap();
        assert_eq!(back, b);
    }
}
