#!/usr/bin/env bash
# CI's fuzzing step (docs/fuzzing.md): installs the pinned cargo-fuzz if missing, seeds every
# target's corpus from fixtures/, builds the targets and runs each for a bounded time. Fails on
# the first crash (libFuzzer writes the input to fuzz/artifacts/<target>/).
#
#   FUZZ_SECONDS   seconds per target (default 40)
#   FUZZ_TARGETS   targets to run, space-separated (default: every one)
#   FUZZ_JOBS      libFuzzer -fork=N workers per target (default: none, one process)
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.1
seconds="${FUZZ_SECONDS:-40}"
targets="${FUZZ_TARGETS:-sse stream_decoder request ws journal headers h1_response}"

if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
    cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
# cargo-fuzz needs nightly flags (-Zsanitizer, -Cpasses=sancov); RUSTC_BOOTSTRAP lets the one
# stable toolchain take them. No sanitizer: the gateway forbids unsafe code, so ASan would
# only slow the run; panics, overflow checks and debug assertions are what find bugs here.
export RUSTC_BOOTSTRAP=1
flags=(--sanitizer none)

python3 seed.py
cargo fuzz build "${flags[@]}"
for target in $targets; do
    echo "fuzz: $target for ${seconds}s"
    extra=()
    if [ -n "${FUZZ_JOBS:-}" ]; then extra+=("-fork=$FUZZ_JOBS"); fi
    # A temporary corpus dir for what the run discovers, so the seeds stay as derived.
    scratch="$(mktemp -d)"
    trap 'rm -rf "$scratch"' EXIT
    cargo fuzz run "${flags[@]}" "$target" "$scratch" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        "${extra[@]}"
    rm -rf "$scratch"
done
