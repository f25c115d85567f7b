//! [`UpstreamBackoff`]: per route (`provider/model`), until when the provider asked us to
//! stay away.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use tokio::time::Instant;

use super::headers::{MAX_BACKOFF, backoff_from_headers};
use super::limited::{LimitKind, Limited, Scope};

/// Routes resting after a provider said to slow down (429, `retry-after`, or a budget header
/// at 0). Shared by all requests; a block only ever grows until it expires.
#[derive(Debug, Default)]
pub struct UpstreamBackoff {
    /// Route -> the instant it may be tried again. Expired entries are dropped when seen.
    until: Mutex<HashMap<String, Instant>>,
}

impl UpstreamBackoff {
    /// An empty record.
    pub fn new() -> UpstreamBackoff {
        UpstreamBackoff::default()
    }

    /// Reads an upstream answer's status and headers (any answer: a 200 whose remaining
    /// budget is 0 blocks the route until the reset too).
    pub fn observe(&self, route: &str, status: u16, headers: &HeaderMap) {
        if let Some(wait) = backoff_from_headers(status, headers, SystemTime::now()) {
            self.block(route, wait);
        }
    }

    /// Blocks `route` for `wait` from now (at most [`MAX_BACKOFF`]), unless it is already
    /// blocked for longer.
    pub fn block(&self, route: &str, wait: Duration) {
        let now = Instant::now();
        let until = now.checked_add(wait.min(MAX_BACKOFF)).unwrap_or(now);
        let mut map = self.lock();
        let entry = map.entry(route.to_owned()).or_insert(until);
        if until > *entry {
            *entry = until;
        }
    }

    /// How long `route` still rests; None when it may be used now.
    pub fn blocked_for(&self, route: &str) -> Option<Duration> {
        let now = Instant::now();
        let mut map = self.lock();
        let until = *map.get(route)?;
        if until <= now {
            map.remove(route);
            return None;
        }
        Some(until - now)
    }

    /// The refusal to give a client when `route` rests (e.g. when every route of its model does).
    pub fn limited(&self, route: &str) -> Option<Limited> {
        self.blocked_for(route).map(|retry_after| Limited {
            limit: LimitKind::Upstream,
            retry_after,
            scope: Scope::Route,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
