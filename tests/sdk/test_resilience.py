"""Resilience through the official SDKs (docs/resilience.md): an upstream that breaks once
mid-stream (`times=1`) is retried and continued by the gateway, and the SDK, streaming raw or
through its helper, raises nothing and assembles the same answer as the clean recording read
the same way. The demo runs with default resilience settings.

`times` counts per identical model string in the session-wide demo process, so every test
uses its own break point (N) to stay independent of the others."""

from __future__ import annotations

import json

import pytest

from summaries import (
    ANTHROPIC_READERS,
    OPENAI_READERS,
    neutral_from_anthropic,
    neutral_from_openai,
    outcome,
)

# (provider, recording, knob with {n}, a break point per (sdk, mode)).
CASES = [
    # Reset inside the text (4) and inside the tool call's arguments (8, 9, 10).
    ("anthropic", "tool_use_with_text", "reset_after={n},times=1", (4, 8, 9, 10)),
    # Overload error inside the thinking (4, 5) and inside the tool call (9, 10).
    ("anthropic", "thinking_then_tool_use", "overloaded_after={n},times=1", (4, 5, 9, 10)),
    # Clean close inside the first call (5, 9) and the second (16, 20).
    ("openai", "tool_calls_parallel", "cut_after={n},times=1", (5, 9, 16, 20)),
]
CLIENTS = [("openai", "raw"), ("openai", "helper"), ("anthropic", "raw"), ("anthropic", "helper")]


def _read(clients: dict, sdk: str, mode: str, model: str) -> dict:
    if sdk == "openai":
        s = OPENAI_READERS[mode](clients["openai"], model)
        return neutral_from_openai(s, for_anthropic_client=False)
    s = ANTHROPIC_READERS[mode](clients["anthropic"], model)
    return neutral_from_anthropic(s, for_openai_client=False)


def _args(value):
    return json.loads(value) if isinstance(value, str) else value


@pytest.mark.parametrize("client_index", range(len(CLIENTS)), ids=[f"{s}-{m}" for s, m in CLIENTS])
@pytest.mark.parametrize("case", CASES, ids=[f"{p}/{k.split('=')[0]}:{r}" for p, r, k, _ in CASES])
def test_a_broken_stream_reaches_the_sdk_whole(openai_gateway, anthropic_gateway, case, client_index):
    provider, recording, knob, points = case
    sdk, mode = CLIENTS[client_index]
    clients = {"openai": openai_gateway, "anthropic": anthropic_gateway}
    clean = _read(clients, sdk, mode, f"{provider}/{recording}")
    model = f"{provider}/{knob.format(n=points[client_index])}:{recording}"
    got = _read(clients, sdk, mode, model)

    assert got["text"] == clean["text"], model
    assert [(c["name"], _args(c["arguments"])) for c in got["tool_calls"]] == [
        (c["name"], _args(c["arguments"])) for c in clean["tool_calls"]
    ], model
    assert got["finish"] == clean["finish"], model
    # Continuations are asked not to reason and their reasoning is not passed on: the client
    # has the reasoning up to the break (all of it when the break came later).
    assert clean["reasoning"].startswith(got["reasoning"]), model
    if clean["usage"] is not None:
        assert got["usage"] is not None, model
        assert got["usage"]["output"] >= clean["usage"]["output"], model


@pytest.mark.parametrize("case", CASES, ids=[f"{p}/{k.split('=')[0]}:{r}" for p, r, k, _ in CASES])
def test_the_same_fault_breaks_a_direct_read(openai_direct, anthropic_direct, case):
    """Without the gateway (and without `times`, so the fault is certain) the SDK does not
    get the answer: the tests above are not vacuous."""
    provider, recording, knob, points = case
    knobs = knob.format(n=points[0]).replace(",times=1", "")
    if provider == "anthropic":
        read = lambda m: neutral_from_anthropic(  # noqa: E731
            ANTHROPIC_READERS["raw"](anthropic_direct, m), for_openai_client=False
        )
    else:
        read = lambda m: neutral_from_openai(  # noqa: E731
            OPENAI_READERS["raw"](openai_direct, m), for_anthropic_client=False
        )
    clean = read(recording)
    got = outcome(lambda: read(f"{knobs}:{recording}"))
    assert "raised" in got or got != clean, got
