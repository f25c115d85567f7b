//! The reference client's reading side: WebSocket messages from the gateway -> what they
//! mean ([`Incoming`]), through decompression (bounded), shard reassembly and parsing.
//! I/O-free: the caller reads messages from its WebSocket and feeds them in order.

use providers::Envelope;
use serde_json::Value;

use super::compress::{InflateError, decompress};
use super::frame::{ErrorCode, ServerFrame};
use super::message::Message;
use super::protocol::Compression;
use super::reassemble::{Reassembler, ReassemblyLimits, ShardError};

/// Bounds of a [`ClientDecoder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderLimits {
    /// Most bytes one compressed message may inflate to.
    pub max_inflate: usize,
    /// Bounds of shard reassembly.
    pub reassembly: ReassemblyLimits,
}

impl Default for DecoderLimits {
    /// 16 MiB per message and per event, 64 sharded events in progress.
    fn default() -> Self {
        DecoderLimits {
            max_inflate: 16 << 20,
            reassembly: ReassemblyLimits::default(),
        }
    }
}

/// One thing the gateway said.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An Agent Event (whole, or reassembled from its shards).
    Event(Envelope),
    /// A `start` was accepted.
    Started {
        /// The gateway's stream id.
        stream: String,
        /// The client's id, echoed.
        id: Option<String>,
    },
    /// Answer to a `ping`.
    Pong(Option<Value>),
    /// A refusal or a failure.
    Error {
        /// Stream concerned, if any.
        stream: Option<String>,
        /// Code.
        code: ErrorCode,
        /// Message.
        message: String,
    },
}

/// Why a message from the gateway could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A binary message on an uncompressed connection.
    #[error("binary message on an uncompressed connection")]
    UnexpectedBinary,
    /// A compressed message that would not inflate.
    #[error("compressed message: {0}")]
    Inflate(#[from] InflateError),
    /// Not a server frame (bad JSON, unknown op, bad fields, not UTF-8).
    #[error("malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A shard out of order, or past a limit.
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// The reassembled shards are not the `event` frame they announced.
    #[error("shards of stream {stream:?} seq {seq} do not make that event")]
    ShardMismatch {
        /// Stream the shards named.
        stream: String,
        /// Seq the shards named.
        seq: u64,
    },
}

/// Reads the gateway's messages on one connection.
#[derive(Debug)]
pub struct ClientDecoder {
    compression: Compression,
    limits: DecoderLimits,
    /// Sharded events in progress, per stream.
    shards: Reassembler,
}

impl ClientDecoder {
    /// A decoder for a connection that negotiated `compression`.
    pub fn new(compression: Compression, limits: DecoderLimits) -> Self {
        ClientDecoder {
            compression,
            limits,
            shards: Reassembler::new(limits.reassembly),
        }
    }

    /// Reads one message: `Ok(None)` for a shard that does not finish its event yet.
    /// Text messages are read on any connection; binary ones only on compressed ones.
    pub fn decode(&mut self, message: Message) -> Result<Option<Incoming>, DecodeError> {
        let json = match message {
            Message::Text(text) => text.into_bytes(),
            Message::Binary(_) if self.compression == Compression::None => {
                return Err(DecodeError::UnexpectedBinary);
            }
            Message::Binary(bytes) => {
                decompress(self.compression, &bytes, self.limits.max_inflate)?
            }
        };
        Ok(match serde_json::from_slice::<ServerFrame>(&json)? {
            ServerFrame::Event(envelope) => Some(Incoming::Event(envelope)),
            ServerFrame::Shard(shard) => {
                let (stream, seq) = (shard.stream.clone(), shard.seq);
                match self.shards.push(shard)? {
                    None => None,
                    Some(whole) => match serde_json::from_str::<ServerFrame>(&whole)? {
                        ServerFrame::Event(env) if env.stream == stream && env.seq == seq => {
                            Some(Incoming::Event(env))
                        }
                        _ => return Err(DecodeError::ShardMismatch { stream, seq }),
                    },
                }
            }
            ServerFrame::Started { stream, id } => Some(Incoming::Started { stream, id }),
            ServerFrame::Pong { data } => Some(Incoming::Pong(data)),
            ServerFrame::Error {
                stream,
                code,
                message,
            } => Some(Incoming::Error {
                stream,
                code,
                message,
            }),
        })
    }

    /// Number of sharded events in progress.
    pub fn pending_shards(&self) -> usize {
        self.shards.pending()
    }
}

#[cfg(test)]
mod tests {
    use super::super::frame::{Shard, event_frame};
    use super::super::message::{
        COMPRESS_MIN_BYTES, encode_server_message, encode_server_message_min,
    };
    use super::super::shard::shard;
    use super::*;
    use providers::{AgentEvent, Dialect, Stamper, StreamDecoder};
    use serde_json::json;

    /// The server side of one event: envelope JSON -> event frame -> shards -> messages
    /// (small ones as text, as `encode_server_message_min` sends them).
    fn send(c: Compression, env: &Envelope, chunk: usize) -> Vec<Message> {
        let json = serde_json::to_vec(env).unwrap();
        let frame = String::from_utf8(event_frame(&json)).unwrap();
        shard(&env.stream, env.seq, &frame, chunk)
            .iter()
            .map(|f| encode_server_message_min(c, f.as_bytes(), COMPRESS_MIN_BYTES))
            .collect()
    }

    fn fixture_envelopes(file: &str, dialect: Dialect, stream: &str) -> Vec<Envelope> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(file);
        let body = std::fs::read(path).unwrap();
        let mut decoder = StreamDecoder::new(dialect);
        let mut events = Vec::new();
        decoder.feed(&body, &mut events).unwrap();
        decoder.finish(&mut events).unwrap();
        let mut stamper = Stamper::new(stream);
        events.into_iter().map(|e| stamper.stamp(e)).collect()
    }

    #[test]
    fn fixture_streams_cross_every_mode_sharded_and_interleaved() {
        let a = fixture_envelopes(
            "anthropic/pause_turn_web_search_long.sse",
            Dialect::Anthropic,
            "st_a",
        );
        let b = fixture_envelopes("openai_chat/json_object_long.sse", Dialect::OpenAi, "st_b");
        for c in Compression::ALL {
            for chunk in [300, 4096, usize::MAX] {
                let mut decoder = ClientDecoder::new(c, DecoderLimits::default());
                let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
                let (mut sharded, mut binary) = (0, 0);
                for i in 0..a.len().max(b.len()) {
                    let ma = a.get(i).map(|e| send(c, e, chunk)).unwrap_or_default();
                    let mb = b.get(i).map(|e| send(c, e, chunk)).unwrap_or_default();
                    sharded += usize::from(ma.len() > 1) + usize::from(mb.len() > 1);
                    // Interleave the two streams' messages one by one.
                    let mut ia = ma.into_iter();
                    let mut ib = mb.into_iter();
                    loop {
                        let (na, nb) = (ia.next(), ib.next());
                        if na.is_none() && nb.is_none() {
                            break;
                        }
                        for m in na.into_iter().chain(nb) {
                            binary += usize::from(matches!(m, Message::Binary(_)));
                            match decoder.decode(m).unwrap() {
                                Some(Incoming::Event(e)) if e.stream == "st_a" => got_a.push(e),
                                Some(Incoming::Event(e)) => got_b.push(e),
                                Some(other) => panic!("{other:?}"),
                                None => {}
                            }
                        }
                    }
                }
                assert_eq!(got_a, a, "{c} {chunk}");
                assert_eq!(got_b, b, "{c} {chunk}");
                assert_eq!(decoder.pending_shards(), 0);
                // Compressed connections carry both kinds; uncompressed ones only text.
                assert_eq!(binary > 0, c.is_binary(), "{c} {chunk}");
                if chunk == 300 {
                    assert!(sharded > 10, "{c}: only {sharded} events sharded");
                }
            }
        }
    }

    #[test]
    fn control_frames_decode() {
        let frames = [
            (
                ServerFrame::Started {
                    stream: "st_1".into(),
                    id: Some("c1".into()),
                },
                Incoming::Started {
                    stream: "st_1".into(),
                    id: Some("c1".into()),
                },
            ),
            (
                ServerFrame::Pong {
                    data: Some(json!({"t": 5})),
                },
                Incoming::Pong(Some(json!({"t": 5}))),
            ),
            (
                ServerFrame::Error {
                    stream: Some("st_1".into()),
                    code: ErrorCode::UnknownStream,
                    message: "no such stream".into(),
                },
                Incoming::Error {
                    stream: Some("st_1".into()),
                    code: ErrorCode::UnknownStream,
                    message: "no such stream".into(),
                },
            ),
        ];
        for c in Compression::ALL {
            let mut d = ClientDecoder::new(c, DecoderLimits::default());
            for (frame, want) in &frames {
                let m = encode_server_message(c, frame.to_json().as_bytes());
                assert_eq!(d.decode(m).unwrap().as_ref(), Some(want), "{c}");
            }
        }
    }

    #[test]
    fn refusals() {
        let mut d = ClientDecoder::new(Compression::None, DecoderLimits::default());
        assert!(matches!(
            d.decode(Message::Binary(b"{}".to_vec())),
            Err(DecodeError::UnexpectedBinary)
        ));
        assert!(matches!(
            d.decode(Message::Text(r#"{"op":"bye"}"#.into())),
            Err(DecodeError::Malformed(_))
        ));

        // A compressed message past the inflate limit.
        let mut d = ClientDecoder::new(
            Compression::Zstd,
            DecoderLimits {
                max_inflate: 100,
                ..DecoderLimits::default()
            },
        );
        let big = ServerFrame::Pong {
            data: Some(json!("z".repeat(1000))),
        };
        let m = encode_server_message(Compression::Zstd, big.to_json().as_bytes());
        assert!(matches!(
            d.decode(m),
            Err(DecodeError::Inflate(InflateError::TooLarge { limit: 100 }))
        ));

        // Shards whose content is another event than they say.
        let mut d = ClientDecoder::new(Compression::None, DecoderLimits::default());
        let env = Stamper::new("st_1").stamp(AgentEvent::Heartbeat);
        let json = String::from_utf8(event_frame(&serde_json::to_vec(&env).unwrap())).unwrap();
        let (head, tail) = json.split_at(10);
        for (index, data) in [(0, head), (1, tail)] {
            let shard = ServerFrame::Shard(Shard {
                stream: "st_2".into(),
                seq: 0,
                index,
                count: 2,
                data: data.into(),
            });
            let r = d.decode(Message::Text(shard.to_json()));
            if index == 0 {
                assert!(matches!(r, Ok(None)));
            } else {
                assert!(matches!(r, Err(DecodeError::ShardMismatch { .. })), "{r:?}");
            }
        }

        // A shard out of order.
        let shard = ServerFrame::Shard(Shard {
            stream: "st_3".into(),
            seq: 0,
            index: 1,
            count: 2,
            data: "x".into(),
        });
        assert!(matches!(
            d.decode(Message::Text(shard.to_json())),
            Err(DecodeError::Shard(ShardError::OutOfOrder { .. }))
        ));
    }
}
