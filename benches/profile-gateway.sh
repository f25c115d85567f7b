#!/bin/sh
# Runs the gateway under a profiler, for the load tool's `--gateway`, so that the instruction
# counts and heap peaks in docs/performance-gateway.md come from a command in the repo:
#
#   PROFILER=callgrind cargo bench --bench load -- --gateway benches/profile-gateway.sh \
#       --pin --concurrency 1 --delay-ms 0 --chunks 1 --requests 1000
#   PROFILER=heaptrack cargo bench --bench load -- --gateway benches/profile-gateway.sh \
#       --pin --concurrency 500 --delay-ms 0 --requests 3000
#
# The load tool kills this script (SIGKILL) when its run ends; the profiled gateway runs in a
# session of its own so it survives that, and a watcher then stops it with SIGINT, which lets
# it drain and the profiler write its output:
#   callgrind: /tmp/streamgate-profile/callgrind.out.PID (callgrind_annotate)
#   heaptrack: /tmp/streamgate-profile/heaptrack.TIME.zst (heaptrack_print)
#   trace: /tmp/streamgate-profile/trace.TIME.txt, the gateway's socket syscalls with their
#          times (`perf trace`), read by benches/timeline.py into per-request intervals
# Instructions per request: (count of an N-request run - count of an M-request run) / (N - M).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${STREAMGATE_BIN:-$here/target/release/streamgate}
out=/tmp/streamgate-profile
mkdir -p "$out"
case "${PROFILER:-callgrind}" in
callgrind) setsid valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" "$bin" "$@" & ;;
heaptrack) setsid heaptrack -o "$out/heaptrack.$(date +%s)" "$bin" "$@" & ;;
trace) setsid perf trace -o "$out/trace.$(date +%s).txt" \
    -e 'accept4,connect,recvfrom,writev,epoll_wait' -- "$bin" "$@" & ;;
*) echo "PROFILER is callgrind, heaptrack or trace" >&2; exit 2 ;;
esac
child=$!
script=$$
# Outlives this script: once the load tool has killed it, stop the gateway cleanly.
(
    while kill -0 "$script" 2>/dev/null; do sleep 0.2; done
    pkill -INT -f -s "$child" "streamgate serve" || kill -INT "$child" 2>/dev/null || true
) &
wait "$child"
