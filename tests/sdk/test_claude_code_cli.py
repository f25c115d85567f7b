"""The real Claude Code CLI against the gateway: `claude -p ... --output-format stream-json`, in
its default configuration except for the model (its default model is no demo model), over the
Anthropic door, for every plain-text recording of both dialects (an OpenAI recording reaches it
through the gateway's translation). Each pinned CLI of tests/sdk/claude_code/package.json runs
(README, "Test": the current release and the last one that declares Node 20).

The CLIs are installed by tests/sdk/setup.sh. Without them the tests fail, unless
STREAMGATE_SKIP_CLAUDE_CODE=1 outside CI (CI=true) says to skip them."""

from __future__ import annotations

import http.client
import http.server
import json
import os
import subprocess
import tempfile
import threading
import urllib.parse
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT, fixture_stems
from summaries import (
    ANTHROPIC_READERS,
    OPENAI_READERS,
    PROMPT,
    neutral_from_anthropic,
    neutral_from_openai,
)

CLI_DIR = ROOT / "tests" / "sdk" / "claude_code"
# Generous for a loaded 2-core machine: an unloaded run answers in about a second. A CLI that
# keeps retrying a refused request runs into this instead of hanging the suite.
RUN_TIMEOUT_S = 60.0
# A request body larger than this is not Claude Code's (its first turn is ~100 KB).
MAX_CAPTURED_BODY = 16 * 1024 * 1024

# A developer without Node.js may skip these; CI may not (tests/sdk/setup.sh does the same).
SKIP_REQUESTED = (
    os.environ.get("STREAMGATE_SKIP_CLAUDE_CODE") == "1" and os.environ.get("CI") != "true"
)


def _pinned_clis() -> dict[str, str]:
    """Alias (node_modules folder) -> pinned version, from the package.json setup.sh installs."""
    deps = json.loads((CLI_DIR / "package.json").read_text())["dependencies"]
    return {alias: spec.rsplit("@", 1)[1] for alias, spec in deps.items()}


CLIS = _pinned_clis()


# ------------------------------------------------ which recordings are plain text answers


def _sse_data(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        data = line[5:].strip() if line.startswith("data:") else ""
        if data and data != "[DONE]":
            out.append(json.loads(data))
    return out


def _is_plain_anthropic(path: Path) -> bool:
    """One text block, ended by `end_turn`: no tools, thinking, refusal or truncation, which
    would make Claude Code act (run a tool) or show something other than the text."""
    blocks, stop = [], None
    for ev in _sse_data(path):
        if ev.get("type") == "content_block_start":
            blocks.append(ev["content_block"]["type"])
        elif ev.get("type") == "message_delta":
            stop = (ev.get("delta") or {}).get("stop_reason") or stop
        elif ev.get("type") == "error":
            return False
    return blocks == ["text"] and stop == "end_turn"


_NOT_PLAIN_OPENAI = ("tool_calls", "function_call", "refusal", "reasoning_content", "reasoning")


def _is_plain_openai(path: Path) -> bool:
    """Choice 0 only, content only, ended by `stop`."""
    finish, text = None, ""
    for chunk in _sse_data(path):
        if "error" in chunk:
            return False
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if choice.get("index", 0) != 0 or any(delta.get(k) for k in _NOT_PLAIN_OPENAI):
                return False
            text += delta.get("content") or ""
            finish = choice.get("finish_reason") or finish
    return finish == "stop" and text != ""


PLAIN = [
    ("anthropic", stem)
    for stem in fixture_stems("anthropic")
    if _is_plain_anthropic(FIXTURES / "anthropic" / f"{stem}.sse")
] + [
    ("openai", stem)
    for stem in fixture_stems("openai_chat")
    if _is_plain_openai(FIXTURES / "openai_chat" / f"{stem}.sse")
]


def _expected_text(dialect: str, stem: str, anthropic_direct, openai_direct) -> str:
    """The recording's text as an Anthropic client of the gateway must see it: read from the
    replay by the official SDK, the way the cross-dialect tests do."""
    if dialect == "anthropic":
        direct = ANTHROPIC_READERS["create"](anthropic_direct, stem)
        return neutral_from_anthropic(direct, for_openai_client=False)["text"]
    direct = OPENAI_READERS["raw"](openai_direct, stem)
    return neutral_from_openai(direct, for_anthropic_client=True)["text"]


# ------------------------------------------------------------------------- running the CLI


@pytest.fixture(scope="session")
def claude_bins() -> dict[str, Path]:
    if SKIP_REQUESTED:
        pytest.skip("STREAMGATE_SKIP_CLAUDE_CODE=1: the Claude Code CLI tests are skipped")
    bins = {alias: CLI_DIR / "node_modules" / alias / "bin" / "claude.exe" for alias in CLIS}
    missing = [str(p) for p in bins.values() if not p.is_file()]
    if missing:
        pytest.fail(
            f"Claude Code CLI missing ({', '.join(missing)}): run tests/sdk/setup.sh "
            "(needs npm; STREAMGATE_SKIP_CLAUDE_CODE=1 outside CI skips these tests)",
            pytrace=False,
        )
    return bins


def run_claude(binary: Path, base_url: str, model: str) -> tuple[int, list[dict], str]:
    """`claude -p PROMPT --output-format stream-json --verbose --model MODEL` in a fresh HOME
    and working directory (nothing of the developer's config or of this repository reaches it):
    exit code, the stream-json messages, stderr."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ANTHROPIC_", "CLAUDE_", "OPENAI_"))
    }
    with tempfile.TemporaryDirectory() as home:
        env.update(
            HOME=home,
            XDG_CONFIG_HOME=f"{home}/.config",
            XDG_CACHE_HOME=f"{home}/.cache",
            XDG_DATA_HOME=f"{home}/.local/share",
            ANTHROPIC_BASE_URL=base_url,
            ANTHROPIC_API_KEY="sk-ant-test-not-a-real-key",
            DISABLE_TELEMETRY="1",
            DISABLE_AUTOUPDATER="1",
            CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        )
        proc = subprocess.run(
            [str(binary), "-p", PROMPT, "--output-format", "stream-json", "--verbose"]
            + ["--model", model],
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RUN_TIMEOUT_S,
        )
    messages = [
        json.loads(line) for line in proc.stdout.decode("utf-8", "replace").splitlines() if line
    ]
    return proc.returncode, messages, proc.stderr.decode("utf-8", "replace")[-4000:]


def assert_answered(rc: int, messages: list[dict], stderr: str, expected_text: str) -> None:
    results = [m for m in messages if m.get("type") == "result"]
    context = f"exit {rc}\nresults: {results}\nstderr: {stderr}"
    assert rc == 0, context
    assert len(results) == 1, context
    assert results[0]["subtype"] == "success", context
    assert results[0]["is_error"] is False, context
    assert results[0]["result"] == expected_text


def test_plain_recordings_found():
    # The table below is read from fixtures/: an empty one would test nothing.
    assert {d for d, _ in PLAIN} == {"anthropic", "openai"}, PLAIN


def test_pinned_versions_are_installed(claude_bins):
    for alias, path in claude_bins.items():
        out = subprocess.run(
            [str(path), "--version"], capture_output=True, timeout=RUN_TIMEOUT_S, check=True
        ).stdout.decode()
        assert out.startswith(CLIS[alias]), f"{alias}: {out!r}, pinned {CLIS[alias]}"


@pytest.mark.parametrize("cli", sorted(CLIS))
@pytest.mark.parametrize("dialect,stem", PLAIN, ids=[f"{d}/{s}" for d, s in PLAIN])
def test_claude_code_answers_through_gateway(
    claude_bins, demo, anthropic_direct, openai_direct, cli, dialect, stem
):
    expected = _expected_text(dialect, stem, anthropic_direct, openai_direct)
    assert expected, f"{dialect}/{stem} has no text to compare"
    rc, messages, stderr = run_claude(claude_bins[cli], demo.gateway, f"{dialect}/{stem}")
    assert_answered(rc, messages, stderr, expected)


# ------------------------------------------------- what Claude Code's request looks like


class _Recorder(http.server.ThreadingHTTPServer):
    """A pass-through in front of the gateway that keeps each request it forwards."""

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = urllib.parse.urlsplit(upstream)
        self.seen: list[dict] = []
        self.lock = threading.Lock()


class _Forward(http.server.BaseHTTPRequestHandler):
    server: _Recorder

    def log_message(self, *args) -> None:  # quiet: pytest shows failures
        pass

    def _forward(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_CAPTURED_BODY:
            self.send_error(413)
            return
        body = self.rfile.read(length)
        with self.server.lock:
            self.server.seen.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": body,
                }
            )
        up = self.server.upstream
        conn = http.client.HTTPConnection(up.hostname, up.port, timeout=RUN_TIMEOUT_S)
        try:
            hop = {"host", "content-length", "connection", "accept-encoding"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in hop}
            conn.request(self.command, self.path, body or None, headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_HEAD = _forward


@pytest.mark.parametrize("cli", sorted(CLIS))
def test_claude_code_request_shape_is_accepted(claude_bins, demo, anthropic_direct, cli):
    """Issue #9 point 15: Claude Code puts `{"role": "system"}` turns inside `messages`, with
    its beta headers, thinking and tools; the gateway must answer that request, not refuse it."""
    dialect, stem = next(p for p in PLAIN if p[0] == "anthropic")
    expected = _expected_text(dialect, stem, anthropic_direct, None)
    recorder = _Recorder(demo.gateway)
    thread = threading.Thread(target=recorder.serve_forever, daemon=True)
    thread.start()
    try:
        rc, messages, stderr = run_claude(
            claude_bins[cli], f"http://127.0.0.1:{recorder.server_address[1]}", f"{dialect}/{stem}"
        )
    finally:
        recorder.shutdown()
        recorder.server_close()
    assert_answered(rc, messages, stderr, expected)
    asked = [
        r for r in recorder.seen if r["method"] == "POST" and r["path"].startswith("/v1/messages")
    ]
    assert asked, f"no /v1/messages request reached the gateway: {recorder.seen}"
    body = json.loads(asked[0]["body"])
    headers = {k.lower(): v for k, v in asked[0]["headers"].items()}
    assert "system" in [m.get("role") for m in body["messages"]], body["messages"]
    assert "claude-code-20250219" in headers.get("anthropic-beta", ""), headers
    assert body.get("tools") and body.get("thinking"), sorted(body)
