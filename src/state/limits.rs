//! The rate limits' Redis scripts: one admission checks and takes every budget of a request
//! (requests per minute as GCRA, tokens per minute as a bucket, concurrent streams as a set of
//! holders) in one atomic step, all or nothing; settling, releasing and renewing are scripts
//! too. Time is Redis's own (`TIME` inside the script), so instances' clocks never disagree.
//!
//! Every key is under the one hash tag `{limits}` (`PREFIX:{limits}:…`): a script touching a
//! key's and a model's budgets works on Redis Cluster, at the price of all limits living on one
//! shard (docs/deployment.md). Every key has a TTL: what it holds is worth nothing once it
//! expires (a full bucket, a TAT in the past, no holder alive).
//!
//! This module knows keys and numbers, not clients or quotas: `crate::limit` maps its subjects
//! and quotas onto it.

use std::time::Duration;

use super::{Redis, StateError};

/// The hash tag of every limit key.
pub const TAG: &str = "limits";

/// One budget of an admission: a client key's or a model's. A limit of 0 is no limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedBudget {
    /// The subject's name in keys (short, bounded: a hash, never client text).
    pub subject: String,
    /// Requests per minute (0: none).
    pub requests_per_minute: u32,
    /// Tokens per minute (0: none).
    pub tokens_per_minute: u64,
    /// Concurrent streams (0: none).
    pub concurrent_streams: u32,
}

/// Which budget refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedLimit {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Concurrent streams.
    Streams,
}

/// What an admission decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Every budget had room and was taken.
    Admitted,
    /// Nothing was taken: budget `index` of the request is out of `limit`, with room again
    /// in `wait` (for streams, a hint: they end when they end).
    Refused {
        /// The limit.
        limit: SharedLimit,
        /// The budget's position in the request.
        index: usize,
        /// How long until it would admit.
        wait: Duration,
    },
}

/// Whose clock a script reads: Redis's, always, in the gateway; tests replay sequences of
/// instants of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// `TIME` inside the script.
    Redis,
    /// This many microseconds since the epoch (tests).
    At(u64),
}

impl Clock {
    fn arg(self) -> String {
        match self {
            Clock::Redis => String::new(),
            Clock::At(micros) => micros.to_string(),
        }
    }
}

/// Reads the clock: `now` in microseconds.
const NOW: &str = r"
local now
if ARGV[1] ~= '' then now = tonumber(ARGV[1]) else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local now_ms = math.floor(now / 1000)
";

/// KEYS: per budget, its GCRA key, bucket key and holders key. ARGV: clock, amount, member,
/// expiry ms, then per budget: requests, tokens and streams per minute (0: none).
/// Returns {1} admitted, or {0, kind (1 requests, 2 tokens, 3 streams), index, wait µs}.
const ADMIT: &str = r"
local amount = tonumber(ARGV[2])
local member = ARGV[3]
local expiry = tonumber(ARGV[4])
local n = #KEYS / 3
local function limit(i, j) return tonumber(ARGV[5 + i * 3 + j]) end
for i = 0, n - 1 do
  local max = limit(i, 2)
  if max > 0 then
    local key = KEYS[i * 3 + 3]
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
    if redis.call('ZCARD', key) >= max then return {0, 3, i, 1000000} end
  end
end
local levels = {}
local worst, worst_i = -1, -1
for i = 0, n - 1 do
  local per = limit(i, 1)
  if per > 0 then
    local h = redis.call('HMGET', KEYS[i * 3 + 2], 'l', 't')
    local level = per
    if h[1] then
      level = math.min(per, tonumber(h[1]) + math.max(0, now - tonumber(h[2])) * per / 60000000)
    end
    levels[i] = level
    local need = math.min(amount, per)
    if level < need then
      local wait = math.ceil((need - level) * 60000000 / per)
      if wait > worst then worst, worst_i = wait, i end
    end
  end
end
if worst_i >= 0 then return {0, 2, worst_i, math.max(worst, 1000)} end
local tats = {}
for i = 0, n - 1 do
  local per = limit(i, 0)
  if per > 0 then
    local period = 60000000 / per
    local tat = tonumber(redis.call('GET', KEYS[i * 3 + 1]) or '0')
    if tat < now then tat = now end
    local allow_at = tat + period - period * per
    if allow_at > now then return {0, 1, i, math.ceil(allow_at - now)} end
    tats[i] = tat + period
  end
end
for i = 0, n - 1 do
  if tats[i] then
    redis.call('SET', KEYS[i * 3 + 1], string.format('%.17g', tats[i]),
      'PX', math.ceil((tats[i] - now) / 1000) + 1)
  end
  if levels[i] then
    local per = limit(i, 1)
    local level = levels[i] - amount
    redis.call('HSET', KEYS[i * 3 + 2], 'l', string.format('%.17g', level), 't', string.format('%.17g', now))
    redis.call('PEXPIRE', KEYS[i * 3 + 2], math.ceil((per - level) * 60000 / per) + 1000)
  end
  if limit(i, 2) > 0 then
    redis.call('ZADD', KEYS[i * 3 + 3], now_ms + expiry, member)
    redis.call('PEXPIRE', KEYS[i * 3 + 3], expiry * 2)
  end
end
return {1}
";

/// KEYS: bucket keys. ARGV: clock, delta (more tokens charged; negative refunds), then each
/// bucket's tokens per minute. Returns each bucket's level after, as strings.
const SETTLE: &str = r"
local delta = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local per = tonumber(ARGV[2 + i])
  local h = redis.call('HMGET', KEYS[i], 'l', 't')
  local level = per
  if h[1] then
    level = math.min(per, tonumber(h[1]) + math.max(0, now - tonumber(h[2])) * per / 60000000)
  end
  level = math.min(per, level - delta)
  if level >= per then
    redis.call('DEL', KEYS[i])
  else
    redis.call('HSET', KEYS[i], 'l', string.format('%.17g', level), 't', string.format('%.17g', now))
    redis.call('PEXPIRE', KEYS[i], math.ceil((per - level) * 60000 / per) + 1000)
  end
  out[i] = string.format('%.17g', level)
end
return out
";

/// KEYS: holders keys. ARGV: clock, expiry ms, then one member per key. Pushes each member's
/// expiry on, adding back one Redis lost (restarted empty, or expired it during an outage
/// longer than the expiry): a stream still running counts again within a renewal period.
/// Returns how many were added back.
const RENEW: &str = r"
local expiry = tonumber(ARGV[2])
local added = 0
for i = 1, #KEYS do
  added = added + redis.call('ZADD', KEYS[i], now_ms + expiry, ARGV[2 + i])
  redis.call('PEXPIRE', KEYS[i], expiry * 2)
end
return added
";

/// KEYS[1]: a subject's spend hash (`d`, `dt`: the UTC day and its tokens; `m`, `mt`: the
/// month and its tokens). ARGV: clock, day cap (0: none), month cap (0: none), amount (signed),
/// mode: `admit` (refuse once a cap is reached, else charge), `adjust` (charge; never below 0)
/// or `read`. Returns {1, day tokens, month tokens, secs} or {0, 1 (day) | 2 (month), secs}.
/// The calendar is Howard Hinnant's `civil_from_days`, on Redis's clock.
const SPEND: &str = r"
local secs = math.floor(now / 1000000)
local day = math.floor(secs / 86400)
local z = day + 719468
local era = math.floor(z / 146097)
local doe = z - era * 146097
local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
local mp = math.floor((5 * doy + 2) / 153)
local m = mp < 10 and mp + 3 or mp - 9
local y = yoe + era * 400 + (m <= 2 and 1 or 0)
local month = y * 12 + m - 1
local h = redis.call('HMGET', KEYS[1], 'd', 'dt', 'm', 'mt')
local dt = 0
local mt = 0
if tonumber(h[1]) == day then dt = tonumber(h[2]) end
if tonumber(h[3]) == month then mt = tonumber(h[4]) end
local cap_day, cap_month = tonumber(ARGV[2]), tonumber(ARGV[3])
local amount, mode = tonumber(ARGV[4]), ARGV[5]
if mode == 'admit' then
  if cap_day > 0 and dt >= cap_day then return {0, 1, secs} end
  if cap_month > 0 and mt >= cap_month then return {0, 2, secs} end
end
if mode ~= 'read' then
  dt = math.max(0, dt + amount)
  mt = math.max(0, mt + amount)
  redis.call('HSET', KEYS[1], 'd', day, 'dt', string.format('%.0f', dt), 'm', month, 'mt', string.format('%.0f', mt))
  redis.call('PEXPIRE', KEYS[1], 32 * 86400000)
end
return {1, dt, mt, secs}
";

/// What a spend script did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendReply {
    /// Charged (or read): the tokens of the current day and month after it.
    Counted {
        /// Today's tokens (UTC, Redis's clock).
        day: u64,
        /// This month's tokens.
        month: u64,
        /// Redis's clock, in seconds since the epoch.
        secs: u64,
    },
    /// Nothing charged: the day's (`month` false) or the month's budget is spent.
    Refused {
        /// The month's budget, rather than the day's.
        month: bool,
        /// Redis's clock, in seconds since the epoch.
        secs: u64,
    },
}

/// What a spend script does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpendMode {
    /// Refuse once a cap is reached, else charge.
    Admit,
    /// Charge (a negative amount refunds; never below zero).
    Adjust,
    /// Only read.
    Read,
}

/// The scripts, loaded once per process (EVALSHA, loaded again on a miss).
#[derive(Debug)]
pub struct LimitScripts {
    admit: redis::Script,
    settle: redis::Script,
    renew: redis::Script,
    spend: redis::Script,
}

impl Default for LimitScripts {
    fn default() -> LimitScripts {
        LimitScripts::new()
    }
}

/// Most holders renewed by one script call (a long call would hold Redis up).
pub const RENEW_BATCH: usize = 256;

impl LimitScripts {
    /// The scripts.
    pub fn new() -> LimitScripts {
        let script = |body: &str| redis::Script::new(&format!("{NOW}{body}"));
        LimitScripts {
            admit: script(ADMIT),
            settle: script(SETTLE),
            renew: script(RENEW),
            spend: script(SPEND),
        }
    }

    /// The GCRA key of `subject` at `per_minute` (each quota value its own, as a reload
    /// keeps the cells of a value that remains).
    pub fn requests_key(redis: &Redis, subject: &str, per_minute: u32) -> String {
        redis.key(TAG, &format!("rpm:{per_minute}:{subject}"))
    }

    /// The token bucket key of `subject`.
    pub fn tokens_key(redis: &Redis, subject: &str) -> String {
        redis.key(TAG, &format!("tpm:{subject}"))
    }

    /// The stream holders key of `subject`.
    pub fn streams_key(redis: &Redis, subject: &str) -> String {
        redis.key(TAG, &format!("streams:{subject}"))
    }

    /// Checks every budget of `budgets` for one request borrowing `amount` tokens and takes
    /// them all, or none; `member` holds its stream slots until released, or until `expiry`
    /// passes without a renewal.
    pub async fn admit(
        &self,
        redis: &Redis,
        budgets: &[SharedBudget],
        amount: u64,
        member: &str,
        expiry: Duration,
        clock: Clock,
    ) -> Result<Admission, StateError> {
        let mut call = self.admit.prepare_invoke();
        call.arg(clock.arg())
            .arg(amount)
            .arg(member)
            .arg(expiry.as_millis().max(1) as u64);
        for b in budgets {
            call.key(LimitScripts::requests_key(
                redis,
                &b.subject,
                b.requests_per_minute,
            ))
            .key(LimitScripts::tokens_key(redis, &b.subject))
            .key(LimitScripts::streams_key(redis, &b.subject))
            .arg(b.requests_per_minute)
            .arg(b.tokens_per_minute)
            .arg(b.concurrent_streams);
        }
        let reply: Vec<i64> = redis.script("limits admit", &call).await?;
        match reply.as_slice() {
            [1] => Ok(Admission::Admitted),
            [0, kind, index, wait] => Ok(Admission::Refused {
                limit: match kind {
                    1 => SharedLimit::Requests,
                    2 => SharedLimit::Tokens,
                    _ => SharedLimit::Streams,
                },
                index: usize::try_from(*index).unwrap_or(0),
                wait: Duration::from_micros(u64::try_from(*wait).unwrap_or(1)),
            }),
            _ => Err(StateError::Failed {
                what: "limits admit",
                reason: "unexpected reply".into(),
            }),
        }
    }

    /// Charges `delta` more tokens to each `(subject, tokens per minute)` bucket (negative:
    /// a refund, capped at a full bucket); returns the levels after.
    pub async fn settle(
        &self,
        redis: &Redis,
        buckets: &[(String, u64)],
        delta: i64,
        clock: Clock,
    ) -> Result<Vec<f64>, StateError> {
        let mut call = self.settle.prepare_invoke();
        call.arg(clock.arg()).arg(delta);
        for (subject, per_minute) in buckets {
            call.key(LimitScripts::tokens_key(redis, subject))
                .arg(*per_minute);
        }
        let levels: Vec<String> = redis.script("limits settle", &call).await?;
        Ok(levels.iter().filter_map(|l| l.parse().ok()).collect())
    }

    /// Pushes the expiry of each `(subject, member)` slot on to `expiry` from now, adding back
    /// those Redis lost; returns how many it added back. At most [`RENEW_BATCH`] a call. (The
    /// caller renews only the slots its permits still hold: one released while a renewal was
    /// under way may come back, for one expiry at most.)
    pub async fn renew(
        &self,
        redis: &Redis,
        holders: &[(String, String)],
        expiry: Duration,
        clock: Clock,
    ) -> Result<u64, StateError> {
        let mut call = self.renew.prepare_invoke();
        call.arg(clock.arg()).arg(expiry.as_millis().max(1) as u64);
        for (subject, member) in holders.iter().take(RENEW_BATCH) {
            call.key(LimitScripts::streams_key(redis, subject))
                .arg(member);
        }
        redis.script("limits renew", &call).await
    }

    /// The spend key of `subject` (a gateway key's day and month tokens).
    pub fn spend_key(redis: &Redis, subject: &str) -> String {
        redis.key(TAG, &format!("spend:{subject}"))
    }

    /// Charges, refunds or reads `subject`'s day and month tokens, refusing in
    /// [`SpendMode::Admit`] once `per_day` or `per_month` (0: none) is reached.
    #[allow(clippy::too_many_arguments)]
    pub async fn spend(
        &self,
        redis: &Redis,
        subject: &str,
        per_day: u64,
        per_month: u64,
        amount: i64,
        mode: SpendMode,
        clock: Clock,
    ) -> Result<SpendReply, StateError> {
        let mut call = self.spend.prepare_invoke();
        call.key(LimitScripts::spend_key(redis, subject))
            .arg(clock.arg())
            .arg(per_day)
            .arg(per_month)
            .arg(amount)
            .arg(match mode {
                SpendMode::Admit => "admit",
                SpendMode::Adjust => "adjust",
                SpendMode::Read => "read",
            });
        let reply: Vec<i64> = redis.script("limits spend", &call).await?;
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        match reply.as_slice() {
            [1, day, month, secs] => Ok(SpendReply::Counted {
                day: n(*day),
                month: n(*month),
                secs: n(*secs),
            }),
            [0, which, secs] => Ok(SpendReply::Refused {
                month: *which == 2,
                secs: n(*secs),
            }),
            _ => Err(StateError::Failed {
                what: "limits spend",
                reason: "unexpected reply".into(),
            }),
        }
    }

    /// Gives back `member`'s slot of each subject's streams.
    pub async fn release(
        redis: &Redis,
        subjects: &[String],
        member: &str,
    ) -> Result<(), StateError> {
        let mut pipe = redis::pipe();
        for subject in subjects {
            pipe.cmd("ZREM")
                .arg(LimitScripts::streams_key(redis, subject))
                .arg(member)
                .ignore();
        }
        redis.pipeline("limits release", &pipe).await
    }

    /// Streams held now for `subject` (expired holders excluded), by Redis's clock.
    pub async fn holders(redis: &Redis, subject: &str) -> Result<u64, StateError> {
        let now: (u64, u64) = redis.query("TIME", &redis::cmd("TIME")).await?;
        let now_ms = now.0 * 1000 + now.1 / 1000;
        redis
            .query(
                "ZCOUNT",
                redis::cmd("ZCOUNT")
                    .arg(LimitScripts::streams_key(redis, subject))
                    .arg(format!("({now_ms}"))
                    .arg("+inf"),
            )
            .await
    }
}
