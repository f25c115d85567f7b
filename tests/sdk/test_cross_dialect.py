"""Cross dialect: an SDK of one dialect reading, through the gateway, a recording of the other
dialect sees the same answer as that dialect's SDK reading it directly: text, reasoning, tool
call names and JSON arguments, the finish reason mapped per docs/protocol.md ("Finish
reasons") and usage normalized per docs/protocol.md ("Usage")."""

from __future__ import annotations

import anthropic
import openai
import pytest

from conftest import fixture_stems
from summaries import (
    ANTHROPIC_READERS,
    MODES,
    OPENAI_READERS,
    neutral_from_anthropic,
    neutral_from_openai,
    outcome,
)

OPENAI_STEMS = fixture_stems("openai_chat")
ANTHROPIC_STEMS = fixture_stems("anthropic")

# What OpenAI's stream helper does on purpose for these finish reasons (openai-python
# `ChatCompletionStreamState`): it raises instead of returning a completion.
OPENAI_HELPER_RAISES = {
    "length": openai.LengthFinishReasonError,
    "content_filter": openai.ContentFilterFinishReasonError,
}


def _truncation_blind(neutral: dict, mode: str) -> dict:
    """A call cut by the token limit has no valid JSON arguments. Streaming clients of both
    dialects see the same fragments (compared as is in `raw` mode), but a whole Anthropic
    message cannot hold invalid JSON as `input`, so outside `raw` only the cut call's name is
    compared."""
    if mode == "raw" or neutral["finish"] not in ("length", "max_tokens") or not neutral["tool_calls"]:
        return neutral
    calls = [dict(c) for c in neutral["tool_calls"]]
    calls[-1]["arguments"] = "<cut by the token limit>"
    return {**neutral, "tool_calls": calls}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stem", ANTHROPIC_STEMS)
def test_openai_sdk_reads_anthropic_recording(
    anthropic_direct, openai_gateway, stem, mode
):
    direct = ANTHROPIC_READERS[mode](anthropic_direct, stem)
    expected = neutral_from_anthropic(direct, for_openai_client=True)
    if mode == "helper" and expected["finish"] in OPENAI_HELPER_RAISES:
        with pytest.raises(OPENAI_HELPER_RAISES[expected["finish"]]):
            OPENAI_READERS[mode](openai_gateway, f"anthropic/{stem}")
        return
    got = OPENAI_READERS[mode](openai_gateway, f"anthropic/{stem}")
    assert list(got["choices"]) == [0], "one Anthropic message is one OpenAI choice"
    got = neutral_from_openai(got, for_anthropic_client=False)
    assert _truncation_blind(got, mode) == _truncation_blind(expected, mode)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stem", OPENAI_STEMS)
def test_anthropic_sdk_reads_openai_recording(
    openai_direct, anthropic_gateway, stem, mode
):
    read_direct = OPENAI_READERS["raw" if mode == "helper" else mode]
    direct = read_direct(openai_direct, stem)
    got = outcome(lambda: ANTHROPIC_READERS[mode](anthropic_gateway, f"openai/{stem}"))
    if len(direct["choices"]) > 1:
        # An Anthropic message has no room for choices > 0: the gateway must refuse with a
        # clear error (docs/protocol.md, Encoders: "Choices > 0 are refused"), never answer
        # with choice 0 alone as if it were the whole answer.
        assert got.get("raised") in {
            name
            for name, cls in vars(anthropic).items()
            if isinstance(cls, type) and issubclass(cls, anthropic.APIStatusError)
        }, f"expected an APIStatusError, got {got}"
        assert "choice" in got["message"], got["message"]
        return
    assert "raised" not in got, got
    expected = neutral_from_openai(direct, for_anthropic_client=True)
    got = neutral_from_anthropic(got, for_openai_client=False)
    assert _truncation_blind(got, mode) == _truncation_blind(expected, mode)


@pytest.mark.parametrize("mode", MODES)
def test_openai_n_above_1_to_anthropic_is_refused(openai_gateway, mode):
    # Anthropic answers one message per request: an OpenAI request with n > 1 routed to an
    # Anthropic upstream is a 400 naming the parameter, before any upstream call.
    with pytest.raises(openai.BadRequestError) as e:
        OPENAI_READERS[mode](openai_gateway, f"anthropic/{ANTHROPIC_STEMS[0]}", n=3)
    assert e.value.status_code == 400
    assert "n" in str(e.value) and "anthropic" in str(e.value).lower(), str(e.value)
