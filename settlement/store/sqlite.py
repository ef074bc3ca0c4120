"""SQLite store: WAL, `synchronous=FULL`, one writer thread with group commit.

Commands queue their `Commit`s; the writer takes everything queued and writes
the lot as one statement in one transaction (see `_write_batch`); if any of
them conflicts, it writes them again one statement each, so that only the
losers fail. Then it resolves every caller's future. Nothing is acknowledged
before that COMMIT returns.

Per-room serialisation does not rely on this process: `events` has a unique
key `(room, seq)` and `rooms.seq` is updated only from the seq the
decision was made on, so a second process on the same file gets `Conflict`
and decides again on fresh state.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import structlog

from .base import (
    CREATE_SCOPE,
    Commit,
    Conflict,
    IdempotencyRecord,
    StoredRoom,
    Unavailable,
    outbox_heads,
    room_of_scope,
    room_scopes,
)
from .sqlite_outbox import INBOX_OUTBOX, WEBHOOKS, SQLiteWebhooks

# 2: no index on idempotency (connection_id): a room's records are read by
# their scopes, a prefix of the primary key (one page less written per command).
# 3: events and idempotency are rowid tables with a UNIQUE key instead of
# WITHOUT ROWID tables: their rows (an event's JSON, an ack's JSON) are large,
# and keyed by room they went into the middle of the table, splitting pages;
# now a row is appended and only its small key goes into the middle (the store
# alone: 69 -> 46 us per command).
# 4: every room has a number in order of creation (`rooms.room`), and the keys
# of events, seats and idempotency records start with it instead of the
# connection id. Connection ids are random (60 bits), so keyed by them the
# rooms being negotiated right now had their index entries on as many pages as
# there were rooms, and every batch wrote one page per command and index; keyed
# by number they sit together at the end of each index. Half the bytes written
# per command (WAL and checkpoints: 23 -> 12 KB at 2,900 commands/s), and with
# them the fsync and checkpoint stalls that set the p99 latency.
# 5: the webhook outbox (`webhooks`, sqlite_outbox.py), written with the events.
# Older files are migrated once on start (`_migrate`, then the new table).
SCHEMA_VERSION = 5
META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
TABLES = """
CREATE TABLE IF NOT EXISTS rooms{v} (
    room INTEGER PRIMARY KEY,
    connection_id TEXT NOT NULL UNIQUE,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events{v} (
    room INTEGER NOT NULL,
    connection_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    UNIQUE (room, seq)
);
CREATE TABLE IF NOT EXISTS seats{v} (
    room INTEGER NOT NULL,
    connection_id TEXT NOT NULL,
    party TEXT NOT NULL,
    token_hash TEXT,
    PRIMARY KEY (room, party)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency{v} (
    room INTEGER NOT NULL,
    scope TEXT NOT NULL,
    request_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    ack TEXT NOT NULL,
    token_nonce TEXT,
    UNIQUE (room, scope, request_id)
);
"""
# The scope of a seat or a join names its room, so (room, scope, request_id) is
# unique where (scope, request_id) is; `create` records share one scope and
# are found, and kept unique, by their request_id alone.
INDEXES = f"""
CREATE INDEX IF NOT EXISTS rooms_open ON rooms (status) WHERE status != 'settled';
CREATE UNIQUE INDEX IF NOT EXISTS idempotency_create ON idempotency (request_id)
    WHERE scope = '{CREATE_SCOPE}';
DROP INDEX IF EXISTS idempotency_room;
"""
# What a file before schema 4 holds, copied into the tables of today.
MIGRATE_TO_4 = """
INSERT INTO rooms_v4 (connection_id, currency, status, seq)
    SELECT connection_id, currency, status, seq FROM rooms ORDER BY rowid;
INSERT INTO events_v4 (room, connection_id, seq, type, body)
    SELECT r.room, e.connection_id, e.seq, e.type, e.body
    FROM events AS e LEFT JOIN rooms_v4 AS r USING (connection_id) ORDER BY r.room, e.seq;
INSERT INTO seats_v4 (room, connection_id, party, token_hash)
    SELECT r.room, s.connection_id, s.party, s.token_hash
    FROM seats AS s LEFT JOIN rooms_v4 AS r USING (connection_id);
INSERT INTO idempotency_v4
    (room, scope, request_id, connection_id, fingerprint, ack, token_nonce)
    SELECT r.room, i.scope, i.request_id, i.connection_id, i.fingerprint, i.ack, i.token_nonce
    FROM idempotency AS i LEFT JOIN rooms_v4 AS r USING (connection_id) ORDER BY r.room;
"""
MIGRATED = ("rooms", "events", "seats", "idempotency")

# A batch of commits goes in as one row of six JSON arrays (new rooms, moved
# rooms, events, seats, idempotency records, webhook messages), each a list of
# rows; the trigger
# writes them all, giving each row its room's number.
# Any row that breaks a rule (a room whose seq is no longer the one the decision
# was made on, a taken (room, seq), a used request_id) aborts the whole statement.
INBOX = """
CREATE TEMP VIEW IF NOT EXISTS inbox AS
  SELECT NULL AS new_rooms, NULL AS moves, NULL AS events, NULL AS seats, NULL AS keys,
    NULL AS outbox;
CREATE TEMP TRIGGER IF NOT EXISTS inbox_write INSTEAD OF INSERT ON inbox BEGIN
  SELECT RAISE(ABORT, 'a room moved on') FROM json_each(NEW.moves) AS m
    WHERE NOT EXISTS (
      SELECT 1 FROM rooms WHERE connection_id = m.value->>0 AND seq = m.value->>1);
  INSERT INTO rooms (connection_id, currency, status, seq)
    SELECT value->>0, value->>1, value->>2, value->>3 FROM json_each(NEW.new_rooms);
  UPDATE rooms SET seq = m.seq, status = m.status FROM (
    SELECT value->>0 AS cid, value->>2 AS seq, value->>3 AS status
    FROM json_each(NEW.moves)) AS m
    WHERE rooms.connection_id = m.cid;
  INSERT INTO events (room, connection_id, seq, type, body)
    SELECT (SELECT room FROM rooms WHERE connection_id = value->>0),
      value->>0, value->>1, value->>2, value->>3 FROM json_each(NEW.events);
  INSERT INTO seats (room, connection_id, party, token_hash)
    SELECT (SELECT room FROM rooms WHERE connection_id = value->>0),
      value->>0, value->>1, value->>2 FROM json_each(NEW.seats) WHERE true
    ON CONFLICT (room, party) DO UPDATE SET token_hash = excluded.token_hash;
  INSERT INTO idempotency
    (room, scope, request_id, connection_id, fingerprint, ack, token_nonce)
    SELECT (SELECT room FROM rooms WHERE connection_id = value->>2),
      value->>0, value->>1, value->>2, value->>3, value->>4, value->>5
    FROM json_each(NEW.keys);
{outbox}END;
""".replace("{outbox}", INBOX_OUTBOX)
INBOX_INSERT = (
    "INSERT INTO temp.inbox (new_rooms, moves, events, seats, keys, outbox) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)


def inbox_payload(batch: list[Commit]) -> tuple[str, str, str, str, str, str]:
    new_rooms: list[tuple[Any, ...]] = []
    moves: list[tuple[Any, ...]] = []
    events: list[tuple[Any, ...]] = []
    seats: list[tuple[Any, ...]] = []
    keys: list[tuple[Any, ...]] = []
    messages = [row for change in batch for row in change.outbox]
    for change in batch:
        cid = change.connection_id
        last_seq = change.events[-1]["seq"] if change.events else change.base_seq
        if not 0 <= change.base_seq <= last_seq < 2**63:  # SQLite's INTEGER is 64-bit
            raise OverflowError(f"{cid}: seq {last_seq} out of range")
        if change.base_seq == 0:
            new_rooms.append((cid, change.currency, change.status, last_seq))
        else:
            moves.append((cid, change.base_seq, last_seq, change.status))
        for e in change.events:
            events.append((e["connection_id"], e["seq"], e["type"], orjson.dumps(e).decode()))
        for party, token_hash in change.seats.items():
            seats.append((cid, party, token_hash))
        if change.idempotency is not None:
            keys.append(change.idempotency.row())
    outbox = [
        (m.connection_id, m.seq, m.endpoint, m.body, m.created, head)
        for m, head in zip(messages, outbox_heads(messages), strict=True)
    ]
    # Six parameters, not one array: each json_each parses only its own rows.
    return (
        orjson.dumps(new_rooms).decode(),
        orjson.dumps(moves).decode(),
        orjson.dumps(events).decode(),
        orjson.dumps(seats).decode(),
        orjson.dumps(keys).decode(),
        orjson.dumps(outbox).decode(),
    )


_STOP = object()
log = structlog.get_logger("settlement.store")


def _migrate(conn: sqlite3.Connection) -> None:
    """Schema 4: copy a file of schema 1-3 (no room numbers) into the tables of
    today, rows and all, in one transaction; a row that cannot be placed (an
    event, seat or record of no known room) stops it with nothing changed."""
    conn.execute("BEGIN IMMEDIATE")  # one process migrates; another then sees it done
    try:
        numbered = conn.execute(
            "SELECT 1 FROM pragma_table_info('rooms') WHERE name = 'room'"
        ).fetchone()
        if numbered is None:
            before = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in MIGRATED}
            for statement in (TABLES.format(v="_v4") + MIGRATE_TO_4).split(";"):
                if statement.strip():
                    try:
                        conn.execute(statement)
                    except sqlite3.IntegrityError as exc:
                        raise RuntimeError(
                            f"cannot migrate to schema 4: a row names no room ({exc}); "
                            "nothing was changed"
                        ) from exc
            for table in MIGRATED:
                after = conn.execute(f"SELECT COUNT(*) FROM {table}_v4").fetchone()[0]
                if after != before[table]:  # pragma: no cover - INSERT ... SELECT copies all
                    raise RuntimeError(f"migrating {table}: {before[table]} rows, {after} copied")
                conn.execute(f"DROP TABLE {table}")
                conn.execute(f"ALTER TABLE {table}_v4 RENAME TO {table}")
            log.info("schema_migrated", schema=4, **before)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _log_checkpoint_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        # Nothing is lost: the WAL keeps every commit; the next checkpoint retries.
        log.warning("checkpoint_failed", error=str(future.exception()))


# The WAL is copied back into the database by a PASSIVE checkpoint on its own
# connection and thread every CHECKPOINT_EVERY commits; once one has copied
# everything, the next commit starts the WAL over. SQLite's own checkpoint,
# which runs inside the commit that takes the WAL past its limit and holds that
# whole batch for the few milliseconds it takes (at the default 1,000 pages it
# set the p99 latency), is kept only as a bound: WAL_PAGES_LIMIT (about 40 MB),
# reached only if the checkpoint thread falls behind.
CHECKPOINT_EVERY = 50
WAL_PAGES_LIMIT = 10_000


class SQLiteStore:
    def __init__(
        self, path: str, *, max_batch: int = 256, on_outbox: Callable[[], None] | None = None
    ) -> None:
        self.path = path
        self.max_batch = max_batch
        self.on_outbox = on_outbox  # called after a commit that wrote webhook messages
        self.webhooks = SQLiteWebhooks(self._run_write, self._run_reader)
        self._write = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._read = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._ckpt = ThreadPoolExecutor(1, thread_name_prefix="sqlite-checkpoint")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._cconn: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._since_checkpoint = 0
        self._checkpointing: asyncio.Future[None] | None = None

    # -- life cycle ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _open_writer(self) -> None:
        if sqlite3.sqlite_version_info < (3, 38, 0):
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old: the store needs 3.38 or newer"
            )
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"SQLite refused WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(META + TABLES.format(v=""))
        found = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if found is not None and int(found[0]) > SCHEMA_VERSION:
            conn.close()
            raise RuntimeError(
                f"{self.path} has schema {found[0]}, newer than this server's "
                f"{SCHEMA_VERSION}: run the newer server (nothing was changed)"
            )
        _migrate(conn)
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'webhooks'").fetchone() is None:
            conn.executescript(WEBHOOKS)
            log.info("schema_migrated", schema=5, table="webhooks")
        conn.executescript(INDEXES)
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(SCHEMA_VERSION),),
        )
        conn.executescript(INBOX)
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_PAGES_LIMIT}")
        self._wconn = conn

    def _open_reader(self) -> None:
        self._rconn = self._connect()

    def _open_checkpointer(self) -> None:
        self._cconn = self._connect()

    def _checkpoint(self) -> None:
        """PASSIVE: copies what it can without waiting for (or blocking) the writer."""
        assert self._cconn is not None
        self._cconn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _checkpoint_soon(self, commits: int) -> None:
        self._since_checkpoint += commits
        if self._since_checkpoint < CHECKPOINT_EVERY:
            return
        if self._checkpointing is not None and not self._checkpointing.done():
            return  # one at a time; the next batch asks again
        self._since_checkpoint = 0
        future = asyncio.get_running_loop().run_in_executor(self._ckpt, self._checkpoint)
        future.add_done_callback(_log_checkpoint_failure)
        self._checkpointing = future

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._write, self._open_writer)
        await loop.run_in_executor(self._read, self._open_reader)
        await loop.run_in_executor(self._ckpt, self._open_checkpointer)
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-group-commit")

    async def close(self) -> None:
        if self._writer is not None:
            await self._queue.put(_STOP)
            await self._writer
            self._writer = None
        loop = asyncio.get_running_loop()
        if self._checkpointing is not None:
            await asyncio.wait([self._checkpointing])
        if self._cconn is not None:
            await loop.run_in_executor(self._ckpt, self._cconn.close)
        if self._rconn is not None:
            await loop.run_in_executor(self._read, self._rconn.close)
        if self._wconn is not None:  # the last to close checkpoints the WAL away
            await loop.run_in_executor(self._write, self._wconn.close)
        self._write.shutdown()
        self._read.shutdown()
        self._ckpt.shutdown()

    # -- writes -------------------------------------------------------------

    async def commit(self, change: Commit) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((change, future))
        await future

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            item = await self._queue.get()
            batch: list[tuple[Commit, asyncio.Future[None]]] = []
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    batch.append(item)
                if stopping or len(batch) >= self.max_batch or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if not batch:
                continue
            changes = [c for c, _ in batch]
            try:
                # The rows are serialised here, on the loop: Python work needs the
                # GIL wherever it runs, and the writer thread should not queue for it.
                payload = inbox_payload(changes)
                outcomes = await loop.run_in_executor(
                    self._write, self._write_batch, payload, changes
                )
            except BaseException as exc:  # the COMMIT itself failed: nothing is durable
                log.warning("commit_failed", error=str(exc), batch=len(batch))
                err = Unavailable(f"the database could not commit: {exc}")
                outcomes = [err] * len(batch)
            self._checkpoint_soon(len(batch))
            wrote_outbox = False
            for (change, future), outcome in zip(batch, outcomes, strict=True):
                wrote_outbox = wrote_outbox or (outcome is None and bool(change.outbox))
                if future.done():
                    continue
                if outcome is None:
                    future.set_result(None)
                else:
                    future.set_exception(outcome)
            if wrote_outbox and self.on_outbox is not None:
                self.on_outbox()

    def _write_batch(
        self, payload: tuple[str, ...], batch: list[Commit]
    ) -> list[BaseException | None]:
        """The whole batch as one statement, in its own transaction (one fsync).

        Python's sqlite3 releases the GIL around each statement it runs, and a
        thread that wants it back waits behind the event loop; so the batch goes
        in as one INSERT into the `inbox` view, whose trigger writes every row.
        If any command conflicts, the statement changes nothing and the batch is
        written again command by command, so that only the losers fail.
        """
        conn = self._wconn
        assert conn is not None
        try:
            conn.execute(INBOX_INSERT, payload)
        except sqlite3.Error:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            return self._write_isolated(batch)
        return [None] * len(batch)

    def _write_isolated(self, batch: list[Commit]) -> list[BaseException | None]:
        """The slow path: one statement per command in one transaction.

        A statement stopped by a constraint (a taken seq, a room that moved on, a
        used request_id) is undone alone; the transaction and the others go on.
        """
        conn = self._wconn
        assert conn is not None
        outcomes: list[BaseException | None] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for change in batch:
                try:
                    conn.execute(INBOX_INSERT, inbox_payload([change]))
                except sqlite3.IntegrityError as exc:
                    outcomes.append(Conflict(f"{change.connection_id}: {exc}"))
                except sqlite3.Error as exc:
                    outcomes.append(Unavailable(str(exc)))
                else:
                    outcomes.append(None)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    async def _run_write(self, fn: Any, *args: Any) -> Any:
        """`fn(writer connection, *args)` on the writer thread, between group commits."""
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._write, fn, self._wconn, *args
            )
        except sqlite3.Error as exc:
            raise Unavailable(str(exc)) from exc

    # -- reads --------------------------------------------------------------

    async def _run_read(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._read, fn, *args)
        except sqlite3.Error as exc:
            raise Unavailable(str(exc)) from exc

    async def _run_reader(self, fn: Any, *args: Any) -> Any:
        """`fn(reader connection, *args)` on the reader thread."""
        return await self._run_read(fn, self._rconn, *args)

    def _load_room(self, connection_id: str) -> StoredRoom | None:
        conn = self._rconn
        assert conn is not None
        conn.execute("BEGIN")  # one consistent snapshot for events and seats
        try:
            found = conn.execute(
                "SELECT room FROM rooms WHERE connection_id = ?", (connection_id,)
            ).fetchone()
            if found is None:
                return None
            room = found[0]
            rows = conn.execute(
                "SELECT body FROM events WHERE room = ? ORDER BY seq", (room,)
            ).fetchall()
            if not rows:
                return None
            seats = conn.execute(
                "SELECT party, token_hash FROM seats WHERE room = ?", (room,)
            ).fetchall()
            keys = conn.execute(
                "SELECT scope, request_id, connection_id, fingerprint, ack, token_nonce "
                "FROM idempotency WHERE room = ? AND scope IN (?, ?, ?)",
                (room, *room_scopes(connection_id)),
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        hashes: dict[str, str | None] = {"A": None, "B": None}
        hashes.update({party: token_hash for party, token_hash in seats})
        records = [IdempotencyRecord(*row) for row in keys]
        return StoredRoom([orjson.loads(body) for (body,) in rows], hashes, records)

    async def load_room(self, connection_id: str) -> StoredRoom | None:
        result: StoredRoom | None = await self._run_read(self._load_room, connection_id)
        return result

    def _events(self, connection_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        assert self._rconn is not None
        rows = self._rconn.execute(
            "SELECT body FROM events WHERE room = (SELECT room FROM rooms WHERE connection_id = ?) "
            "AND seq > ? ORDER BY seq LIMIT ?",
            (connection_id, after_seq, limit),
        ).fetchall()
        return [orjson.loads(body) for (body,) in rows]

    async def events(self, connection_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._run_read(
            self._events, connection_id, after_seq, limit
        )
        return result

    def _idempotency(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        conn = self._rconn
        assert conn is not None
        if scope == CREATE_SCOPE:
            row = conn.execute(
                "SELECT connection_id, fingerprint, ack, token_nonce FROM idempotency "
                f"WHERE scope = '{CREATE_SCOPE}' AND request_id = ?",
                (request_id,),
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT connection_id, fingerprint, ack, token_nonce FROM idempotency "
                "WHERE room = (SELECT room FROM rooms WHERE connection_id = ?) "
                "AND scope = ? AND request_id = ?",
                (room_of_scope(scope), scope, request_id),
            ).fetchone()
        if row is None:
            return None
        return IdempotencyRecord(scope, request_id, row[0], row[1], row[2], row[3])

    async def idempotency(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        # Rare since a new `create` is not looked up before its commit (service.py).
        result: IdempotencyRecord | None = await self._run_read(
            self._idempotency, scope, request_id
        )
        return result

    def _ping(self) -> bool:
        assert self._rconn is not None
        return bool(self._rconn.execute("SELECT 1").fetchone()[0] == 1)

    async def ping(self) -> bool:
        try:
            return bool(await self._run_read(self._ping))
        except Unavailable:
            return False

    def _count_open(self) -> int:
        assert self._rconn is not None
        return int(
            self._rconn.execute("SELECT COUNT(*) FROM rooms WHERE status != 'settled'").fetchone()[
                0
            ]
        )

    async def count_open_rooms(self) -> int:
        result: int = await self._run_read(self._count_open)
        return result
