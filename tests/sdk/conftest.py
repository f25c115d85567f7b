"""Session fixtures for the real-client suite: one `streamgate demo` process (a replay upstream
serving fixtures/ and the gateway over it) and client factories for the official OpenAI and
Anthropic SDKs, talking either to the replay directly or through the gateway."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The binary `cargo build` (test.sh) makes; STREAMGATE_BIN overrides it (a release build, say).
BINARY = Path(
    os.environ.get("STREAMGATE_BIN")
    or Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "debug" / "streamgate"
)
if not BINARY.is_absolute():
    BINARY = ROOT / BINARY
FIXTURES = ROOT / "fixtures"

STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 5.0
CLIENT_TIMEOUT_S = 20.0
DUMMY_KEY = "sk-test-not-a-real-key"

# Everything is on loopback: never let a proxy from the environment see these requests.
for _var in ("NO_PROXY", "no_proxy"):
    _have = os.environ.get(_var, "")
    os.environ[_var] = ",".join(p for p in (_have, "127.0.0.1", "localhost") if p)


def fixture_stems(dialect_dir: str) -> list[str]:
    """Stems of the recorded streams in fixtures/<dialect_dir>/, found at collection time."""
    return sorted(p.stem for p in (FIXTURES / dialect_dir).glob("*.sse"))


def request_body(dialect_dir: str, stem: str) -> dict | None:
    """The recorded request body next to a fixture, if any."""
    path = FIXTURES / dialect_dir / f"{stem}.json"
    return json.loads(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class Demo:
    gateway: str
    replay: str


def _read_first_line(proc: subprocess.Popen, deadline: float) -> bytes:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no first stdout line within {STARTUP_TIMEOUT_S}s")
            if not sel.select(timeout=left):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise EOFError(f"stdout closed before the first line (exit code {proc.poll()})")
            buf += chunk
    finally:
        sel.close()
    return buf.split(b"\n", 1)[0]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=SHUTDOWN_TIMEOUT_S)


_demo_failure: list[str] = []


@pytest.fixture(scope="session")
def demo() -> Demo:
    # pytest retries a failed session fixture for every test: fail the rest at once.
    if _demo_failure:
        pytest.fail(_demo_failure[0], pytrace=False)
    if not BINARY.is_file():
        pytest.fail(
            f"{BINARY} is missing: build it first (`cargo build --locked`; ./test.sh does)",
            pytrace=False,
        )
    log = tempfile.TemporaryFile()
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "warn")
    proc = subprocess.Popen(
        [str(BINARY), "demo", "--listen", "127.0.0.1:0", "--json"],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
    )

    def stderr_tail() -> str:
        log.seek(0)
        return log.read().decode("utf-8", "replace")[-4000:]

    try:
        try:
            line = _read_first_line(proc, time.monotonic() + STARTUP_TIMEOUT_S)
            urls = json.loads(line)
            found = Demo(gateway=urls["gateway"].rstrip("/"), replay=urls["replay"].rstrip("/"))
        except Exception as e:  # noqa: BLE001 - reported with the demo's stderr
            _stop(proc)
            _demo_failure.append(
                f"`{BINARY} demo --json` did not start: {e!r}\nstderr:\n{stderr_tail()}"
            )
            pytest.fail(_demo_failure[0], pytrace=False)
        # Keep draining stdout so that a chatty demo can never block on a full pipe.
        threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
        yield found
        if proc.poll() is not None:
            pytest.fail(
                f"the demo exited during the session (code {proc.returncode})\n"
                f"stderr:\n{stderr_tail()}",
                pytrace=False,
            )
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="session")
def openai_direct(demo):
    import openai

    return openai.OpenAI(
        api_key=DUMMY_KEY, base_url=f"{demo.replay}/v1", max_retries=0, timeout=CLIENT_TIMEOUT_S
    )


@pytest.fixture(scope="session")
def openai_gateway(demo):
    import openai

    return openai.OpenAI(
        api_key=DUMMY_KEY, base_url=f"{demo.gateway}/v1", max_retries=0, timeout=CLIENT_TIMEOUT_S
    )


@pytest.fixture(scope="session")
def anthropic_direct(demo):
    import anthropic

    return anthropic.Anthropic(
        api_key=DUMMY_KEY, base_url=demo.replay, max_retries=0, timeout=CLIENT_TIMEOUT_S
    )


@pytest.fixture(scope="session")
def anthropic_gateway(demo):
    import anthropic

    return anthropic.Anthropic(
        api_key=DUMMY_KEY, base_url=demo.gateway, max_retries=0, timeout=CLIENT_TIMEOUT_S
    )

