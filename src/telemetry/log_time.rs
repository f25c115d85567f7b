//! Log lines' timestamps: RFC 3339 in UTC with microseconds, byte for byte as
//! tracing-subscriber's `SystemTime` writes them, with the date and the time of day worked out
//! once per second instead of for every line.
//!
//! tracing-subscriber converts the clock to a calendar date and formats seven numbers through
//! `fmt` for each line: 2.3k of the access line's 12k instructions (issue #14).

use std::cell::Cell;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::civil::civil_from_days;

/// The timer of the gateway's log lines (text and JSON).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogTime;

/// `YYYY-MM-DDTHH:MM:SS`.
type Second = [u8; 19];

/// The first second of the year 10000: from there on (and before 1970) the line's time is
/// left to tracing-subscriber, whose text takes other widths.
const YEAR_10000: u64 = 253_402_300_800;

thread_local! {
    /// The second this thread last wrote, and its text.
    static LAST: Cell<(u64, Second)> = const { Cell::new((u64::MAX, [0; 19])) };
}

impl FormatTime for LogTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(t) if t.as_secs() < YEAR_10000 => {
                let text = stamp(t.as_secs(), t.subsec_micros());
                w.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
            }
            _ => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` for `secs` since the epoch (before the year 10000).
fn stamp(secs: u64, micros: u32) -> [u8; 27] {
    let second = LAST.with(|last| {
        let (at, text) = last.get();
        if at == secs {
            return text;
        }
        let text = second_text(secs);
        last.set((secs, text));
        text
    });
    let mut out = [0u8; 27];
    out[..19].copy_from_slice(&second);
    out[19] = b'.';
    digits(&mut out[20..26], u64::from(micros));
    out[26] = b'Z';
    out
}

fn second_text(secs: u64) -> Second {
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00";
    digits(&mut out[0..4], year);
    digits(&mut out[5..7], u64::from(month));
    digits(&mut out[8..10], u64::from(day));
    digits(&mut out[11..13], of_day / 3600);
    digits(&mut out[14..16], of_day / 60 % 60);
    digits(&mut out[17..19], of_day % 60);
    out
}

/// `n` in decimal, right-aligned in `out`, zero-padded (`n` fits).
fn digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(secs: u64, micros: u32) -> String {
        String::from_utf8(stamp(secs, micros).to_vec()).unwrap()
    }

    #[test]
    fn known_instants() {
        assert_eq!(text(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(text(951_782_400, 7), "2000-02-29T00:00:00.000007Z");
        assert_eq!(text(4_107_542_400, 999_999), "2100-03-01T00:00:00.999999Z");
        assert_eq!(text(1_796_649_059, 540_124), "2026-12-07T13:10:59.540124Z");
        assert_eq!(text(YEAR_10000 - 1, 0), "9999-12-31T23:59:59.000000Z");
    }

    /// Seeded instants from 1970 to 9999: the text is the date (`crate::civil`, checked
    /// there), the time of day and the microseconds, zero-padded, and the per-second cache
    /// gives what a fresh computation does.
    #[test]
    fn every_instant_is_written_whole() {
        let mut x: u64 = 0x5eed;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let secs = (x >> 11) % YEAR_10000;
            let micros = (x % 1_000_000) as u32;
            let (y, m, d) = civil_from_days(secs / 86_400);
            let s = secs % 86_400;
            let want = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
                s / 3600,
                s / 60 % 60,
                s % 60
            );
            assert_eq!(text(secs, micros), want);
            assert_eq!(&stamp(secs, 0)[..19], &second_text(secs)[..], "{want}");
        }
    }

    /// The same text as tracing-subscriber's own timer, read in the same second.
    #[test]
    fn writes_what_tracing_subscriber_writes() {
        for _ in 0..100 {
            let (mut ours, mut theirs) = (String::new(), String::new());
            LogTime.format_time(&mut Writer::new(&mut ours)).unwrap();
            tracing_subscriber::fmt::time::SystemTime
                .format_time(&mut Writer::new(&mut theirs))
                .unwrap();
            assert_eq!(ours.len(), theirs.len(), "{ours} against {theirs}");
            if ours[..19] == theirs[..19] {
                assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.');
                return;
            }
        }
        panic!("the second changed between the two reads every time");
    }
}
