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

import structlog

from . import sqlite_reads as reads
from .base import (
    Commit,
    Conflict,
    IdempotencyRecord,
    StoredRoom,
    Unavailable,
)
from .sqlite_outbox import WEBHOOKS, SQLiteWebhooks
from .sqlite_schema import (
    INBOX,
    INBOX_INSERT,
    INDEXES,
    META,
    SCHEMA_VERSION,
    TABLES,
    inbox_payload,
    migrate_to_4,
)

_STOP = object()
log = structlog.get_logger("settlement.store")


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
        migrate_to_4(conn)
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

    async def load_room(self, connection_id: str) -> StoredRoom | None:
        result: StoredRoom | None = await self._run_reader(reads.load_room, connection_id)
        return result

    async def events(self, connection_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._run_reader(
            reads.events, connection_id, after_seq, limit
        )
        return result

    async def idempotency(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        # Rare since a new `create` is not looked up before its commit (service.py).
        result: IdempotencyRecord | None = await self._run_reader(
            reads.idempotency, scope, request_id
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

    async def count_open_rooms(self) -> int:
        result: int = await self._run_reader(reads.count_open)
        return result
