#!/usr/bin/env python3
"""Prints the codec bench results (target/criterion) as the table in docs/performance.md:
chunks/s and MiB/s per fixture and mode. Run after `cargo bench --bench codec`.

`--check` instead prints the guard of issue #14: every OpenAI token stream case (the
`openai_chat/*` fixtures and the `synthetic/*` streams) decoded and re-encoded to OpenAI must
reach TARGET chunks/s; each figure is printed with PASS or FAIL (the cross-dialect figure, to
Anthropic, is printed beside it for information) and the exit status is 1 if any failed or
none was found. A benchmark check: never run in CI, the figures depend on the machine.

Usage: summarize.py [--check] [CRITERION_DIR]"""
import glob, json, os, sys

TARGET = 1.5  # M chunks/s per core, decode + re-encode (issue #14 point 4)
GUARDED = ("openai_chat/", "synthetic/")

args = sys.argv[1:]
check = "--check" in args
args = [a for a in args if a != "--check"]
root = args[0] if args else "target/criterion"
rows = {}
for path in glob.glob(f"{root}/codec_*/**/new/benchmark.json", recursive=True):
    bench = json.load(open(path))
    mean_ns = json.load(open(os.path.join(os.path.dirname(path), "estimates.json")))["mean"]["point_estimate"]
    unit, mode, fixture = bench["full_id"].split("/", 3)[1:]
    thr = bench.get("throughput") or {}
    if "Elements" in thr:
        rows.setdefault(fixture, {})[(mode, "chunks")] = thr["Elements"] / mean_ns * 1e3  # M/s
    elif "Bytes" in thr:
        rows.setdefault(fixture, {})[(mode, "bytes")] = thr["Bytes"] / mean_ns * 1e9 / 2**20

if check:
    failed = checked = 0
    print(f"issue #14 guard: OpenAI token chunks, decode + re-encode, target {TARGET:.2f} M chunks/s per core")
    for fixture in sorted(f for f in rows if f.startswith(GUARDED)):
        same = rows[fixture].get(("decode+encode_same", "chunks"))
        cross = rows[fixture].get(("decode+encode_cross", "chunks"))
        if same is None:
            continue
        checked += 1
        ok = same >= TARGET
        failed += not ok
        cross_s = f"{cross:.2f}" if cross is not None else "-"
        print(f"  {'PASS' if ok else 'FAIL'}  {fixture:40} same {same:5.2f} M/s   (cross {cross_s} M/s)")
    if not checked:
        print(f"  FAIL  no OpenAI token case found under {root}: run `cargo bench --bench codec` first")
    print("PASS" if checked and not failed else "FAIL")
    sys.exit(0 if checked and not failed else 1)

modes = ["decode", "encode_same", "decode+encode_same", "decode+encode_cross"]
print("| fixture | " + " | ".join(f"{m} M chunks/s" for m in modes) + " | " + " | ".join(f"{m} MiB/s" for m in modes) + " |")
print("|---" * (1 + 2 * len(modes)) + "|")
for fixture in sorted(rows):
    r = rows[fixture]
    cells = [f"{r[(m, 'chunks')]:.2f}" if (m, "chunks") in r else "" for m in modes]
    cells += [f"{r[(m, 'bytes')]:.0f}" if (m, "bytes") in r else "" for m in modes]
    print(f"| {fixture} | " + " | ".join(cells) + " |")
