"""What one measured window cost the servers, per acked command.

A target (bench/servers.py `ServerProcess`, bench/cluster.py `PgPath`) names its
processes by group (`node`, `postgres`, `redis`, `nginx`) and may have counters
(PostgreSQL's statements and WAL position, Redis's commands); every snapshot also
reads the machine's disk writes (`disk_bytes`). `snapshot()` is
taken at the start and at the end of the measured window; `costs()` turns two
snapshots and the window's acked commands into the figures of the result JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

# group -> processes; counters -> name -> value (monotonic over a run)
Processes = Callable[[], Iterable[tuple[str, psutil.Process]]]
Counters = Callable[[], dict[str, float]]


@dataclass
class Snapshot:
    # pid -> (group, CPU seconds user+system)
    procs: dict[int, tuple[str, float]] = field(default_factory=dict)
    counters: dict[str, float] = field(default_factory=dict)


def disk_bytes_written() -> float:
    """Bytes the machine's disks were asked to write so far (/proc/diskstats, whole disks).

    Machine-wide: whatever else writes meanwhile counts too. The per-process
    `write_bytes` of /proc/PID/io is no use here: it charged PostgreSQL's backend
    263 KB per single-row commit that reached the disk as 51 KB (ext4, this VM).
    """
    disks = {d.name for d in Path("/sys/block").iterdir()}
    total = 0
    with open("/proc/diskstats") as f:
        for line in f:
            fields = line.split()
            name = fields[2]
            if name in disks and not name.startswith(("loop", "ram", "zram")):
                total += int(fields[9]) * 512  # sectors written, always 512-byte units
    return float(total)


def snapshot(processes: Processes, counters: Counters | None = None) -> Snapshot:
    snap = Snapshot()
    for group, proc in processes():
        try:
            t = proc.cpu_times()
            snap.procs[proc.pid] = (group, float(t.user + t.system))
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue  # it ended between the listing and the reading: its CPU is lost
    if counters is not None:
        snap.counters = counters()
    snap.counters["disk_bytes"] = disk_bytes_written()
    return snap


def costs(before: Snapshot, after: Snapshot, commands: int) -> dict[str, object]:
    """CPU per group (and `all`) and counter deltas: totals and per acked command.

    A process that appears between the snapshots counts from zero (it started in
    the window); one that ended in between is lost (PostgreSQL's short-lived
    autovacuum workers, say), so the CPU figures are a lower bound.
    """
    cpu: dict[str, float] = {}
    for pid, (group, seconds) in after.procs.items():
        base = before.procs.get(pid)
        if base is not None and base[0] != group:
            base = None
        cpu[group] = cpu.get(group, 0.0) + seconds - (base[1] if base else 0.0)
    cpu["all"] = sum(cpu.values())
    deltas = {k: after.counters[k] - v for k, v in before.counters.items() if k in after.counters}
    per = 1 / commands if commands else 0.0
    result: dict[str, object] = {
        "commands": commands,
        "cpu_s": {k: round(v, 4) for k, v in cpu.items()},
        "cpu_us_per_command": {k: round(v * 1e6 * per, 1) for k, v in cpu.items()},
        "counters": {k: round(v, 1) for k, v in deltas.items()},
        "per_command": {k: round(v * per, 3) for k, v in deltas.items()},
    }
    return result
