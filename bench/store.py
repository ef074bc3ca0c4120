"""`python -m bench.store`: the stores alone, PostgreSQL beside SQLite in one run.

N rooms at once, each going through a negotiation's commits one after the
other (each waits for the previous one's ack, as a room's commands do):
create, join, propose, counter, accept, then a fresh room. The commits are
shaped like the service's (sealed-looking event bodies, both seats, the
idempotency record with its ack, optionally webhook messages) and go through
the real `PostgresStore` and `SQLiteStore`. PostgreSQL is a throwaway server
started with tests/pg.py's `PostgresServer` (fsync on, `synchronous_commit`
on, as the store sets it), with pg_stat_statements loaded.

Per store it prints commits/s and, per commit: the client process's CPU
(microseconds, the event loop's cost of a commit), PostgreSQL's CPU (all its
processes), round trips (asyncpg calls that wait for the server, counted
around asyncpg's Connection methods), top-level statements
(pg_stat_statements), transactions (pg_stat_database.xact_commit) and WAL
bytes (pg_wal_lsn_diff). The last line is one JSON object with every figure.

    .venv/bin/python -m bench.store [--rooms 50] [--seconds 10] [--pool-size 10]
        [--webhooks 0] [--stores postgres,sqlite]

To measure another checkout's store with this script (before/after in one run):
`PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/store.py ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import psutil

if __package__ in (None, ""):  # run as a file (another checkout first on PYTHONPATH)
    sys.path.append(str(Path(__file__).resolve().parents[1]))

from settlement.ids import new_connection_id, token_hash
from settlement.store import open_store
from settlement.store.base import Commit, IdempotencyRecord, OutboxRow
from tests.pg import PostgresServer, find_bindir

STEPS = ("created", "joined", "proposed", "countered", "accepted")
STATUS = {
    "created": "awaiting_counterparty",
    "joined": "negotiating",
    "proposed": "offer_pending",
    "countered": "offer_pending",
    "accepted": "settled",
}


def event(cid: str, seq: int, kind: str) -> dict[str, Any]:
    """An event about the size of a sealed one (hashes, amounts, a timestamp)."""
    body: dict[str, Any] = {
        "connection_id": cid,
        "seq": seq,
        "type": kind,
        "at": "2026-12-04T18:00:00.000Z",
        "party": "A" if seq % 2 else "B",
        "prev_hash": secrets.token_hex(32),
        "hash": secrets.token_hex(32),
    }
    if kind in ("proposed", "countered", "accepted"):
        body.update(amount="1234.56", currency="EUR", memo="invoice 2026-0042")
    return body


def ack_of(cid: str, seq: int) -> str:
    """An ack with its snapshot (the record kept for a replay): ~1 KB."""
    snapshot = {
        "connection_id": cid,
        "seq": seq,
        "status": "offer_pending",
        "parties": {"A": {"online": True}, "B": {"online": True}},
        "offers": [{"amount": "1234.56", "by": "A", "seq": s} for s in range(1, seq + 1)],
        "hash": secrets.token_hex(32),
    }
    return json.dumps({"ok": True, "connection_id": cid, "state": snapshot}, separators=(",", ":"))


def commit_for(cid: str, step: int, endpoints: int) -> Commit:
    kind = STEPS[step]
    seq = step + 1
    events = [event(cid, seq, kind)]
    seats: dict[str, str | None] = {}
    if kind == "created":
        seats = {"A": token_hash(secrets.token_hex(16)), "B": None}
        scope = "server"
    elif kind == "joined":
        seats = {"B": token_hash(secrets.token_hex(16))}
        scope = f"conn:{cid}"
    else:
        scope = f"seat:{cid}:{'A' if seq % 2 else 'B'}"
    nonce = secrets.token_hex(16) if seats else None
    record = IdempotencyRecord(
        scope, secrets.token_urlsafe(16), cid, secrets.token_hex(16), ack_of(cid, seq), nonce
    )
    now = time.time()
    outbox = [
        OutboxRow(cid, seq, f"https://hooks{n}.example/settlement", json.dumps(events[0]), now)
        for n in range(endpoints)
    ]
    return Commit(
        connection_id=cid,
        base_seq=step,
        events=events,
        status=STATUS[kind],
        currency="EUR",
        seats=seats,
        idempotency=record,
        outbox=outbox,
    )


# -- round trips: every asyncpg call that waits for the server ---------------

ROUND_TRIPS = 0
_COUNTED = ("execute", "executemany", "fetch", "fetchval", "fetchrow", "fetchmany")


def count_round_trips() -> None:
    """Wrap asyncpg's Connection methods (transactions call `execute` too)."""
    for name in _COUNTED:
        original = getattr(asyncpg.Connection, name)

        def wrapper(
            self: Any, *args: Any, __original: Callable[..., Awaitable[Any]] = original, **kw: Any
        ) -> Awaitable[Any]:
            global ROUND_TRIPS
            ROUND_TRIPS += 1
            return __original(self, *args, **kw)

        setattr(asyncpg.Connection, name, wrapper)


# -- the load -------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered))))]


async def drive(
    store: Any, rooms: int, seconds: float, endpoints: int
) -> tuple[int, float, dict[str, float]]:
    """`rooms` negotiations at once for `seconds`; (commits acked, elapsed, latency ms)."""
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    async def room_loop() -> None:
        while time.perf_counter() < stop:
            cid = new_connection_id()
            for step in range(len(STEPS)):
                change = commit_for(cid, step, endpoints)
                t0 = time.perf_counter()
                await store.commit(change)
                latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(room_loop() for _ in range(rooms)))
    elapsed = time.perf_counter() - start
    ms = {f"p{q}_ms": round(percentile(latencies, q) * 1e3, 2) for q in (50, 99)}
    return len(latencies), elapsed, ms


def server_cpu(server: PostgresServer) -> float:
    """CPU seconds of the postmaster and its live children."""
    pid = int((server.data / "postmaster.pid").read_text().split()[0])
    main = psutil.Process(pid)
    total = 0.0
    for p in [main, *main.children()]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


HISTORY = """
INSERT INTO rooms (connection_id, currency, status, seq)
SELECT substr(x, 1, 4) || '-' || substr(x, 5, 4) || '-' || substr(x, 9, 4), 'EUR', 'settled', 5
FROM (SELECT (SELECT string_agg(substr('0123456789ABCDEFGHJKMNPQRSTVWXYZ',
            1 + floor(random() * 32)::int, 1), '') FROM generate_series(1, 12 + 0 * i)) AS x
    FROM generate_series(1, $1) AS i) AS ids
ON CONFLICT DO NOTHING;
INSERT INTO events ({room}connection_id, seq, type, body)
    SELECT {room}connection_id, s, 'proposed', '{{}}' FROM rooms, generate_series(1, 5) AS s;
INSERT INTO seats ({room}connection_id, party, token_hash)
    SELECT {room}connection_id, p, md5(connection_id || p)
    FROM rooms, unnest('{{A,B}}'::text[]) AS p;
INSERT INTO idempotency ({room}scope, request_id, connection_id, fingerprint, ack)
    SELECT {room}'seat:' || connection_id || ':A', md5(random()::text), connection_id, 'fp', '{{}}'
    FROM rooms, generate_series(1, 5);
"""


async def load_history(url: str, rooms: int) -> None:
    """`rooms` finished negotiations already in the tables (random ids, as the service's):
    what a database that has run for a while holds, and what its indexes span."""
    conn = await asyncpg.connect(url)
    try:
        numbered = await conn.fetchval(  # schema 5 and later: rooms have a number
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'rooms' AND column_name = 'room'"
        )
        for statement in HISTORY.format(room="room, " if numbered else "").split(";"):
            if statement.strip():
                await conn.execute(statement, *((rooms,) if "$1" in statement else ()))
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def pg_counters(url: str) -> tuple[int, int, int, int]:
    """(WAL position, top-level statements, committed transactions, full-page images)."""
    conn = await asyncpg.connect(url)
    try:
        fpi = await conn.fetchval("SELECT wal_fpi FROM pg_stat_wal")
        lsn = await conn.fetchval("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')")
        calls = await conn.fetchval(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
            "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        xacts = await conn.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
        return int(lsn), int(calls), int(xacts), int(fpi)
    finally:
        await conn.close()


async def run_postgres(server: PostgresServer, args: argparse.Namespace) -> dict[str, Any]:
    global ROUND_TRIPS
    name = f"bench_{secrets.token_hex(4)}"
    server.psql(f"CREATE DATABASE {name}")
    url = server.url_for(name)
    admin = await asyncpg.connect(url)
    await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    await admin.close()
    store: Any
    if args.max_batch is None and args.in_flight is None:
        store = open_store(url, pool_size=args.pool_size)
    else:  # group-commit settings (this checkout's store only)
        from settlement.store.postgres import PostgresStore

        tuning = {"max_batch": args.max_batch, "max_in_flight": args.in_flight}
        store = PostgresStore(
            url, pool_size=args.pool_size, **{k: v for k, v in tuning.items() if v is not None}
        )
    await store.open()
    try:
        if args.history:
            await load_history(url, args.history)
        await drive(store, args.rooms, min(2.0, args.seconds), args.webhooks)  # warm up
        await asyncio.sleep(0.5)
        if args.checkpoint:
            server.psql("CHECKPOINT", database=name)
        lsn0, calls0, x0, fpi0 = await pg_counters(url)
        ROUND_TRIPS = 0
        cpu0, srv0 = time.process_time(), server_cpu(server)
        done, elapsed, ms = await drive(store, args.rooms, args.seconds, args.webhooks)
        cpu1, srv1 = time.process_time(), server_cpu(server)
        trips = ROUND_TRIPS
        lsn1, calls1, x1, fpi1 = await pg_counters(url)
        # the counters' own statements and transactions (one connection, four
        # statements, four implicit transactions) are taken off
        return {
            "commits_per_s": round(done / elapsed, 1),
            "commits": done,
            "client_cpu_us": round((cpu1 - cpu0) / done * 1e6, 1),
            "server_cpu_us": round((srv1 - srv0) / done * 1e6, 1),
            "round_trips": round(trips / done, 2),
            "statements": round((calls1 - calls0 - 4) / done, 2),
            "transactions": round((x1 - x0 - 4) / done, 3),
            "wal_bytes": round((lsn1 - lsn0) / done),
            "full_page_images": round((fpi1 - fpi0) / done, 3),
            **ms,
        }
    finally:
        await store.close()


async def run_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        db = Path(tmp) / "settlement.db"
        store = open_store(f"sqlite:///{db}")
        await store.open()
        try:
            await drive(store, args.rooms, min(2.0, args.seconds), args.webhooks)
            cpu0 = time.process_time()
            done, elapsed, ms = await drive(store, args.rooms, args.seconds, args.webhooks)
            cpu1 = time.process_time()
        finally:
            await store.close()
    return {
        "commits_per_s": round(done / elapsed, 1),
        "commits": done,
        "client_cpu_us": round((cpu1 - cpu0) / done * 1e6, 1),  # incl. the writer thread
        **ms,
    }


def start_server() -> PostgresServer:
    bindir = find_bindir()
    if bindir is None:
        sys.exit("PostgreSQL server binaries not found (apt-get install postgresql, or PG_BINDIR)")
    server = PostgresServer(bindir)
    server.init()
    with (server.data / "postgresql.conf").open("a") as conf:
        conf.write("\nshared_preload_libraries = 'pg_stat_statements'\n")
    server.start_postgres()
    return server


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "rooms": args.rooms,
        "seconds": args.seconds,
        "pool_size": args.pool_size,
        "webhooks": args.webhooks,
        "history": args.history,
        "checkpoint": args.checkpoint,
        "max_batch": args.max_batch,
        "in_flight": args.in_flight,
    }
    kinds = args.stores.split(",")
    server = start_server() if "postgres" in kinds else None
    try:
        for _ in range(args.repeat):
            for kind in kinds:
                if kind == "postgres":
                    assert server is not None
                    figures = await run_postgres(server, args)
                elif kind == "sqlite":
                    figures = await run_sqlite(args)
                else:
                    sys.exit(f"unknown store {kind!r} (postgres, sqlite)")
                print(f"{kind:8} " + " ".join(f"{k}={v}" for k, v in figures.items()), flush=True)
                result.setdefault(kind, []).append(figures)
    finally:
        if server is not None:
            server.destroy()
    if "postgres" in result and "sqlite" in result:
        pg = sum(r["commits_per_s"] for r in result["postgres"])
        lite = sum(r["commits_per_s"] for r in result["sqlite"])
        result["ratio"] = round(pg / lite, 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rooms", type=int, default=50, help="negotiations at once")
    parser.add_argument("--seconds", type=float, default=10.0, help="per store and round")
    parser.add_argument("--pool-size", type=int, default=10, help="PostgreSQL connections")
    parser.add_argument("--max-batch", type=int, help="PostgreSQL commits per call")
    parser.add_argument("--in-flight", type=int, help="PostgreSQL calls at once")
    parser.add_argument("--webhooks", type=int, default=0, help="endpoints (outbox rows)")
    parser.add_argument(
        "--history", type=int, default=0, help="finished rooms loaded into PostgreSQL first"
    )
    parser.add_argument(
        "--checkpoint", action="store_true", help="CHECKPOINT just before the measured window"
    )
    parser.add_argument("--stores", default="postgres,sqlite")
    parser.add_argument("--repeat", type=int, default=1, help="rounds, stores interleaved")
    args = parser.parse_args()
    count_round_trips()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(main_async(args))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
