//! Fault knobs of the replay upstream, written in front of the fixture name in the request's
//! `model`: `KNOB[,KNOB...]:FIXTURE` (e.g. `slow:text_basic`, `drip=5,stall_after=3:tool_use_only`,
//! `status=429,retry_after=2:text_basic`, `times=1,reset_after=4:tool_use_with_text`). Through
//! the gateway the model is `PROVIDER/KNOBS:FIXTURE`, so every fault is reachable from a client
//! without extra headers.
//!
//! # Knobs
//!
//! "Frames" are the SSE frames of the body being served (the fixture, or the continuation the
//! replay derives from it, see [`super::continuation`]); each frame is one body write unless a
//! writing knob (`chunk`, `drip_bytes`, `utf8_cut`) says otherwise.
//!
//! | knob | effect |
//! |---|---|
//! | `times=N` | the other fault knobs apply to the first N requests whose endpoint dialect and `model` string (knobs + fixture) are identical, counted per replay instance; later identical requests get the clean fixture (or a continuation). Every request to the endpoint with that model counts, continuations and requests refused by `no_prefill` included. Without `times` a fault applies to every request (a route that always fails). `no_prefill` is not a fault and ignores `times`. |
//! | `no_prefill` | a request whose `messages` end with an assistant message is refused: 400 with Anthropic's real error (`invalid_request_error`, "This model does not support assistant message prefill. The conversation must end with a user message."), OpenAI-shaped on the OpenAI endpoint. Other requests are served. |
//! | `status=C` | answer with HTTP status C (400..=599) and the dialect's error body instead of the fixture. `status=529` on Anthropic is `overloaded_error` / "Overloaded", as Anthropic sends it. |
//! | `retry_after=S` | with `status`: header `Retry-After: S` (seconds). |
//! | `retry_after_ms=N` | with `status`: header `retry-after-ms: N` (as OpenAI and Anthropic send it). |
//! | `retry_after_date=S` | with `status`: header `Retry-After` as an HTTP-date S seconds in the future. |
//! | `hang` | never send the response head (connect/header timeout). |
//! | `stall` | send the head, then no frame at all, connection open (first-byte timeout). |
//! | `stall_after=N` | N frames, then silence with the connection open (idle timeout). |
//! | `reset_after=N` | N frames, then abort the connection (a reset: the client sees a body error). |
//! | `cut_after=N` | N frames, then a clean end of the body (chunked terminator, no error) without the dialect's finish: a connection that closed normally too early. |
//! | `error_after=N` | N frames, then the dialect's mid-stream error event ("replay: injected error"), then end. |
//! | `overloaded_after=N` | N frames, then an overload error: Anthropic `event: error` with `overloaded_error` / "Overloaded"; OpenAI a `data: {"error":{...}}` chunk (`server_error`, "That model is currently overloaded ..."), then end. |
//! | `malformed_after=N` | N frames, then a `data: {not json` frame, then the rest of the body. |
//! | `first_token_delay_ms=MS` | send the head at once and the first frame only after MS milliseconds: a serving stack slow to its first token (what hedging races). |
//! | `slow` | `drip=100`. |
//! | `drip=MS` | pause MS milliseconds before every write after the first. |
//! | `chunk=N` | write the body in pieces of at most N bytes (cuts frames, lines and UTF-8 sequences). |
//! | `drip_bytes` | one byte per write (the extreme `chunk=1`). |
//! | `utf8_cut` | every frame holding a non-ASCII character is written in two writes split inside its first multi-byte character, with a 10 ms pause between them so that the halves arrive in separate reads; a body without any non-ASCII is split inside a JSON string value of each frame instead. |
//!
//! Stream faults apply to a continuation's body as to a fixture's (a continuation can break
//! too); `status` and `hang` apply before anything is served. A non-streaming request gets
//! the whole JSON body whatever the stream knobs say.
//!
//! The stopping knobs (`stall_after`, `reset_after`, `error_after`, `overloaded_after`,
//! `cut_after`) are exclusive: the first given in that order wins. N beyond the body's frame
//! count means the whole body. Unknown knobs, a missing or bad number, are a 400.
//!
//! A new fault is a new field here and a branch in the body writer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What to do to one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fault {
    /// Pause before every write after the first.
    pub drip: Option<Duration>,
    /// Pause between the response head and the first frame.
    pub first_token_delay: Option<Duration>,
    /// Send the response head, then no frame at all (first-byte timeout).
    pub stall: bool,
    /// Send this many frames, then go silent with the connection open (idle timeout).
    pub stall_after: Option<usize>,
    /// Send this many frames, then abort the connection (a reset mid-stream).
    pub reset_after: Option<usize>,
    /// Send this many frames, then the dialect's mid-stream error event, then end.
    pub error_after: Option<usize>,
    /// Send this many frames, then the dialect's overload error event, then end.
    pub overloaded_after: Option<usize>,
    /// Send this many frames, then end the body cleanly (no finish, no error).
    pub cut_after: Option<usize>,
    /// Send this many frames, then a frame whose data is not JSON, then the rest.
    pub malformed_after: Option<usize>,
    /// Answer with this HTTP status and the dialect's error body instead of the fixture.
    pub status: Option<u16>,
    /// `Retry-After` seconds on a `status` answer.
    pub retry_after: Option<u64>,
    /// `retry-after-ms` on a `status` answer.
    pub retry_after_ms: Option<u64>,
    /// `Retry-After` as an HTTP-date this many seconds ahead, on a `status` answer.
    pub retry_after_date: Option<u64>,
    /// Write the body in pieces of at most this many bytes instead of one frame per chunk
    /// (cuts frames, lines and UTF-8 sequences).
    pub chunk: Option<usize>,
    /// One byte per write.
    pub drip_bytes: bool,
    /// Split frames inside a multi-byte character (else inside a JSON string).
    pub utf8_cut: bool,
    /// Never send the response head.
    pub hang: bool,
    /// The faults apply to the first this many identical requests only.
    pub times: Option<usize>,
    /// Refuse requests that end with an assistant message (not a fault: ignores `times`).
    pub no_prefill: bool,
}

/// `slow` drips one frame every this long.
pub const SLOW: Duration = Duration::from_millis(100);

/// The pause between the two halves of a `utf8_cut` frame.
pub const UTF8_CUT_PAUSE: Duration = Duration::from_millis(10);

impl Fault {
    /// Splits `model` into its knobs and the fixture name.
    pub fn parse(model: &str) -> Result<(Fault, &str), String> {
        let Some((knobs, fixture)) = model.rsplit_once(':') else {
            return Ok((Fault::default(), model));
        };
        let mut fault = Fault::default();
        for knob in knobs.split(',').filter(|k| !k.is_empty()) {
            let (name, value) = match knob.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (knob, None),
            };
            let number = || -> Result<u64, String> {
                value
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| format!("replay knob {name:?} needs a number: {knob:?}"))
            };
            let count = || number().map(|n| usize::try_from(n).unwrap_or(usize::MAX));
            let flag = |set: &mut bool| -> Result<(), String> {
                if value.is_some() {
                    return Err(format!("replay knob {name:?} takes no value: {knob:?}"));
                }
                *set = true;
                Ok(())
            };
            match name {
                "slow" => fault.drip = Some(SLOW),
                "drip" => fault.drip = Some(Duration::from_millis(number()?)),
                "first_token_delay_ms" => {
                    fault.first_token_delay = Some(Duration::from_millis(number()?));
                }
                "stall" => flag(&mut fault.stall)?,
                "hang" => flag(&mut fault.hang)?,
                "no_prefill" => flag(&mut fault.no_prefill)?,
                "drip_bytes" => flag(&mut fault.drip_bytes)?,
                "utf8_cut" => flag(&mut fault.utf8_cut)?,
                "stall_after" => fault.stall_after = Some(count()?),
                "reset_after" => fault.reset_after = Some(count()?),
                "error_after" => fault.error_after = Some(count()?),
                "overloaded_after" => fault.overloaded_after = Some(count()?),
                "cut_after" => fault.cut_after = Some(count()?),
                "malformed_after" => fault.malformed_after = Some(count()?),
                "times" => fault.times = Some(count()?),
                "status" => {
                    let code = number()?;
                    if !(400..=599).contains(&code) {
                        return Err(format!("replay knob status must be 400..=599: {knob:?}"));
                    }
                    fault.status = Some(code as u16);
                }
                "retry_after" => fault.retry_after = Some(number()?),
                "retry_after_ms" => fault.retry_after_ms = Some(number()?),
                "retry_after_date" => fault.retry_after_date = Some(number()?),
                "chunk" => fault.chunk = Some(count()?.max(1)),
                _ => return Err(format!("unknown replay knob {name:?} in model {model:?}")),
            }
        }
        Ok((fault, fixture))
    }

    /// The same route without its faults (what a request after the first `times` gets):
    /// only `no_prefill` stays.
    pub fn cleared(&self) -> Fault {
        Fault {
            no_prefill: self.no_prefill,
            ..Fault::default()
        }
    }

    /// Where the body stops early, if a stopping knob is set (see the module docs).
    pub fn stop_after(&self) -> Option<usize> {
        self.stall_after
            .or(self.reset_after)
            .or(self.error_after)
            .or(self.overloaded_after)
            .or(self.cut_after)
    }
}

/// `Retry-After` HTTP-date (IMF-fixdate) `secs` seconds after now.
pub fn http_date_in(secs: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    http_date(now.saturating_add(secs))
}

/// The IMF-fixdate of a Unix time: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(unix: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix / 86_400;
    let rem = unix % 86_400;
    let (year, month, day) = crate::civil::civil_from_days(days);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Fault {
    /// One of the faults a real upstream shows, at a random place: what `demo --chaos` uses.
    pub fn random(rng: &mut fastrand::Rng) -> Fault {
        let at = rng.usize(2..12);
        match rng.u8(0..6) {
            0 => Fault {
                reset_after: Some(at),
                ..Fault::default()
            },
            1 => Fault {
                cut_after: Some(at),
                ..Fault::default()
            },
            2 => Fault {
                overloaded_after: Some(at),
                ..Fault::default()
            },
            3 => Fault {
                status: Some(529),
                ..Fault::default()
            },
            4 => Fault {
                status: Some(503),
                ..Fault::default()
            },
            _ => Fault {
                status: Some(429),
                retry_after_ms: Some(200),
                ..Fault::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knobs_come_before_the_last_colon() {
        assert_eq!(
            Fault::parse("text_basic").unwrap(),
            (Fault::default(), "text_basic")
        );
        let (f, name) = Fault::parse("drip=5,stall_after=3:tool_use_only").unwrap();
        assert_eq!(name, "tool_use_only");
        assert_eq!(f.drip, Some(Duration::from_millis(5)));
        assert_eq!(f.stall_after, Some(3));
        assert_eq!(Fault::parse("slow:x").unwrap().0.drip, Some(SLOW));
        assert!(Fault::parse("nope:x").is_err());
        assert!(Fault::parse("status=200:x").is_err());
        assert!(Fault::parse("drip:x").is_err());
    }

    #[test]
    fn new_knobs_parse() {
        let (f, name) = Fault::parse(
            "times=2,no_prefill,status=529,retry_after_ms=250,retry_after_date=3,utf8_cut,drip_bytes:m",
        )
        .unwrap();
        assert_eq!(name, "m");
        assert_eq!(f.times, Some(2));
        assert!(f.no_prefill && f.utf8_cut && f.drip_bytes);
        assert_eq!(f.status, Some(529));
        assert_eq!(f.retry_after_ms, Some(250));
        assert_eq!(f.retry_after_date, Some(3));
        let (f, _) = Fault::parse("times=1,first_token_delay_ms=20000:m").unwrap();
        assert_eq!(f.first_token_delay, Some(Duration::from_secs(20)));
        assert_eq!(f.cleared(), Fault::default());
        assert!(Fault::parse("first_token_delay_ms:m").is_err());
        let (f, _) = Fault::parse("overloaded_after=1,cut_after=2,malformed_after=3:m").unwrap();
        assert_eq!(f.overloaded_after, Some(1));
        assert_eq!(f.cut_after, Some(2));
        assert_eq!(f.malformed_after, Some(3));
        assert_eq!(f.stop_after(), Some(1));
        assert!(Fault::parse("times:m").is_err());
        assert!(Fault::parse("no_prefill=1:m").is_err());
        assert!(Fault::parse("cut_after=x:m").is_err());
    }

    #[test]
    fn cleared_keeps_only_no_prefill() {
        let (f, _) = Fault::parse("times=1,no_prefill,reset_after=2,drip=5:m").unwrap();
        assert_eq!(
            f.cleared(),
            Fault {
                no_prefill: true,
                ..Fault::default()
            }
        );
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_767_225_599), "Wed, 31 Dec 2025 23:59:59 GMT");
        assert!(http_date_in(5).ends_with(" GMT"));
    }
}
