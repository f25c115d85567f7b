//! What can go wrong following a stream, and whether reconnecting can help.

use providers::sse::SseError;

/// Why a [`super::Follow`] or a [`super::StreamClient`] call failed. Each error knows whether
/// a reconnect can help ([`ClientError::is_retryable`]); the follower only ever hands back
/// the ones that cannot, or [`ClientError::GaveUp`] wrapping the last one that could.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway URL is not an absolute `http(s)://` URL.
    #[error("invalid gateway URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The gateway has no stream with this id (never had, or no longer retains it): 404
    /// `stream_not_found`. Not retried.
    #[error("{}", or_else(message, || format!("no stream {id:?} on the gateway")))]
    NotFound {
        /// The stream id asked for.
        id: String,
        /// The gateway's message.
        message: String,
    },
    /// A resume from a seq the stream has not reached: 416 `seq_beyond_end`. Not retried.
    #[error("{}", or_else(message, || format!("stream {id:?} has no event after seq {after}")))]
    SeqBeyondEnd {
        /// The stream id.
        id: String,
        /// The seq asked to resume after.
        after: u64,
        /// The gateway's message (it names the stream's last seq).
        message: String,
    },
    /// The gateway answered with another error status (retried only for 408, 429 and 5xx).
    #[error("the gateway answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The error body's `error.code` (or Anthropic-shaped `error.type`), if any.
        code: Option<String>,
        /// The error body's message, or the body itself.
        message: String,
    },
    /// Connecting to the gateway, or reading its answer, failed.
    #[error("connection to the gateway failed")]
    Transport(#[source] reqwest::Error),
    /// The answer's body ended cleanly before the stream's `stream.end` event.
    #[error("the stream's body ended before stream.end{}", after.map_or(String::new(), |s| format!(" (last seq {s})")))]
    Cut {
        /// The last seq received, if any.
        after: Option<u64>,
    },
    /// An event's seq is past the next one expected: events were lost. Not retried.
    #[error("seq gap in stream {stream:?}: expected seq {expected}, got {got}")]
    Gap {
        /// The stream id.
        stream: String,
        /// The seq that should have come next.
        expected: u64,
        /// The seq that came.
        got: u64,
    },
    /// The gateway sent something that is not the native SSE protocol (a frame that is not
    /// an envelope, another stream's event, an `id:` that is not the seq). Not retried.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// `max_attempts` reconnects in a row brought no new event.
    #[error("gave up after {attempts} reconnect(s) in a row without a new event")]
    GaveUp {
        /// Reconnects tried since the last event.
        attempts: u32,
        /// Why the last one failed.
        #[source]
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// Whether reconnecting (from the last seq received) can help: broken connections, cut
    /// bodies, 408, 429 and 5xx. A missing stream, a bad seq, a gap or a protocol error
    /// would fail the same way again.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Transport(_) | ClientError::Cut { .. } => true,
            ClientError::Status { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            ClientError::InvalidUrl { .. }
            | ClientError::NotFound { .. }
            | ClientError::SeqBeyondEnd { .. }
            | ClientError::Gap { .. }
            | ClientError::Protocol(_)
            | ClientError::GaveUp { .. } => false,
        }
    }

    /// The message with every cause after it, `: `-separated (reqwest's own message alone
    /// rarely says what went wrong).
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(cause) = source {
            let more = cause.to_string();
            // Some causes repeat their source's text; print each once.
            if !text.ends_with(&more) {
                text.push_str(": ");
                text.push_str(&more);
            }
            source = cause.source();
        }
        text
    }
}

/// The gateway's own message (it names the stream and says what is wrong), else ours.
fn or_else(message: &str, ours: impl FnOnce() -> String) -> String {
    if message.is_empty() {
        ours()
    } else {
        message.to_owned()
    }
}

impl From<SseError> for ClientError {
    fn from(e: SseError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_breaks_and_server_trouble_are_retryable() {
        assert!(ClientError::Cut { after: Some(3) }.is_retryable());
        let status = |status| ClientError::Status {
            status,
            code: None,
            message: String::new(),
        };
        assert!(status(503).is_retryable());
        assert!(status(429).is_retryable());
        assert!(!status(400).is_retryable());
        let missing = ClientError::NotFound {
            id: "st_x".into(),
            message: String::new(),
        };
        assert!(!missing.is_retryable());
        let gap = ClientError::Gap {
            stream: "st_x".into(),
            expected: 4,
            got: 6,
        };
        assert!(!gap.is_retryable());
    }

    #[test]
    fn chain_names_every_cause() {
        let e = ClientError::GaveUp {
            attempts: 2,
            last: Box::new(ClientError::Cut { after: Some(7) }),
        };
        assert_eq!(
            e.chain(),
            "gave up after 2 reconnect(s) in a row without a new event: \
             the stream's body ended before stream.end (last seq 7)"
        );
    }
}
