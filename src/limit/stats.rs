//! [`LimitStats`]: what the limiter counts for the metrics — refusals by client key name and
//! limit kind, and how long requests waited in the admission queue.
//!
//! A key's label is a name from the configuration (a gateway key, a `limits.keys` override,
//! or `anonymous`), never a credential nor its hash; every other client counts as `other`, so
//! the label set is bounded by the configuration.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::client::ClientId;
use super::limited::LimitKind;
use crate::counters::{Histogram, Snapshot, WAIT_BUCKETS};

/// The label of clients that no configured name stands for.
pub const OTHER_KEY: &str = "other";

/// The label of [`ClientId::ANONYMOUS`].
pub const ANONYMOUS_KEY: &str = "anonymous";

/// Refusal counts and queue waits of one limiter.
#[derive(Debug)]
pub struct LimitStats {
    /// Label values, one per distinct configured name, then [`OTHER_KEY`].
    labels: Vec<String>,
    /// Which label a client counts under (absent: `other`).
    index: HashMap<ClientId, usize>,
    /// The label of `other`.
    other: usize,
    /// Per label, one count per [`LimitKind::ALL`].
    refused: Box<[[AtomicU64; LimitKind::ALL.len()]]>,
    /// Seconds each request that entered the queue waited there (admitted or refused).
    queue_wait: Histogram,
}

/// Refusals of one key name for one limit kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusalCount {
    /// The configured name, `anonymous` or `other`.
    pub key: String,
    /// The limit that refused.
    pub limit: LimitKind,
    /// Refusals so far.
    pub count: u64,
}

impl LimitStats {
    /// Stats labelling each client of `named` by its name; names repeated (a gateway key and
    /// an override of the same name) share one label.
    pub(super) fn new<'a>(named: impl IntoIterator<Item = (ClientId, &'a str)>) -> LimitStats {
        let mut labels: Vec<String> = Vec::new();
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        let mut index = HashMap::new();
        let anonymous = std::iter::once((ClientId::ANONYMOUS, ANONYMOUS_KEY));
        for (client, name) in anonymous.chain(named) {
            let i = *by_name.entry(name).or_insert_with(|| {
                labels.push(name.to_owned());
                labels.len() - 1
            });
            index.insert(client, i);
        }
        let other = *by_name.entry(OTHER_KEY).or_insert_with(|| {
            labels.push(OTHER_KEY.to_owned());
            labels.len() - 1
        });
        let refused = (0..labels.len())
            .map(|_| std::array::from_fn(|_| AtomicU64::new(0)))
            .collect();
        LimitStats {
            labels,
            index,
            other,
            refused,
            queue_wait: Histogram::new(WAIT_BUCKETS),
        }
    }

    /// Counts one refusal of `client`.
    pub(super) fn refused(&self, client: &ClientId, limit: LimitKind) {
        let i = self.index.get(client).copied().unwrap_or(self.other);
        if let Some(row) = self.refused.get(i) {
            row[limit.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one request's time in the queue.
    pub(super) fn waited(&self, wait: Duration) {
        self.queue_wait.observe(wait);
    }

    /// Every (key, kind) that refused at least once, in label then kind order.
    pub fn refusals(&self) -> Vec<RefusalCount> {
        let mut out = Vec::new();
        for (label, row) in self.labels.iter().zip(self.refused.iter()) {
            for (limit, n) in LimitKind::ALL.iter().zip(row) {
                let count = n.load(Ordering::Relaxed);
                if count > 0 {
                    out.push(RefusalCount {
                        key: label.clone(),
                        limit: *limit,
                        count,
                    });
                }
            }
        }
        out
    }

    /// The queue waits so far.
    pub fn queue_waits(&self) -> Snapshot {
        self.queue_wait.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each configured name is one label however many clients carry it, `other` takes the
    /// rest, and a label exists once even when a key is itself named `other`.
    #[test]
    fn labels_are_the_configured_names_once_each_then_other() {
        let a = ClientId::gateway_key("a");
        let a_override = ClientId::from_credential(Some("sk-a"));
        let named = ClientId::gateway_key("other");
        let stats = LimitStats::new([(a, "a"), (a_override, "a"), (named, "other")]);
        let stranger = ClientId::from_credential(Some("sk-stranger"));
        for (client, n) in [(a, 2), (a_override, 3), (named, 1), (stranger, 4)] {
            for _ in 0..n {
                stats.refused(&client, LimitKind::ConcurrentStreams);
            }
        }
        stats.refused(&ClientId::ANONYMOUS, LimitKind::TokensPerDay);
        let got: Vec<(String, LimitKind, u64)> = stats
            .refusals()
            .into_iter()
            .map(|r| (r.key, r.limit, r.count))
            .collect();
        assert_eq!(
            got,
            vec![
                ("anonymous".into(), LimitKind::TokensPerDay, 1),
                ("a".into(), LimitKind::ConcurrentStreams, 5),
                ("other".into(), LimitKind::ConcurrentStreams, 5),
            ]
        );
    }
}
