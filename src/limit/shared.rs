//! The limits shared by every instance through Redis (`[state] backend = "redis"`): one
//! script per admission ([`crate::state::limits`]), the stream slots this instance holds
//! renewed every third of their expiry, and the fall back to the local limiter while Redis
//! does not answer.
//!
//! # Degraded mode
//!
//! A call that fails or exceeds `timeout_ms` makes this instance enforce the quotas alone with
//! its local limiter (up to N× the rate over N instances) until Redis answers again; a warning
//! is logged once per outage. While Redis is known down no request waits for it: the renewal
//! task, which calls Redis every third of the expiry, is what notices it is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::budget::Subject;
use super::client::ClientId;
use super::limited::{LimitKind, Limited, Scope};
use super::spend::{Budget, Spent};
use crate::state::limits::{
    Admission, Clock, LimitScripts, RENEW_BATCH, SharedBudget, SharedLimit, SpendMode, SpendReply,
};
use crate::state::{Redis, StateError};

/// Longest pause between two tries of a request queued on a full concurrency budget: another
/// instance's stream ending is not signalled here.
pub(super) const STREAMS_POLL: Duration = Duration::from_millis(100);

/// The shared side of the limiter, one per process (every configuration's limiter uses it).
#[derive(Debug)]
pub(crate) struct Shared {
    redis: Arc<Redis>,
    scripts: LimitScripts,
    /// Stream slots held by this instance's permits: permit id → holders keys' subjects.
    holders: Mutex<HashMap<u64, Vec<String>>>,
    next: AtomicU64,
    /// Falling back to the local limiter now (warned once per outage).
    degraded: AtomicBool,
    /// Ends the renewal task with the last handle.
    _stop: tokio_util::sync::DropGuard,
}

impl Shared {
    /// The shared limits over `redis`; starts the renewal task (call inside a tokio runtime).
    pub(crate) fn start(redis: Arc<Redis>) -> Arc<Shared> {
        let stop = tokio_util::sync::CancellationToken::new();
        let shared = Arc::new(Shared {
            redis,
            scripts: LimitScripts::new(),
            holders: Mutex::default(),
            next: AtomicU64::new(0),
            degraded: AtomicBool::new(false),
            _stop: stop.clone().drop_guard(),
        });
        tokio::spawn(renew(Arc::downgrade(&shared), stop));
        shared
    }

    /// How long a held slot lasts without renewal: a dead instance's slots come back after
    /// at most this (`[state] lease_ms`).
    pub(crate) fn expiry(&self) -> Duration {
        self.redis.lease()
    }

    /// Whether to ask Redis now: not while it is known down (the renewal task notices when
    /// it is back).
    pub(super) fn usable(&self) -> bool {
        self.redis.is_up()
    }

    /// One admission of `budgets` for `amount` tokens; Ok(Err(..)) is a refusal, Err Redis's
    /// failure (the caller falls back). Admitted, the hold is returned. Cancelled while Redis
    /// admits it, the slots it took are held by nobody and expire within the expiry.
    pub(super) async fn admit(
        self: &Arc<Self>,
        budgets: &[(Subject, super::Quotas)],
        amount: u64,
    ) -> Result<Result<Hold, Limited>, StateError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let member = self.member(id);
        let shared: Vec<SharedBudget> = budgets
            .iter()
            .map(|(subject, q)| SharedBudget {
                subject: subject_tag(subject),
                requests_per_minute: q.requests_per_minute.map_or(0, |n| n.get()),
                tokens_per_minute: q.tokens_per_minute.map_or(0, |n| n.get()),
                concurrent_streams: q.concurrent_streams.map_or(0, |n| n.get()),
            })
            .collect();
        let result = self
            .scripts
            .admit(
                &self.redis,
                &shared,
                amount,
                &member,
                self.expiry(),
                Clock::Redis,
            )
            .await;
        match result {
            Err(e) => {
                if !self.degraded.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "limits: Redis is unavailable, each instance enforces the limits alone until it answers (docs/deployment.md)");
                }
                Err(e)
            }
            Ok(Admission::Admitted) => {
                self.answered();
                let streams: Vec<String> = shared
                    .iter()
                    .filter(|b| b.concurrent_streams > 0)
                    .map(|b| b.subject.clone())
                    .collect();
                if !streams.is_empty() {
                    self.lock().insert(id, streams.clone());
                }
                let tokens = shared
                    .iter()
                    .filter(|b| b.tokens_per_minute > 0)
                    .map(|b| (b.subject.clone(), b.tokens_per_minute))
                    .collect();
                Ok(Ok(Hold {
                    shared: Arc::clone(self),
                    id,
                    streams,
                    tokens,
                }))
            }
            Ok(Admission::Refused { limit, index, wait }) => {
                self.answered();
                let (limit, retry_after) = match limit {
                    SharedLimit::Requests => (LimitKind::RequestsPerMinute, wait),
                    SharedLimit::Tokens => (LimitKind::TokensPerMinute, wait),
                    SharedLimit::Streams => {
                        (LimitKind::ConcurrentStreams, super::CONCURRENCY_RETRY_HINT)
                    }
                };
                let scope = budgets.get(index).map_or(Scope::Key, |(s, _)| s.scope());
                Ok(Err(Limited {
                    limit,
                    retry_after,
                    scope,
                }))
            }
        }
    }

    /// Charges `amount` to `client`'s day and month budgets, or refuses once one is spent;
    /// Err is Redis's failure (the caller falls back to the local book).
    pub(super) async fn spend_admit(
        &self,
        client: &ClientId,
        budget: Budget,
        amount: u64,
    ) -> Result<Result<(), Limited>, StateError> {
        let reply = self
            .scripts
            .spend(
                &self.redis,
                &subject_tag(&Subject::Key(*client)),
                budget.per_day.unwrap_or(0),
                budget.per_month.unwrap_or(0),
                i64::try_from(amount).unwrap_or(i64::MAX),
                SpendMode::Admit,
                Clock::Redis,
            )
            .await?;
        self.answered();
        Ok(match reply {
            SpendReply::Counted { .. } => Ok(()),
            SpendReply::Refused { month, secs } => Err(super::spend::refused_at(month, secs)),
        })
    }

    /// Adds `delta` (negative: a refund) to what `client` spent, in the background (lost while
    /// Redis is down: bounded by one request's usage).
    pub(super) fn spend_adjust(self: &Arc<Self>, client: ClientId, delta: i64) {
        if delta == 0 {
            return;
        }
        let shared = Arc::clone(self);
        spawn(async move {
            let subject = subject_tag(&Subject::Key(client));
            if let Err(e) = shared
                .scripts
                .spend(
                    &shared.redis,
                    &subject,
                    0,
                    0,
                    delta,
                    SpendMode::Adjust,
                    Clock::Redis,
                )
                .await
            {
                tracing::debug!(error = %e, "limits: spend adjustment not recorded");
            }
        });
    }

    /// What `client` spent today and this month, across instances.
    pub(super) async fn spent(&self, client: &ClientId) -> Result<Spent, StateError> {
        let subject = subject_tag(&Subject::Key(*client));
        let reply = self
            .scripts
            .spend(
                &self.redis,
                &subject,
                0,
                0,
                0,
                SpendMode::Read,
                Clock::Redis,
            )
            .await?;
        Ok(match reply {
            SpendReply::Counted { day, month, .. } => Spent {
                today: day,
                this_month: month,
            },
            SpendReply::Refused { .. } => Spent::default(),
        })
    }

    fn answered(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("limits: Redis answers again, the limits are shared again");
        }
    }

    fn member(&self, id: u64) -> String {
        format!("{}:{id}", self.redis.instance())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<String>>> {
        self.holders.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What an admitted request holds in Redis: its stream slots (given back on drop) and its
/// token borrow (settled by [`Hold::settle`]).
#[derive(Debug)]
pub(super) struct Hold {
    shared: Arc<Shared>,
    id: u64,
    streams: Vec<String>,
    tokens: Vec<(String, u64)>,
}

impl Hold {
    /// Charges `delta` more tokens (negative refunds), in the background: settling happens
    /// at the end of an answer, which must not wait for Redis.
    pub(super) fn settle(&self, delta: i64) {
        if self.tokens.is_empty() || delta == 0 {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let tokens = self.tokens.clone();
        spawn(async move {
            if let Err(e) = shared
                .scripts
                .settle(&shared.redis, &tokens, delta, Clock::Redis)
                .await
            {
                // Lost: a refund not made keeps the bucket conservative; an extra debit not
                // made is forgiven. Either way, bounded by one request's usage.
                tracing::debug!(error = %e, "limits: settle not recorded");
            }
        });
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if self.streams.is_empty() {
            return;
        }
        self.shared.lock().remove(&self.id);
        let shared = Arc::clone(&self.shared);
        let streams = std::mem::take(&mut self.streams);
        let member = shared.member(self.id);
        spawn(async move {
            // Not given back (Redis down): the slot expires within the expiry.
            let _ = LimitScripts::release(&shared.redis, &streams, &member).await;
        });
    }
}

fn spawn(task: impl Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(task);
    }
}

/// Renews this instance's slots every third of their expiry; doubles as the probe that
/// notices Redis answering again after an outage (a PING when nothing is held).
async fn renew(shared: Weak<Shared>, stop: tokio_util::sync::CancellationToken) {
    loop {
        let Some(every) = shared.upgrade().map(|s| s.expiry() / 3) else {
            return;
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let held: Vec<(String, String)> = shared
            .lock()
            .iter()
            .flat_map(|(id, subjects)| {
                let member = shared.member(*id);
                subjects.iter().map(move |s| (s.clone(), member.clone()))
            })
            .collect();
        let mut ok = true;
        if held.is_empty() {
            ok = shared
                .redis
                .query::<String>("PING", &redis::cmd("PING"))
                .await
                .is_ok();
        }
        for batch in held.chunks(RENEW_BATCH) {
            ok &= shared
                .scripts
                .renew(&shared.redis, batch, shared.expiry(), Clock::Redis)
                .await
                .is_ok();
        }
        if ok {
            shared.answered();
        }
    }
}

/// A subject's name in Redis keys: a client's stable hash, or a hash of the model name (a
/// client string: never raw, never unbounded).
fn subject_tag(subject: &Subject) -> String {
    match subject {
        Subject::Key(client) => format!("k:{}", client.tag()),
        Subject::Model(model) => {
            let digest = Sha256::digest(model.as_bytes());
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("m:{hex}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::ClientId;

    #[test]
    fn subject_tags_are_short_whatever_the_model_name() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..100 {
            let len = rng.usize(0..5000);
            let model: String = (0..len).map(|_| rng.char(..)).collect();
            let tag = subject_tag(&Subject::Model(model.clone()));
            assert_eq!(tag.len(), 2 + 24, "{tag}");
            assert!(tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b':'));
            assert_ne!(tag, subject_tag(&Subject::Model(format!("{model}x"))));
        }
        let anon = subject_tag(&Subject::Key(ClientId::ANONYMOUS));
        assert_eq!(anon, "k:anon");
    }
}
