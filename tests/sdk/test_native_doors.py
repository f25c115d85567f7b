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


# --- WebSocket door, with the `websockets` library ---------------------------------------

import gzip  # noqa: E402  (stdlib: the gzip subprotocol needs nothing else)

from websockets.sync.client import connect as ws_connect  # noqa: E402


def ws_url(demo) -> str:
    return demo.gateway.replace("http://", "ws://", 1) + "/v1/ws"


def decode_ws(message, compression: str) -> dict:
    if isinstance(message, bytes):
        assert compression == "gzip", "binary frames only on a compressed connection"
        message = gzip.decompress(message).decode()
    return json.loads(message)


def follow_all(ws, compression: str, want_ends: int) -> dict:
    """Reads event frames until `want_ends` streams ended; returns {stream: [envelope...]}."""
    got: dict[str, list[dict]] = {}
    ended = 0
    while ended < want_ends:
        frame = decode_ws(ws.recv(timeout=20), compression)
        assert frame["op"] == "event", frame
        envelope = {k: v for k, v in frame.items() if k != "op"}
        got.setdefault(envelope["stream"], []).append(envelope)
        if envelope["type"] == "stream.end":
            ended += 1
    return got


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_websockets_library_multiplexes_and_resumes(demo, compression):
    subprotocol = "streamgate.v1" if compression == "none" else "streamgate.v1+gzip"
    models = [
        "anthropic/tool_use_with_text",
        "openai/text_long_obfuscation",
        "anthropic/thinking_signature",
    ]
    with ws_connect(ws_url(demo), subprotocols=[subprotocol], open_timeout=10) as ws:
        assert ws.subprotocol == subprotocol
        for i, model in enumerate(models):
            ws.send(json.dumps({"op": "start", "id": f"job-{compression}-{i}", "dialect": "openai",
                                "request": openai_request(model)}))
        ws.send(json.dumps({"op": "ping", "data": {"n": 1}}))
        started: set[str] = set()
        # started, event and pong frames of the three streams interleave.
        got: dict[str, list[dict]] = {}
        ended = 0
        pong = None
        while ended < len(models):
            frame = decode_ws(ws.recv(timeout=20), compression)
            if frame["op"] == "pong":
                pong = frame
                continue
            if frame["op"] == "started":
                started.add(frame["stream"])
                continue
            assert frame["op"] == "event", frame
            envelope = {k: v for k, v in frame.items() if k != "op"}
            got.setdefault(envelope["stream"], []).append(envelope)
            if envelope["type"] == "stream.end":
                ended += 1
        assert pong == {"op": "pong", "data": {"n": 1}}
        assert started == set(got)
    assert len(got) == len(models)

    with httpx.Client(timeout=TIMEOUT) as client:
        for stream_id, envelopes in got.items():
            assert [e["seq"] for e in envelopes] == list(range(len(envelopes)))
            # The same stream over the SSE door: identical events.
            _, frames = read_stream(client, "GET", f"{demo.gateway}/v1/streams/{stream_id}")
            assert [data for _, _, data in frames] == envelopes

    # A new connection resumes one of them from the middle: exactly the rest.
    stream_id, envelopes = max(got.items(), key=lambda kv: len(kv[1]))
    cut = len(envelopes) // 3
    with ws_connect(ws_url(demo), subprotocols=[subprotocol], open_timeout=10) as ws:
        ws.send(json.dumps({"op": "resume", "stream": stream_id, "after": cut}))
        rest = follow_all(ws, compression, 1)
        assert rest[stream_id] == envelopes[cut + 1 :]
        ws.send(json.dumps({"op": "resume", "stream": "st_nope", "after": 0}))
        error = decode_ws(ws.recv(timeout=20), compression)
        assert error["op"] == "error" and error["code"] == "unknown_stream", error
