//! The Redis connection several instances share state through (`[state] backend = "redis"`):
//! a small pool of reconnecting multiplexed connections for commands and scripts, each call
//! bounded by `timeout_ms`, one more connection for pub/sub ([`bus`]), key naming with Redis
//! Cluster hash tags, and whether Redis answers now (for the metrics and the degraded mode).
//!
//! Nothing here knows streams, limits or breakers: those are the hub's, the limiter's and the
//! breakers' own modules, which call this one. docs/deployment.md.

pub mod breakers;
pub mod bus;
pub mod config;
pub mod limits;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, ProtocolVersion};

pub use bus::{Bus, BusMessage, BusReceiver};
pub use config::{StateBackend, StateConfig};

/// Why a call to Redis failed. Never carries the URL (it may hold a password).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    /// The URL could not be used.
    #[error("state: the Redis URL is not valid: {reason}")]
    Url {
        /// What is wrong with it (never the URL itself).
        reason: String,
    },
    /// Redis did not answer `what` within `timeout_ms`.
    #[error("state: Redis did not answer {what} within {ms} ms")]
    Timeout {
        /// The operation.
        what: &'static str,
        /// The timeout.
        ms: u64,
    },
    /// Redis could not be reached, or refused `what`.
    #[error("state: Redis failed {what}: {reason}")]
    Failed {
        /// The operation.
        what: &'static str,
        /// Redis's or the connection's reason.
        reason: String,
    },
}

impl StateError {
    fn failed(what: &'static str, e: &redis::RedisError) -> StateError {
        StateError::Failed {
            what,
            reason: e.to_string(),
        }
    }
}

/// Counters of the Redis client, for `/metrics`.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Commands, pipelines and scripts sent.
    pub calls: AtomicU64,
    /// Those that failed or timed out.
    pub errors: AtomicU64,
    /// Times Redis went from answering to not answering.
    pub outages: AtomicU64,
}

/// The shared-state connection of one gateway instance.
pub struct Redis {
    pool: Vec<ConnectionManager>,
    next: AtomicUsize,
    bus: Bus,
    prefix: String,
    instance: String,
    timeout: Duration,
    lease: Duration,
    up: AtomicBool,
    stats: RedisStats,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("prefix", &self.prefix)
            .field("instance", &self.instance)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// The connection of `config` to `url`. Connects lazily, in the background: a gateway
    /// starts while Redis is down (degraded, see docs/deployment.md) and uses it once it
    /// answers. Call inside a tokio runtime.
    pub fn connect(config: &StateConfig, url: &str) -> Result<Arc<Redis>, StateError> {
        let client = redis::Client::open(url).map_err(|e| StateError::Url {
            reason: format!("{:?}", e.kind()),
        })?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let manager_config = || {
            redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(2))
        };
        let pool = (0..config.pool_size)
            .map(|_| ConnectionManager::new_lazy_with_config(client.clone(), manager_config()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StateError::Url {
                reason: format!("{:?}", e.kind()),
            })?;
        // Pub/sub pushes arrive on a RESP3 connection of their own, resubscribed after every
        // reconnect.
        let info = client.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let pubsub_client =
            redis::Client::open(info.set_redis_settings(settings)).map_err(|e| {
                StateError::Url {
                    reason: format!("{:?}", e.kind()),
                }
            })?;
        let bus = Bus::new(pubsub_client, manager_config(), timeout)?;
        Ok(Arc::new(Redis {
            pool,
            next: AtomicUsize::new(0),
            bus,
            prefix: config.prefix.clone(),
            instance: instance_id(),
            timeout,
            lease: Duration::from_millis(config.lease_ms),
            up: AtomicBool::new(true),
            stats: RedisStats::default(),
        }))
    }

    /// This instance's id: unique per process start (UUID v7), in leases and logs.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// `lease_ms`.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// `timeout_ms`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The pub/sub side.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Whether the last call answered.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// The client's counters.
    pub fn stats(&self) -> &RedisStats {
        &self.stats
    }

    /// The key `PREFIX:{TAG}:SUFFIX`: every key of one `tag` (one stream, say) hashes to the
    /// same Redis Cluster slot, so a script may touch them all.
    pub fn key(&self, tag: &str, suffix: &str) -> String {
        format!("{}:{{{tag}}}:{suffix}", self.prefix)
    }

    /// The key or channel `PREFIX:NAME`, for what is not per stream.
    pub fn global(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// A connection of the pool (round robin; each is multiplexed and reconnects itself).
    pub fn conn(&self) -> ConnectionManager {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        self.pool[i].clone()
    }

    /// Runs `cmd`, at most `timeout_ms`.
    pub async fn query<T: FromRedisValue>(
        &self,
        what: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T, StateError> {
        let mut conn = self.conn();
        self.bounded(what, cmd.query_async(&mut conn)).await
    }

    /// Runs `pipe`, at most `timeout_ms`.
    pub async fn pipeline<T: FromRedisValue>(
        &self,
        what: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T, StateError> {
        let mut conn = self.conn();
        self.bounded(what, pipe.query_async(&mut conn)).await
    }

    /// Runs a script invocation (EVALSHA, loading the script on a miss), at most `timeout_ms`.
    pub async fn script<T: FromRedisValue>(
        &self,
        what: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StateError> {
        let mut conn = self.conn();
        self.bounded(what, invocation.invoke_async(&mut conn)).await
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StateError> {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(StateError::failed(what, &e)),
            Err(_) => Err(StateError::Timeout {
                what,
                ms: self.timeout.as_millis() as u64,
            }),
        };
        self.observe(result.as_ref().err());
        result
    }

    /// Records whether Redis answered: the first failure after a success is logged as an
    /// outage, the first success after one as the end of it.
    fn observe(&self, error: Option<&StateError>) {
        match error {
            None => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!("state: Redis answers again");
                }
            }
            Some(e) => {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                // A script error is Redis answering: only unreachable or slow means down.
                let down = match e {
                    StateError::Timeout { .. } => true,
                    StateError::Failed { reason, .. } => !reason.contains("ERR"),
                    StateError::Url { .. } => false,
                };
                if down && self.up.swap(false, Ordering::Relaxed) {
                    self.stats.outages.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "state: Redis is unavailable, running degraded (docs/deployment.md)");
                }
            }
        }
    }
}

/// A fresh instance id: a UUID v7 (time-ordered, no coordination between instances).
fn instance_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}
