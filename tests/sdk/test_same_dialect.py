"""Same dialect: what an official SDK assembles through the gateway equals what it assembles
talking to the replay upstream directly, for every recorded stream, read three ways (raw
chunk/event iteration, the SDK's stream helper, non-streaming create). Ids, `created` and
model must survive too: the gateway only relays here."""

from __future__ import annotations

import pytest

from conftest import fixture_stems, request_body
from summaries import ANTHROPIC_READERS, MODES, OPENAI_READERS, outcome

OPENAI_STEMS = fixture_stems("openai_chat")
ANTHROPIC_STEMS = fixture_stems("anthropic")


def test_fixtures_are_present():
    # A checkout without recordings would otherwise run (and pass) nothing below.
    assert OPENAI_STEMS, "no fixtures/openai_chat/*.sse"
    assert ANTHROPIC_STEMS, "no fixtures/anthropic/*.sse"


def _openai_params(stem: str) -> dict:
    """Request parameters a recording depends on, from its recorded request (`n` > 1: the SDK
    must be told how many choices to expect)."""
    recorded = request_body("openai_chat", stem) or {}
    return {"n": recorded["n"]} if (recorded.get("n") or 1) > 1 else {}


def _compare(direct: dict, gateway: dict) -> None:
    if "raised" in direct or "raised" in gateway:
        # Both must behave the same, down to the exception type.
        assert gateway.get("raised") == direct.get("raised"), (
            f"direct: {direct}\ngateway: {gateway}"
        )
        return
    assert gateway == direct


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stem", OPENAI_STEMS)
def test_openai_sdk_same_through_gateway(openai_direct, openai_gateway, stem, mode):
    read = OPENAI_READERS[mode]
    params = _openai_params(stem)
    direct = outcome(lambda: read(openai_direct, stem, **params))
    assert "raised" not in direct or mode == "helper", f"direct replay failed: {direct}"
    gateway = outcome(lambda: read(openai_gateway, f"openai/{stem}", **params))
    _compare(direct, gateway)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stem", ANTHROPIC_STEMS)
def test_anthropic_sdk_same_through_gateway(anthropic_direct, anthropic_gateway, stem, mode):
    read = ANTHROPIC_READERS[mode]
    direct = outcome(lambda: read(anthropic_direct, stem))
    assert "raised" not in direct or mode == "helper", f"direct replay failed: {direct}"
    gateway = outcome(lambda: read(anthropic_gateway, f"anthropic/{stem}"))
    _compare(direct, gateway)
