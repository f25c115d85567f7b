//! Fault knobs of the replay upstream, written in front of the fixture name in the request's
//! `model`: `KNOB[,KNOB...]:FIXTURE` (e.g. `slow:text_basic`, `drip=5,stall_after=3:tool_use_only`,
//! `status=429,retry_after=2:text_basic`). Through the gateway the model is
//! `PROVIDER/KNOBS:FIXTURE`, so every fault is reachable from a client without extra headers.
//!
//! A new fault is a new field here and a branch in the body writer; unknown knobs are a 400.

use std::time::Duration;

/// What to do to one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fault {
    /// Pause before every frame after the first.
    pub drip: Option<Duration>,
    /// Send the response head, then no frame at all (first-byte timeout).
    pub stall: bool,
    /// Send this many frames, then go silent with the connection open (idle timeout).
    pub stall_after: Option<usize>,
    /// Send this many frames, then abort the connection (a reset mid-stream).
    pub reset_after: Option<usize>,
    /// Send this many frames, then the dialect's mid-stream error event, then end.
    pub error_after: Option<usize>,
    /// Answer with this HTTP status and the dialect's error body instead of the fixture.
    pub status: Option<u16>,
    /// `Retry-After` seconds on a `status` answer.
    pub retry_after: Option<u64>,
    /// Write the body in pieces of at most this many bytes instead of one frame per chunk
    /// (cuts frames, lines and UTF-8 sequences).
    pub chunk: Option<usize>,
    /// Never send the response head.
    pub hang: bool,
}

/// `slow` drips one frame every this long.
pub const SLOW: Duration = Duration::from_millis(100);

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
            match name {
                "slow" => fault.drip = Some(SLOW),
                "drip" => fault.drip = Some(Duration::from_millis(number()?)),
                "stall" => fault.stall = true,
                "hang" => fault.hang = true,
                "stall_after" => fault.stall_after = Some(number()? as usize),
                "reset_after" => fault.reset_after = Some(number()? as usize),
                "error_after" => fault.error_after = Some(number()? as usize),
                "status" => {
                    let code = number()?;
                    if !(400..=599).contains(&code) {
                        return Err(format!("replay knob status must be 400..=599: {knob:?}"));
                    }
                    fault.status = Some(code as u16);
                }
                "retry_after" => fault.retry_after = Some(number()?),
                "chunk" => fault.chunk = Some((number()? as usize).max(1)),
                _ => return Err(format!("unknown replay knob {name:?} in model {model:?}")),
            }
        }
        Ok((fault, fixture))
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
}
