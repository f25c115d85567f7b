"""What an SDK user sees of an answer, reduced to plain data that can be compared.

Three ways of reading each dialect, all through the official SDK:
- `raw`: iterate the stream's chunks/events and accumulate by hand (text, tool calls by index
  with their argument fragments concatenated, finish reason, usage);
- `helper`: the SDK's own accumulator (`messages.stream(...).get_final_message()`,
  `chat.completions.stream(...).get_final_completion()`);
- `create`: a non-streaming `create(...)`.

Each reader returns a summary dict; `outcome(...)` wraps a reader so that an exception becomes
`{"raised": <exception class name>}` and direct vs gateway can be compared either way.
`neutral_*` project a summary onto what survives a change of dialect (docs/protocol.md).
"""

from __future__ import annotations

import json
from typing import Any, Callable

MODES = ("raw", "helper", "create")
PROMPT = "Hello"
MAX_TOKENS = 1024


def _d(obj: Any) -> Any:
    """An SDK model (or anything) as plain JSON-like data."""
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return obj


def parse_args(text: str | None) -> Any:
    """Tool arguments as JSON when they parse (a truncated call keeps its raw text)."""
    if text is None or text == "":
        return {}
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {"__unparsed__": text}


def outcome(fn: Callable[[], dict]) -> dict:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the exception's type is the observable behaviour
        return {"raised": type(e).__name__, "message": str(e)[:500]}


# ---------------------------------------------------------------- OpenAI Chat Completions


def _new_choice() -> dict:
    return {
        "text": "",
        "refusal": "",
        "reasoning": "",
        "tool_calls": {},
        "finish_reason": None,
        "logprob_tokens": [],
    }


def _finish_choice(c: dict) -> dict:
    calls = [c["tool_calls"][k] for k in sorted(c["tool_calls"])]
    return {
        "text": c["text"],
        "refusal": c["refusal"],
        "reasoning": c["reasoning"],
        "tool_calls": [
            {"id": t["id"], "name": t["name"], "arguments": parse_args(t["arguments"])}
            for t in calls
        ],
        "finish_reason": c["finish_reason"],
        "logprob_tokens": c["logprob_tokens"],
    }


def openai_usage(u: Any) -> dict | None:
    u = _d(u)
    if not u:
        return None
    return {
        "prompt_tokens": u.get("prompt_tokens"),
        "completion_tokens": u.get("completion_tokens"),
        "cached_tokens": ((u.get("prompt_tokens_details") or {}).get("cached_tokens")),
        "reasoning_tokens": ((u.get("completion_tokens_details") or {}).get("reasoning_tokens")),
    }


def _logprob_tokens(lp: Any) -> list[str]:
    lp = _d(lp) or {}
    return [t.get("token") for t in (lp.get("content") or [])]


def openai_raw(client, model: str, **extra) -> dict:
    """Streams and accumulates the chunks by hand."""
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
        **extra,
    )
    choices: dict[int, dict] = {}
    ident = created = model_seen = None
    usage = None
    chunks = 0
    with stream:
        for chunk in stream:
            chunks += 1
            ch = _d(chunk)
            if ch.get("id") and ident is None:
                ident, created, model_seen = ch["id"], ch.get("created"), ch.get("model")
            if ch.get("usage"):
                usage = openai_usage(ch["usage"])
            for choice in ch.get("choices") or []:
                c = choices.setdefault(choice.get("index", 0), _new_choice())
                delta = choice.get("delta") or {}
                c["text"] += delta.get("content") or ""
                c["refusal"] += delta.get("refusal") or ""
                c["reasoning"] += delta.get("reasoning_content") or delta.get("reasoning") or ""
                for tc in delta.get("tool_calls") or []:
                    t = c["tool_calls"].setdefault(
                        tc.get("index", 0), {"id": None, "name": None, "arguments": ""}
                    )
                    fn = tc.get("function") or {}
                    if tc.get("id"):
                        t["id"] = tc["id"]
                    if fn.get("name"):
                        t["name"] = fn["name"]
                    t["arguments"] += fn.get("arguments") or ""
                if choice.get("finish_reason"):
                    c["finish_reason"] = choice["finish_reason"]
                c["logprob_tokens"] += _logprob_tokens(choice.get("logprobs"))
    assert chunks > 0, "the stream yielded no chunk"
    return {
        "id": ident,
        "created": created,
        "model": model_seen,
        "choices": {i: _finish_choice(choices[i]) for i in sorted(choices)},
        "usage": usage,
    }


def _openai_message_choice(choice: Any) -> dict:
    ch = _d(choice)
    msg = ch.get("message") or {}
    c = _new_choice()
    c["text"] = msg.get("content") or ""
    c["refusal"] = msg.get("refusal") or ""
    c["reasoning"] = msg.get("reasoning_content") or msg.get("reasoning") or ""
    for i, tc in enumerate(msg.get("tool_calls") or []):
        fn = tc.get("function") or {}
        c["tool_calls"][i] = {
            "id": tc.get("id"),
            "name": fn.get("name"),
            "arguments": fn.get("arguments") or "",
        }
    c["finish_reason"] = ch.get("finish_reason")
    c["logprob_tokens"] = _logprob_tokens(ch.get("logprobs"))
    return _finish_choice(c)


def _openai_completion(completion: Any) -> dict:
    d = _d(completion)
    return {
        "id": d.get("id"),
        "created": d.get("created"),
        "model": d.get("model"),
        "choices": {
            ch.get("index", i): _openai_message_choice(ch)
            for i, ch in enumerate(d.get("choices") or [])
        },
        "usage": openai_usage(d.get("usage")),
    }


def openai_helper(client, model: str, **extra) -> dict:
    """`chat.completions.stream(...)` + `get_final_completion()`."""
    with client.chat.completions.stream(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        stream_options={"include_usage": True},
        **extra,
    ) as stream:
        for _ in stream:
            pass
        return _openai_completion(stream.get_final_completion())


def openai_create(client, model: str, **extra) -> dict:
    """Non-streaming `chat.completions.create(...)`."""
    return _openai_completion(
        client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": PROMPT}], **extra
        )
    )


OPENAI_READERS = {"raw": openai_raw, "helper": openai_helper, "create": openai_create}


# ---------------------------------------------------------------- Anthropic Messages


def anthropic_usage(u: Any) -> dict | None:
    u = _d(u)
    if not u:
        return None
    return {
        "input_tokens": u.get("input_tokens"),
        "output_tokens": u.get("output_tokens"),
        "cache_read_input_tokens": u.get("cache_read_input_tokens"),
        "cache_creation_input_tokens": u.get("cache_creation_input_tokens"),
    }


def _block_summary(block: dict) -> dict:
    """One finished content block, reduced to what a client uses."""
    t = block.get("type")
    if t == "text":
        out = {"type": "text", "text": block.get("text") or ""}
        if block.get("citations"):
            out["citations"] = block["citations"]
        return out
    if t == "thinking":
        return {
            "type": "thinking",
            "thinking": block.get("thinking") or "",
            "signature": block.get("signature") or "",
        }
    if t == "redacted_thinking":
        return {"type": "redacted_thinking", "data": block.get("data")}
    if t == "tool_use":
        return {
            "type": "tool_use",
            "id": block.get("id"),
            "name": block.get("name"),
            "input": block.get("input"),
        }
    # Provider-run blocks (server_tool_use, web_search_tool_result, ...): kept whole.
    return block


def anthropic_raw(client, model: str, **extra) -> dict:
    """Streams and accumulates the events by hand."""
    stream = client.messages.create(
        model=model,
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        **extra,
    )
    blocks: dict[int, dict] = {}
    partial: dict[int, str] = {}
    msg: dict = {}
    usage: dict = {}
    stop_reason = stop_sequence = None
    events = 0
    with stream:
        for event in stream:
            events += 1
            ev = _d(event)
            t = ev.get("type")
            if t == "message_start":
                msg = ev.get("message") or {}
                usage.update({k: v for k, v in (msg.get("usage") or {}).items() if v is not None})
            elif t == "content_block_start":
                i = ev["index"]
                blocks[i] = dict(ev.get("content_block") or {})
                if blocks[i].get("type") in ("tool_use", "server_tool_use"):
                    partial[i] = ""
            elif t == "content_block_delta":
                i = ev["index"]
                b = blocks[i]
                delta = ev.get("delta") or {}
                dt = delta.get("type")
                if dt == "text_delta":
                    b["text"] = (b.get("text") or "") + delta.get("text", "")
                elif dt == "thinking_delta":
                    b["thinking"] = (b.get("thinking") or "") + delta.get("thinking", "")
                elif dt == "signature_delta":
                    b["signature"] = (b.get("signature") or "") + delta.get("signature", "")
                elif dt == "input_json_delta":
                    partial[i] = partial.get(i, "") + delta.get("partial_json", "")
                elif dt == "citations_delta":
                    b.setdefault("citations", []).append(delta.get("citation"))
                else:
                    b.setdefault("__deltas__", []).append(delta)
            elif t == "message_delta":
                d = ev.get("delta") or {}
                stop_reason = d.get("stop_reason") or stop_reason
                stop_sequence = d.get("stop_sequence") or stop_sequence
                usage.update({k: v for k, v in (ev.get("usage") or {}).items() if v is not None})
    assert events > 0, "the stream yielded no event"
    for i, text in partial.items():
        blocks[i]["input"] = parse_args(text)
    return {
        "id": msg.get("id"),
        "model": msg.get("model"),
        "content": [_block_summary(blocks[i]) for i in sorted(blocks)],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": anthropic_usage(usage),
    }


def _anthropic_message(message: Any) -> dict:
    m = _d(message)
    return {
        "id": m.get("id"),
        "model": m.get("model"),
        "content": [_block_summary(b) for b in m.get("content") or []],
        "stop_reason": m.get("stop_reason"),
        "stop_sequence": m.get("stop_sequence"),
        "usage": anthropic_usage(m.get("usage")),
    }


def anthropic_helper(client, model: str, **extra) -> dict:
    """`messages.stream(...)` + `get_final_message()`."""
    with client.messages.stream(
        model=model,
        max_tokens=MAX_TOKENS,
        messages=[{"role": "user", "content": PROMPT}],
        **extra,
    ) as stream:
        for _ in stream:
            pass
        return _anthropic_message(stream.get_final_message())


def anthropic_create(client, model: str, **extra) -> dict:
    """Non-streaming `messages.create(...)`."""
    return _anthropic_message(
        client.messages.create(
            model=model,
            max_tokens=MAX_TOKENS,
            messages=[{"role": "user", "content": PROMPT}],
            **extra,
        )
    )


ANTHROPIC_READERS = {"raw": anthropic_raw, "helper": anthropic_helper, "create": anthropic_create}


# ---------------------------------------------------------------- across dialects

# docs/protocol.md, "Finish reasons": what each dialect's client sees for the other's value.
ANTHROPIC_TO_OPENAI_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
OPENAI_TO_ANTHROPIC_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
    "refusal": "refusal",
}


def neutral_from_openai(s: dict, *, for_anthropic_client: bool) -> dict:
    """Choice 0 of an OpenAI summary, as the content both dialects can carry.

    With `for_anthropic_client`, the finish reason is the Anthropic stop_reason the gateway
    must write for it (an OpenAI `stop` with tool calls is `tool_use`, with refusal text
    `refusal`), and the refusal text joins the text (an OpenAI refusal becomes an Anthropic
    text block)."""
    c = s["choices"].get(0) or _finish_choice(_new_choice())
    u = s["usage"]
    finish = c["finish_reason"]
    text = c["text"]
    if for_anthropic_client:
        if finish == "stop" and c["tool_calls"]:
            finish = "tool_calls"
        elif finish == "stop" and c["refusal"]:
            # OpenAI ends a refusal with `stop`: the refusal is the finish.
            finish = "refusal"
        finish = OPENAI_TO_ANTHROPIC_STOP.get(finish, "end_turn")
        text += c["refusal"]
    return {
        "text": text,
        "reasoning": c["reasoning"],
        "tool_calls": [{"name": t["name"], "arguments": t["arguments"]} for t in c["tool_calls"]],
        "finish": finish,
        "usage": None
        if u is None
        else {"input": u["prompt_tokens"], "output": u["completion_tokens"]},
    }


def neutral_from_anthropic(s: dict, *, for_openai_client: bool) -> dict:
    """An Anthropic summary as the content both dialects can carry.

    With `for_openai_client`, the finish reason is the OpenAI finish_reason the gateway must
    write for it. Provider-run blocks are left out (they do not cross dialects); input usage is
    normalized (input + cache read + cache write)."""
    text = "".join(b["text"] for b in s["content"] if b.get("type") == "text")
    reasoning = "".join(b["thinking"] for b in s["content"] if b.get("type") == "thinking")
    calls = [
        {"name": b["name"], "arguments": b["input"]}
        for b in s["content"]
        if b.get("type") == "tool_use"
    ]
    finish = s["stop_reason"]
    if for_openai_client:
        finish = ANTHROPIC_TO_OPENAI_FINISH.get(finish, "stop")
    u = s["usage"]
    usage = None
    if u is not None:
        usage = {
            "input": (u["input_tokens"] or 0)
            + (u["cache_read_input_tokens"] or 0)
            + (u["cache_creation_input_tokens"] or 0),
            "output": u["output_tokens"],
        }
    return {
        "text": text,
        "reasoning": reasoning,
        "tool_calls": calls,
        "finish": finish,
        "usage": usage,
    }


# ---------------------------------------------------------------- OpenAI Responses

RESPONSES_TERMINAL = ("response.completed", "response.incomplete", "response.failed")


def responses_usage(u: Any) -> dict | None:
    u = _d(u)
    if not u:
        return None
    return {
        "input_tokens": u.get("input_tokens"),
        "output_tokens": u.get("output_tokens"),
        "cached_tokens": (u.get("input_tokens_details") or {}).get("cached_tokens"),
        "reasoning_tokens": (u.get("output_tokens_details") or {}).get("reasoning_tokens"),
    }


def _response_summary(r: Any) -> dict:
    """A whole Response object (non-streaming, or the stream's final one)."""
    r = _d(r) or {}
    text = refusal = reasoning = ""
    calls = []
    for item in r.get("output") or []:
        t = item.get("type")
        if t == "message":
            for part in item.get("content") or []:
                if part.get("type") == "output_text":
                    text += part.get("text") or ""
                elif part.get("type") == "refusal":
                    refusal += part.get("refusal") or ""
        elif t == "reasoning":
            parts = (item.get("summary") or []) + (item.get("content") or [])
            reasoning += "\n\n".join(p.get("text") for p in parts if p.get("text"))
        elif t == "function_call":
            calls.append(
                {
                    "call_id": item.get("call_id"),
                    "name": item.get("name"),
                    "arguments": parse_args(item.get("arguments")),
                }
            )
    return {
        "id": r.get("id") or None,
        "model": r.get("model") or None,
        "status": r.get("status"),
        "incomplete": (r.get("incomplete_details") or {}).get("reason"),
        "text": text,
        "refusal": refusal,
        "reasoning": reasoning,
        "tool_calls": calls,
        "usage": responses_usage(r.get("usage")),
    }


def responses_raw(client, model: str, **extra) -> dict:
    """Streams the events and accumulates them by hand, up to the response's terminal event;
    `sequence_number` must count 0, 1, 2, ..."""
    stream = client.responses.create(model=model, input=PROMPT, stream=True, **extra)
    head: dict = {}
    final: dict = {}
    text = refusal = ""
    # Reasoning parts per item, in order; an item's parts read joined by blank lines.
    reasoning: dict[str, list[str]] = {}
    calls: dict[str, dict] = {}
    order: list[str] = []
    seq = []
    with stream:
        for event in stream:
            ev = _d(event)
            t = ev.get("type")
            seq.append(ev.get("sequence_number"))
            if t == "response.created":
                head = ev.get("response") or {}
            elif t == "response.output_text.delta":
                text += ev.get("delta") or ""
            elif t == "response.refusal.delta":
                refusal += ev.get("delta") or ""
            elif t == "response.reasoning_summary_part.added":
                reasoning.setdefault(ev["item_id"], []).append("")
            elif t in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
                parts = reasoning.setdefault(ev["item_id"], [""])
                parts[-1] += ev.get("delta") or ""
            elif t == "response.output_item.added" and ev["item"].get("type") == "function_call":
                item = ev["item"]
                calls[item["id"]] = {
                    "call_id": item.get("call_id"),
                    "name": item.get("name"),
                    "arguments": "",
                }
                order.append(item["id"])
            elif t == "response.function_call_arguments.delta":
                calls[ev["item_id"]]["arguments"] += ev.get("delta") or ""
            if t in RESPONSES_TERMINAL:
                final = ev.get("response") or {}
                # One request's answer ends here (a recording may hold more turns after it).
                break
    assert seq, "the stream yielded no event"
    if any(n is not None for n in seq):
        # Older recordings carry none; where they are, they count 0, 1, 2, ...
        assert seq == list(range(seq[0], seq[0] + len(seq))), f"sequence numbers {seq}"
    # A hand-made recording may name no id or model (the gateway then writes them empty).
    return {
        "id": head.get("id") or None,
        "model": head.get("model") or None,
        "status": final.get("status"),
        "incomplete": (final.get("incomplete_details") or {}).get("reason"),
        "text": text,
        "refusal": refusal,
        "reasoning": "".join("\n\n".join(p for p in ps if p) for ps in reasoning.values()),
        "tool_calls": [
            {**calls[i], "arguments": parse_args(calls[i]["arguments"])} for i in order
        ],
        "usage": responses_usage(final.get("usage")),
    }


def responses_helper(client, model: str, **extra) -> dict:
    """`responses.stream(...)` + `get_final_response()`."""
    with client.responses.stream(model=model, input=PROMPT, **extra) as stream:
        for _ in stream:
            pass
        return _response_summary(stream.get_final_response())


def responses_create(client, model: str, **extra) -> dict:
    """Non-streaming `responses.create(...)`."""
    return _response_summary(client.responses.create(model=model, input=PROMPT, **extra))


RESPONSES_READERS = {"raw": responses_raw, "helper": responses_helper, "create": responses_create}


def neutral_from_responses(s: dict) -> dict:
    """A Responses summary as the content every dialect can carry; the finish as a Responses
    client reads it (docs/protocol.md): completed is `tool_calls` when a function was called,
    else `stop`; incomplete is `length` (max_output_tokens) or `content_filter`."""
    if s["status"] == "incomplete":
        finish = "content_filter" if s["incomplete"] == "content_filter" else "length"
    else:
        finish = "tool_calls" if s["tool_calls"] else "stop"
    u = s["usage"]
    return {
        "text": s["text"],
        "reasoning": s["reasoning"],
        "tool_calls": [{"name": t["name"], "arguments": t["arguments"]} for t in s["tool_calls"]],
        "finish": finish,
        "usage": None if u is None else {"input": u["input_tokens"], "output": u["output_tokens"]},
    }
