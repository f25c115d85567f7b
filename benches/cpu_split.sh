#!/bin/sh
# A proxy's CPU split into user and system time, and its minor page faults, sampled every
# 0.2 s from /proc while the load tool runs it: the figures of docs/performance-gateway.md
# ("Where setting d's time goes"). Run it beside the load tool, which starts the gateway and
# nginx; when the run is over, the last line per process holds its totals (clock ticks):
#
#   benches/cpu_split.sh > /tmp/split.txt & cargo bench --bench load -- --pin \
#       --reference nginx --concurrency 500 --delay-ms 0 --requests 5000
#
# Stops by itself after SECONDS_MAX seconds (default 120). One line per sample and process:
# pid, name, minflt, utime, stime.
set -eu
end=$(( $(date +%s) + ${SECONDS_MAX:-120} ))
while [ "$(date +%s)" -lt "$end" ]; do
  for pid in $(pgrep -f 'streamgate serve --config|nginx: worker' || true); do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    # The fields after the parenthesized command name: minflt is the 8th, utime the 12th.
    set -- ${stat##*) }
    echo "$pid $(tr '\0' ' ' < "/proc/$pid/cmdline" | cut -c1-40) minflt=$8 utime=${12} stime=${13}"
  done
  sleep 0.2
done
