#!/usr/bin/env bash
# Creates or refreshes the repo's .venv with what tests/sdk needs (tests/sdk/requirements.txt:
# the official openai and anthropic SDKs, pytest) and installs the pinned Claude Code CLIs
# (tests/sdk/claude_code/package-lock.json, `npm ci` into its git-ignored node_modules/), then
# prints the venv's python on stdout. Idempotent: an intact venv installed from the same
# requirements, and CLIs installed from the same lock file, are left alone. Used by both .ci/run
# and test.sh. PYTHON picks the interpreter (default python3, 3.11+); pip's own environment
# (PIP_INDEX_URL, PIP_FIND_LINKS, ...) and npm's (.npmrc, npm_config_*) apply.
#
# Without npm, or when the CLI install fails, this fails like a missing Python does. A developer
# without Node.js may set STREAMGATE_SKIP_CLAUDE_CODE=1 to skip the CLIs (and their tests, which
# say so); CI (CI=true) ignores that variable.
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

cc="$root/tests/sdk/claude_code"
cc_stamp="$cc/node_modules/.tests-sdk-package-lock"
if [[ "${STREAMGATE_SKIP_CLAUDE_CODE:-}" == 1 && "${CI:-}" != true ]]; then
    echo "tests/sdk/setup.sh: STREAMGATE_SKIP_CLAUDE_CODE=1: Claude Code CLIs not installed" >&2
else
    # Each pinned CLI must answer --version with its pinned version: a postinstall that did not
    # run (npm's install-script approvals, --ignore-scripts) leaves a placeholder binary.
    cc_ok() {
        local alias spec got
        while read -r alias spec; do
            got="$("$cc/node_modules/$alias/bin/claude.exe" --version 2>/dev/null)" || return 1
            [[ "$got" == "${spec##*@}"* ]] || return 1
        done < <(sed -n 's/^ *"\(claude-code-[a-z0-9-]*\)": "npm:\([^"]*\)".*/\1 \2/p' \
            "$cc/package.json")
    }
    if ! cmp -s "$cc/package-lock.json" "$cc_stamp" 2>/dev/null || ! cc_ok; then
        if ! command -v npm >/dev/null; then
            echo "tests/sdk/setup.sh: npm is missing: install Node.js 20+ for the Claude Code" \
                "CLI tests (or set STREAMGATE_SKIP_CLAUDE_CODE=1 outside CI to skip them)" >&2
            exit 1
        fi
        echo "tests/sdk/setup.sh: npm ci in tests/sdk/claude_code (pinned Claude Code CLIs)" >&2
        # The current CLI declares node >= 22, but Node only runs its installer (the CLI is a
        # native binary): an engine-strict npm config must not refuse it on Node 20.
        (cd "$cc" && npm ci --no-audit --no-fund --engine-strict=false --loglevel=error) >&2
        if ! cc_ok; then
            echo "tests/sdk/setup.sh: a pinned Claude Code CLI does not answer --version" \
                "with its pinned version after npm ci" >&2
            exit 1
        fi
        cp "$cc/package-lock.json" "$cc_stamp"
    fi
fi
echo "$venv/bin/python"
