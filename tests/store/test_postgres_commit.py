"""PostgreSQL's commit in one call (migration 4), its group commit and its room
numbers (migration 5): a batch where one room moved on, a unique violation
inside a batch, a call orphaned on the server by a lost link, and the migration
from schema 3 with data in it (every row kept, numbered; a row of no room stops
it with nothing changed)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest

from settlement.store import Conflict, OutboxRow, Unavailable
from settlement.store.postgres import MIGRATIONS, PostgresStore, migrate
from tests.store.conftest import Stores
from tests.store.test_store import new_room, rec, step


class _Counting(PostgresStore):
    """Records how many commits each call carried."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []

    async def _send(self, conn: Any, args: Any) -> list[bool]:
        self.calls.append(len(args[0]))
        return await super()._send(conn, args)


async def _open(pg: Stores, store: PostgresStore) -> PostgresStore:
    await store.open()
    pg.open_ones.append(store)
    return store


@pytest.fixture
async def pg(pg_database: Any) -> Any:
    s = Stores("postgres", pg_database)
    try:
        yield s
    finally:
        await s.close_all()


async def test_a_batch_where_one_room_moved_on_fails_it_alone(pg: Stores) -> None:
    store = await _open(pg, _Counting(pg.url, max_in_flight=1))
    await asyncio.gather(*(store.commit(new_room(f"r{i}")) for i in range(5)))
    store.calls.clear()
    url = "https://hook.example/a"

    def with_message(change: Any) -> Any:
        change.outbox = [OutboxRow(change.connection_id, change.base_seq + 1, url, "{}", 1.0)]
        return change

    results = await asyncio.gather(
        store.commit(with_message(step("r0", 1, who="first"))),
        store.commit(with_message(step("r0", 2, who="second"))),  # its base is the one before
        store.commit(step("r1", 1)),
        store.commit(step("r2", 1)),
        store.commit(step("r3", 7)),  # r3 is at 1: it moved on from the 7 the command saw
        store.commit(step("r4", 1)),
        return_exceptions=True,
    )
    assert store.calls == [6]  # one call, one transaction
    assert [type(r).__name__ for r in results] == ["NoneType"] * 4 + ["Conflict", "NoneType"]
    r0 = await store.load_room("r0")
    assert r0 is not None and [e.get("who") for e in r0.events] == [None, "first", "second"]
    for cid, seqs in (("r1", [1, 2]), ("r3", [1]), ("r4", [1, 2])):
        assert [e["seq"] for e in await store.events(cid, 0, 10)] == seqs
    # r0's two messages share a queue: the first is due, the second waits behind it
    pending = await store.webhooks.pending()
    assert [(m.seq, m.next_attempt is not None) for m in pending] == [(2, True), (3, False)]


async def test_a_unique_violation_in_a_batch_fails_only_its_commit(pg: Stores) -> None:
    store = await _open(pg, _Counting(pg.url, max_in_flight=1))
    await store.commit(new_room("r0"))
    store.calls.clear()
    results = await asyncio.gather(
        store.commit(new_room("a1", idem=rec("server", "same-request", "a1"))),
        store.commit(new_room("a2", idem=rec("server", "same-request", "a2"))),
        store.commit(step("r0", 1)),
        return_exceptions=True,
    )
    # the batch failed as a whole, then each went again on its own
    assert store.calls == [3, 1, 1, 1]
    assert sorted(type(r).__name__ for r in results[:2]) == ["Conflict", "NoneType"]
    assert results[2] is None
    assert await store.count_open_rooms() == 2
    assert [e["seq"] for e in await store.events("r0", 0, 10)] == [1, 2]


class _LinkLostWhileWaiting(PostgresStore):
    """The call reaches the server, which waits for a row lock; then the link is lost.

    The server process goes on waiting and would commit once the lock is free."""

    orphans: list[asyncio.Task[Any]]
    armed = False

    async def _send(self, conn: Any, args: Any) -> list[bool]:
        if not self.armed:
            return await super()._send(conn, args)
        call = asyncio.create_task(super()._send(conn, args))
        self.orphans.append(call)
        await asyncio.sleep(0.5)
        assert not call.done()  # still waiting for the lock on the server
        raise ConnectionResetError("link lost while the call waits")


async def test_an_orphaned_call_is_ended_before_its_outcome_is_told(pg: Stores) -> None:
    store = await _open(pg, _LinkLostWhileWaiting(pg.url, max_batch=1))
    store.orphans = []
    await store.commit(new_room("r1"))
    store.armed = True
    holder = await asyncpg.connect(pg.url)
    try:
        tx = holder.transaction()
        await tx.start()
        await holder.execute("SELECT 1 FROM rooms WHERE connection_id = 'r1' FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(Unavailable, match="nothing committed"):
            await store.commit(step("r1", 1, who="orphan"))
        assert time.monotonic() - started < 4
        await tx.commit()  # the lock is free: an orphan still alive would commit now
        await asyncio.gather(*store.orphans, return_exceptions=True)
        await asyncio.sleep(0.3)
        assert await holder.fetchval("SELECT seq FROM rooms WHERE connection_id = 'r1'") == 1
        assert await holder.fetchval("SELECT count(*) FROM events") == 1
    finally:
        await holder.close()
    plain = await pg.open()
    await plain.commit(step("r1", 1, who="retry"))
    room = await plain.load_room("r1")
    assert room is not None and [e.get("who") for e in room.events] == [None, "retry"]


SCHEMA_3_ROWS = """
INSERT INTO rooms VALUES ('r2', 'EUR', 'x', 1), ('r1', 'USD', 'offer_pending', 2);
INSERT INTO events VALUES ('r1', 1, 'created', '{"seq":1}'),
    ('r1', 2, 'proposed', '{"seq":2}'), ('r2', 1, 'created', '{"seq":1}');
INSERT INTO seats VALUES ('r1', 'A', 'hashA'), ('r1', 'B', NULL);
INSERT INTO idempotency VALUES ('seat:r1:A', 'p1', 'r1', 'fp', '{"ok":true}', NULL),
    ('server', 'c1', 'r1', 'fp', '{"ok":true}', 'nonce');
INSERT INTO webhooks (connection_id, seq, endpoint, body, created, next_attempt)
    VALUES ('r1', 2, 'https://hook.example/a', '{}', 1.0, 1.0);
"""
TABLES = ("rooms", "events", "seats", "idempotency", "webhooks")


async def _rows(conn: Any, table: str) -> list[tuple[Any, ...]]:
    """A table's rows without the room number (the columns of schema 3)."""
    rows = await conn.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")
    return [tuple(v for k, v in r.items() if k != "room") for r in rows]


async def test_migration_from_schema_3_keeps_every_row_and_numbers_the_rooms(
    pg: Stores,
) -> None:
    """A database of schema 3 with rooms, events, seats, records and messages opens
    on today's schema with all of them, numbered, and its rooms go on from there."""
    conn = await asyncpg.connect(pg.url)
    try:
        assert await migrate(conn, MIGRATIONS[:3]) == (0, 3)
        await conn.execute(SCHEMA_3_ROWS)
        before = {t: await _rows(conn, t) for t in TABLES}
        store = await pg.open()
        version = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
        assert version == str(len(MIGRATIONS)) == "5"
        for table, rows in before.items():
            assert await _rows(conn, table) == rows, table
        numbers = dict(await conn.fetch("SELECT connection_id, room FROM rooms"))
        assert numbers == {"r2": 1, "r1": 2}  # in the order the rooms were created
        for table in ("events", "seats", "idempotency"):
            wrong = await conn.fetchval(
                f"SELECT count(*) FROM {table} AS t JOIN rooms AS r USING (connection_id) "
                "WHERE t.room <> r.room"
            )
            assert wrong == 0, table
    finally:
        await conn.close()
    room = await store.load_room("r1")
    assert room is not None and [e["seq"] for e in room.events] == [1, 2]
    assert room.token_hashes == {"A": "hashA", "B": None}
    assert sorted((r.scope, r.request_id) for r in room.idempotency) == [
        ("seat:r1:A", "p1"),
        ("server", "c1"),
    ]
    assert await store.idempotency("server", "c1") is not None
    assert await store.idempotency("seat:r1:A", "p1") is not None
    assert await store.idempotency("seat:r2:A", "p1") is None
    with pytest.raises(Conflict):  # (room, seq) is still unique
        await store.commit(step("r1", 1))
    with pytest.raises(Conflict):  # (scope, request_id) too
        await store.commit(step("r1", 2, idem=rec("seat:r1:A", "p1", "r1")))
    with pytest.raises(Conflict):  # and a create's request_id
        await store.commit(new_room("r3", idem=rec("server", "c1", "r3")))
    await store.commit(step("r1", 2, idem=rec("seat:r1:A", "p2", "r1")))
    await store.commit(new_room("r4"))
    assert [e["seq"] for e in await store.events("r1", 0, 10)] == [1, 2, 3]
    assert [m.seq for m in await store.webhooks.pending()] == [2]
    assert await store.count_open_rooms() == 3


async def test_migration_stops_on_an_event_of_no_room_and_changes_nothing(pg: Stores) -> None:
    conn = await asyncpg.connect(pg.url)
    try:
        await migrate(conn, MIGRATIONS[:3])
        await conn.execute(SCHEMA_3_ROWS)
        await conn.execute("INSERT INTO events VALUES ('ghost', 1, 'created', '{}')")
        with pytest.raises(asyncpg.NotNullViolationError):
            await migrate(conn)
        assert await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'") == "3"
        assert await conn.fetchval("SELECT count(*) FROM events") == 4
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'events'"
        )
        assert "room" not in {c[0] for c in columns}
    finally:
        await conn.close()
