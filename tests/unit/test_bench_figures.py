"""The bench's per-command arithmetic (bench/meters.py) and round summary (bench/figures.py)."""

from __future__ import annotations

from typing import Any

from bench.figures import path_headline, round_ratios, summarize
from bench.meters import Snapshot, costs


def test_costs_per_group_and_per_command() -> None:
    before = Snapshot(
        procs={1: ("node", 10.0), 2: ("postgres", 5.0), 3: ("postgres", 1.0)},
        counters={"pg_statements": 100.0, "pg_wal_bytes": 1_000.0, "disk_bytes": 0.0},
    )
    after = Snapshot(
        # 3 ended in the window (lost); 4 started in it (counted from zero)
        procs={1: ("node", 12.0), 2: ("postgres", 5.5), 4: ("postgres", 0.25)},
        counters={"pg_statements": 1_100.0, "pg_wal_bytes": 501_000.0, "disk_bytes": 4096.0},
    )
    c = costs(before, after, 1_000)
    assert c["cpu_s"] == {"node": 2.0, "postgres": 0.75, "all": 2.75}
    assert c["cpu_us_per_command"] == {"node": 2_000.0, "postgres": 750.0, "all": 2_750.0}
    assert c["per_command"] == {"pg_statements": 1.0, "pg_wal_bytes": 500.0, "disk_bytes": 4.096}
    assert c["counters"]["pg_wal_bytes"] == 500_000.0


def test_a_reused_pid_in_another_group_counts_from_zero() -> None:
    before = Snapshot(procs={7: ("redis", 9.0)})
    after = Snapshot(procs={7: ("nginx", 0.5)})
    assert costs(before, after, 10)["cpu_s"] == {"nginx": 0.5, "all": 0.5}


def test_no_commands_gives_zero_per_command_not_an_error() -> None:
    snap = Snapshot(procs={1: ("node", 1.0)}, counters={"pg_statements": 5.0})
    c = costs(snap, snap, 0)
    assert c["cpu_us_per_command"] == {"node": 0.0, "all": 0.0}
    assert c["per_command"] == {"pg_statements": 0.0}


def _row(server: str, rnd: int, per_s: float, per_cpu_s: float = 1.0) -> dict[str, Any]:
    return {
        "server": server,
        "round": rnd,
        "commands_per_s": per_s,
        "commands_per_cpu_s": per_cpu_s,
        "costs": {
            "commands": int(per_s),
            "cpu_us_per_command": {"node": 1e6 / per_s, "all": 2e6 / per_s},
            "per_command": {"pg_statements": 9.0 + rnd},
        },
    }


def test_ratios_are_taken_inside_each_round_then_the_median() -> None:
    rows = []
    # round 1 is disturbed (everything at half speed): ratios inside rounds do not move
    for rnd, speed in enumerate((1.0, 0.5, 1.0)):
        rows += [
            _row("service", rnd, 4_000 * speed),
            _row("pg", rnd, 1_000 * speed),
            _row("pg2", rnd, 500 * speed),
            _row("ceiling", rnd, 8_000 * speed),
        ]
    assert round_ratios(rows, "pg", "service") == [0.25, 0.25, 0.25]
    s = summarize(rows)
    assert s["ratio"] == 0.5 and s["service_per_s"] == 4_000.0
    assert s["paths"]["pg"]["vs_sqlite"] == 0.25
    assert s["paths"]["pg"]["vs_ceiling"] == 0.125
    assert "vs_pg" not in s["paths"]["pg"]
    assert s["paths"]["pg2"]["vs_pg"] == 0.5
    assert s["paths"]["pg2"]["per_s"] == 500.0
    assert s["costs"]["pg"]["per_command"] == {"pg_statements": 10.0}
    assert s["costs"]["pg"]["cpu_us_per_command"]["all"] == 2_000.0


def test_the_headline_of_the_postgresql_paths() -> None:
    rows = []
    for rnd in range(3):
        rows += [_row("service", rnd, 4_000), _row("pg", rnd, 1_000), _row("ceiling", rnd, 8_000)]
    summary = summarize(rows)
    result = {
        "summary": {"50": summary},
        "latency": [
            {"server": "pg", "fraction": 0.25, "p99_ms": 3.0},
            {"server": "pg", "fraction": 0.5, "p99_ms": 4.0},
        ],
        "scale": [],
    }
    h = path_headline(result, "50")
    assert h["pg_per_s"] == 1_000.0
    assert h["pg_sqlite_ratio"] == 0.25 and h["pg_ceiling_ratio"] == 0.125
    assert h["pg_p99_ms"] == 4.0
    assert h["pg_statements_per_command"] == 10.0
    assert h["pg_cpu_us_per_command"] == 2_000.0 and h["pg_node_cpu_us_per_command"] == 1_000.0
    assert h["sqlite_cpu_us_per_command"] == 500.0
    assert "pg2_per_s" not in h
    # a SQLite-only run adds nothing to the headline
    only = [r for r in rows if r["server"] != "pg"]
    assert (
        path_headline({"summary": {"50": summarize(only)}, "latency": [], "scale": []}, "50") == {}
    )


def test_signed_windows_are_compared_with_the_unsigned_ones_of_their_round() -> None:
    rows = []
    # --sign-ab: round 1 is disturbed; the signed/unsigned ratio inside each round holds
    for rnd, speed in enumerate((1.0, 0.5, 1.0)):
        rows += [
            _row("service", rnd, 5_000 * speed, per_cpu_s=5_000),
            _row("signed", rnd, 4_000 * speed, per_cpu_s=4_500),
            _row("ceiling", rnd, 8_000 * speed),
        ]
    s = summarize(rows)
    assert s["signed"]["round_vs_unsigned"] == [0.8, 0.8, 0.8]
    assert s["signed"]["vs_unsigned"] == 0.8
    assert s["signed"]["cpu_vs_unsigned"] == 0.9
    assert "signed" not in summarize([r for r in rows if r["server"] != "signed"])
