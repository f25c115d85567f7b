//! A client's request body streamed on to a provider: never held whole, cut at the body-size
//! limit and at the listener's body deadline, with the reason kept for the client's answer.

use std::sync::{Arc, Mutex, PoisonError};

use axum::body::{Body, Bytes};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::error::GatewayError;

/// Why a streamed body was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// It passed `[server] max_body_bytes`.
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// It did not arrive within `[server] body_read_timeout_ms`.
    TimedOut {
        /// The timeout.
        timeout_ms: u64,
    },
    /// The client's connection broke.
    Broken,
}

impl Cut {
    /// What the client is told (if it still listens).
    pub fn error(self) -> GatewayError {
        match self {
            Cut::TooLarge { limit } => GatewayError::BodyTooLarge { limit },
            Cut::TimedOut { timeout_ms } => GatewayError::BodyTimeout { timeout_ms },
            Cut::Broken => {
                GatewayError::MalformedJson("the body could not be read to its end".into())
            }
        }
    }
}

/// A body being streamed: hand [`Upload::body`] to the request, then ask [`Upload::cut`]
/// why it failed if sending did.
#[derive(Debug)]
pub struct Upload {
    /// The body for the upstream request.
    pub body: reqwest::Body,
    /// Resolves when the whole body has been handed over (or was cut).
    pub sent: oneshot::Receiver<()>,
    /// Why the body was cut short, once it was.
    pub cut: CutSlot,
}

/// Where a streamed body leaves why it was cut.
#[derive(Debug, Clone, Default)]
pub struct CutSlot(Arc<Mutex<Option<Cut>>>);

impl CutSlot {
    /// Why the body was cut short, if it was.
    pub fn get(&self) -> Option<Cut> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, cut: Cut) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(cut);
    }
}

/// `body` as an upstream body of at most `limit` bytes.
pub fn stream(body: Body, limit: usize) -> Upload {
    let cut = CutSlot::default();
    let (done, sent) = oneshot::channel();
    let state = Some((body.into_data_stream(), 0usize, done, cut.clone()));
    let chunks = futures_util::stream::unfold(state, move |state| async move {
        let (mut data, seen, done, cut) = state?;
        let failure = match data.next().await {
            None => {
                let _ = done.send(());
                return None;
            }
            Some(Ok(chunk)) => {
                let seen = seen.saturating_add(chunk.len());
                if seen <= limit {
                    return Some((Ok::<Bytes, Cut>(chunk), Some((data, seen, done, cut))));
                }
                Cut::TooLarge { limit }
            }
            Some(Err(e)) => classify(&e),
        };
        cut.set(failure);
        let _ = done.send(());
        Some((Err(failure), None))
    });
    Upload {
        body: reqwest::Body::wrap_stream(chunks),
        sent,
        cut,
    }
}

/// The listener reports its deadline through the error's source chain; anything else is a
/// broken connection (its words, hyper's, stay in the log).
fn classify(e: &axum::Error) -> Cut {
    let mut chain = std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    });
    match chain.find_map(|e| e.downcast_ref::<crate::server::listen::BodyTimedOut>()) {
        Some(t) => Cut::TimedOut {
            timeout_ms: t.timeout_ms,
        },
        None => {
            tracing::debug!(error = %e, "reading a forwarded request body failed");
            Cut::Broken
        }
    }
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.error())
    }
}

impl std::error::Error for Cut {}
