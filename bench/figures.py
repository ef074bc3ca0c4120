"""The figures: medians of rounds and ratios of adjacent windows, for one concurrency.

`rows` are the window results (bench/__main__.py `Bench.window`) of one pair
count, each with `server` (service = SQLite, pg, pg2, ceiling) and `round`. A
ratio is taken inside each round (its windows ran back to back) and the median
of those is reported, so outside load that hits one round hits both sides.
Also the PostgreSQL paths' headline fields and the per-command log line.
"""

from __future__ import annotations

import statistics
from typing import Any

# path -> the targets it is compared with, by label
COMPARED = {"pg": ("service", "ceiling"), "pg2": ("service", "ceiling", "pg")}
LABELS = {"service": "sqlite", "ceiling": "ceiling", "pg": "pg"}


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def median_costs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-command costs, the median over the windows of each figure."""
    cpu: dict[str, list[float]] = {}
    per: dict[str, list[float]] = {}

    for r in rows:
        c = r.get("costs")
        if not c or not c["commands"]:
            continue
        for k, v in c["cpu_us_per_command"].items():
            cpu.setdefault(k, []).append(v)
        for k, v in c["per_command"].items():
            per.setdefault(k, []).append(v)

    return {
        "cpu_us_per_command": {k: _median(v) for k, v in cpu.items()},
        "per_command": {k: _median(v) for k, v in per.items()},
    }


def round_ratios(rows: list[dict[str, Any]], top: str, bottom: str) -> list[float]:
    """top/bottom commands per second, one ratio per round that ran both."""
    got: dict[int, dict[str, float]] = {}
    for r in rows:
        got.setdefault(r["round"], {})[r["server"]] = r["commands_per_s"]
    return [
        round(g[top] / g[bottom], 3)
        for _, g in sorted(got.items())
        if top in g and bottom in g and g[bottom]
    ]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["server"], []).append(r)

    def med(server: str, key: str) -> float:
        return float(round(statistics.median(r[key] for r in by[server]), 1))

    per_round = round_ratios(rows, "service", "ceiling")
    out: dict[str, Any] = {
        "service_per_s": med("service", "commands_per_s"),
        "ceiling_per_s": med("ceiling", "commands_per_s"),
        # Commands per second of server CPU: steadier than the rate when other
        # work shares the machine (a CPU-bound server gets less of it).
        "service_per_cpu_s": med("service", "commands_per_cpu_s"),
        "ceiling_per_cpu_s": med("ceiling", "commands_per_cpu_s"),
        "ratio": _median(per_round),
        "round_ratios": per_round,
    }
    out["cpu_ratio"] = (
        round(out["service_per_cpu_s"] / out["ceiling_per_cpu_s"], 3)
        if out["ceiling_per_cpu_s"]
        else None
    )
    out["costs"] = {name: median_costs(rs) for name, rs in by.items()}
    paths: dict[str, Any] = {}
    for name, others in COMPARED.items():
        if name not in by:
            continue
        entry: dict[str, Any] = {
            "per_s": med(name, "commands_per_s"),
            # per CPU-second of the node(s) only; the costs have every process
            "per_node_cpu_s": med(name, "commands_per_cpu_s"),
        }
        for other in others:
            if other not in by:
                continue
            ratios = round_ratios(rows, name, other)
            entry[f"vs_{LABELS[other]}"] = _median(ratios)
            entry[f"round_vs_{LABELS[other]}"] = ratios
        paths[name] = entry
    out["paths"] = paths
    if "signed" in by:  # --sign-ab: the SQLite node with every seat signing
        rounds = round_ratios(rows, "signed", "service")
        signed_cpu = med("signed", "commands_per_cpu_s")
        out["signed"] = {
            "per_s": med("signed", "commands_per_s"),
            "per_cpu_s": signed_cpu,
            "vs_unsigned": _median(rounds),
            "round_vs_unsigned": rounds,
            "cpu_vs_unsigned": round(signed_cpu / out["service_per_cpu_s"], 3)
            if out["service_per_cpu_s"]
            else None,
        }
    return out


def path_headline(result: dict[str, Any], base: str) -> dict[str, Any]:
    """The PostgreSQL paths' figures at `base` pairs, for the headline (none on SQLite)."""
    out: dict[str, Any] = {}
    summary = result["summary"][base]
    for name, e in summary["paths"].items():
        c = summary["costs"][name]
        out[f"{name}_per_s"] = e["per_s"]
        for label in ("sqlite", "pg", "ceiling"):
            if f"vs_{label}" in e:
                out[f"{name}_{label}_ratio"] = e[f"vs_{label}"]
        half = min(
            (r for r in result["latency"] if r["server"] == name),
            key=lambda r: abs(r["fraction"] - 0.5),
            default=None,
        )
        out[f"{name}_p99_ms"] = half["p99_ms"] if half else None
        out[f"{name}_cpu_us_per_command"] = c["cpu_us_per_command"].get("all")
        out[f"{name}_node_cpu_us_per_command"] = c["cpu_us_per_command"].get("node")
        keys = ("pg_statements", "pg_round_trips", "pg_commits", "pg_wal_bytes", "redis_commands")
        for k in keys:
            if k in c["per_command"]:
                out[f"{name}_{k.removeprefix('pg_')}_per_command"] = c["per_command"][k]
    if summary["paths"]:
        out["sqlite_cpu_us_per_command"] = summary["costs"]["service"]["cpu_us_per_command"]["all"]
    scale = {r["server"]: r for r in result["scale"]}
    if "pg" in scale:
        out["pg_rss_kib_per_socket"] = scale["pg"]["kib_per_socket"]
    return out


def fmt_costs(c: dict[str, Any]) -> str:
    """One window's cost per acked command (bench/meters.py)."""
    cpu = c["cpu_us_per_command"]
    parts = " + ".join(f"{k} {v:.0f}" for k, v in cpu.items() if k != "all")
    line = f"per command: cpu us {parts} = {cpu['all']:.0f}"
    per = c["per_command"]
    if "pg_statements" in per:
        line += (
            f"; pg statements {per['pg_statements']:.2f} (round trips "
            f"{per['pg_round_trips']:.2f}, commits {per['pg_commits']:.2f}), "
            f"WAL {per['pg_wal_bytes']:.0f} B"
        )
    if "redis_commands" in per:
        line += (
            f"; redis commands {per['redis_commands']:.2f} (publishes {per['redis_publishes']:.2f})"
        )
    return line + f"; machine's disk writes {per['disk_bytes']:.0f} B"
