//! The refusals of the layers above `error` ([`crate::hub`], [`crate::keys`]) that
//! [`GatewayError`](super::GatewayError) carries and renders. They are defined here, below
//! those layers, so that the error type does not depend on its producers (docs/architecture.md);
//! the hub and the keyring re-export them.

use providers::untrusted::untrusted;

/// Why the hub refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// No stream has this id (never had, or it was forgotten after its retention).
    #[error("no stream {}: it never existed or is no longer retained", untrusted(.id))]
    UnknownStream {
        /// The id asked for.
        id: String,
    },
    /// A resume from a seq the stream has not reached.
    #[error("stream {} has no event after seq {after}: its last seq is {}", untrusted(.id), last.map_or("none (no events yet)".to_string(), |l| l.to_string()))]
    SeqBeyondEnd {
        /// The stream.
        id: String,
        /// The seq asked to resume after.
        after: u64,
        /// The stream's last seq so far.
        last: Option<u64>,
    },
    /// A client-chosen stream id already names another stream.
    #[error("stream id {} is already in use", untrusted(.id))]
    DuplicateStream {
        /// The id.
        id: String,
    },
    /// A stream id outside [`crate::stream_id`]'s rule: characters other than
    /// `[A-Za-z0-9._:-]`, empty or too long.
    #[error("stream id {} is not valid: 1 to 128 characters of A-Z a-z 0-9 . _ : -", untrusted(.id))]
    InvalidId {
        /// The id.
        id: String,
    },
    /// The stream is not held by this instance and the shared store (Redis) that would say
    /// where it is does not answer now: retry shortly (not "unknown": it may well exist).
    #[error(
        "the stream store (Redis) is not answering, so this stream cannot be looked up now; retry shortly"
    )]
    StoreUnavailable,
    /// One more live stream would pass `streams.max_live` or `streams.max_live_per_key`.
    #[error("too many live streams {}: at most {limit} (streams.{}); retry when one has ended", .scope.words(), .scope.config_key())]
    TooManyLive {
        /// Which cap.
        scope: LiveScope,
        /// Its value.
        limit: usize,
    },
}

/// Which live-stream cap refused a new stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveScope {
    /// `streams.max_live`: every live stream of the gateway.
    Gateway,
    /// `streams.max_live_per_key`: the live streams of the caller's gateway key.
    Key,
}

impl LiveScope {
    /// The `[streams]` setting of this cap.
    pub fn config_key(self) -> &'static str {
        match self {
            LiveScope::Gateway => "max_live",
            LiveScope::Key => "max_live_per_key",
        }
    }

    /// Whose streams the cap counts, for messages.
    pub fn words(self) -> &'static str {
        match self {
            LiveScope::Gateway => "on this gateway",
            LiveScope::Key => "for this gateway key",
        }
    }
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No key was presented.
    Missing,
    /// A key was presented and matches none.
    Invalid,
}
