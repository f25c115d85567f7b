#!/usr/bin/env bash
# The one test command (README): lint, every test of the workspace, the full chaos run, the
# official OpenAI and Anthropic Python SDKs against the gateway (tests/sdk, over `streamgate demo`),
# then the fuzz targets (fuzz/run.sh).
set -euo pipefail
cd "$(dirname "$0")"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The full chaos run (100 answers and a 50,000-token stream through a lossy link; docs/chaos.md)
# as a step of its own: `cargo test` above runs its smaller variant.
cargo test --locked --test chaos -- --ignored
cargo build --locked --bin streamgate
python="$(tests/sdk/setup.sh)"
# pytest exits non-zero (5) when it collects nothing, so an empty suite fails here too.
PYTHONDONTWRITEBYTECODE=1 "$python" -m pytest tests/sdk -p no:cacheprovider -q
# Fuzzing (docs/fuzzing.md): every decoder of network or disk bytes, ~40 s each
# (FUZZ_SECONDS), seeded from fixtures/; a crash fails the run.
fuzz/run.sh
