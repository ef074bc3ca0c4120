"""Summarise a py-spy `--format raw` profile (collapsed stacks) into hot spots."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")
_SITE = re.compile(r".*/(site-packages|lib/python3\.\d+)/")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = _SITE.sub("", m["file"])
    if "/settlement/" in path or path.startswith("settlement/"):
        path = "settlement/" + path.split("/settlement/", 1)[-1]
    return f"{m['func']} ({path}:{m['line']})" if m["line"] else f"{m['func']} ({path})"


def _func(frame: str) -> str:
    """The frame without its line number: a function, for inclusive totals."""
    return re.sub(r":\d+\)$", ")", frame)


def _role(frames: list[str]) -> str:
    text = ";".join(frames)
    if "_write_batch" in text or "_open_writer" in text:
        return "sqlite writer thread"
    if "concurrent/futures/thread.py" in text or "threading.py" in text:
        return "executor threads (reads)"
    return "event loop thread"


def summarize(raw: Path, top: int = 15, rate: int = 200, seconds: float = 0) -> dict[str, Any]:
    """Hot spots of the event-loop thread (the one that limits throughput) and per-thread load.

    `raw` is py-spy `--format raw --threads` output: `thread (0x..);frame;...;frame count`.
    """
    own: Counter[str] = Counter()  # leaf frame (file:line) of the event loop thread
    own_func: Counter[str] = Counter()
    total: Counter[str] = Counter()  # function anywhere on the loop thread's stack
    roles: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";") if f]
        if frames and frames[0].startswith("thread"):
            frames = frames[1:]
        if not frames:
            continue
        role = _role(frames)
        roles[role] += n
        if role != "event loop thread":
            continue
        samples += n
        leaf = frames[-1]
        own[leaf] += n
        own_func[_func(leaf)] += n
        for f in {_func(f) for f in frames}:
            total[f] += n
    settlement = Counter({k: v for k, v in total.items() if "settlement/" in k})

    def rows(c: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": k, "samples": v, "pct": round(100 * v / max(1, samples), 1)}
            for k, v in c.most_common(top)
        ]

    out: dict[str, Any] = {
        "samples": samples,
        "threads": {
            k: {"samples": v, "busy_pct": round(100 * v / (rate * seconds), 1) if seconds else None}
            for k, v in roles.items()
        },
        "self_lines": rows(own),
        "self_functions": rows(own_func),
        "inclusive_settlement": rows(settlement),
        "inclusive_all": rows(total),
    }
    text = [
        "busy threads (share of wall time): "
        + ", ".join(
            f"{k} {v['busy_pct']}%" if v["busy_pct"] is not None else f"{k} {v['samples']}"
            for k, v in out["threads"].items()
        ),
        f"event loop thread: {samples} samples; percentages below are of those",
    ]
    for title, key in (
        ("self time by function", "self_functions"),
        ("self time by line", "self_lines"),
        ("inclusive time, settlement/ functions", "inclusive_settlement"),
    ):
        text.append(f"top {top} {title}:")
        text += [f"  {r['pct']:5.1f}%  {r['frame']}" for r in out[key]]
    out["text"] = text
    return out


if __name__ == "__main__":
    import sys

    for line in summarize(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 25)["text"]:
        print(line)
