//! Pure parsing of providers' rate-limit headers into "blocked for how long": OpenAI's
//! `x-ratelimit-remaining-*` / `x-ratelimit-reset-*` (Go durations: `1s`, `6m0s`, `20ms`),
//! Anthropic's `anthropic-ratelimit-*-remaining` / `-reset` (RFC 3339 instants), and
//! `retry-after` / `retry-after-ms`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName};

/// A 429 that says nothing about when to come back blocks its route this long.
pub const DEFAULT_429_BACKOFF: Duration = Duration::from_secs(1);

/// No header blocks a route longer than this (a misread or hostile header cannot park it).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

// Header names, not strings: a lookup by `&str` parses the name first, and these are looked
// up on every provider answer.
static OPENAI: [(HeaderName, HeaderName); 2] = [
    (
        HeaderName::from_static("x-ratelimit-remaining-requests"),
        HeaderName::from_static("x-ratelimit-reset-requests"),
    ),
    (
        HeaderName::from_static("x-ratelimit-remaining-tokens"),
        HeaderName::from_static("x-ratelimit-reset-tokens"),
    ),
];

static ANTHROPIC: [(HeaderName, HeaderName); 4] = [
    (
        HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
        HeaderName::from_static("anthropic-ratelimit-requests-reset"),
    ),
    (
        HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-tokens-reset"),
    ),
    (
        HeaderName::from_static("anthropic-ratelimit-input-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-input-tokens-reset"),
    ),
    (
        HeaderName::from_static("anthropic-ratelimit-output-tokens-remaining"),
        HeaderName::from_static("anthropic-ratelimit-output-tokens-reset"),
    ),
];

/// How long a route should rest after an answer with `status` and `headers`, received at
/// `now`: the longest of every exhausted budget's reset and (on 429/503) [`retry_after`]; a
/// 429 with nothing usable rests [`DEFAULT_429_BACKOFF`]. None: no reason to rest. Never longer
/// than [`MAX_BACKOFF`].
pub fn backoff_from_headers(status: u16, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let exhausted =
        |name: &HeaderName| text(headers, name).and_then(|v| v.parse::<f64>().ok()) == Some(0.0);
    let mut longest: Option<Duration> = None;
    let mut consider = |d: Duration| {
        if !d.is_zero() && longest.is_none_or(|l| d > l) {
            longest = Some(d);
        }
    };
    for (remaining, reset) in &OPENAI {
        if exhausted(remaining) {
            consider(
                text(headers, reset)
                    .and_then(parse_go_duration)
                    .unwrap_or(DEFAULT_429_BACKOFF),
            );
        }
    }
    for (remaining, reset) in &ANTHROPIC {
        if exhausted(remaining) {
            let until = text(headers, reset).and_then(parse_rfc3339);
            consider(until.map_or(DEFAULT_429_BACKOFF, |t| wait_until(t, now)));
        }
    }
    if matches!(status, 429 | 503)
        && let Some(wait) = retry_after(headers, now)
    {
        consider(wait);
    }
    if status == 429 && longest.is_none() {
        longest = Some(DEFAULT_429_BACKOFF);
    }
    longest.map(clamp)
}

/// The provider's `retry-after-ms` (milliseconds, fractional allowed), else its `Retry-After`
/// (seconds, fractional allowed, or an HTTP date), received at `now`: the one reading of these
/// headers in the gateway. Clamped to [`MAX_BACKOFF`] (a huge or far-future value means "long",
/// not "forever"); a date already past is zero; a value that is not a number or date, negative,
/// NaN or infinite says nothing (None), and a malformed `retry-after-ms` falls back to
/// `Retry-After`.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let ms = text(headers, &RETRY_AFTER_MS)
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| secs_f64(ms / 1000.0));
    ms.or_else(|| {
        let v = text(headers, &http::header::RETRY_AFTER)?;
        match v.parse::<f64>() {
            Ok(secs) => secs_f64(secs),
            Err(_) => httpdate::parse_http_date(v)
                .ok()
                .map(|t| wait_until(t, now)),
        }
    })
}

static RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

fn text<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn clamp(wait: Duration) -> Duration {
    wait.min(MAX_BACKOFF)
}

/// From `now` to `then`, zero if past, at most [`MAX_BACKOFF`].
fn wait_until(then: SystemTime, now: SystemTime) -> Duration {
    clamp(then.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A non-negative number of seconds as a wait, at most [`MAX_BACKOFF`]; NaN, infinite or
/// negative: None. (`Duration::from_secs_f64` panics on those and on overflow: the value is
/// checked and clamped first.)
fn secs_f64(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs.min(MAX_BACKOFF.as_secs_f64())).ok()
}

/// A Go `time.Duration` string as OpenAI sends it: `1s`, `6m0s`, `1m30s`, `20ms`, `1.5s`,
/// `1h2m3.5s`, `0`; saturating at `Duration::MAX` (callers clamp). Negative or malformed: None.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(Duration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        // Longest units first: `ms` before `m`.
        let (unit, seconds) = [
            ("ns", 1e-9),
            ("us", 1e-6),
            ("µs", 1e-6),
            ("μs", 1e-6),
            ("ms", 1e-3),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
        ]
        .into_iter()
        .find(|(unit, _)| rest.starts_with(unit))?;
        rest = &rest[unit.len()..];
        total += value * seconds;
    }
    // The sum is never negative or NaN (no sign is read); only overflow is left, and a long
    // run of digits (up to infinity) still means "long".
    Some(Duration::try_from_secs_f64(total).unwrap_or(Duration::MAX))
}

/// An RFC 3339 timestamp (`2025-01-01T00:00:30Z`, `...30.5+02:00`) as a system time. Before
/// 1970 or malformed: None.
pub fn parse_rfc3339(text: &str) -> Option<SystemTime> {
    let s = text.trim().as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if s.get(4) != Some(&b'-')
        || s.get(7) != Some(&b'-')
        || !matches!(s.get(10), Some(b'T' | b't' | b' '))
        || s.get(13) != Some(&b':')
        || s.get(16) != Some(&b':')
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0u32;
    if s.get(i) == Some(&b'.') {
        let digits = s[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        let fraction = std::str::from_utf8(&s[i + 1..i + 1 + digits.min(9)]).ok()?;
        nanos = fraction.parse::<u32>().ok()? * 10u32.pow(9 - digits.min(9) as u32);
        i += 1 + digits;
    }
    let offset = match s.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |b: &u8| b.is_ascii_digit().then(|| i64::from(b - b'0'));
            let minutes = (digit(h1)? * 10 + digit(h2)?) * 60 + digit(m1)? * 10 + digit(m2)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
