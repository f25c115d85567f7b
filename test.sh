#!/usr/bin/env bash
# The one test command (README): lint, every test of the workspace, then the official OpenAI and
# Anthropic Python SDKs against the gateway (tests/sdk, over `streamgate demo`).
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
cargo build --locked --bin streamgate
python="$(tests/sdk/setup.sh)"
# pytest exits non-zero (5) when it collects nothing, so an empty suite fails here too.
PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest tests/sdk -p no:cacheprovider -q
