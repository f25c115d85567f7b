"""The gateway's own 429 parses in both official SDKs: the demo's `demo-limited` alias allows
2 requests per minute (shared by every client, since it is a per-model limit), so the third
request of this session is refused, in each door's dialect, with Retry-After.

The limit refills one request every 30 s. On a loaded machine the session can take that long
between two requests, so the test does not assume it never does: it counts what the limiter
may have refilled by the time of each answer, and only asserts what holds for any timing."""

from __future__ import annotations

import time

import anthropic
import openai

# The demo's `demo-limited` (src/replay/mod.rs, DEMO_LIMITED_RPM): a burst of 2, then GCRA
# lets one more request through every 60 / 2 seconds.
BURST = 2
REFILL_S = 30.0
# Enough calls for any plausible run: each extra admission needs 30 s of wall clock.
MAX_CALLS = 10


def test_gateway_429_is_a_rate_limit_error_in_both_sdks(openai_gateway, anthropic_gateway):
    began = time.monotonic()
    admitted = 0

    def may_admit() -> int:
        """The most requests the limiter can have admitted by now (first request at `began`)."""
        return BURST + int((time.monotonic() - began) // REFILL_S)

    def until_refused(call, error_type):
        nonlocal admitted
        for _ in range(MAX_CALLS):
            try:
                call()
            except error_type as e:
                return e
            admitted += 1
            allowed = may_admit()
            assert admitted <= allowed, f"{admitted} requests admitted, the limit allows {allowed}"
        raise AssertionError(f"no 429 in {MAX_CALLS} calls")

    oe = until_refused(
        lambda: openai_gateway.chat.completions.create(
            model="demo-limited", messages=[{"role": "user", "content": "hi"}]
        ),
        openai.RateLimitError,
    )
    # The burst is whole: nothing else in the session asks for `demo-limited`.
    assert admitted >= BURST
    assert oe.status_code == 429
    assert oe.code == "rate_limit_exceeded", oe.body
    assert int(oe.response.headers["retry-after"]) >= 1

    ae = until_refused(
        lambda: anthropic_gateway.messages.create(
            model="demo-limited", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ),
        anthropic.RateLimitError,
    )
    assert ae.status_code == 429
    assert ae.body["error"]["type"] == "rate_limit_error", ae.body
    assert int(ae.response.headers["retry-after"]) >= 1
