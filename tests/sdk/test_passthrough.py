"""Pass-through with the official OpenAI SDK: calls the gateway does not translate
(`embeddings.create`, a multipart `files.create`) go through the gateway to the replay
upstream, and what the SDK returns equals what it returns talking to the replay directly."""

from __future__ import annotations

import random

import pytest

EMBEDDING_CASES = [
    {"input": "hello"},
    {"input": ["first", "second", "a third, longer input"]},
    {"input": "floats on the wire", "encoding_format": "float"},
    {"input": ["sixteen dimensions"], "dimensions": 16},
    {"input": [[1, 2, 3], [4, 5]]},
]


@pytest.mark.parametrize("case", EMBEDDING_CASES, ids=lambda c: ",".join(sorted(c)))
def test_embeddings_through_the_gateway_equal_the_replay(openai_direct, openai_gateway, case):
    kwargs = {"model": "text-embedding-3-small", **case}
    direct = openai_direct.embeddings.create(**kwargs)
    through = openai_gateway.embeddings.create(**kwargs)
    assert through.model_dump() == direct.model_dump()
    inputs = case["input"] if isinstance(case["input"], list) else [case["input"]]
    assert [d.index for d in through.data] == list(range(len(inputs)))
    dims = case.get("dimensions", 8)
    assert all(len(d.embedding) == dims for d in through.data)
    vectors = [tuple(d.embedding) for d in through.data]
    assert len(set(vectors)) == len(vectors), "different inputs, different vectors"
    assert through.model == "text-embedding-3-small"


def test_multipart_file_uploads_arrive_byte_for_byte(openai_direct, openai_gateway):
    rng = random.Random(7)
    ids = set()
    for size in (0, 1, 1000, 70_000, 300_001):
        content = bytes(rng.getrandbits(8) for _ in range(size))
        name = f"upload-{size}.jsonl"
        direct = openai_direct.files.create(file=(name, content), purpose="batch")
        through = openai_gateway.files.create(file=(name, content), purpose="batch")
        assert through.model_dump() == direct.model_dump()
        # The id is derived from the bytes the replay received: equal ids, equal bytes.
        assert through.bytes == size
        assert through.filename == name
        assert through.purpose == "batch"
        ids.add(through.id)
    assert len(ids) == 5
