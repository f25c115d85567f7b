//! WebSocket messages <-> frame JSON for a connection's [`Compression`]: text frames on
//! `streamgate.v1`, compressed binary frames otherwise. Independent of any WebSocket crate:
//! the handler maps its library's message type onto [`Message`].

use super::compress::{compress, decompress};
use super::frame::ClientFrame;
use super::parse::{FrameError, parse_client_frame};
use super::protocol::Compression;

/// A WebSocket data message (control frames stay with the WebSocket library).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text frame: one JSON frame (uncompressed connections).
    Text(String),
    /// A binary frame: one compressed JSON frame (compressed connections).
    Binary(Vec<u8>),
}

impl Message {
    /// Bytes of payload on the wire.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(t) => t.len(),
            Message::Binary(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frames shorter than this gain nothing from per-message compression (lz4 and gzip even grow
/// them) and go as text under [`encode_server_message_min`]. Measured on the recorded streams
/// (docs/websocket.md): 128 is no worse than compressing everything in any mode, and spares
/// the compressor most token deltas.
pub const COMPRESS_MIN_BYTES: usize = 128;

/// What the gateway accepts from a client message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Longest frame JSON text, in bytes (after decompression). Answered `frame_too_large`.
    pub max_frame: usize,
    /// Most bytes a compressed message may inflate to. Answered `inflate_too_large`.
    pub max_inflate: usize,
}

impl Default for FrameLimits {
    /// 4 MiB both (the size of a large request body).
    fn default() -> Self {
        FrameLimits {
            max_frame: 4 << 20,
            max_inflate: 4 << 20,
        }
    }
}

/// Client side: the message carrying `frame` on a connection using `c`.
pub fn encode_client_frame(c: Compression, frame: &ClientFrame) -> Message {
    encode(c, frame.to_json())
}

/// Server side: the message carrying one frame's JSON text (`event_frame`, a shard, or
/// `ServerFrame::to_json`) on a connection using `c`. `json` is UTF-8, as every frame is.
pub fn encode_server_message(c: Compression, json: &[u8]) -> Message {
    match c {
        Compression::None => Message::Text(String::from_utf8_lossy(json).into_owned()),
        c => Message::Binary(compress(c, json)),
    }
}

/// Server side, skipping compression for small frames: like [`encode_server_message`], but a
/// frame shorter than `min_bytes` goes as a text frame even on a compressed connection (every
/// reader takes text on any connection). Token deltas of ~100 bytes gain nothing from
/// per-message compression (docs/websocket.md); [`COMPRESS_MIN_BYTES`] is the measured choice.
pub fn encode_server_message_min(c: Compression, json: &[u8], min_bytes: usize) -> Message {
    if json.len() < min_bytes {
        encode_server_message(Compression::None, json)
    } else {
        encode_server_message(c, json)
    }
}

fn encode(c: Compression, json: String) -> Message {
    match c {
        Compression::None => Message::Text(json),
        c => Message::Binary(compress(c, json.as_bytes())),
    }
}

/// Server side: the client frame in a message. Binary messages are refused on uncompressed
/// connections ([`FrameError::BinaryOnUncompressed`], close 1002); text messages are taken on
/// any connection (a client may leave small frames uncompressed).
pub fn decode_client_message(
    c: Compression,
    message: Message,
    limits: FrameLimits,
) -> Result<ClientFrame, FrameError> {
    match message {
        Message::Text(text) => parse_client_frame(text.as_bytes(), limits.max_frame),
        Message::Binary(_) if c == Compression::None => Err(FrameError::BinaryOnUncompressed),
        Message::Binary(bytes) => {
            let json = decompress(c, &bytes, limits.max_inflate)?;
            parse_client_frame(&json, limits.max_frame)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::compress::InflateError;
    use super::super::frame::ErrorCode;
    use super::super::protocol::CloseCode;
    use super::*;
    use serde_json::json;

    fn start() -> ClientFrame {
        ClientFrame::Start {
            id: Some("c1".into()),
            dialect: None,
            request: json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
            detach: false,
        }
    }

    #[test]
    fn client_frames_cross_every_connection_kind() {
        for c in Compression::ALL {
            let message = encode_client_frame(c, &start());
            assert_eq!(matches!(message, Message::Binary(_)), c.is_binary(), "{c}");
            let back = decode_client_message(c, message, FrameLimits::default()).unwrap();
            assert_eq!(back, start(), "{c}");
        }
    }

    #[test]
    fn server_messages_are_text_or_compressed_binary() {
        let json = br#"{"op":"pong"}"#;
        assert_eq!(
            encode_server_message(Compression::None, json),
            Message::Text(r#"{"op":"pong"}"#.into())
        );
        for c in [Compression::Lz4, Compression::Zstd, Compression::Gzip] {
            let Message::Binary(bytes) = encode_server_message(c, json) else {
                panic!("{c}: not binary");
            };
            assert_eq!(decompress(c, &bytes, 100).unwrap(), json, "{c}");
        }
    }

    #[test]
    fn small_frames_skip_compression() {
        let small = br#"{"op":"pong"}"#;
        let large = format!(
            r#"{{"op":"pong","data":"{}"}}"#,
            "a".repeat(COMPRESS_MIN_BYTES)
        );
        for c in Compression::ALL {
            assert_eq!(
                encode_server_message_min(c, small, COMPRESS_MIN_BYTES),
                Message::Text(r#"{"op":"pong"}"#.into()),
                "{c}"
            );
            let m = encode_server_message_min(c, large.as_bytes(), COMPRESS_MIN_BYTES);
            assert_eq!(m, encode_server_message(c, large.as_bytes()), "{c}");
            assert_eq!(matches!(m, Message::Binary(_)), c.is_binary(), "{c}");
        }
        // The limit is inclusive: a frame of exactly min_bytes is compressed.
        let m = encode_server_message_min(Compression::Lz4, small, small.len());
        assert!(matches!(m, Message::Binary(_)));
    }

    #[test]
    fn text_is_accepted_on_compressed_connections() {
        let text = Message::Text(r#"{"op":"ping"}"#.into());
        assert_eq!(
            decode_client_message(Compression::Zstd, text, FrameLimits::default()),
            Ok(ClientFrame::Ping { data: None })
        );
    }

    #[test]
    fn binary_on_an_uncompressed_connection_is_a_protocol_error() {
        let e = decode_client_message(
            Compression::None,
            Message::Binary(br#"{"op":"ping"}"#.to_vec()),
            FrameLimits::default(),
        )
        .unwrap_err();
        assert_eq!(e, FrameError::BinaryOnUncompressed);
        assert_eq!(e.close_code(), Some(CloseCode::ProtocolError));
    }

    #[test]
    fn limits_apply_after_decompression() {
        let ping = ClientFrame::Ping {
            data: Some(json!("x".repeat(10_000))),
        };
        let len = ping.to_json().len();
        for c in [Compression::Lz4, Compression::Zstd, Compression::Gzip] {
            let message = encode_client_frame(c, &ping);
            assert!(message.len() < 1000, "{c} compresses");
            let e = decode_client_message(
                c,
                message.clone(),
                FrameLimits {
                    max_frame: 1 << 20,
                    max_inflate: 5000,
                },
            )
            .unwrap_err();
            assert_eq!(
                e,
                FrameError::Inflate(InflateError::TooLarge { limit: 5000 })
            );
            assert_eq!(e.code(), ErrorCode::InflateTooLarge);
            let e = decode_client_message(
                c,
                message,
                FrameLimits {
                    max_frame: 5000,
                    max_inflate: 1 << 20,
                },
            )
            .unwrap_err();
            assert_eq!(
                e,
                FrameError::TooLarge {
                    size: len,
                    max: 5000
                }
            );
            assert_eq!(e.code(), ErrorCode::FrameTooLarge);
        }
    }

    #[test]
    fn corrupt_or_non_utf8_binary() {
        let e = decode_client_message(
            Compression::Gzip,
            Message::Binary(b"garbage".to_vec()),
            FrameLimits::default(),
        )
        .unwrap_err();
        assert!(matches!(e, FrameError::Inflate(InflateError::Corrupt(_))));
        assert_eq!(e.code(), ErrorCode::MalformedFrame);
        let bad = compress(Compression::Lz4, b"{\"op\":\"ping\",\"data\":\"\xc3\x28\"}");
        let e = decode_client_message(
            Compression::Lz4,
            Message::Binary(bad),
            FrameLimits::default(),
        )
        .unwrap_err();
        assert_eq!(e.close_code(), Some(CloseCode::InvalidPayload));
    }
}
