"""SQLite store: WAL, `synchronous=FULL`, one writer thread with group commit.

Commands queue their `Commit`s; the writer takes everything queued, applies
each inside its own SAVEPOINT (so one conflicting command does not undo its
neighbours) and commits the lot in one transaction, then resolves every
caller's future. Nothing is acknowledged before that COMMIT returns.

Per-room serialisation does not rely on this process: `events` has primary
key `(connection_id, seq)` and `rooms.seq` is updated only from the seq the
decision was made on, so a second process on the same file gets `Conflict`
and decides again on fresh state.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import structlog

from .base import Commit, Conflict, IdempotencyRecord, StoredRoom, Unavailable

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rooms (
    connection_id TEXT PRIMARY KEY,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    connection_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (connection_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seats (
    connection_id TEXT NOT NULL,
    party TEXT NOT NULL,
    token_hash TEXT,
    PRIMARY KEY (connection_id, party)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS idempotency (
    scope TEXT NOT NULL,
    request_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    ack TEXT NOT NULL,
    token_nonce TEXT,
    PRIMARY KEY (scope, request_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS rooms_open ON rooms (status) WHERE status != 'settled';
CREATE INDEX IF NOT EXISTS idempotency_room ON idempotency (connection_id);
"""

_STOP = object()
log = structlog.get_logger("settlement.store")


class SQLiteStore:
    def __init__(self, path: str, *, max_batch: int = 256) -> None:
        self.path = path
        self.max_batch = max_batch
        self._write = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._read = ThreadPoolExecutor(1, thread_name_prefix="sqlite-reader")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    # -- life cycle ---------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _open_writer(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = self._connect()
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise RuntimeError(f"SQLite refused WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(SCHEMA)
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
            (str(SCHEMA_VERSION),),
        )
        self._wconn = conn

    def _open_reader(self) -> None:
        self._rconn = self._connect()

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._write, self._open_writer)
        await loop.run_in_executor(self._read, self._open_reader)
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-group-commit")

    async def close(self) -> None:
        if self._writer is not None:
            await self._queue.put(_STOP)
            await self._writer
            self._writer = None
        loop = asyncio.get_running_loop()
        if self._wconn is not None:
            await loop.run_in_executor(self._write, self._wconn.close)
        if self._rconn is not None:
            await loop.run_in_executor(self._read, self._rconn.close)
        self._write.shutdown()
        self._read.shutdown()

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
            try:
                outcomes = await loop.run_in_executor(
                    self._write, self._write_batch, [c for c, _ in batch]
                )
            except BaseException as exc:  # the COMMIT itself failed: nothing is durable
                log.warning("commit_failed", error=str(exc), batch=len(batch))
                err = Unavailable(f"the database could not commit: {exc}")
                outcomes = [err] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if outcome is None:
                    future.set_result(None)
                else:
                    future.set_exception(outcome)

    def _write_batch(self, batch: list[Commit]) -> list[BaseException | None]:
        """One transaction for the batch; per-command savepoints only if one conflicts."""
        conn = self._wconn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            for change in batch:
                self._apply(conn, change)
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            return self._write_isolated(batch)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return [None] * len(batch)

    def _write_isolated(self, batch: list[Commit]) -> list[BaseException | None]:
        """The slow path: each command in its own savepoint, so a loser fails alone."""
        conn = self._wconn
        assert conn is not None
        outcomes: list[BaseException | None] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for change in batch:
                conn.execute("SAVEPOINT one")
                try:
                    self._apply(conn, change)
                except sqlite3.IntegrityError as exc:
                    conn.execute("ROLLBACK TO one")
                    outcomes.append(Conflict(f"{change.connection_id}: {exc}"))
                except sqlite3.Error as exc:
                    conn.execute("ROLLBACK TO one")
                    outcomes.append(Unavailable(str(exc)))
                else:
                    outcomes.append(None)
                conn.execute("RELEASE one")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    @staticmethod
    def _apply(conn: sqlite3.Connection, change: Commit) -> None:
        last_seq = change.events[-1]["seq"] if change.events else change.base_seq
        if change.base_seq == 0:
            conn.execute(
                "INSERT INTO rooms (connection_id, currency, status, seq) VALUES (?, ?, ?, ?)",
                (change.connection_id, change.currency, change.status, last_seq),
            )
        else:
            cur = conn.execute(
                "UPDATE rooms SET seq = ?, status = ? WHERE connection_id = ? AND seq = ?",
                (last_seq, change.status, change.connection_id, change.base_seq),
            )
            if cur.rowcount != 1:
                raise sqlite3.IntegrityError("room moved on")
        conn.executemany(
            "INSERT INTO events (connection_id, seq, type, body) VALUES (?, ?, ?, ?)",
            [
                (e["connection_id"], e["seq"], e["type"], orjson.dumps(e).decode())
                for e in change.events
            ],
        )
        for party, token_hash in change.seats.items():
            conn.execute(
                "INSERT INTO seats (connection_id, party, token_hash) VALUES (?, ?, ?) "
                "ON CONFLICT (connection_id, party) DO UPDATE SET token_hash = excluded.token_hash",
                (change.connection_id, party, token_hash),
            )
        rec = change.idempotency
        if rec is not None:
            conn.execute(
                "INSERT INTO idempotency "
                "(scope, request_id, connection_id, fingerprint, ack, token_nonce) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    rec.scope,
                    rec.request_id,
                    rec.connection_id,
                    rec.fingerprint,
                    rec.ack,
                    rec.token_nonce,
                ),
            )

    # -- reads --------------------------------------------------------------

    async def _run_read(self, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._read, fn, *args)
        except sqlite3.Error as exc:
            raise Unavailable(str(exc)) from exc

    def _load_room(self, connection_id: str) -> StoredRoom | None:
        conn = self._rconn
        assert conn is not None
        conn.execute("BEGIN")  # one consistent snapshot for events and seats
        try:
            rows = conn.execute(
                "SELECT body FROM events WHERE connection_id = ? ORDER BY seq", (connection_id,)
            ).fetchall()
            if not rows:
                return None
            seats = conn.execute(
                "SELECT party, token_hash FROM seats WHERE connection_id = ?", (connection_id,)
            ).fetchall()
            keys = conn.execute(
                "SELECT scope, request_id, connection_id, fingerprint, ack, token_nonce "
                "FROM idempotency WHERE connection_id = ?",
                (connection_id,),
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
            "SELECT body FROM events WHERE connection_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (connection_id, after_seq, limit),
        ).fetchall()
        return [orjson.loads(body) for (body,) in rows]

    async def events(self, connection_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._run_read(
            self._events, connection_id, after_seq, limit
        )
        return result

    def _idempotency(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        assert self._rconn is not None
        row = self._rconn.execute(
            "SELECT connection_id, fingerprint, ack, token_nonce FROM idempotency "
            "WHERE scope = ? AND request_id = ?",
            (scope, request_id),
        ).fetchone()
        if row is None:
            return None
        return IdempotencyRecord(scope, request_id, row[0], row[1], row[2], row[3])

    async def idempotency(self, scope: str, request_id: str) -> IdempotencyRecord | None:
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
