//! Client frame bytes -> [`ClientFrame`], with every refusal classified: the `error` code to
//! answer with, and whether the connection must close.

use serde::Deserialize;
use serde_json::Value;

use super::compress::InflateError;
use super::frame::{ClientFrame, ErrorCode, ServerFrame};
use super::protocol::CloseCode;

/// Longest client `id` and stream reference, in bytes ([`crate::stream_id::MAX_LEN`]).
pub const MAX_ID_LEN: usize = crate::stream_id::MAX_LEN;

/// Why a client message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame's JSON text is longer than allowed.
    #[error("frame of {size} bytes is larger than the limit of {max} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A binary message on a `streamgate.v1` (uncompressed) connection.
    #[error("binary message on an uncompressed connection (streamgate.v1 takes text frames)")]
    BinaryOnUncompressed,
    /// A compressed message that would not inflate.
    #[error("compressed message: {0}")]
    Inflate(#[from] InflateError),
    /// The message (after decompression) is not UTF-8.
    #[error("frame is not valid UTF-8")]
    NotUtf8,
    /// Not JSON, or JSON that is not an object.
    #[error("frame is not a JSON object: {0}")]
    NotJson(String),
    /// A JSON object without `op`.
    #[error("frame has no \"op\" field")]
    MissingOp,
    /// An `op` the protocol does not have.
    #[error("unknown op {} (expected start, resume, cancel or ping)", providers::untrusted::untrusted(.0))]
    UnknownOp(String),
    /// A known op whose fields are wrong (missing, mistyped, unknown).
    #[error("invalid {op} frame: {reason}")]
    Invalid {
        /// The frame's op.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A `start` id or a stream reference that is empty, too long or has other characters.
    #[error("invalid {field} {}: 1 to 128 characters of {allowed}", providers::untrusted::untrusted(.value))]
    BadId {
        /// `id` or `stream`.
        field: &'static str,
        /// The value, cut to 128 bytes.
        value: String,
        /// The characters allowed.
        allowed: &'static str,
    },
}

impl FrameError {
    /// The code of the `error` frame that answers this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
            FrameError::Inflate(InflateError::TooLarge { .. }) => ErrorCode::InflateTooLarge,
            FrameError::BinaryOnUncompressed
            | FrameError::Inflate(InflateError::Corrupt(_))
            | FrameError::NotUtf8
            | FrameError::NotJson(_)
            | FrameError::MissingOp
            | FrameError::UnknownOp(_)
            | FrameError::Invalid { .. }
            | FrameError::BadId { .. } => ErrorCode::MalformedFrame,
        }
    }

    /// When the refusal must end the connection, its close code; otherwise the gateway
    /// answers with an `error` frame and the connection goes on.
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            FrameError::BinaryOnUncompressed => Some(CloseCode::ProtocolError),
            FrameError::NotUtf8 => Some(CloseCode::InvalidPayload),
            _ => None,
        }
    }

    /// The `error` frame answering this refusal (no stream: the frame could not be read).
    pub fn to_frame(&self) -> ServerFrame {
        ServerFrame::Error {
            stream: None,
            code: self.code(),
            message: self.to_string(),
        }
    }
}

/// Just the `op` of a frame, to classify a frame that failed to parse.
#[derive(Deserialize)]
struct OpOnly {
    #[serde(default)]
    op: Option<Value>,
}

/// The ops a client may send.
const CLIENT_OPS: [&str; 4] = ["start", "resume", "cancel", "ping"];

/// Reads one client frame from its JSON text (already decompressed), refusing text longer
/// than `max` bytes before parsing it.
pub fn parse_client_frame(bytes: &[u8], max: usize) -> Result<ClientFrame, FrameError> {
    if bytes.len() > max {
        return Err(FrameError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    let frame = match serde_json::from_slice::<ClientFrame>(bytes) {
        Ok(frame) => frame,
        Err(e) => return Err(classify(bytes, e)),
    };
    validate(&frame)?;
    Ok(frame)
}

/// Sorts a serde failure into not JSON / no op / unknown op / bad fields (a second, cheap
/// parse that happens only for refused frames).
fn classify(bytes: &[u8], e: serde_json::Error) -> FrameError {
    use serde_json::error::Category;
    if matches!(
        e.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        if std::str::from_utf8(bytes).is_err() {
            return FrameError::NotUtf8;
        }
        return FrameError::NotJson(e.to_string());
    }
    match serde_json::from_slice::<OpOnly>(bytes) {
        Err(e) => FrameError::NotJson(e.to_string()),
        Ok(OpOnly { op: None }) => FrameError::MissingOp,
        Ok(OpOnly { op: Some(op) }) => match op.as_str().and_then(known_op) {
            Some(op) => FrameError::Invalid {
                op,
                reason: e.to_string(),
            },
            None => FrameError::UnknownOp(match op {
                Value::String(s) => cut(&s),
                other => other.to_string(),
            }),
        },
    }
}

fn known_op(op: &str) -> Option<&'static str> {
    CLIENT_OPS.into_iter().find(|&k| k == op)
}

/// Checks what serde cannot: ids, stream references and the request's shape.
fn validate(frame: &ClientFrame) -> Result<(), FrameError> {
    match frame {
        ClientFrame::Start { id, request, .. } => {
            if let Some(id) = id {
                check_id("id", id)?;
            }
            if !request.is_object() {
                return Err(FrameError::Invalid {
                    op: "start",
                    reason: "request must be a JSON object".into(),
                });
            }
            Ok(())
        }
        ClientFrame::Resume { stream, .. } | ClientFrame::Cancel { stream } => {
            check_id("stream", stream)
        }
        ClientFrame::Ping { .. } => Ok(()),
    }
}

/// A start's `id` and a stream reference follow the one rule of every door
/// ([`crate::stream_id`]): the gateway's own ids (`st_...`) are valid client ids too.
fn check_id(field: &'static str, value: &str) -> Result<(), FrameError> {
    if crate::stream_id::is_valid(value) {
        return Ok(());
    }
    Err(FrameError::BadId {
        field,
        value: cut(value),
        allowed: crate::stream_id::ALLOWED,
    })
}

/// `s` cut to at most [`MAX_ID_LEN`] bytes at a character boundary (for error messages).
fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_ID_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<ClientFrame, FrameError> {
        parse_client_frame(text.as_bytes(), 1 << 20)
    }

    #[test]
    fn valid_frames_parse() {
        assert_eq!(
            parse(r#"{"op":"start","id":"a.B:9-z","dialect":"openai","request":{"model":"m"}}"#)
                .unwrap(),
            ClientFrame::Start {
                id: Some("a.B:9-z".into()),
                dialect: Some(providers::Dialect::OpenAi),
                request: json!({"model": "m"}),
                detach: true,
            }
        );
        assert_eq!(
            parse(r#"{"stream":"st_19a:1","op":"resume"}"#).unwrap(),
            ClientFrame::Resume {
                stream: "st_19a:1".into(),
                after: None
            }
        );
        assert_eq!(
            parse(r#" {"op":"ping"} "#).unwrap(),
            ClientFrame::Ping { data: None }
        );
    }

    #[test]
    fn size_is_checked_before_parsing() {
        let text = r#"{"op":"ping"}"#;
        assert!(parse_client_frame(text.as_bytes(), text.len()).is_ok());
        let e = parse_client_frame(text.as_bytes(), text.len() - 1).unwrap_err();
        assert_eq!(e, FrameError::TooLarge { size: 13, max: 12 });
        assert_eq!(e.code(), ErrorCode::FrameTooLarge);
        // Even garbage is refused for its size first.
        let e = parse_client_frame(b"not json at all", 4).unwrap_err();
        assert_eq!(e.code(), ErrorCode::FrameTooLarge);
    }

    #[test]
    fn refusals_are_classified() {
        type Check = fn(&FrameError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("not json", |e| matches!(e, FrameError::NotJson(_))),
            (r#"{"op":"ping""#, |e| matches!(e, FrameError::NotJson(_))),
            ("[1,2]", |e| matches!(e, FrameError::NotJson(_))),
            ("42", |e| matches!(e, FrameError::NotJson(_))),
            (r#"{"stream":"a"}"#, |e| *e == FrameError::MissingOp),
            (r#"{"op":"subscribe"}"#, |e| {
                *e == FrameError::UnknownOp("subscribe".into())
            }),
            (r#"{"op":7}"#, |e| *e == FrameError::UnknownOp("7".into())),
            (r#"{"op":"resume"}"#, |e| {
                matches!(e, FrameError::Invalid { op: "resume", .. })
            }),
            (r#"{"op":"resume","stream":"a","after":-1}"#, |e| {
                matches!(e, FrameError::Invalid { op: "resume", .. })
            }),
            (
                r#"{"op":"resume","stream":"a","afer":3}"#,
                |e| matches!(e, FrameError::Invalid { op: "resume", reason } if reason.contains("afer")),
            ),
            (r#"{"op":"start","dialect":"gemini","request":{}}"#, |e| {
                matches!(e, FrameError::Invalid { op: "start", .. })
            }),
            (
                r#"{"op":"start","request":"hi"}"#,
                |e| matches!(e, FrameError::Invalid { op: "start", reason } if reason.contains("object")),
            ),
            (r#"{"op":"start","id":"","request":{}}"#, |e| {
                matches!(e, FrameError::BadId { field: "id", .. })
            }),
            (r#"{"op":"start","id":"has space","request":{}}"#, |e| {
                matches!(e, FrameError::BadId { field: "id", .. })
            }),
            (r#"{"op":"start","id":"slash/ed","request":{}}"#, |e| {
                matches!(e, FrameError::BadId { field: "id", .. })
            }),
            (r#"{"op":"cancel","stream":"é"}"#, |e| {
                matches!(
                    e,
                    FrameError::BadId {
                        field: "stream",
                        ..
                    }
                )
            }),
        ];
        for (text, check) in cases {
            let e = parse(text).unwrap_err();
            assert!(check(&e), "{text}: {e:?}");
            assert_eq!(e.code(), ErrorCode::MalformedFrame, "{text}");
            assert_eq!(e.close_code(), None, "{text}");
        }
    }

    #[test]
    fn id_length_limit() {
        let ok = "a_".repeat(MAX_ID_LEN / 2);
        let frame = json!({"op": "start", "id": ok, "request": {}}).to_string();
        assert!(
            parse(&frame).is_ok(),
            "`_` and the longest id are accepted by start"
        );
        let frame = json!({"op": "start", "id": format!("{ok}a"), "request": {}}).to_string();
        match parse(&frame).unwrap_err() {
            FrameError::BadId { value, .. } => assert_eq!(value.len(), MAX_ID_LEN),
            e => panic!("{e:?}"),
        }
        let frame = json!({"op": "cancel", "stream": format!("st_{}", "1".repeat(125))});
        assert!(parse(&frame.to_string()).is_ok());
    }

    #[test]
    fn invalid_utf8_closes_the_connection() {
        let e = parse_client_frame(b"{\"op\":\"ping\",\"data\":\"\xff\"}", 100).unwrap_err();
        assert_eq!(e, FrameError::NotUtf8);
        assert_eq!(e.close_code(), Some(CloseCode::InvalidPayload));
        assert_eq!(
            FrameError::BinaryOnUncompressed.close_code(),
            Some(CloseCode::ProtocolError)
        );
    }

    #[test]
    fn error_frame_of_a_refusal() {
        let e = parse(r#"{"op":"bye"}"#).unwrap_err();
        assert_eq!(
            e.to_frame().to_json(),
            r#"{"op":"error","code":"malformed_frame","message":"unknown op \"bye\" (expected start, resume, cancel or ping)"}"#
        );
    }
}
