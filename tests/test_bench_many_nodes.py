"""Smoke test of `python -m bench --nodes 2`: a throwaway PostgreSQL, Redis, nginx and two
nodes beside the SQLite node; the result has the per-command figures, and they are real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_on_postgresql_and_two_nodes(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--nodes",
            "2",
            "--skip",
            "latency,scale",
            "--pairs",
            "10",
            "--duration",
            "1",
            "--rounds",
            "1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    headline = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("commands_per_s", "ceiling_per_s", "ratio"):  # the SQLite headline stays
        assert headline[key] > 0
    assert headline["pg_per_s"] > 0 and headline["pg2_per_s"] > 0
    assert headline["pg_sqlite_ratio"] > 0 and headline["pg_ceiling_ratio"] > 0
    assert headline["pg2_pg_ratio"] > 0
    # every command writes WAL; group commit puts several commands in one call
    # (one statement, one round trip, one commit), so these may be below one
    assert headline["pg_statements_per_command"] >= headline["pg_round_trips_per_command"] > 0
    assert headline["pg_commits_per_command"] > 0
    assert headline["pg_wal_bytes_per_command"] > 100
    assert headline["pg2_statements_per_command"] > 0
    assert headline["pg2_redis_commands_per_command"] > 0
    assert headline["pg_cpu_us_per_command"] > headline["pg_node_cpu_us_per_command"] > 0
    result = json.loads((tmp_path / "latest.json").read_text())
    assert result["failures"] == []
    windows = {r["server"]: r for r in result["throughput"]}
    assert set(windows) == {"service", "pg", "pg2", "ceiling"}
    assert windows["pg2"]["costs"]["cpu_s"]["redis"] > 0
    assert windows["pg2"]["costs"]["cpu_s"]["nginx"] > 0
    assert windows["pg2"]["costs"]["counters"]["redis_publishes"] > 0
    assert windows["pg"]["costs"]["counters"]["pg_statements"] > 0
    assert "A through nginx" in result["config"]["spread"]["pg2"]
