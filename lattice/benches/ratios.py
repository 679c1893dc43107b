#!/usr/bin/env python3
"""Prints the table of calm / raw merge costs from the last `cargo bench -p calm-lattice`.

Reads criterion's estimates under target/criterion/<group>/{calm,raw}/new/estimates.json.
Usage: python3 lattice/benches/ratios.py [TARGET_DIR]
"""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target") / "criterion"
if not root.is_dir():
    sys.exit(f"no criterion results under {root}: run `cargo bench -p calm-lattice --bench merge` first")


def mean_ns(group: pathlib.Path, side: str) -> float | None:
    path = group / side / "new" / "estimates.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())["mean"]["point_estimate"]


def fmt(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.2f} {unit}"
    return f"{ns:.1f} ns"


print("| benchmark | calm | raw | calm / raw |")
print("|---|---:|---:|---:|")
for group in sorted(p for p in root.iterdir() if p.is_dir() and p.name != "report"):
    calm, raw = mean_ns(group, "calm"), mean_ns(group, "raw")
    if calm is None or raw is None:
        continue
    print(f"| {group.name} | {fmt(calm)} | {fmt(raw)} | {calm / raw:.2f}x |")
