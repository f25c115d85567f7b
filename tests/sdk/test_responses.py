"""The OpenAI Responses door with the official SDK (`client.responses.create(stream=True)`,
`client.responses.stream(...)` + `get_final_response()`, non-streaming `create`).

Same dialect: what the SDK assembles through the gateway equals what it assembles from the
replay upstream directly, for every Responses recording. Cross dialect: reading a Chat or an
Anthropic recording through the Responses door gives that recording's text, reasoning, tool
calls, finish (docs/protocol.md) and usage, as its own SDK reads it directly; and the Chat and
Anthropic SDKs reading Responses recordings (a `dialect = "openai-responses"` provider) see
what the Responses recording holds."""

from __future__ import annotations

import openai
import pytest

from conftest import FIXTURES, fixture_stems
from summaries import (
    ANTHROPIC_READERS,
    MODES,
    OPENAI_READERS,
    RESPONSES_READERS,
    neutral_from_anthropic,
    neutral_from_openai,
    neutral_from_responses,
    outcome,
)

RESPONSES_STEMS = fixture_stems("openai_responses")
OPENAI_STEMS = fixture_stems("openai_chat")
ANTHROPIC_STEMS = fixture_stems("anthropic")


def _turns(stem: str) -> int:
    """Responses recorded back to back in one file (a tool loop)."""
    return (FIXTURES / "openai_responses" / f"{stem}.sse").read_text().count(
        "event: response.created"
    )


def test_responses_fixtures_are_present():
    assert RESPONSES_STEMS, "no fixtures/openai_responses/*.sse"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stem", RESPONSES_STEMS)
def test_responses_sdk_same_through_gateway(openai_direct, openai_gateway, stem, mode):
    # The replay serves a multi-turn recording whole, which the SDK's helper cannot read as
    # one response; the reference is then the first response, read by hand.
    direct_mode = "raw" if mode == "helper" and _turns(stem) > 1 else mode
    direct = outcome(lambda: RESPONSES_READERS[direct_mode](openai_direct, stem))
    gateway = outcome(
        lambda: RESPONSES_READERS[mode](openai_gateway, f"openai-responses/{stem}")
    )
    if "raised" in direct or "raised" in gateway:
        # A recorded provider error: the same exception type either way.
        assert gateway.get("raised") == direct.get("raised"), f"{direct}\n{gateway}"
        return
    assert gateway == direct


# docs/protocol.md: how a Responses client reads the other dialects' finish values.
CHAT_FINISH = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}
ANTHROPIC_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "refusal": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
}


def _blind(neutral: dict, mode: str, expected_usage) -> dict:
    """What is compared: usage only where the source reported it; a call cut by the token
    limit by name only outside `raw` (a whole Anthropic message cannot hold its fragment)."""
    out = dict(neutral)
    if expected_usage is None:
        out.pop("usage")
    if mode != "raw" and out["finish"] in ("length", "max_tokens") and out["tool_calls"]:
        calls = [dict(c) for c in out["tool_calls"]]
        calls[-1]["arguments"] = "<cut by the token limit>"
        out["tool_calls"] = calls
    return out


def _check_cross(expected: dict, got: dict, mode: str) -> None:
    if mode == "helper" and expected["finish"] in ("length", "content_filter"):
        # An incomplete response has no `response.completed`: the SDK's helper raises, as it
        # does for the provider's own incomplete answers.
        assert got.get("raised") == "RuntimeError", got
        return
    assert "raised" not in got, got
    got = neutral_from_responses(got)
    usage = expected["usage"]
    assert _blind(got, mode, usage) == _blind(expected, mode, usage)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stem", OPENAI_STEMS)
def test_responses_sdk_reads_chat_recording(openai_direct, openai_gateway, stem, mode):
    direct = OPENAI_READERS["raw"](openai_direct, stem)
    got = outcome(lambda: RESPONSES_READERS[mode](openai_gateway, f"openai/{stem}"))
    if len(direct["choices"]) > 1:
        # One answer per response: refused with an error, never choice 0 alone.
        assert got.get("raised") and "choice" in got["message"], got
        return
    expected = neutral_from_openai(direct, for_anthropic_client=False)
    finish = CHAT_FINISH.get(expected["finish"], "stop")
    if finish == "stop" and expected["tool_calls"]:
        finish = "tool_calls"
    _check_cross({**expected, "finish": finish}, got, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stem", ANTHROPIC_STEMS)
def test_responses_sdk_reads_anthropic_recording(anthropic_direct, openai_gateway, stem, mode):
    direct = ANTHROPIC_READERS["raw"](anthropic_direct, stem)
    got = outcome(lambda: RESPONSES_READERS[mode](openai_gateway, f"anthropic/{stem}"))
    expected = neutral_from_anthropic(direct, for_openai_client=False)
    finish = ANTHROPIC_FINISH.get(expected["finish"], "stop")
    if finish == "stop" and expected["tool_calls"]:
        finish = "tool_calls"
    _check_cross({**expected, "finish": finish}, got, mode)


@pytest.mark.parametrize("mode", MODES)
def test_stored_state_to_another_dialect_is_a_400(openai_gateway, mode):
    # docs/translation.md: previous_response_id reaches only a Responses provider.
    with pytest.raises(openai.BadRequestError) as e:
        RESPONSES_READERS[mode](
            openai_gateway, f"anthropic/{ANTHROPIC_STEMS[0]}", previous_response_id="resp_x"
        )
    assert "previous_response_id" in str(e.value), str(e.value)


# Chat and Anthropic clients reaching a Responses provider (`dialect = "openai-responses"`).
TO_ANTHROPIC_STOP = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}
OPENAI_HELPER_RAISES = {
    "length": openai.LengthFinishReasonError,
    "content_filter": openai.ContentFilterFinishReasonError,
}


def _responses_reference(openai_direct, stem: str) -> dict | None:
    """A Responses recording read by hand from the replay, or None for a provider error."""
    direct = outcome(lambda: RESPONSES_READERS["raw"](openai_direct, stem))
    return None if "raised" in direct else neutral_from_responses(direct)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stem", RESPONSES_STEMS)
def test_chat_sdk_reads_responses_recording(openai_direct, openai_gateway, stem, mode):
    expected = _responses_reference(openai_direct, stem)

    def read():
        return OPENAI_READERS[mode](openai_gateway, f"openai-responses/{stem}")

    if expected is None:
        assert "raised" in outcome(read), "a recorded provider error answered as a success"
        return
    if mode == "helper" and expected["finish"] in OPENAI_HELPER_RAISES:
        with pytest.raises(OPENAI_HELPER_RAISES[expected["finish"]]):
            read()
        return
    got = read()
    assert list(got["choices"]) == [0]
    got = neutral_from_openai(got, for_anthropic_client=False)
    assert _blind(got, mode, expected["usage"]) == _blind(expected, mode, expected["usage"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stem", RESPONSES_STEMS)
def test_anthropic_sdk_reads_responses_recording(
    openai_direct, anthropic_gateway, stem, mode
):
    expected = _responses_reference(openai_direct, stem)
    got = outcome(lambda: ANTHROPIC_READERS[mode](anthropic_gateway, f"openai-responses/{stem}"))
    if expected is None:
        assert "raised" in got, "a recorded provider error answered as a success"
        return
    assert "raised" not in got, got
    expected = {**expected, "finish": TO_ANTHROPIC_STOP[expected["finish"]]}
    got = neutral_from_anthropic(got, for_openai_client=False)
    assert _blind(got, mode, expected["usage"]) == _blind(expected, mode, expected["usage"])
