//! The JSON frames of the protocol, tagged by `"op"`: what clients send ([`ClientFrame`]) and
//! what the gateway sends ([`ServerFrame`]), plus [`event_frame`], which turns an envelope
//! serialized once (for the journal, for SSE) into an `event` frame without re-serializing it.

use std::fmt;

use providers::{Dialect, Envelope};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A frame from the client. Unknown fields are refused (a misspelt `after` must not silently
/// replay a stream from its beginning); see [`super::parse_client_frame`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    /// Start a stream: the gateway answers `started`, then the stream's `event` frames.
    Start {
        /// The client's own name for the stream (1 to 128 characters of `[A-Za-z0-9._:-]`),
        /// echoed in `started` so that a client with several starts in flight can tell which
        /// is which.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        /// Shape of `request`; absent: guessed the way the native door guesses it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dialect: Option<Dialect>,
        /// The request body, as the dialect's HTTP endpoint takes it (a JSON object).
        request: Value,
        /// What happens to the stream when this connection goes away. `true` (the default):
        /// it is detached and goes on generating for the hub's detach time, so that any
        /// connection can `resume` it. `false`: the stream is cancelled when the connection
        /// that started it closes (it ends with its `cancelled` error and `stream.end`, and
        /// stays readable for the retention time like any finished stream).
        #[serde(default = "detach_default", skip_serializing_if = "is_detach_default")]
        detach: bool,
    },
    /// Send the events of a stream that come after seq `after` (from its beginning when
    /// absent), then follow it live.
    Resume {
        /// Stream id, as `started` named it.
        stream: String,
        /// Last seq the client has; absent: replay from seq 0.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<u64>,
    },
    /// Stop a stream: the gateway ends it with its `stream.end` event.
    Cancel {
        /// Stream id.
        stream: String,
    },
    /// Application-level ping: answered by `pong` with the same `data`.
    Ping {
        /// Anything; echoed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
    },
}

/// `detach` of a `start` frame that does not say.
const fn detach_default() -> bool {
    true
}

fn is_detach_default(detach: &bool) -> bool {
    *detach == detach_default()
}

impl ClientFrame {
    /// The frame's `op`.
    pub fn op(&self) -> &'static str {
        match self {
            ClientFrame::Start { .. } => "start",
            ClientFrame::Resume { .. } => "resume",
            ClientFrame::Cancel { .. } => "cancel",
            ClientFrame::Ping { .. } => "ping",
        }
    }

    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail (no maps with non-string keys, no fallible
        // Serialize impls). Were it to, `{}` goes out and the gateway answers malformed_frame.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// A frame from the gateway. Readers ignore fields they do not know (the gateway may add
/// some within v1), but not ops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerFrame {
    /// A `start` was accepted; `stream` names the new stream.
    Started {
        /// The gateway's stream id (use it in `resume` and `cancel`).
        stream: String,
        /// The client's `id` from `start`, when it gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// One Agent Event: the envelope's fields after `"op":"event"`. Built by [`event_frame`].
    Event(Envelope),
    /// A piece of an `event` frame too big to send whole (see [`super::shard()`]).
    Shard(Shard),
    /// Answer to `ping`.
    Pong {
        /// The ping's `data`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
    },
    /// A client frame was refused, or a stream could not be served.
    Error {
        /// The stream concerned, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<String>,
        /// What went wrong.
        code: ErrorCode,
        /// For humans. Never contains credentials.
        message: String,
    },
}

/// Fallback for the impossible failure of serializing a [`ServerFrame`].
const INTERNAL_ERROR_FRAME: &str =
    r#"{"op":"error","code":"internal","message":"frame serialization failed"}"#;

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        // Cannot fail for these types (see ClientFrame::to_json); an internal error frame
        // stands in if it ever does.
        serde_json::to_string(self).unwrap_or_else(|_| INTERNAL_ERROR_FRAME.to_owned())
    }
}

/// One piece of an `event` frame's JSON text. The `data` of shards `0..count`, concatenated,
/// is the whole `event` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Stream of the event.
    pub stream: String,
    /// Seq of the event.
    pub seq: u64,
    /// Position of this piece, from 0.
    pub index: u32,
    /// Number of pieces of the event.
    pub count: u32,
    /// This piece of the event frame's JSON text.
    pub data: String,
}

/// Machine-readable code of an `error` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not JSON, not an object, has no or an unknown `op`, or bad fields.
    MalformedFrame,
    /// The frame's JSON text is longer than the gateway accepts.
    FrameTooLarge,
    /// A compressed message inflates past the gateway's limit.
    InflateTooLarge,
    /// `resume` or `cancel` names a stream the gateway does not know (or no longer keeps).
    UnknownStream,
    /// `resume` asks for events after a seq the stream has not reached.
    SeqBeyondEnd,
    /// `resume` asks for events the journal no longer holds.
    SeqGone,
    /// `start` reuses an `id` that names a live stream.
    DuplicateStream,
    /// The request was refused; the message is the gateway's.
    BadRequest,
    /// A rate limit refused the stream.
    RateLimited,
    /// No route can serve the stream now (or the gateway is shutting down).
    Unavailable,
    /// A bug or an unexpected failure in the gateway.
    Internal,
    /// `start` or `resume` while the connection already follows as many streams as it may
    /// (`streams.websocket.max_streams`); the connection goes on.
    TooManyStreams,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedFrame => "malformed_frame",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::InflateTooLarge => "inflate_too_large",
            ErrorCode::UnknownStream => "unknown_stream",
            ErrorCode::SeqBeyondEnd => "seq_beyond_end",
            ErrorCode::SeqGone => "seq_gone",
            ErrorCode::DuplicateStream => "duplicate_stream",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
            ErrorCode::TooManyStreams => "too_many_streams",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text spliced into an envelope to make it an `event` frame.
const EVENT_OP: &[u8] = br#""op":"event""#;

/// Turns an envelope's JSON (as `serde_json` writes an [`Envelope`]:
/// `{"stream":..,"seq":..,"type":..}`) into its `event` frame by inserting `"op":"event",`
/// right after the opening brace. The rest of the bytes are copied untouched.
///
/// Leading whitespace is kept. Input that is not a JSON object is returned unchanged (it was
/// never an envelope; the reader will refuse it).
pub fn event_frame(envelope_json: &[u8]) -> Vec<u8> {
    let Some(brace) = envelope_json
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .filter(|&i| envelope_json[i] == b'{')
    else {
        return envelope_json.to_vec();
    };
    let (head, rest) = envelope_json.split_at(brace + 1);
    let empty = rest
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'}');
    let mut out = Vec::with_capacity(envelope_json.len() + EVENT_OP.len() + 1);
    out.extend_from_slice(head);
    out.extend_from_slice(EVENT_OP);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use providers::event::ErrorInfo;
    use providers::{AgentEvent, FinishReason, StreamEnd, Usage};
    use serde_json::json;

    fn round_trip_client(frame: ClientFrame, want: Value) {
        let text = frame.to_json();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), want);
        assert_eq!(serde_json::from_str::<ClientFrame>(&text).unwrap(), frame);
    }

    fn round_trip_server(frame: ServerFrame, want: Value) {
        let text = frame.to_json();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), want);
        assert_eq!(serde_json::from_str::<ServerFrame>(&text).unwrap(), frame);
    }

    #[test]
    fn client_frames_round_trip() {
        round_trip_client(
            ClientFrame::Start {
                id: Some("job-1".into()),
                dialect: Some(Dialect::Anthropic),
                request: json!({"model": "m", "max_tokens": 5}),
                detach: false,
            },
            json!({"op": "start", "id": "job-1", "dialect": "anthropic",
                   "request": {"model": "m", "max_tokens": 5}, "detach": false}),
        );
        round_trip_client(
            ClientFrame::Start {
                id: None,
                dialect: None,
                request: json!({"model": "m"}),
                detach: true,
            },
            json!({"op": "start", "request": {"model": "m"}}),
        );
        round_trip_client(
            ClientFrame::Resume {
                stream: "st_1".into(),
                after: Some(41),
            },
            json!({"op": "resume", "stream": "st_1", "after": 41}),
        );
        round_trip_client(
            ClientFrame::Resume {
                stream: "st_1".into(),
                after: None,
            },
            json!({"op": "resume", "stream": "st_1"}),
        );
        round_trip_client(
            ClientFrame::Cancel {
                stream: "st_1".into(),
            },
            json!({"op": "cancel", "stream": "st_1"}),
        );
        round_trip_client(
            ClientFrame::Ping {
                data: Some(json!({"t": 1})),
            },
            json!({"op": "ping", "data": {"t": 1}}),
        );
        round_trip_client(ClientFrame::Ping { data: None }, json!({"op": "ping"}));
    }

    #[test]
    fn server_frames_round_trip() {
        round_trip_server(
            ServerFrame::Started {
                stream: "st_1".into(),
                id: Some("job-1".into()),
            },
            json!({"op": "started", "stream": "st_1", "id": "job-1"}),
        );
        round_trip_server(
            ServerFrame::Started {
                stream: "st_2".into(),
                id: None,
            },
            json!({"op": "started", "stream": "st_2"}),
        );
        round_trip_server(
            ServerFrame::Event(Envelope {
                stream: "st_1".into(),
                seq: 3,
                event: AgentEvent::TextDelta {
                    index: 0,
                    text: "Hi".into(),
                    extra: None,
                },
            }),
            json!({"op": "event", "stream": "st_1", "seq": 3, "type": "text.delta",
                   "index": 0, "text": "Hi"}),
        );
        round_trip_server(
            ServerFrame::Shard(Shard {
                stream: "st_1".into(),
                seq: 9,
                index: 1,
                count: 3,
                data: "\"te".into(),
            }),
            json!({"op": "shard", "stream": "st_1", "seq": 9, "index": 1, "count": 3,
                   "data": "\"te"}),
        );
        round_trip_server(
            ServerFrame::Pong {
                data: Some(json!([1, "a"])),
            },
            json!({"op": "pong", "data": [1, "a"]}),
        );
        round_trip_server(ServerFrame::Pong { data: None }, json!({"op": "pong"}));
        round_trip_server(
            ServerFrame::Error {
                stream: Some("st_1".into()),
                code: ErrorCode::SeqGone,
                message: "seq 3 is no longer kept".into(),
            },
            json!({"op": "error", "stream": "st_1", "code": "seq_gone",
                   "message": "seq 3 is no longer kept"}),
        );
        round_trip_server(
            ServerFrame::Error {
                stream: None,
                code: ErrorCode::MalformedFrame,
                message: "x".into(),
            },
            json!({"op": "error", "code": "malformed_frame", "message": "x"}),
        );
    }

    #[test]
    fn server_frames_tolerate_unknown_fields_but_not_unknown_ops() {
        let f: ServerFrame =
            serde_json::from_str(r#"{"op":"pong","data":1,"later":"field"}"#).unwrap();
        assert_eq!(
            f,
            ServerFrame::Pong {
                data: Some(json!(1))
            }
        );
        assert!(serde_json::from_str::<ServerFrame>(r#"{"op":"bye"}"#).is_err());
    }

    #[test]
    fn error_codes_serialize_as_their_wire_names() {
        let all = [
            ErrorCode::MalformedFrame,
            ErrorCode::FrameTooLarge,
            ErrorCode::InflateTooLarge,
            ErrorCode::UnknownStream,
            ErrorCode::SeqBeyondEnd,
            ErrorCode::SeqGone,
            ErrorCode::DuplicateStream,
            ErrorCode::BadRequest,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
            ErrorCode::TooManyStreams,
        ];
        for code in all {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&json).unwrap(), code);
        }
        assert_eq!(ErrorCode::SeqBeyondEnd.as_str(), "seq_beyond_end");
    }

    fn envelopes() -> Vec<Envelope> {
        let events = [
            AgentEvent::Heartbeat,
            AgentEvent::TextDelta {
                index: 0,
                text: "Hi \"there\"\n{}".into(),
                extra: None,
            },
            AgentEvent::Usage(Box::new(Usage {
                input_tokens: Some(3),
                ..Usage::default()
            })),
            AgentEvent::Error(ErrorInfo {
                code: "overloaded_error".into(),
                message: "busy".into(),
                retryable: true,
            }),
            AgentEvent::StreamEnd(Box::new(StreamEnd {
                reason: FinishReason::Stop,
                provider_reason: Some("end_turn".into()),
                stop_sequence: None,
                other_choices: Vec::new(),
                extra: None,
            })),
        ];
        let mut stamper = providers::Stamper::new("st_1");
        events.into_iter().map(|e| stamper.stamp(e)).collect()
    }

    #[test]
    fn event_frame_is_the_envelope_plus_op_first() {
        for env in envelopes() {
            let json = serde_json::to_vec(&env).unwrap();
            let frame = event_frame(&json);
            let text = std::str::from_utf8(&frame).unwrap();
            assert!(
                text.starts_with(r#"{"op":"event","stream":"st_1","seq":"#),
                "{text}"
            );
            // Equal to serde's own serialization of the frame, byte for byte.
            assert_eq!(text, ServerFrame::Event(env.clone()).to_json());
            // Parses back to the envelope, as a frame and as an envelope plus `op`.
            assert_eq!(
                serde_json::from_slice::<ServerFrame>(&frame).unwrap(),
                ServerFrame::Event(env.clone())
            );
            let mut want = serde_json::to_value(&env).unwrap();
            want.as_object_mut()
                .unwrap()
                .insert("op".into(), json!("event"));
            assert_eq!(serde_json::from_slice::<Value>(&frame).unwrap(), want);
        }
    }

    #[test]
    fn event_frame_edge_inputs() {
        assert_eq!(event_frame(b" {\"a\":1}"), b" {\"op\":\"event\",\"a\":1}");
        assert_eq!(event_frame(b"{ }"), b"{\"op\":\"event\" }");
        assert_eq!(event_frame(b"[1]"), b"[1]");
        assert_eq!(event_frame(b""), b"");
    }
}
