#!/bin/sh
# Where a running gateway's resident memory is, by mapping, every 2 s until it exits: the
# figures of docs/performance-gateway.md ("The creep", idle RSS by mapping). Run it beside the
# load tool, which starts the gateway:
#
#   benches/smaps.sh > /tmp/smaps.txt & cargo bench --bench load -- --matrix --matrix-scale 0.5
#
# One line per sample and gateway: threads, VmRSS, the main heap ([heap]), anonymous mappings
# without a name (other malloc arenas, thread stacks), and the gateway binary's own pages (kB).
set -eu
pattern=${1:-streamgate serve --config}
while :; do
  for pid in $(pgrep -f "$pattern" || true); do
    # The gateway itself, not a wrapper (taskset, timeout, a shell) whose line matches too.
    case "$(readlink "/proc/$pid/exe" 2>/dev/null)" in */streamgate) ;; *) continue ;; esac
    awk -v t="$(date +%T)" -v pid="$pid" '
      /^Threads:/ { th = $2 }
      /^VmRSS:/ { rss = $2 }
      END { printf "%s pid=%s threads=%s rss=%s ", t, pid, th, rss }' "/proc/$pid/status" 2>/dev/null || continue
    awk '/^[0-9a-f]+-[0-9a-f]+ / { name = $6 }
      /^Rss:/ { if (name == "[heap]") h += $2; else if (name == "") a += $2; else if (name ~ /streamgate$/) b += $2 }
      END { printf "heap=%d anon_unnamed=%d binary=%d\n", h, a, b }' "/proc/$pid/smaps" 2>/dev/null || echo
  done
  sleep 2
done
