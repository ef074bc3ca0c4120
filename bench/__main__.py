"""`python -m bench [--quick] [--database postgresql] [--nodes 2]`: throughput, latency
and memory of the settlement server.

See bench/README.md. The last line printed is one JSON object:
`{"commands_per_s", "ceiling_per_s", "ratio", "p50_ms", "p99_ms", "rss_kib_per_socket", "sockets"}`,
plus `pg_*` and `pg2_*` fields for the PostgreSQL paths;
the whole result goes to bench/results/latest.json (`--out`).
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psutil

from . import figures
from .cluster import Backends, statement_mix
from .figures import fmt_costs, path_headline
from .meters import costs, snapshot
from .servers import ROOT, ServerProcess, start_ceiling, start_receiver, start_service
from .worker import COMMANDS_PER_NEGOTIATION, raise_nofile, worker_main

RESULTS = ROOT / "bench" / "results"
DOCS_PLOT = ROOT / "docs" / "bench-latency.png"
DOCS_PLOT_LIMIT = 100 * 1024


def log(msg: str) -> None:
    print(msg, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


class Workers:
    """The client processes and their pipes."""

    def __init__(self, count: int) -> None:
        ctx = mp.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[Any] = []
        for i in range(count):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=worker_main, args=(child, i), daemon=True)
            proc.start()
            self.conns.append(parent)
            self.procs.append(proc)
        self.ps = [psutil.Process(p.pid) for p in self.procs]

    def ask(
        self, msgs: list[dict[str, Any] | None], timeout: float = 300.0
    ) -> list[dict[str, Any]]:
        """Send each worker its message (None: skip it) and gather the replies."""
        asked = [(c, m) for c, m in zip(self.conns, msgs, strict=True) if m is not None]
        for conn, msg in asked:
            conn.send(msg)
        replies = []
        deadline = time.monotonic() + timeout
        for conn, msg in asked:
            if not conn.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"a worker did not answer {msg['op']!r} within {timeout}s")
            reply = conn.recv()
            if not reply.get("ok"):
                raise RuntimeError(f"worker failed {msg['op']!r}: {reply.get('error')}")
            replies.append(reply)
        return replies

    def stop(self) -> None:
        for conn in self.conns:
            try:
                conn.send({"op": "exit"})
            except OSError:
                pass
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workers = Workers(args.workers)
        self.failures: list[str] = []

    # -- one measured window ------------------------------------------------

    def window(
        self,
        server: ServerProcess,
        pairs: int,
        duration: float,
        *,
        rate: float | None = None,
    ) -> dict[str, Any]:
        """Open the pairs' sockets, drive them for warm-up + duration, close them."""
        a = self.args
        shares = split(pairs, len(self.workers.conns))
        self.workers.ask(
            [
                {"op": "open", "url": server.url, "url_b": server.url_b, "pairs": n} if n else None
                for n in shares
            ]
        )
        time.sleep(0.2)
        t_start = time.monotonic() + 0.2
        t0 = t_start + a.warmup
        t1 = t0 + duration
        msgs: list[dict[str, Any] | None] = []
        for n in shares:
            if not n:
                msgs.append(None)
                continue
            # Offered load `rate` commands/s over all pairs: one command per pair every
            # pairs/rate seconds.
            interval = pairs / rate if rate else None
            msgs.append(
                {
                    "op": "run",
                    "t_start": t_start,
                    "t0": t0,
                    "t1": t1,
                    "interval": interval,
                    "latency": rate is not None,
                    "sign": a.sign or getattr(server, "sign", False),
                }
            )
        for conn, msg in zip(self.workers.conns, msgs, strict=True):
            if msg is not None:
                conn.send(msg)
        _sleep_until(t0)
        snap0 = snapshot(server.processes, server.counters)
        s0, m0, c0 = server.cpu_seconds(), psutil.cpu_times(), time.monotonic()
        _sleep_until(t1)
        s1, m1, c1 = server.cpu_seconds(), psutil.cpu_times(), time.monotonic()
        snap1 = snapshot(server.processes, server.counters)
        rss = server.rss()
        replies = []
        for conn, msg in zip(self.workers.conns, msgs, strict=True):
            if msg is None:
                continue
            if not conn.poll(duration + 120):
                raise RuntimeError("a worker did not finish its run")
            reply = conn.recv()
            if not reply.get("ok"):
                raise RuntimeError(f"worker run failed: {reply.get('error')}")
            replies.append(reply)
        self.workers.ask([{"op": "close"} if n else None for n in shares])
        time.sleep(0.3)  # let the server settle the disconnects before the next window
        wall = c1 - c0
        ok_acks = sum(r["ok_acks"] for r in replies)
        rtts = [x for r in replies for x in r["rtts"]]
        lat = [x for r in replies for x in r["latencies"]]
        errors: dict[str, int] = {}
        for r in replies:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        busy0 = m0.user + m0.system + m0.nice + getattr(m0, "softirq", 0) + m0.irq
        busy1 = m1.user + m1.system + m1.nice + getattr(m1, "softirq", 0) + m1.irq
        result = {
            "server": server.name.split("[")[0],
            "pairs": pairs,
            "seconds": round(wall, 3),
            "commands_per_s": round(ok_acks / duration, 1),
            "negotiations_per_s": round(sum(r["negotiations"] for r in replies) / duration, 1),
            "ack_p50_ms": round(percentile(rtts, 50), 3),
            "ack_p99_ms": round(percentile(rtts, 99), 3),
            "server_cpu_pct": round((s1 - s0) / wall * 100, 1),
            "client_cpu_pct": [round(r["cpu_s"] / wall * 100, 1) for r in replies],
            "machine_cpu_pct": round((busy1 - busy0) / wall * 100, 1),
            "machine_cpus": psutil.cpu_count(),
            "server_rss_mib": round(rss / 2**20, 1),
            "errors": errors,
            "dead_pairs": sum(r["dead_pairs"] for r in replies),
        }
        result["client_cpu_total_pct"] = round(sum(result["client_cpu_pct"]), 1)
        server_cpu_s = s1 - s0
        result["commands_per_cpu_s"] = round(ok_acks / server_cpu_s, 1) if server_cpu_s else 0.0
        # Per acked command: CPU of every server process (node(s), PostgreSQL, Redis,
        # nginx), disk writes, database statements, WAL bytes, Redis commands.
        result["costs"] = spent = costs(snap0, snap1, ok_acks)
        cpu_s: dict[str, float] = spent["cpu_s"]  # type: ignore[assignment]
        result["server_group_cpu_pct"] = {k: round(v / wall * 100, 1) for k, v in cpu_s.items()}
        # Whatever else ran on the machine meanwhile (it is shared): busy minus ours.
        result["other_cpu_pct"] = round(
            max(
                0.0,
                result["machine_cpu_pct"]
                - result["server_group_cpu_pct"]["all"]
                - result["client_cpu_total_pct"],
            ),
            1,
        )
        if rate is not None:
            result.update(
                offered_per_s=round(rate, 1),
                p50_ms=round(percentile(lat, 50), 3),
                p90_ms=round(percentile(lat, 90), 3),
                p99_ms=round(percentile(lat, 99), 3),
                max_ms=round(max(lat), 3) if lat else float("nan"),
                samples=len(lat),
            )
        if errors or result["dead_pairs"]:
            self.failures.append(
                f"{result['server']} {pairs} pairs: unexpected errors {errors}, "
                f"{result['dead_pairs']} pairs stopped"
            )
        return result

    # -- memory per idle socket ---------------------------------------------

    def scale(self, server: ServerProcess, sockets: int) -> dict[str, Any]:
        pairs = sockets // 2
        n = len(self.workers.conns)
        # Warm the code paths (one pair through a whole negotiation), then measure.
        self.window(server, 1, 0.5)
        time.sleep(0.5)
        before = _median_rss(server)
        shares = split(pairs, n)
        started = time.monotonic()
        c0 = server.cpu_seconds()
        opened = self.workers.ask(
            [
                {"op": "open", "url": server.url, "url_b": server.url_b, "pairs": k} if k else None
                for k in shares
            ]
        )
        seated = self.workers.ask([{"op": "seat"} if k else None for k in shares])
        setup = time.monotonic() - started
        c1 = server.cpu_seconds()
        errors: dict[str, int] = {}
        for r in seated:
            for k, v in r["errors"].items():
                errors[k] = errors.get(k, 0) + v
        if errors:
            self.failures.append(f"{server.name} scale: unexpected errors {errors}")
        time.sleep(self.args.idle_settle)
        i0, w0 = server.cpu_seconds(), time.monotonic()
        after = _median_rss(server)
        idle_cpu = (server.cpu_seconds() - i0) / (time.monotonic() - w0)
        client_rss = sum(r["rss"] for r in seated)
        self.workers.ask([{"op": "close"} if k else None for k in shares])
        connected = sum(r["sockets"] for r in opened)
        return {
            "server": server.name.split("[")[0],
            "sockets": connected,
            "rooms": sum(r["ok_acks"] for r in seated) // 2,
            "rss_before_mib": round(before / 2**20, 1),
            "rss_after_mib": round(after / 2**20, 1),
            "kib_per_socket": round((after - before) / 1024 / max(1, connected), 2),
            "setup_s": round(setup, 2),
            "setup_server_cpu_pct": round((c1 - c0) / setup * 100, 1),
            "idle_server_cpu_pct": round(idle_cpu * 100, 1),
            "client_rss_mib": round(client_rss / 2**20, 1),
            "errors": errors,
        }


def _sleep_until(at: float) -> None:
    delay = at - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _median_rss(server: ServerProcess) -> int:
    samples = []
    for _ in range(3):
        samples.append(server.rss())
        time.sleep(0.33)
    return int(statistics.median(samples))


def fmt_cpu(r: dict[str, Any]) -> str:
    clients = "+".join(f"{c:.0f}" for c in r["client_cpu_pct"])
    groups = r.get("server_group_cpu_pct", {})
    extra = "".join(f" +{k} {v:.0f}%" for k, v in groups.items() if k not in ("node", "all"))
    return (
        f"cpu server {r['server_cpu_pct']:.0f}%{extra} clients {clients}="
        f"{r['client_cpu_total_pct']:.0f}% other {r['other_cpu_pct']:.0f}% "
        f"(machine {r['machine_cpu_pct']:.0f}%/{r['machine_cpus'] * 100}%)"
    )


def profile_server(
    server: ServerProcess, bench: Bench, seconds: float, out: Path, name: str = "profile"
) -> Path | None:
    """py-spy on the server while 50 pairs run; returns the collapsed-stack file."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        log("profile: py-spy not installed (pip install -r bench/requirements.txt)")
        return None
    import subprocess

    raw = out / f"{name}.txt"
    svg = out / f"{name}.svg"
    procs = []
    for fmt, path in (("raw", raw), ("flamegraph", svg)):
        procs.append(
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "--pid",
                    str(server.pid),
                    "--duration",
                    str(int(seconds)),
                    "--rate",
                    "200",
                    "--nonblocking",
                    "--threads",
                    "--format",
                    fmt,
                    "--output",
                    str(path),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        if fmt == "raw":
            time.sleep(0.5)
    r = bench.window(server, 50, seconds - 1)
    log(f"  (profiled run: {r['commands_per_s']:.0f} commands/s, {fmt_cpu(r)})")
    (out / f"{name}.json").write_text(json.dumps({**r, "profile_s": int(seconds)}))
    for p in procs:
        p.wait(60)
    return raw if raw.exists() else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short run, 2,000 sockets, < 60 s")
    p.add_argument("--workers", type=int, default=2, help="client processes (default 2)")
    p.add_argument("--pairs", help="concurrent pairs for throughput (50,200)")
    p.add_argument("--duration", type=float, help="seconds per throughput window")
    p.add_argument("--rounds", type=int, help="service/ceiling window pairs per concurrency")
    p.add_argument("--latency-duration", type=float, help="seconds per latency window")
    p.add_argument("--latency-pairs", type=int, default=50)
    p.add_argument("--loads", help="fractions of max throughput (0.1,0.25,0.5,0.75)")
    p.add_argument("--sockets", type=int, help="idle sockets for the memory run")
    p.add_argument("--no-ceiling-latency", action="store_true")
    p.add_argument("--profile", type=float, default=0, help="py-spy the server for N seconds")
    p.add_argument(
        "--profile-ceiling",
        action="store_true",
        help="with --profile: py-spy the ceiling too (profile-ceiling.txt), for bench.compare",
    )
    p.add_argument("--server-arg", action="append", default=[], help="extra app.py argument")
    p.add_argument(
        "--webhooks",
        action="store_true",
        help="run a webhook endpoint (bench.receiver) and give the service --webhook-url",
    )
    p.add_argument(
        "--sign",
        action="store_true",
        help="protocol 1.1: every seat has a key and every propose/respond is signed",
    )
    p.add_argument(
        "--database",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="postgresql: also a node on a throwaway PostgreSQL, beside the SQLite one",
    )
    p.add_argument(
        "--nodes",
        type=int,
        choices=(1, 2),
        default=1,
        help="2 (implies postgresql): also two nodes with Redis behind nginx",
    )
    p.add_argument(
        "--sign-ab",
        action="store_true",
        help="throughput: the SQLite node also with every seat signing, in adjacent windows",
    )
    p.add_argument("--skip", default="", help="phases to leave out: latency,scale")
    p.add_argument("--update-docs-plot", action="store_true", help="copy the small plot to docs/")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (bench/results)")
    args = p.parse_args(argv)
    if args.nodes > 1:
        args.database = "postgresql"
    on_pg = args.database == "postgresql"
    # Quick PostgreSQL runs: 50 pairs and half load only, so that they stay near a minute.
    if args.loads is None:
        args.loads = "0.5" if args.quick and on_pg else "0.1,0.25,0.5,0.75"
    if args.pairs is None:
        args.pairs = "50" if args.quick and on_pg else "50,200"
    args.warmup = 0.5 if args.quick else 2.0
    args.duration = args.duration or (2.5 if args.quick else 6.0)
    # Five rounds: the median ratio then shrugs off one or two windows that the
    # shared machine disturbed (with three, one bad window in two moved it).
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.latency_duration = args.latency_duration or (2.0 if args.quick else 8.0)
    args.sockets = args.sockets or (2_000 if args.quick else 10_000)
    args.idle_settle = 0.5 if args.quick else 3.0
    if args.quick:
        args.no_ceiling_latency = True
    pair_counts = [int(x) for x in args.pairs.split(",")]
    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    loads = [float(x) for x in args.loads.split(",")]
    if args.workers < 2:
        p.error("use at least 2 client processes")

    soft, hard = raise_nofile()
    need = args.sockets + 200
    if soft < need:
        log(f"warning: open-file limit {soft} < {need}; memory run reduced")
        args.sockets = max(2, (soft - 200) // 2 * 2)

    began = time.monotonic()
    results: Path = args.out
    results.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_before": os.getloadavg(),
        },
        "config": {
            "workers": args.workers,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "latency_duration_s": args.latency_duration,
            "latency_pairs": args.latency_pairs,
            "commands_per_negotiation": COMMANDS_PER_NEGOTIATION,
            "server_args": args.server_arg,
            "nofile": soft,
            "database": args.database,
            "nodes": args.nodes,
        },
        "throughput": [],
        "latency": [],
        "scale": [],
    }
    bench = Bench(args)
    tmp = Path(tempfile.mkdtemp(prefix="settlement-bench-"))
    servers: list[Any] = []  # ServerProcess or PgPath (bench/cluster.py)
    backends: Backends | None = None
    try:
        log(f"bench: {args.workers} client processes, temp folder {tmp}")
        if args.webhooks:
            receiver = start_receiver(tmp, "receiver")
            servers.append(receiver)
            args.server_arg.append(f"--webhook-url={receiver.url}/hook")
            result["config"]["webhooks"] = True
        service = start_service(tmp, "service", args.server_arg)
        ceiling = start_ceiling(tmp, "ceiling")
        servers += [service, ceiling]
        paths: list[Any] = []  # the PostgreSQL paths, measured beside the SQLite node
        if on_pg:
            backends = Backends(tmp)
            paths.append(backends.one_node("pg", args.server_arg))
            servers.append(paths[-1])
            if args.nodes == 2:
                paths.append(backends.two_nodes("pg2", args.server_arg))
                servers.append(paths[-1])
            for path in paths:
                log(f"{path.name}: {len(path.nodes)} node(s) on PostgreSQL; {path.spread}")
            result["config"]["spread"] = {path.name: path.spread for path in paths}
        targets_tp = [service, *paths, ceiling]
        if args.sign_ab:
            # The same SQLite node, every seat signing, in windows beside the unsigned
            # ones: the cost of the signature checks, with the machine's drift shared.
            signed = copy.copy(service)
            signed.name, signed.sign = "signed[service]", True  # type: ignore[attr-defined]
            targets_tp.insert(1, signed)

        # Throughput: every target back to back at each concurrency (service,
        # the PostgreSQL paths, ceiling), in `rounds` adjacent sets of windows
        # (order alternating), so that what else the shared machine does hits
        # every side of each ratio alike.
        log(
            f"throughput (durable commands acked per second, whole negotiations), "
            f"{args.rounds} round(s) of {args.duration:g} s:"
        )
        summary: dict[str, dict[str, Any]] = {}
        mix0 = {path.name: path.statement_calls() for path in paths}
        for pairs in pair_counts:
            rows: list[dict[str, Any]] = []
            for rnd in range(args.rounds):
                for server in targets_tp if rnd % 2 == 0 else targets_tp[::-1]:
                    r = bench.window(server, pairs, args.duration)
                    r["round"] = rnd
                    result["throughput"].append(r)
                    rows.append(r)
                    log(
                        f"  {r['server']:8s} {pairs:4d} pairs: {r['commands_per_s']:8.0f} "
                        f"commands/s ack p50 {r['ack_p50_ms']:.2f} ms p99 {r['ack_p99_ms']:.2f} "
                        f"ms | {fmt_cpu(r)}\n           {fmt_costs(r['costs'])}"
                    )
            summary[str(pairs)] = figures.summarize(rows)
        result["summary"] = summary
        ratios = {k: v["ratio"] for k, v in summary.items()}
        result["ratios"] = ratios
        log(
            "  ratio service/ceiling (median of rounds): "
            + ", ".join(
                f"{k} pairs {v['ratio']} (rounds {', '.join(str(x) for x in v['round_ratios'])})"
                for k, v in summary.items()
            )
            + "; per server CPU-second: "
            + ", ".join(
                f"{k} pairs {v['service_per_cpu_s']:.0f} vs {v['ceiling_per_cpu_s']:.0f} "
                f"= {v['cpu_ratio']}"
                for k, v in summary.items()
            )
        )
        # Which statements, over the whole throughput phase (warm-ups included),
        # scaled to the statements per command of the windows at pairs[0].
        result["pg_statement_mix"] = mix = {
            path.name: statement_mix(
                mix0[path.name],
                path.statement_calls(),
                summary[str(pair_counts[0])]["costs"][path.name]["per_command"]["pg_statements"],
            )
            for path in paths
        }
        for name, statements in mix.items():
            log(f"  {name}: statements per command (the commonest, throughout the phase):")
            for m in statements:
                log(f"    {m['per_command']:6.2f}  {m['query'][:110]}")
        for k, v in summary.items():
            if "signed" in v:
                e = v["signed"]
                log(
                    f"  signed {k} pairs: {e['per_s']:.0f} commands/s, /unsigned "
                    f"{e['vs_unsigned']} (rounds {', '.join(str(x) for x in e['round_vs_unsigned'])}); "
                    f"per server CPU-second {e['per_cpu_s']:.0f}, /unsigned {e['cpu_vs_unsigned']}"
                )
            for name, e in v["paths"].items():
                vs = ", ".join(
                    f"/{label} {e[f'vs_{label}']} (rounds "
                    f"{', '.join(str(x) for x in e[f'round_vs_{label}'])})"
                    for label in ("sqlite", "pg", "ceiling")
                    if f"vs_{label}" in e
                )
                log(f"  {name} {k} pairs: {e['per_s']:.0f} commands/s, {vs}")

        # Latency: fixed offered loads, fractions of the service's maximum at pairs[0]
        # (for the ceiling too); a PostgreSQL path gets fractions of its own maximum.
        base = pair_counts[0]
        max_rate = summary[str(base)]["service_per_s"]
        own_max = {p.name: summary[str(base)]["paths"][p.name]["per_s"] for p in paths}
        if "latency" not in skip:
            log(
                f"latency (A's propose sent -> B's socket has the new state), "
                f"{args.latency_pairs} pairs, offered load as a fraction of {max_rate:.0f} "
                "commands/s"
                + "".join(f" ({k}: of its own {v:.0f}/s)" for k, v in own_max.items())
                + ":"
            )
        lat_targets = [service, *paths] + ([] if args.no_ceiling_latency else [ceiling])
        for frac in [] if "latency" in skip else loads:
            for server in lat_targets:
                rate = frac * own_max.get(server.name, max_rate)
                r = bench.window(server, args.latency_pairs, args.latency_duration, rate=rate)
                r["fraction"] = frac
                result["latency"].append(r)
                log(
                    f"  {r['server']:8s} {frac:4.0%} offered {r['offered_per_s']:6.0f}/s achieved "
                    f"{r['commands_per_s']:6.0f}/s: p50 {r['p50_ms']:.2f} ms p90 {r['p90_ms']:.2f} "
                    f"ms p99 {r['p99_ms']:.2f} ms (n={r['samples']}) | {fmt_cpu(r)}"
                )
        if args.profile:
            log(f"profile: py-spy on the service for {args.profile:.0f} s at {base} pairs")
            raw = profile_server(service, bench, args.profile, results)
            if raw is not None:
                from .profile import summarize

                prof = summarize(raw, top=15, rate=200, seconds=int(args.profile))
                result["profile"] = prof
                for line in prof["text"]:
                    log("  " + line)
            if args.profile_ceiling:
                log(f"profile: py-spy on the ceiling for {args.profile:.0f} s at {base} pairs")
                profile_server(ceiling, bench, args.profile, results, "profile-ceiling")
        for s in targets_tp:
            s.stop()
        servers[:] = [s for s in servers if s not in targets_tp]  # a receiver stays

        # Memory: fresh processes, N idle sockets in N/2 rooms.
        if "scale" not in skip:
            log(f"memory: {args.sockets} idle sockets in {args.sockets // 2} rooms, fresh servers:")
        scale_runs: list[Any] = [
            lambda: start_service(tmp, "service-scale", args.server_arg),
            lambda: start_ceiling(tmp, "ceiling-scale"),
        ]
        if backends is not None:  # one fresh node on a fresh database (not the two-node path)
            scale_runs.append(lambda: backends.one_node("pgscale", args.server_arg))
        for start in () if "scale" in skip else scale_runs:
            server = start()
            servers.append(server)
            r = bench.scale(server, args.sockets)
            result["scale"].append(r)
            log(
                f"  {r['server']:8s} {r['sockets']} sockets {r['rooms']} rooms: "
                f"{r['kib_per_socket']:.1f} KiB/socket (RSS {r['rss_before_mib']} -> "
                f"{r['rss_after_mib']} MiB), set up in {r['setup_s']} s at "
                f"{r['setup_server_cpu_pct']:.0f}% server cpu, idle {r['idle_server_cpu_pct']:.0f}%"
            )
            server.stop()
            servers.remove(server)
    except Exception as exc:
        bench.failures.append(f"{type(exc).__name__}: {exc}")
        for s in servers:
            log(f"--- {s.name} log tail ---\n{s.log_tail()}")
        raise
    finally:
        for s in servers:
            s.stop()
        bench.workers.stop()
        if backends is not None:
            backends.close()
        shutil.rmtree(tmp, ignore_errors=True)

    service_lat = [r for r in result["latency"] if r["server"] == "service"]
    lat_half = min(service_lat, key=lambda r: abs(r["fraction"] - 0.5), default=None)
    scale = {r["server"]: r for r in result["scale"]}
    scale_service = scale.get("service")
    headline = {
        "commands_per_s": summary[str(base)]["service_per_s"],
        "ceiling_per_s": summary[str(base)]["ceiling_per_s"],
        "ratio": ratios.get(str(base)),
        "p50_ms": lat_half["p50_ms"] if lat_half else None,
        "p99_ms": lat_half["p99_ms"] if lat_half else None,
        "rss_kib_per_socket": scale_service["kib_per_socket"] if scale_service else None,
        "sockets": scale_service["sockets"] if scale_service else None,
    }
    headline.update(path_headline(result, str(base)))
    if "signed" in summary[str(base)]:
        signed = summary[str(base)]["signed"]
        headline["signed_per_s"] = signed["per_s"]
        headline["signed_vs_unsigned"] = signed["vs_unsigned"]
        headline["signed_cpu_vs_unsigned"] = signed["cpu_vs_unsigned"]
    result["headline"] = headline
    targets: dict[str, bool] = {
        f"ratio_{k}_pairs>=0.7": v is not None and v >= 0.7 for k, v in ratios.items()
    }
    if lat_half is not None:
        targets[f"p99_at_{lat_half['fraction']:.0%}_of_max<10ms"] = lat_half["p99_ms"] < 10
    if scale_service is not None:
        targets["rss_per_socket<=40KiB"] = scale_service["kib_per_socket"] <= 40
    result["targets"] = targets
    if "ceiling" in scale:
        result["ceiling_kib_per_socket"] = scale["ceiling"]["kib_per_socket"]
    result["failures"] = bench.failures
    result["elapsed_s"] = round(time.monotonic() - began, 1)
    (results / "latest.json").write_text(json.dumps(result, indent=2) + "\n")
    try:
        if not result["latency"]:
            raise LookupError("no latency run")
        from .plot import plot

        full, small = plot(result, results)
        log(f"plot: {full} ({full.stat().st_size // 1024} KiB), {small}")
        if args.update_docs_plot:
            if small.stat().st_size < DOCS_PLOT_LIMIT:
                shutil.copyfile(small, DOCS_PLOT)
                log(f"plot: copied to {DOCS_PLOT}")
            else:
                log(f"plot: {small} is over 100 KB; docs/ left alone")
    except ImportError:
        log("plot: matplotlib not installed (pip install -r bench/requirements.txt)")
    except LookupError:
        log("plot: skipped (no latency run)")
    log(
        "targets: "
        + ", ".join(f"{k} {'PASS' if v else 'MISS'}" for k, v in result["targets"].items())
    )
    for f in bench.failures:
        log(f"FAILURE: {f}")
    log(f"results: {results / 'latest.json'} ({result['elapsed_s']} s)")
    print(json.dumps(headline), flush=True)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
