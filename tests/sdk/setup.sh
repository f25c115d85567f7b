#!/usr/bin/env bash
# Creates or refreshes the repo's .venv with what tests/sdk needs (tests/sdk/requirements.txt:
# the official openai and anthropic SDKs, pytest), then prints the venv's python on stdout.
# Idempotent: an intact venv installed from the same requirements is left alone. Used by both
# .ci/run and test.sh. PYTHON picks the interpreter (default python3, 3.11+); pip's own
# environment (PIP_INDEX_URL, PIP_FIND_LINKS, ...) applies.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
venv="$root/.venv"
req="$root/tests/sdk/requirements.txt"
stamp="$venv/.tests-sdk-requirements"
py="${PYTHON:-python3}"

if ! "$venv/bin/python" -c '' 2>/dev/null; then
    rm -rf "$venv"
    "$py" -m venv "$venv" >&2
fi
if ! cmp -s "$req" "$stamp" 2>/dev/null \
    || ! "$venv/bin/python" -c 'import openai, anthropic, pytest, httpx_sse, websockets' 2>/dev/null; then
    echo "tests/sdk/setup.sh: installing tests/sdk/requirements.txt into .venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$req" >&2
    cp "$req" "$stamp"
fi
echo "$venv/bin/python"
