//! Circuit breakers shared through Redis: an instance whose breaker opens a route publishes it
//! (`PUBLISH PREFIX:breakers "MS INSTANCE ROUTE"`) and records it in the sorted set
//! `PREFIX:breakers:open` (member: the route, score: when its cooldown ends, by Redis's clock),
//! which instances read at start and after every [`super::BusMessage::Reset`], since pub/sub
//! loses what is published while they are not listening. Durations travel as "how long from
//! now" measured on Redis's clock, so instances' clocks never need to agree.
//!
//! This module knows routes as strings and Redis; the breakers themselves are
//! `crate::resilience::breaker`'s.

use std::time::Duration;

use super::{Redis, StateError};

/// The longest route shared (longer ones, which only a client naming odd models makes, stay
/// local).
pub const MAX_ROUTE_LEN: usize = 256;
/// Most open routes remembered in Redis (the soonest to close go first).
pub const MAX_OPEN: usize = 1024;

/// KEYS[1]: the open set. ARGV: route, cooldown ms, channel, most members, instance.
const OPEN: &str = r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cooldown = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local untl = now_ms + cooldown
local cur = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
if cur < untl then redis.call('ZADD', KEYS[1], untl, ARGV[1]) end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[4]) + 1))
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if last[2] then redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now_ms)) end
redis.call('PUBLISH', ARGV[3], tostring(math.max(cur, untl) - now_ms) .. ' ' .. ARGV[5] .. ' ' .. ARGV[1])
return 1
";

/// KEYS[1]: the open set. Returns route, ms left, route, ms left… of the routes still open.
const READ: &str = r"
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local open = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now_ms, '+inf', 'WITHSCORES')
local out = {}
for i = 1, #open, 2 do
  out[#out + 1] = open[i]
  out[#out + 1] = tostring(tonumber(open[i + 1]) - now_ms)
end
return out
";

/// The breakers' scripts and names.
#[derive(Debug)]
pub struct SharedBreakers {
    open: redis::Script,
    read: redis::Script,
}

impl Default for SharedBreakers {
    fn default() -> SharedBreakers {
        SharedBreakers {
            open: redis::Script::new(OPEN),
            read: redis::Script::new(READ),
        }
    }
}

impl SharedBreakers {
    /// The channel open breakers are published on.
    pub fn channel(redis: &Redis) -> String {
        redis.global("breakers")
    }

    fn set(redis: &Redis) -> String {
        redis.global("breakers:open")
    }

    /// Tells every instance that `route` is open for `cooldown` (longer if it already was).
    pub async fn open(
        &self,
        redis: &Redis,
        route: &str,
        cooldown: Duration,
    ) -> Result<(), StateError> {
        if route.len() > MAX_ROUTE_LEN {
            return Ok(());
        }
        let mut call = self.open.prepare_invoke();
        call.key(SharedBreakers::set(redis))
            .arg(route)
            .arg(cooldown.as_millis().max(1) as u64)
            .arg(SharedBreakers::channel(redis))
            .arg(MAX_OPEN)
            .arg(redis.instance());
        redis.script::<i64>("breakers open", &call).await.map(drop)
    }

    /// Every route open now, with how long it stays so.
    pub async fn read(&self, redis: &Redis) -> Result<Vec<(String, Duration)>, StateError> {
        let mut call = self.read.prepare_invoke();
        call.key(SharedBreakers::set(redis));
        let flat: Vec<String> = redis.script("breakers read", &call).await?;
        Ok(flat
            .chunks_exact(2)
            .filter_map(|pair| Some((pair[0].clone(), millis(&pair[1])?)))
            .take(MAX_OPEN)
            .collect())
    }
}

/// A message of the channel: a route opened by an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The instance whose breaker opened ([`Redis::instance`]).
    pub instance: String,
    /// The route.
    pub route: String,
    /// How long it stays open.
    pub left: Duration,
}

/// Reads a message of the channel; None for anything malformed.
pub fn parse(payload: &[u8]) -> Option<Opened> {
    let text = std::str::from_utf8(payload).ok()?;
    let (ms, rest) = text.split_once(' ')?;
    let (instance, route) = rest.split_once(' ')?;
    if instance.is_empty() || instance.len() > 64 || route.is_empty() || route.len() > MAX_ROUTE_LEN
    {
        return None;
    }
    Some(Opened {
        instance: instance.to_owned(),
        route: route.to_owned(),
        left: millis(ms)?,
    })
}

fn millis(text: &str) -> Option<Duration> {
    // A cooldown is at most what a configuration sets; a day bounds a forged message.
    let ms: u64 = text.parse().ok()?;
    Some(Duration::from_millis(ms.min(86_400_000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_parse_only_when_well_formed_and_bounded() {
        assert_eq!(
            parse(b"1500 i1 openai/gpt 4o"),
            Some(Opened {
                instance: "i1".into(),
                route: "openai/gpt 4o".into(),
                left: Duration::from_millis(1500)
            })
        );
        assert_eq!(
            parse(b"99999999999 i a/b").map(|o| o.left),
            Some(Duration::from_secs(86_400))
        );
        let long = format!("1 i {}", "x".repeat(MAX_ROUTE_LEN + 1));
        for bad in [
            &b""[..],
            b"1500",
            b"1500 i",
            b"x i a/b",
            b"-1 i a/b",
            b"1  a/b",
            b"1 i ",
            long.as_bytes(),
            b"\xff i a",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
