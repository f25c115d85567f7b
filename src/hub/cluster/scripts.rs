//! The Lua scripts that change a stream's keys in Redis: each is one atomic step, so that two
//! instances never interleave inside one (the lease check and the write it guards are one).
//!
//! Keys of a stream (TAG = its hub key, `owner~id`: one Redis Cluster slot per stream):
//! `PREFIX:{TAG}:meta` (hash: door, route, created_ms, body, forward, owner, next, ended,
//! cancel), `PREFIX:{TAG}:ev` (a Redis Stream, entry id `0-(seq+1)`, field `e` = the envelope),
//! `PREFIX:{TAG}:lease` (the owning instance's id, PX lease_ms). `PREFIX:live` is a ZSET of
//! the streams being generated, scored by their lease deadline in Redis's own clock (`TIME`),
//! so a takeover scan reads only the expired ones. Times are Redis's, never an instance's.
//!
//! Return codes shared by the scripts: 1 done, 0 refused (exists, or lost the race), -1 fenced
//! (another instance owns the stream, or it ended), -2 gone (Redis lost the stream: it came
//! back empty), -3 behind (Redis's next seq is below the batch's first; `[-3, next]`).

use std::sync::LazyLock;

use redis::Script;

/// The Lua prelude every script shares: `now()` in Redis's clock (ms) and `fenced(meta,
/// lease, me)`, whether `me` may not write the stream.
const PRELUDE: &str = r"
local function now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fenced(meta, lease, me)
  if redis.call('HGET', meta, 'ended') == '1' then return true end
  if redis.call('HGET', meta, 'owner') ~= me then return true end
  local holder = redis.call('GET', lease)
  return holder and holder ~= me
end
";

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
}

/// Creates (mode `new`: only if absent, else 0) or re-adopts (mode `adopt`: the owner's own
/// stream after Redis lost it or its lease lapsed) a stream, takes its lease, lists it live.
/// KEYS meta, lease, live. ARGV me, lease_ms, ttl_ms, tag, mode, door, route, created_ms,
/// body, forward. Returns `[code, next]`.
pub(super) static OPEN: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local meta, lease, live = KEYS[1], KEYS[2], KEYS[3]
local me = ARGV[1]
if redis.call('EXISTS', meta) == 1 then
  if ARGV[5] == 'new' then return {0, 0} end
  if fenced(meta, lease, me) then return {-1, 0} end
else
  redis.call('HSET', meta, 'door', ARGV[6], 'route', ARGV[7], 'created_ms', ARGV[8],
    'body', ARGV[9], 'forward', ARGV[10], 'owner', me, 'next', '0', 'ended', '0')
end
redis.call('SET', lease, me, 'PX', ARGV[2])
redis.call('PEXPIRE', meta, ARGV[3])
redis.call('ZADD', live, now() + tonumber(ARGV[2]), ARGV[4])
return {1, tonumber(redis.call('HGET', meta, 'next'))}
",
    )
});

/// Appends a batch (seqs `first..`) under the lease: seqs Redis has already are skipped
/// (idempotent re-sends), the new ones are XADDed with their explicit ids, published on the
/// tail channel as `FIRST\nJSON\nJSON…`, and the lease renewed.
/// KEYS meta, lease, ev, live. ARGV me, lease_ms, ttl_ms, tag, maxlen, channel, first, json….
/// Returns `[code, next]`.
pub(super) static APPEND: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local meta, lease, ev, live = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local me = ARGV[1]
if redis.call('EXISTS', meta) == 0 then return {-2, 0} end
if fenced(meta, lease, me) then return {-1, 0} end
local nxt = tonumber(redis.call('HGET', meta, 'next'))
local first = tonumber(ARGV[7])
if nxt < first then return {-3, nxt} end
local out = {}
for i = 8, #ARGV do
  local seq = first + i - 8
  if seq >= nxt then
    redis.call('XADD', ev, 'MAXLEN', '~', ARGV[5], '0-' .. string.format('%d', seq + 1), 'e', ARGV[i])
    out[#out + 1] = ARGV[i]
  end
end
local last = first + #ARGV - 7
if #out > 0 then
  redis.call('HSET', meta, 'next', string.format('%d', last))
  redis.call('PUBLISH', ARGV[6], string.format('%d', last - #out) .. '\n' .. table.concat(out, '\n'))
end
redis.call('SET', lease, me, 'PX', ARGV[2])
redis.call('PEXPIRE', meta, ARGV[3])
redis.call('PEXPIRE', ev, ARGV[3])
redis.call('ZADD', live, now() + tonumber(ARGV[2]), ARGV[4])
return {1, math.max(last, nxt)}
",
    )
});

/// Ends a stream: marked ended, its lease dropped, off the live set, every key kept for the
/// retention; `end` published on the tail channel. Redis must hold every event first (the
/// stream's last seq + 1 is ARGV next), else -3: the owner re-sends, then ends.
/// KEYS meta, lease, ev, live. ARGV me, retention_ms, tag, channel, next. Returns the code.
pub(super) static END: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local meta, lease, ev, live = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
if redis.call('EXISTS', meta) == 0 then return -2 end
if fenced(meta, lease, ARGV[1]) then return -1 end
if tonumber(redis.call('HGET', meta, 'next')) < tonumber(ARGV[5]) then return -3 end
redis.call('HSET', meta, 'ended', '1')
redis.call('DEL', lease)
redis.call('ZREM', live, ARGV[3])
redis.call('PEXPIRE', meta, ARGV[2])
redis.call('PEXPIRE', ev, ARGV[2])
redis.call('PUBLISH', ARGV[4], 'end')
return 1
",
    )
});

/// Takes over a stream whose lease lapsed: `SET NX` makes exactly one claimant win. A stream
/// gone or ended leaves the live set instead.
/// KEYS meta, lease, live. ARGV me, lease_ms, tag. Returns 1 (won) or 0.
pub(super) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local meta, lease, live = KEYS[1], KEYS[2], KEYS[3]
if redis.call('EXISTS', meta) == 0 or redis.call('HGET', meta, 'ended') == '1' then
  redis.call('ZREM', live, ARGV[3])
  return 0
end
if redis.call('SET', lease, ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('HSET', meta, 'owner', ARGV[1])
  redis.call('ZADD', live, now() + tonumber(ARGV[2]), ARGV[3])
  return 1
end
return 0
",
    )
});

/// Renews the leases of many streams of one owner in one call.
/// KEYS live, then meta, lease, ev per stream. ARGV me, lease_ms, ttl_ms, tag….
/// Returns one code per stream: 1 renewed, 2 renewed and a client asked to cancel it, 3
/// renewed and a client follows it on another instance (marked within the last lease), -1
/// fenced, -2 gone.
pub(super) static RENEW: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
local me = ARGV[1]
local deadline = now() + tonumber(ARGV[2])
local codes = {}
for i = 4, #ARGV do
  local k = 2 + (i - 4) * 3
  local meta, lease, ev = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  if redis.call('EXISTS', meta) == 0 then
    codes[#codes + 1] = -2
  elseif fenced(meta, lease, me) then
    codes[#codes + 1] = -1
  else
    redis.call('SET', lease, me, 'PX', ARGV[2])
    redis.call('PEXPIRE', meta, ARGV[3])
    redis.call('PEXPIRE', ev, ARGV[3])
    redis.call('ZADD', KEYS[1], deadline, ARGV[i])
    local followed = tonumber(redis.call('HGET', meta, 'followed') or '0')
    if redis.call('HGET', meta, 'cancel') == '1' then codes[#codes + 1] = 2
    elseif deadline - followed < 2 * tonumber(ARGV[2]) then codes[#codes + 1] = 3
    else codes[#codes + 1] = 1 end
  end
end
return codes
",
    )
});

/// Streams of the live set whose lease deadline passed, at most ARGV[1] of them.
/// KEYS live. Returns their tags.
pub(super) static EXPIRED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now(), 'LIMIT', 0, tonumber(ARGV[1]))
",
    )
});

/// Marks a stream followed by a client on another instance now (its owner keeps generating
/// it while anyone follows it anywhere). KEYS meta.
pub(super) static FOLLOWED: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'followed', now()) end
return 1
",
    )
});

/// Asks the owner of a live stream to cancel it (read at its next renewal).
/// KEYS meta. Returns 1 when the stream was live, 0 when it had ended, -1 when unknown.
pub(super) static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    script(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if redis.call('HGET', KEYS[1], 'ended') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'cancel', '1')
return 1
",
    )
});
