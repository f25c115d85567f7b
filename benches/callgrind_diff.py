#!/usr/bin/env python3
"""Per-unit differences between two callgrind runs of the gateway (docs/performance-gateway.md):
instructions per function, and calls into a function (malloc, say), between a short and a long
run of the same load, divided by the units between them (answers, requests).

    PROFILER=callgrind cargo bench --bench load -- --gateway benches/profile-gateway.sh \\
        --pin --concurrency 1 --delay-ms 0 --chunks 50 --requests 300   # then 900
    benches/callgrind_diff.py SHORT LONG 600                    # self instructions per answer
    benches/callgrind_diff.py SHORT LONG 600 --inclusive        # inclusive instead
    benches/callgrind_diff.py SHORT LONG 600 --calls '^(malloc|realloc)$'   # calls per answer

Usage: callgrind_diff.py SHORT LONG UNITS [--inclusive | --calls REGEX] [--top N]"""
import collections, re, subprocess, sys


def instructions(path, inclusive):
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", f"--inclusive={'yes' if inclusive else 'no'}", path],
        capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+(?:\*\s+)?(.*)", line)
        if m:
            counts[m.group(2)[:160]] += int(m.group(1).replace(",", ""))
    return counts


def calls(path, target):
    """Calls into functions matching `target`, per calling function (from the raw file)."""
    names, counts, caller, callee = {}, collections.Counter(), None, None

    def name(ref):
        m = re.match(r"\((\d+)\)(?: (.*))?", ref)
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), "?")

    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                caller = name(line[3:].strip())
            elif line.startswith("cfn="):
                callee = name(line[4:].strip())
            elif line.startswith("calls=") and callee and re.search(target, callee):
                counts[caller] += int(line[6:].split()[0])
    return counts


def main():
    args = sys.argv[1:]
    top = 40
    if "--top" in args:
        i = args.index("--top")
        top = int(args[i + 1])
        del args[i:i + 2]
    target = None
    if "--calls" in args:
        i = args.index("--calls")
        target = args[i + 1]
        del args[i:i + 2]
    inclusive = "--inclusive" in args
    args = [a for a in args if a != "--inclusive"]
    if len(args) != 3:
        sys.exit(__doc__)
    short, long_, units = args[0], args[1], float(args[2])
    if target:
        a, b = calls(short, target), calls(long_, target)
    else:
        a, b = instructions(short, inclusive), instructions(long_, inclusive)
    diff = {k: (b[k] - a[k]) / units for k in set(a) | set(b)}
    if target:
        print(f"{sum(diff.values()):10.1f}  calls in all")
    for k, v in sorted(diff.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{v:10.1f}  {k}")


main()
