//! Output caps: the most tokens an answer may ask for, and the most choices (`n`), set per
//! gateway key (`[keys.NAME]`) and per alias (`[models.ALIAS]`).
//!
//! Applied to the unified request before it is admitted, so every door, every route and the
//! rate limiter's token estimate see the capped request:
//! - `max_tokens` above the cap is lowered to it, and a request without one gets the cap (a
//!   client asking for less keeps its own). Each dialect's writer puts it in its own field
//!   (`max_tokens`, `max_completion_tokens`). An explicit Anthropic thinking budget that no
//!   longer fits below the cap is halved to fit, as an OpenAI effort's budget is.
//! - `n` above the cap is refused (400 in the door's dialect): silently returning fewer
//!   choices than asked would break a client that indexes them.

use std::num::NonZeroU32;

use providers::request::{ChatRequest, RequestError};

use crate::error::GatewayError;

/// The caps that apply to one request; `None`: no cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutputCaps {
    /// Most output tokens (`max_tokens`) a request may ask for.
    pub max_output_tokens: Option<NonZeroU32>,
    /// Most choices (`n`) a request may ask for.
    pub max_n: Option<NonZeroU32>,
}

impl OutputCaps {
    /// Both sets of caps at once: the tighter of each.
    pub fn and(self, other: OutputCaps) -> OutputCaps {
        let tighter = |a: Option<NonZeroU32>, b: Option<NonZeroU32>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        OutputCaps {
            max_output_tokens: tighter(self.max_output_tokens, other.max_output_tokens),
            max_n: tighter(self.max_n, other.max_n),
        }
    }

    /// Caps `request` in place, or refuses it (an `n` above the cap).
    pub fn apply(&self, request: &mut ChatRequest) -> Result<(), GatewayError> {
        if let (Some(max), Some(n)) = (self.max_n, request.n)
            && n > max.get()
        {
            return Err(GatewayError::Request(RequestError::Invalid {
                param: "n".into(),
                message: format!(
                    "at most {max} choices per request are allowed here, got {n}; send several \
                     requests"
                ),
            }));
        }
        if let Some(cap) = self.max_output_tokens.map(NonZeroU32::get) {
            let max_tokens = request.max_tokens.map_or(cap, |asked| asked.min(cap));
            request.max_tokens = Some(max_tokens);
            if let Some(reasoning) = &mut request.reasoning
                && let Some(budget) = reasoning.budget_tokens
                && budget >= max_tokens
            {
                reasoning.budget_tokens = Some(max_tokens / 2);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use providers::request::Reasoning;

    use super::*;

    fn caps(tokens: Option<u32>, n: Option<u32>) -> OutputCaps {
        OutputCaps {
            max_output_tokens: tokens.and_then(NonZeroU32::new),
            max_n: n.and_then(NonZeroU32::new),
        }
    }

    /// Any cap and any request: `max_tokens` ends at the smaller of the two (the cap when
    /// the request had none), a thinking budget stays below it, and `n` passes exactly when
    /// it is within its cap.
    #[test]
    fn caps_clamp_tokens_and_refuse_n() {
        let mut rng = fastrand::Rng::with_seed(10);
        for _ in 0..5000 {
            let pick = |rng: &mut fastrand::Rng| rng.bool().then(|| rng.u32(1..200_000));
            let (cap_tokens, cap_n) = (pick(&mut rng), rng.bool().then(|| rng.u32(1..10)));
            let asked = pick(&mut rng);
            let n = rng.bool().then(|| rng.u32(0..20));
            let budget = pick(&mut rng);
            let mut request = ChatRequest {
                max_tokens: asked,
                n,
                reasoning: Some(Reasoning {
                    budget_tokens: budget,
                    ..Reasoning::default()
                }),
                ..ChatRequest::default()
            };
            let result = caps(cap_tokens, cap_n).apply(&mut request);
            if let (Some(cap), Some(n)) = (cap_n, n)
                && n > cap
            {
                assert!(
                    matches!(result, Err(GatewayError::Request(ref e)) if e.param() == "n"),
                    "{result:?}"
                );
                continue;
            }
            assert!(result.is_ok(), "{result:?}");
            assert_eq!(request.n, n);
            let want = match (asked, cap_tokens) {
                (Some(a), Some(c)) => Some(a.min(c)),
                (a, c) => c.or(a),
            };
            assert_eq!(request.max_tokens, want);
            let budget_now = request.reasoning.and_then(|r| r.budget_tokens);
            match (cap_tokens, budget, want) {
                (Some(_), Some(b), Some(m)) if b >= m => assert_eq!(budget_now, Some(m / 2)),
                _ => assert_eq!(budget_now, budget),
            }
        }
    }

    #[test]
    fn the_tighter_cap_wins() {
        let key = caps(Some(1000), None);
        let alias = caps(Some(500), Some(2));
        assert_eq!(key.and(alias), caps(Some(500), Some(2)));
        assert_eq!(alias.and(key), caps(Some(500), Some(2)));
        assert_eq!(OutputCaps::default().and(key), key);
    }
}
