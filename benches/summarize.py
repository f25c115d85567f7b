#!/usr/bin/env python3
"""Prints the codec bench results (target/criterion) as the table in docs/performance.md:
chunks/s and MiB/s per fixture and mode. Run after `cargo bench --bench codec`."""
import glob, json, os, sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
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
modes = ["decode", "encode_same", "decode+encode_same", "decode+encode_cross"]
print("| fixture | " + " | ".join(f"{m} M chunks/s" for m in modes) + " | " + " | ".join(f"{m} MiB/s" for m in modes) + " |")
print("|---" * (1 + 2 * len(modes)) + "|")
for fixture in sorted(rows):
    r = rows[fixture]
    cells = [f"{r[(m, 'chunks')]:.2f}" if (m, "chunks") in r else "" for m in modes]
    cells += [f"{r[(m, 'bytes')]:.0f}" if (m, "bytes") in r else "" for m in modes]
    print(f"| {fixture} | " + " | ".join(cells) + " |")
