#!/usr/bin/env python3
"""Per-request intervals from a `PROFILER=trace` run of benches/profile-gateway.sh.

    python3 benches/timeline.py /tmp/streamgate-profile/trace.TIME.txt

Client connections are the accepted sockets, upstream ones the connected sockets. For each
request: `own` is from reading it on its client connection to writing it upstream, `upstream`
from there to the upstream's first bytes back, `out` from those to the first write to its
client. One worker thread does all of it, so a request's `out` includes whatever the worker
did for other requests meanwhile (docs/performance-gateway.md, issue #14, session 11).
"""
import re
import sys

LINE = re.compile(r"^\s*([\d.]+) \(\s*[\d.]* ms\): \S+/\d+ (\w+)\((.*)\)\s+= (-?\d+)")
FD = re.compile(r"fd: (\d+)")


def main(path):
    clients, upstreams = set(), set()
    last_request = None  # (client fd, time) of the last request read and not yet sent on
    sent = {}  # upstream fd -> (client fd, read at, sent at)
    answered = {}  # client fd -> (read at, sent at, answered at)
    spans = {"own": [], "upstream": [], "out": []}
    for line in open(path):
        m = LINE.match(line)
        if not m:
            continue
        t, call, args, ret = float(m.group(1)), m.group(2), m.group(3), int(m.group(4))
        fd = FD.search(args)
        fd = int(fd.group(1)) if fd else None
        if call == "accept4" and ret > 0:
            clients.add(ret)
        elif call == "connect":
            upstreams.add(fd)
        elif ret <= 0:
            continue
        elif call == "recvfrom" and fd in clients:
            last_request = (fd, t)
        elif call == "writev" and fd in upstreams and last_request:
            sent[fd] = (*last_request, t)
            last_request = None
        elif call == "recvfrom" and fd in sent:
            client, read, wrote = sent.pop(fd)
            answered.setdefault(client, (read, wrote, t))
        elif call == "writev" and fd in answered:
            read, wrote, back = answered.pop(fd)
            spans["own"].append(wrote - read)
            spans["upstream"].append(back - wrote)
            spans["out"].append(t - back)
    for name, v in spans.items():
        if not v:
            continue
        v.sort()
        pick = lambda q: v[min(len(v) - 1, int(len(v) * q))] * 1000
        print(f"{name:9} n={len(v)} p50={pick(0.5):.0f} us p90={pick(0.9):.0f} us p99={pick(0.99):.0f} us")


if __name__ == "__main__":
    main(sys.argv[1])
