"""Compare the service's and the ceiling's py-spy profiles, in CPU-microseconds per command.

`python -m bench --quick --skip latency,scale --profile 8 --profile-ceiling`, then
`python -m bench.compare`: for each package (by the leaf frame of every sample), how many
microseconds of sampled (non-idle) time one acked command costs in each server.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

from .profile import _short

RESULTS = Path(__file__).resolve().parent / "results"
RATE = 200


def bucket(frames: list[str]) -> str:
    leaf = frames[-1]
    m = re.search(r"\(([^():]*)", leaf)
    path = m[1] if m else leaf
    if path.startswith("settlement/"):
        return "settlement/" + path.split("/")[1].removesuffix(".py")
    if path.startswith("aiohttp/web.py") or leaf.startswith("run_app"):
        return "event loop (C: uvloop, syscalls)"
    return path.split("/")[0].removesuffix(".py")


def per_command(name: str) -> tuple[Counter[str], float, float]:
    raw = RESULTS / f"{name}.txt"
    window = json.loads((RESULTS / f"{name}.json").read_text())
    counts: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";") if f]
        thread = frames[0] if frames and frames[0].startswith("thread") else ""
        frames = frames[1:] if thread else frames
        if not frames:
            continue
        key = bucket(frames)
        if "MainThread" not in thread:
            key = "other threads: " + key
        counts[key] += int(n)
    seconds = float(window["profile_s"])
    commands = window["commands_per_s"] * seconds
    return counts, commands, seconds


def main() -> None:
    rows: dict[str, list[float]] = {}
    totals = []
    for i, name in enumerate(("profile", "profile-ceiling")):
        counts, commands, _ = per_command(name)
        total = 0.0
        for key, n in counts.items():
            us = n / RATE / commands * 1e6
            rows.setdefault(key, [0.0, 0.0])[i] = us
            total += us
        totals.append(total)
    print(f"{'us of sampled CPU per acked command':45s} {'service':>9s} {'ceiling':>9s}")
    for key, (a, b) in sorted(rows.items(), key=lambda kv: -kv[1][0]):
        if a >= 0.5 or b >= 0.5:
            print(f"{key[:45]:45s} {a:9.1f} {b:9.1f}")
    print(f"{'total':45s} {totals[0]:9.1f} {totals[1]:9.1f}")


if __name__ == "__main__":
    main()
    sys.exit(0)
