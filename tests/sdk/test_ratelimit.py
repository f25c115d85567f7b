"""The gateway's own 429 parses in both official SDKs: the demo's `demo-limited` alias allows
2 requests per minute (shared by every client, since it is a per-model limit), so the third
request of this session is refused, in each door's dialect, with Retry-After."""

from __future__ import annotations

import anthropic
import openai
import pytest


def test_gateway_429_is_a_rate_limit_error_in_both_sdks(openai_gateway, anthropic_gateway):
    admitted = 0
    with pytest.raises(openai.RateLimitError) as oe:
        for _ in range(3):
            openai_gateway.chat.completions.create(
                model="demo-limited", messages=[{"role": "user", "content": "hi"}]
            )
            admitted += 1
    assert admitted == 2
    assert oe.value.status_code == 429
    assert oe.value.code == "rate_limit_exceeded", oe.value.body
    assert int(oe.value.response.headers["retry-after"]) >= 1

    with pytest.raises(anthropic.RateLimitError) as ae:
        anthropic_gateway.messages.create(
            model="demo-limited", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    assert ae.value.status_code == 429
    assert ae.value.body["error"]["type"] == "rate_limit_error", ae.value.body
    assert int(ae.value.response.headers["retry-after"]) >= 1
