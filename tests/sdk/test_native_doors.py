"""Standard clients on the native doors: httpx-sse on the SSE door (POST /v1/streams, then a
resume with Last-Event-ID), the `websockets` library on the WebSocket door (GET /v1/ws). What a
stock client sees must be the same stream the gateway keeps: ids are seqs, every envelope
names its stream, and a resume gives exactly the rest."""

from __future__ import annotations

import json

import httpx
import pytest
from httpx_sse import connect_sse

TIMEOUT = httpx.Timeout(20.0)


def openai_request(model: str) -> dict:
    return {
        "model": model,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }


def read_stream(client: httpx.Client, method: str, url: str, **kw) -> tuple[httpx.Response, list]:
    with connect_sse(client, method, url, **kw) as source:
        response = source.response
        assert response.status_code == 200, response.read()
        frames = [(sse.id, sse.event, json.loads(sse.data)) for sse in source.iter_sse()]
    return response, frames


def text_of(envelopes: list[dict]) -> str:
    return "".join(e["text"] for e in envelopes if e["type"] == "text.delta")


@pytest.mark.parametrize(
    "model,dialect",
    [
        ("anthropic/tool_use_with_text", "openai"),
        ("openai/text_long_obfuscation", "openai"),
        ("anthropic/thinking_signature", "anthropic"),
    ],
)
def test_httpx_sse_reads_and_resumes_the_sse_door(demo, model, dialect):
    body = openai_request(model)
    headers = {"streamgate-dialect": dialect}
    if dialect == "anthropic":
        body["max_tokens"] = 1024
    with httpx.Client(timeout=TIMEOUT) as client:
        response, frames = read_stream(
            client, "POST", f"{demo.gateway}/v1/streams", json=body, headers=headers
        )
        stream_id = response.headers["streamgate-stream-id"]
        envelopes = [data for _, _, data in frames]
        for i, (sse_id, event, data) in enumerate(frames):
            assert sse_id == str(i)
            assert data["seq"] == i
            assert event == data["type"]
            assert data["stream"] == stream_id
        assert envelopes[0]["type"] == "stream.start"
        assert envelopes[-1]["type"] == "stream.end"

        # What an EventSource does after a drop: the same URL with Last-Event-ID.
        cut = len(envelopes) // 2
        _, rest = read_stream(
            client,
            "GET",
            f"{demo.gateway}/v1/streams/{stream_id}",
            headers={"Last-Event-ID": str(cut)},
        )
        assert [data for _, _, data in rest] == envelopes[cut + 1 :]

        # A client that has it all is told to stop reconnecting.
        done = client.get(
            f"{demo.gateway}/v1/streams/{stream_id}",
            headers={"Last-Event-ID": str(len(envelopes) - 1)},
        )
        assert done.status_code == 204


def test_httpx_sse_resumable_chat_door_answer(demo):
    """An OpenAI-door answer opted into the hub is fetched again as Agent Events."""
    with httpx.Client(timeout=TIMEOUT) as client:
        response = client.post(
            f"{demo.gateway}/v1/chat/completions",
            json={**openai_request("openai/text_basic"), "stream": False},
            headers={"streamgate-resumable": "true"},
        )
        assert response.status_code == 200
        door_text = response.json()["choices"][0]["message"]["content"]
        stream_id = response.headers["streamgate-stream-id"]
        _, frames = read_stream(client, "GET", f"{demo.gateway}/v1/streams/{stream_id}")
        assert text_of([data for _, _, data in frames]) == door_text
        assert door_text
