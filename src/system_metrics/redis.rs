//! The shared-state connection's metrics (`[state] backend = "redis"`): whether Redis answers,
//! and the calls, errors and outages of this instance's client ([`crate::state::RedisStats`]).
//! Absent on the embedded backend.

use std::fmt;
use std::sync::atomic::Ordering;

use prometheus_client::encoding::DescriptorEncoder;

use super::{counter, gauge};
use crate::state::Redis;

/// Whether the last call to Redis answered: 1 or 0 (gauge).
pub const REDIS_UP: &str = "streamgate_redis_up";
/// Commands, pipelines and scripts sent to Redis (counter).
pub const REDIS_CALLS: &str = "streamgate_redis_calls";
/// Those that failed or timed out (counter).
pub const REDIS_ERRORS: &str = "streamgate_redis_errors";
/// Times Redis went from answering to not answering (counter).
pub const REDIS_OUTAGES: &str = "streamgate_redis_outages";

/// Encodes the metrics of `redis`.
pub(super) fn encode(e: &mut DescriptorEncoder, redis: &Redis) -> fmt::Result {
    let stats = redis.stats();
    gauge(
        e,
        REDIS_UP,
        "Whether the last call to Redis answered (1) or not (0: limits enforced per instance).",
        i64::from(redis.is_up()),
    )?;
    counter(
        e,
        REDIS_CALLS,
        "Commands, pipelines and scripts sent to Redis.",
        stats.calls.load(Ordering::Relaxed),
    )?;
    counter(
        e,
        REDIS_ERRORS,
        "Calls to Redis that failed or timed out.",
        stats.errors.load(Ordering::Relaxed),
    )?;
    counter(
        e,
        REDIS_OUTAGES,
        "Times Redis went from answering to not answering.",
        stats.outages.load(Ordering::Relaxed),
    )
}
