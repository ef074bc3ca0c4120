"""The store contract, run against every backend through the interface only.

`sqlite` uses a file in tmp_path; `postgres` a fresh database on a real server
(tests/pg.py). Tests at the end are PostgreSQL-only: outages, migrations, the
unknown-commit-outcome path.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from settlement.store import (
    Commit,
    Conflict,
    IdempotencyRecord,
    Store,
    Unavailable,
    open_store,
)
from settlement.store.postgres import MIGRATIONS, PostgresStore, SchemaTooNew, migrate
from tests.store.conftest import Stores

# -- helpers ------------------------------------------------------------------


def ev(cid: str, seq: int, type_: str = "proposed", **extra: Any) -> dict[str, Any]:
    return {"connection_id": cid, "seq": seq, "type": type_, "hash": f"h{seq}", **extra}


def new_room(
    cid: str,
    *,
    seats: dict[str, str | None] | None = None,
    idem: IdempotencyRecord | None = None,
    status: str = "awaiting_offer",
) -> Commit:
    return Commit(
        connection_id=cid,
        base_seq=0,
        events=[ev(cid, 1, "created", party="A", currency="USD")],
        status=status,
        currency="USD",
        seats=seats if seats is not None else {"A": "hashA", "B": None},
        idempotency=idem,
    )


def step(
    cid: str,
    base: int,
    n: int = 1,
    *,
    status: str = "offer_pending",
    seats: dict[str, str | None] | None = None,
    idem: IdempotencyRecord | None = None,
    **extra: Any,
) -> Commit:
    return Commit(
        connection_id=cid,
        base_seq=base,
        events=[ev(cid, base + i, **extra) for i in range(1, n + 1)],
        status=status,
        currency="USD",
        seats=seats or {},
        idempotency=idem,
    )


def rec(scope: str, request_id: str, cid: str, nonce: str | None = None) -> IdempotencyRecord:
    return IdempotencyRecord(scope, request_id, cid, f"fp-{request_id}", '{"ok":true}', nonce)


@pytest.fixture
async def pg(pg_database: Any) -> AsyncIterator[Stores]:
    s = Stores("postgres", pg_database)
    try:
        yield s
    finally:
        await s.close_all()


# -- the contract, on every backend --------------------------------------------


async def test_commit_and_load(store: Store) -> None:
    assert await store.load_room("nope") is None
    await store.commit(new_room("r1"))
    odd: dict[str, Any] = {
        "reason": "é€😀 <b>&\u0000\n\"'",
        "big": 2**63 - 1,
        "neg": -(2**63),
        "f": 1.5,
    }
    await store.commit(step("r1", 1, 2, nested={"a": [1, None, True]}, **odd))
    room = await store.load_room("r1")
    assert room is not None
    assert room.token_hashes == {"A": "hashA", "B": None}
    assert room.events == [
        ev("r1", 1, "created", party="A", currency="USD"),
        ev("r1", 2, nested={"a": [1, None, True]}, **odd),
        ev("r1", 3, nested={"a": [1, None, True]}, **odd),
    ]
    assert await store.load_room("r2") is None


async def test_seats_are_upserted(store: Store) -> None:
    await store.commit(new_room("r1"))
    await store.commit(step("r1", 1, seats={"B": "hashB"}, type_="joined"))
    await store.commit(step("r1", 2, seats={"A": None}, type_="left"))
    room = await store.load_room("r1")
    assert room is not None and room.token_hashes == {"A": None, "B": "hashB"}


async def test_conflict_same_base_seq_leaves_no_trace(store: Store) -> None:
    await store.commit(new_room("r1"))
    await store.commit(
        step("r1", 1, seats={"B": "winner"}, idem=rec("seat:r1:A", "win", "r1"), who="winner")
    )
    with pytest.raises(Conflict):
        await store.commit(
            step(
                "r1", 1, 2, seats={"B": "loser", "A": "loser"}, idem=rec("seat:r1:A", "lose", "r1"),
                who="loser", status="settled",
            )
        )  # fmt: skip
    room = await store.load_room("r1")
    assert room is not None
    assert [e["seq"] for e in room.events] == [1, 2]  # no fork, no seq 3
    assert room.events[1]["who"] == "winner"
    assert room.token_hashes == {"A": "hashA", "B": "winner"}
    assert await store.idempotency("seat:r1:A", "lose") is None
    assert await store.idempotency("seat:r1:A", "win") is not None
    assert await store.count_open_rooms() == 1  # the loser's status did not land
    # and the room goes on from the winner's seq
    await store.commit(step("r1", 2))
    assert len(await store.events("r1", 0, 100)) == 3


async def test_conflict_on_duplicate_idempotency_key(store: Store) -> None:
    await store.commit(new_room("r1", idem=rec("server", "k" * 22, "r1", "nonce1")))
    with pytest.raises(Conflict):  # the same key for another new room: nothing of it lands
        await store.commit(new_room("r2", idem=rec("server", "k" * 22, "r2", "nonce2")))
    assert await store.load_room("r2") is None
    assert await store.count_open_rooms() == 1
    got = await store.idempotency("server", "k" * 22)
    assert got == rec("server", "k" * 22, "r1", "nonce1")

    await store.commit(step("r1", 1, idem=rec("seat:r1:A", "p1", "r1")))
    with pytest.raises(Conflict):  # same key, same room, next seq: refused whole
        await store.commit(step("r1", 2, idem=rec("seat:r1:A", "p1", "r1")))
    assert [e["seq"] for e in await store.events("r1", 0, 10)] == [1, 2]
    await store.commit(step("r1", 2))  # rooms.seq did not move either


async def test_new_room_with_existing_id_conflicts(store: Store) -> None:
    await store.commit(new_room("r1", seats={"A": "first", "B": None}))
    with pytest.raises(Conflict):
        await store.commit(new_room("r1", seats={"A": "second", "B": "second"}))
    room = await store.load_room("r1")
    assert room is not None
    assert room.token_hashes == {"A": "first", "B": None}
    assert len(room.events) == 1


async def test_events_paging(store: Store) -> None:
    await store.commit(new_room("r1"))
    await store.commit(step("r1", 1, 9))
    await store.commit(new_room("r2"))

    async def seqs(after: int, limit: int) -> list[int]:
        return [e["seq"] for e in await store.events("r1", after, limit)]

    assert await seqs(0, 3) == [1, 2, 3]
    assert await seqs(3, 3) == [4, 5, 6]
    assert await seqs(9, 5) == [10]
    assert await seqs(10, 5) == []
    assert await seqs(-5, 2) == [1, 2]
    assert await seqs(2**62, 10) == []
    assert await seqs(0, 0) == []
    assert await store.events("nope", 0, 10) == []
    assert [e["connection_id"] for e in await store.events("r2", 0, 10)] == ["r2"]


async def test_idempotency_lookup(store: Store) -> None:
    await store.commit(new_room("r1", idem=rec("server", "create-key-0000000000001", "r1", "n")))
    await store.commit(step("r1", 1, idem=rec("seat:r1:A", "p-1", "r1")))
    assert await store.idempotency("server", "create-key-0000000000001") == rec(
        "server", "create-key-0000000000001", "r1", "n"
    )
    got = await store.idempotency("seat:r1:A", "p-1")
    assert got is not None and got.token_nonce is None and got.ack == '{"ok":true}'
    assert await store.idempotency("seat:r1:B", "p-1") is None
    assert await store.idempotency("seat:r1:A", "p-2") is None


async def test_count_open_rooms_and_ping(store: Store) -> None:
    assert await store.ping() is True
    assert await store.count_open_rooms() == 0
    for cid in ("r1", "r2", "r3"):
        await store.commit(new_room(cid))
    await store.commit(step("r2", 1, status="settled", type_="accepted"))
    assert await store.count_open_rooms() == 2


async def test_a_value_out_of_range_is_unavailable_and_changes_nothing(store: Store) -> None:
    await store.commit(new_room("r1"))
    bad = step("r1", 1)
    bad.events[0]["seq"] = 2**63  # beyond a 64-bit column
    with pytest.raises(Unavailable):
        await store.commit(bad)
    await store.commit(step("r1", 1))  # the store (and its pool) is fine
    assert [e["seq"] for e in await store.events("r1", 0, 10)] == [1, 2]


async def test_durable_across_close_and_reopen(stores: Stores) -> None:
    first = await stores.open()
    await first.commit(new_room("r1", idem=rec("server", "k" * 30, "r1", "nonce")))
    await first.commit(step("r1", 1, seats={"B": "hashB"}))
    before = await first.load_room("r1")
    await stores.close(first)
    again = await stores.open()
    assert await again.load_room("r1") == before
    assert await again.idempotency("server", "k" * 30) is not None
    assert await again.count_open_rooms() == 1
    await again.commit(step("r1", 2))


async def test_racing_commits_from_two_instances_one_winner_per_seq(stores: Stores) -> None:
    a, b = await stores.open(), await stores.open()
    await a.commit(new_room("r1"))
    racers, rounds = 16, 8
    winners: list[str] = []
    for base in range(1, rounds + 1):
        attempts = [
            (a if i % 2 else b).commit(
                step("r1", base, idem=rec("seat:r1:A", f"{base}-{i}", "r1"), who=f"{base}-{i}")
            )
            for i in range(racers)
        ]
        results = await asyncio.gather(*attempts, return_exceptions=True)
        won = [f"{base}-{i}" for i, r in enumerate(results) if r is None]
        assert len(won) == 1, results
        assert all(isinstance(r, Conflict) for r in results if r is not None), results
        winners += won
    for store in (a, b):
        room = await store.load_room("r1")
        assert room is not None
        assert [e["seq"] for e in room.events] == list(range(1, rounds + 2))
        assert [e["who"] for e in room.events[1:]] == winners
    for w in winners:
        assert await b.idempotency("seat:r1:A", w) is not None
    lost = [f"{base}-{i}" for base in range(1, rounds + 1) for i in range(racers)]
    for key in set(lost) - set(winners):
        assert await a.idempotency("seat:r1:A", key) is None


async def test_reload_and_retry_workers_never_fork(stores: Stores) -> None:
    """The service's loop (load, decide on base_seq, commit, on Conflict reload) from two pools."""
    a, b = await stores.open(), await stores.open()
    await a.commit(new_room("r1"))
    workers, each = 8, 6

    async def worker(store: Store, name: str) -> int:
        conflicts = 0
        for k in range(each):
            while True:
                room = await store.load_room("r1")
                assert room is not None
                base = room.events[-1]["seq"]
                try:
                    await store.commit(step("r1", base, who=f"{name}-{k}"))
                    break
                except Conflict:
                    conflicts += 1
        return conflicts

    await asyncio.gather(*(worker(a if i % 2 else b, f"w{i}") for i in range(workers)))
    room = await a.load_room("r1")
    assert room is not None
    assert [e["seq"] for e in room.events] == list(range(1, workers * each + 2))
    whos = [e["who"] for e in room.events[1:]]
    assert sorted(whos) == sorted(f"w{i}-{k}" for i in range(workers) for k in range(each))


async def test_same_bytes_on_both_backends(tmp_path: Path, pg: Stores) -> None:
    """`events.body` is the same text in SQLite and PostgreSQL: hashes verify across a move."""
    change = step("r1", 1, reason="é\u0000😀", big=2**63 - 1, x=0.1)
    lite = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    await lite.open()
    try:
        await lite.commit(new_room("r1"))
        await lite.commit(change)
    finally:
        await lite.close()
    post = await pg.open()
    await post.commit(new_room("r1"))
    await post.commit(change)
    with sqlite3.connect(tmp_path / "a.db") as db:
        lite_rows = db.execute("SELECT connection_id, seq, type, body FROM events").fetchall()
    conn = await asyncpg.connect(pg.url)
    try:
        pg_rows = [
            tuple(r)
            for r in await conn.fetch(
                "SELECT connection_id, seq, type, body FROM events ORDER BY seq"
            )
        ]
    finally:
        await conn.close()
    assert sorted(lite_rows) == pg_rows
    assert pg_rows[1][3] == orjson.dumps(change.events[0]).decode()


# -- PostgreSQL only ----------------------------------------------------------


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_outage_then_recovery_without_restart(pg: Stores, mode: str) -> None:
    """`fast`: clients are told (admin shutdown) and cut; `immediate`: links just drop."""
    store = await pg.open(pool_size=3)
    await store.commit(new_room("r1"))
    # warm several pooled connections so stale ones exist after the restart
    await asyncio.gather(*(store.load_room("r1") for _ in range(6)))
    pg.url.stop_postgres(mode)  # type: ignore[attr-defined]
    try:
        assert await store.ping() is False
        with pytest.raises(Unavailable):
            await store.commit(step("r1", 1, who="during-outage"))
        with pytest.raises(Unavailable):
            await store.load_room("r1")
        with pytest.raises(Unavailable):
            await store.events("r1", 0, 10)
        with pytest.raises(Unavailable):
            await store.idempotency("x", "y")
        with pytest.raises(Unavailable):
            await store.count_open_rooms()
    finally:
        pg.url.start_postgres()  # type: ignore[attr-defined]
    # the same instance, no reopen: every pooled connection must work again
    results = await asyncio.gather(
        *(store.commit(new_room(f"after-{i}")) for i in range(6)), return_exceptions=True
    )
    assert results == [None] * 6
    await store.commit(step("r1", 1, who="after-outage"))
    assert await store.ping() is True
    room = await store.load_room("r1")
    assert room is not None
    assert [e.get("who") for e in room.events] == [None, "after-outage"]
    assert await store.count_open_rooms() == 7


async def test_postgres_restart_while_idle_is_invisible(pg: Stores) -> None:
    """The server restarts between commands: the next ones just work, on the same pool."""
    store = await pg.open(pool_size=4)
    await asyncio.gather(*(store.commit(new_room(f"r{i}")) for i in range(8)))  # warm 4 conns
    for _ in range(2):
        pg.url.stop_postgres()  # type: ignore[attr-defined]
        pg.url.start_postgres()  # type: ignore[attr-defined]
        results = await asyncio.gather(
            *(store.commit(step(f"r{i}", 1 + _)) for i in range(8)),
            *(store.load_room(f"r{i}") for i in range(8)),
            return_exceptions=True,
        )
        assert not [r for r in results if isinstance(r, BaseException)], results
    assert await store.ping() is True


async def test_postgres_open_fails_clearly(postgres_url: Any) -> None:
    from tests.pg import _free_port

    url = f"postgresql://someone:s3cret@127.0.0.1:{_free_port()}/nothing"
    store = PostgresStore(url, connect_timeout=2)
    with pytest.raises(Unavailable) as info:
        await store.open()
    assert "cannot open the PostgreSQL store" in str(info.value)
    assert "s3cret" not in str(info.value) and "someone:***@" in str(info.value)
    assert await store.ping() is False
    with pytest.raises(Unavailable):
        await store.commit(new_room("r1"))
    await store.close()

    missing = postgres_url.server.url_for("no_such_database")
    with pytest.raises(Unavailable, match="no_such_database"):
        await PostgresStore(missing).open()


async def test_pool_size_bounds_connections_and_queues(pg: Stores) -> None:
    store = await pg.open(pool_size=2)
    await asyncio.gather(*(store.commit(new_room(f"r{i}")) for i in range(40)))
    assert await store.count_open_rooms() == 40
    conn = await asyncpg.connect(pg.url)
    try:
        n = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'settlement' AND datname = current_database()"
        )
    finally:
        await conn.close()
    assert n <= 2


async def test_migrations_create_schema_like_sqlite(pg: Stores, tmp_path: Path) -> None:
    await pg.open()
    conn = await asyncpg.connect(pg.url)
    try:
        assert await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == str(
            len(MIGRATIONS)
        )
        rows = await conn.fetch(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"
        )
        pg_cols: dict[str, list[str]] = {}
        for r in rows:
            pg_cols.setdefault(r["table_name"], []).append(r["column_name"])
        assert await migrate(conn) == (len(MIGRATIONS), len(MIGRATIONS))  # a no-op now
    finally:
        await conn.close()
    lite = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    await lite.open()
    await lite.close()
    with sqlite3.connect(tmp_path / "a.db") as db:
        tables = [t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        lite_cols = {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})")] for t in tables}
    # The same columns, room numbers included (SQLite's schema 4, PostgreSQL's
    # migration 5, which added them last): keys start with a number in order of
    # creation rather than the random connection id.
    for t in ("rooms", "events", "seats", "idempotency"):
        assert lite_cols[t][0] == "room" and pg_cols[t][-1] == "room"
        del lite_cols[t][0]
        del pg_cols[t][-1]
    # The outbox: SQLite's messages are keyed by room number (and rowid), PostgreSQL's by id.
    assert (lite_cols["webhooks"].pop(0), pg_cols["webhooks"].pop(0)) == ("room", "id")
    assert pg_cols == lite_cols


def test_migration_command_line(pg_database: Any) -> None:
    import subprocess
    import sys

    def run() -> str:
        out = subprocess.run(
            [sys.executable, "-m", "settlement.store.postgres", str(pg_database)],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
            cwd=Path(__file__).resolve().parents[2],
        )
        return out.stdout.strip()

    v = len(MIGRATIONS)
    assert run().endswith(f"schema version 0 -> {v}")
    assert run().endswith(f"schema version {v} -> {v}")


async def test_migrations_concurrent_nodes_and_upgrades(pg: Stores) -> None:
    # many nodes starting at once on an empty database: all open, schema made once
    await asyncio.gather(*(pg.open(pool_size=1) for _ in range(8)))
    conn = await asyncpg.connect(pg.url)
    try:
        extra = (*MIGRATIONS, "ALTER TABLE rooms ADD COLUMN note TEXT")
        racers = [asyncpg.connect(pg.url) for _ in range(4)]
        conns = await asyncio.gather(*racers)
        try:
            results = await asyncio.gather(*(migrate(c, extra) for c in conns))
        finally:
            await asyncio.gather(*(c.close() for c in conns))
        v = len(MIGRATIONS)
        assert sorted(results) == [(v, v + 1)] + [(v + 1, v + 1)] * 3  # applied exactly once
        assert await conn.fetchval("SELECT value FROM meta WHERE key='schema_version'") == str(
            v + 1
        )
        # this release now meets a newer schema: refuse to open
        with pytest.raises(SchemaTooNew, match="newer"):
            await PostgresStore(pg.url).open()
    finally:
        await conn.close()


async def test_failed_migration_rolls_back_whole(pg: Stores) -> None:
    conn = await asyncpg.connect(pg.url)
    try:
        with pytest.raises(asyncpg.PostgresError):
            await migrate(conn, (*MIGRATIONS, "CREATE TABLE broken (x nonsense_type)"))
        assert await conn.fetchval("SELECT to_regclass('rooms')") is None
        assert await migrate(conn) == (0, len(MIGRATIONS))
    finally:
        await conn.close()


class _LostAfterCommit(PostgresStore):
    """The call reaches the server and commits, then the link breaks before the answer."""

    async def _send(self, conn: Any, args: Any) -> list[bool]:
        written = await super()._send(conn, args)
        raise ConnectionResetError(f"link lost after the commit ({written})")


class _LostBeforeCommit(PostgresStore):
    """The link breaks with the call unsent: nothing happens on the server."""

    async def _send(self, conn: Any, args: Any) -> list[bool]:
        raise ConnectionResetError("link lost before the call")


class _LostOtherWon(PostgresStore):
    """While our call's fate is unknown, another writer took the seq."""

    other: Callable[[], Any]

    async def _send(self, conn: Any, args: Any) -> list[bool]:
        await self.other()
        raise TimeoutError("the call timed out")


async def test_commit_outcome_unknown_is_resolved(pg: Stores) -> None:
    plain = await pg.open()
    await plain.commit(new_room("r1"))

    after = _LostAfterCommit(pg.url)
    await after.open()
    pg.open_ones.append(after)
    await after.commit(step("r1", 1, who="after"))  # it did commit: success, not Unavailable
    before = _LostBeforeCommit(pg.url)
    await before.open()
    pg.open_ones.append(before)
    with pytest.raises(Unavailable, match="nothing committed"):
        await before.commit(step("r1", 2, who="before"))
    other = _LostOtherWon(pg.url)
    other.other = lambda: plain.commit(step("r1", 2, who="other"))
    await other.open()
    pg.open_ones.append(other)
    with pytest.raises(Conflict):
        await other.commit(step("r1", 2, who="mine"))
    room = await plain.load_room("r1")
    assert room is not None
    assert [e.get("who") for e in room.events] == [None, "after", "other"]


# -- SQLite: the WAL is checkpointed off the commit path -----------------------


async def test_sqlite_checkpoints_the_wal_in_its_own_thread_and_keeps_it_bounded(
    tmp_path: Path,
) -> None:
    from settlement.store.sqlite import CHECKPOINT_EVERY, WAL_PAGES_LIMIT

    db = tmp_path / "settlement.db"
    wal = tmp_path / "settlement.db-wal"
    store = open_store(f"sqlite:///{db}")
    await store.open()
    try:
        empty = db.stat().st_size
        rooms = [f"r{i}" for i in range(40)]
        await asyncio.gather(*(store.commit(new_room(cid)) for cid in rooms))
        commits = len(rooms)
        for base in range(1, 25):  # batches of 40 commits, many checkpoints' worth
            await asyncio.gather(
                *(
                    store.commit(step(cid, base, idem=rec(f"seat:{cid}:A", f"k{base}", cid)))
                    for cid in rooms
                )
            )
            commits += len(rooms)
        assert commits >= 10 * CHECKPOINT_EVERY
        for _ in range(50):  # the last checkpoint may still be running
            if db.stat().st_size > empty:
                break
            await asyncio.sleep(0.05)
        # Pages reached the database file while the store was open: a checkpoint ran.
        assert db.stat().st_size > 10 * empty
        assert wal.stat().st_size < (WAL_PAGES_LIMIT + 1_000) * 4_200
        loaded = await store.load_room("r7")
        assert loaded is not None and [e["seq"] for e in loaded.events] == list(range(1, 26))
    finally:
        await store.close()


# The tables of SQLite files written before schema 4, as those servers made them.
SCHEMA_1 = """
    CREATE TABLE rooms (connection_id TEXT PRIMARY KEY, currency TEXT NOT NULL,
        status TEXT NOT NULL, seq INTEGER NOT NULL);
    CREATE TABLE events (connection_id TEXT NOT NULL, seq INTEGER NOT NULL,
        type TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (connection_id, seq))
        WITHOUT ROWID;
    CREATE TABLE seats (connection_id TEXT NOT NULL, party TEXT NOT NULL, token_hash TEXT,
        PRIMARY KEY (connection_id, party)) WITHOUT ROWID;
    CREATE TABLE idempotency (scope TEXT NOT NULL, request_id TEXT NOT NULL,
        connection_id TEXT NOT NULL, fingerprint TEXT NOT NULL, ack TEXT NOT NULL,
        token_nonce TEXT, PRIMARY KEY (scope, request_id)) WITHOUT ROWID;
    CREATE INDEX idempotency_room ON idempotency (connection_id);
"""
SCHEMA_3 = """
    CREATE TABLE rooms (connection_id TEXT PRIMARY KEY, currency TEXT NOT NULL,
        status TEXT NOT NULL, seq INTEGER NOT NULL);
    CREATE TABLE events (connection_id TEXT NOT NULL, seq INTEGER NOT NULL,
        type TEXT NOT NULL, body TEXT NOT NULL, UNIQUE (connection_id, seq));
    CREATE TABLE seats (connection_id TEXT NOT NULL, party TEXT NOT NULL, token_hash TEXT,
        PRIMARY KEY (connection_id, party)) WITHOUT ROWID;
    CREATE TABLE idempotency (scope TEXT NOT NULL, request_id TEXT NOT NULL,
        connection_id TEXT NOT NULL, fingerprint TEXT NOT NULL, ack TEXT NOT NULL,
        token_nonce TEXT, UNIQUE (scope, request_id));
    CREATE INDEX rooms_open ON rooms (status) WHERE status != 'settled';
"""


def _old_file(db: Path, version: int, tables: str) -> dict[str, Any]:
    """A file as a server of `version` left it: rooms r2 then r1 (created in that
    order), r1 with two events, both seats and two idempotency records."""
    old = sqlite3.connect(db)
    old.executescript(
        "PRAGMA journal_mode = WAL;"
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        f"INSERT INTO meta VALUES ('schema_version', '{version}');" + tables
    )
    created = ev("r1", 1, "created", party="A", currency="USD")
    proposed = ev("r1", 2)
    r2 = ev("r2", 1, "created", party="A", currency="EUR")
    old.execute("INSERT INTO rooms VALUES ('r2', 'EUR', 'awaiting_offer', 1)")
    old.execute("INSERT INTO rooms VALUES ('r1', 'USD', 'offer_pending', 2)")
    for e in (created, proposed, r2):
        old.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?)",
            (e["connection_id"], e["seq"], e["type"], orjson.dumps(e).decode()),
        )
    old.execute("INSERT INTO seats VALUES ('r1', 'A', 'hashA'), ('r1', 'B', NULL)")
    old.execute(
        "INSERT INTO idempotency VALUES ('server', ?, 'r1', 'fp', '{\"ok\":true}', 'nonce')",
        ("c" * 22,),
    )
    old.execute(
        "INSERT INTO idempotency VALUES ('seat:r1:A', 'p1', 'r1', 'fp-p1', '{\"ok\":true}', NULL)"
    )
    old.commit()
    old.close()
    return {"created": created, "proposed": proposed}


@pytest.mark.parametrize(("version", "tables"), [(1, SCHEMA_1), (3, SCHEMA_3)])
async def test_sqlite_files_before_schema_4_are_migrated_with_every_row(
    tmp_path: Path, version: int, tables: str
) -> None:
    """Files of schema 1 (WITHOUT ROWID tables, an index on idempotency(connection_id))
    and of schema 3 (keys by connection id) open with all their rows, numbered."""
    from settlement.store.sqlite import SCHEMA_VERSION

    db = tmp_path / "old.db"
    rows = _old_file(db, version, tables)
    store = open_store(f"sqlite:///{db}")
    await store.open()
    try:
        loaded = await store.load_room("r1")
        assert loaded is not None
        assert [e["seq"] for e in loaded.events] == [1, 2]
        assert loaded.events[1] == rows["proposed"]
        assert loaded.token_hashes == {"A": "hashA", "B": None}
        assert [(r.scope, r.request_id) for r in loaded.idempotency] == [("seat:r1:A", "p1")]
        assert (await store.idempotency("server", "c" * 22)) == IdempotencyRecord(
            "server", "c" * 22, "r1", "fp", '{"ok":true}', "nonce"
        )
        assert (await store.idempotency("seat:r1:A", "p1")) is not None
        with pytest.raises(Conflict):  # (room, seq) is still unique
            await store.commit(step("r1", 1))
        await store.commit(step("r1", 2, idem=rec("seat:r1:A", "p2", "r1")))
        with pytest.raises(Conflict):  # (scope, request_id) is still unique
            await store.commit(step("r1", 3, idem=rec("seat:r1:A", "p2", "r1")))
        with pytest.raises(Conflict):  # and so is a create's request_id
            await store.commit(new_room("r3", idem=rec("server", "c" * 22, "r3")))
        assert [e["seq"] for e in await store.events("r1", 0, 10)] == [1, 2, 3]
        assert await store.count_open_rooms() == 2
    finally:
        await store.close()
    check = sqlite3.connect(db)
    try:
        tables_now = dict(check.execute("SELECT name, sql FROM sqlite_master WHERE type='table'"))
        assert not [t for t in tables_now if t.endswith("_v4")]
        for t in ("rooms", "events", "seats", "idempotency"):
            assert next(iter(check.execute(f"PRAGMA table_info({t})")))[1] == "room"
        # Numbered in the order the rooms were created.
        assert check.execute("SELECT connection_id FROM rooms ORDER BY room").fetchall() == [
            ("r2",),
            ("r1",),
        ]
        indexes = {r[0] for r in check.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        assert {"rooms_open", "idempotency_create"} <= indexes
        assert "idempotency_room" not in indexes
        version_now = check.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'"
        ).fetchone()
        assert version_now == (str(SCHEMA_VERSION),) == ("5",)
        assert "webhooks" in tables_now  # schema 5: the outbox, empty
    finally:
        check.close()


async def test_sqlite_migration_stops_on_a_row_of_no_room_and_changes_nothing(
    tmp_path: Path,
) -> None:
    """An event of a room that does not exist cannot be numbered: the server
    refuses to start rather than drop it, and the file stays as it was."""
    db = tmp_path / "old.db"
    _old_file(db, 3, SCHEMA_3)
    with sqlite3.connect(db) as old:
        old.execute("INSERT INTO events VALUES ('ghost', 1, 'created', '{}')")
    store = open_store(f"sqlite:///{db}")
    with pytest.raises(RuntimeError, match="names no room"):
        await store.open()
    assert _version_and_events(db) == ("3", 4)
    with sqlite3.connect(db) as check:
        columns = [c[1] for c in check.execute("PRAGMA table_info(rooms)")]
    assert columns == ["connection_id", "currency", "status", "seq"]


def _version_and_events(db: Path) -> tuple[str, int]:
    """What a refused file still says: its schema version and how many events it holds."""
    check = sqlite3.connect(db)
    try:
        (version,) = check.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        (events,) = check.execute("SELECT COUNT(*) FROM events").fetchone()
    finally:
        check.close()
    return version, events


async def test_sqlite_refuses_a_file_of_a_newer_schema_and_leaves_it_alone(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    store = open_store(f"sqlite:///{db}")
    await store.open()
    await store.commit(new_room("r1"))
    await store.close()
    newer = sqlite3.connect(db)
    newer.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    newer.commit()
    newer.close()
    again = open_store(f"sqlite:///{db}")
    with pytest.raises(RuntimeError, match="newer"):
        await again.open()
    assert _version_and_events(db) == ("99", 1)
