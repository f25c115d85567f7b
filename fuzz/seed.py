#!/usr/bin/env python3
"""Derives the seed corpus of every fuzz target from the recorded fixtures (fixtures/) into
fuzz/corpus/<target>/ (docs/fuzzing.md). Each target reads a selector byte (or six) first:
the seeds carry the ones that make it read the fixture the way the gateway would."""

import gzip
import json
import pathlib
import struct
import zlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
CORPUS = pathlib.Path(__file__).resolve().parent / "corpus"


# Fixture folder -> the targets' dialect selector (the index in `Dialect::ALL`).
DIALECT_DIRS = ((0, "openai_chat"), (1, "anthropic"), (2, "openai_responses"))


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field(b):
    return varint(len(b)) + b


def request_bodies():
    """(dialect selector, name, compact JSON body) of every recorded request."""
    for bit, sub in DIALECT_DIRS:
        for f in sorted((FIXTURES / sub).glob("*.json")):
            yield bit, f"{sub}-{f.stem}", json.loads(f.read_text())
    for f in sorted((FIXTURES / "claude_code").glob("*.json")):
        yield 1, f"claude_code-{f.stem}", json.loads(f.read_text())["body"]


def envelopes(text, stream="st_1"):
    """A small Agent Event stream carrying `text`, as envelope JSON."""
    events = [
        {"type": "stream.start", "model": "m"},
        {"type": "text.delta", "index": 0, "text": text},
        {"type": "stream.end", "finish_reason": "stop"},
    ]
    return [
        json.dumps({"stream": stream, "seq": i, **e}, separators=(",", ":")).encode()
        for i, e in enumerate(events)
    ]


def main():
    sse = sorted(FIXTURES.glob("*/*.sse"))
    for i, f in enumerate(sse):
        body = f.read_bytes()
        name = f"{f.parent.name}-{f.stem}"
        write("sse", name, bytes([0, i % 16]) + body)
        bit = dict((d, b) for b, d in DIALECT_DIRS).get(f.parent.name, 1)
        write("stream_decoder", name, bytes([bit | ((i * 37) % 64) << 2]) + body)
        # h1_response: the body as a provider sends it, chunked (some with an informational
        # head first and trailers) or by length.
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        if i % 2 == 0:
            step = 1 + (i * 97) % 500
            chunks = b"".join(
                b"%x\r\n%s\r\n" % (len(body[k:k + step]), body[k:k + step])
                for k in range(0, len(body), step)
            )
            info = b"HTTP/1.1 100 Continue\r\n\r\n" if i % 4 == 0 else b""
            wire = info + head + b"transfer-encoding: chunked\r\n\r\n" + chunks + b"0\r\nx-t: 1\r\n\r\n"
        else:
            wire = head + b"content-length: %d\r\n\r\n" % len(body) + body
        write("h1_response", name, bytes([(i * 53) % 256]) + wire)

    texts = []
    for bit, name, body in request_bodies():
        raw = json.dumps(body, separators=(",", ":")).encode()
        write("request", name, bytes([bit]) + raw)
        frame = json.dumps({"op": "start", "id": "c1", "request": body}).encode()
        # ws path 1 (client frames): text on `streamgate.v1`, gzip on `streamgate.v1+gzip`.
        write("ws", f"client-text-{name}", bytes([0b0100]) + frame)
        write("ws", f"client-gzip-{name}", bytes([0b1_01_11]) + gzip.compress(frame))
        write("ws", f"inflate-gzip-{name}", bytes([0b00_11]) + gzip.compress(frame))
        texts.append((name, raw))

    # ws path 2 (the reference client's decoder): text events, one of them sharded.
    env = envelopes("Hello from the fixtures")
    write("ws", "client-decoder-events", bytes([0b1000]) + b"\xff".join(env))
    whole = b'{"op":"event",' + env[1][1:]
    half = len(whole) // 2
    shards = [
        json.dumps(
            {"op": "shard", "stream": "st_1", "seq": 1, "index": i, "count": 2,
             "data": part.decode()},
            separators=(",", ":"),
        ).encode()
        for i, part in enumerate((whole[:half], whole[half:]))
    ]
    write("ws", "client-decoder-shards", bytes([0b1000]) + b"\xff".join([env[0], *shards, env[2]]))

    # journal: framed mode (bit 1) takes payloads split at "\n\n"; raw mode the whole file.
    for name, raw in texts[:6]:
        stream = b"st_" + name.encode()
        payloads = [
            b"\x01" + field(stream) + varint(1_700_000_000_000) + field(b"openai") + field(raw)
            + varint(1) + field(b"x-app") + field(b"cli") + field(b"openai/gpt-4o"),
            b"\x02" + field(stream) + varint(0) + varint(3)
            + b"".join(field(e) for e in envelopes(name, stream.decode())),
            b"\x03" + field(stream),
        ]
        write("journal", f"framed-{name}", bytes([0b11]) + b"\n\n".join(payloads))
        segment = b"SGJOURN\x01" + b"".join(
            struct.pack("<II", len(p), zlib.crc32(p)) + p for p in payloads
        )
        write("journal", f"raw-{name}", bytes([0b01]) + segment)
        write("journal", f"raw-torn-{name}", bytes([0b01]) + segment[:-3])

    # headers: status 429, now = 2025-01-01T00:00:00Z, then header lines.
    head = struct.pack("<HI", 429, 1_735_689_600)
    lines = [
        b"retry-after: 18446744073709551615",
        b"retry-after: 1.5\nretry-after-ms: 250",
        b"retry-after: Wed, 01 Jan 2025 00:01:00 GMT",
        b"x-ratelimit-remaining-requests: 0\nx-ratelimit-reset-requests: 1h2m3.5s",
        b"x-ratelimit-remaining-tokens: 0\nx-ratelimit-reset-tokens: 20ms",
        b"anthropic-ratelimit-tokens-remaining: 0\n"
        b"anthropic-ratelimit-tokens-reset: 2025-01-01T00:00:30.5+02:00",
    ]
    for i, l in enumerate(lines):
        write("headers", f"h{i}", head + l)


if __name__ == "__main__":
    main()
