"""PostgreSQL store (asyncpg): the SQLite store's schema and behaviour on a shared server.

Several nodes may use one database. Per-room serialisation is the same as in
SQLite and does not rely on any process: `events` has primary key
`(room, seq)` (the room's number, migration 5) and `rooms.seq` moves only
from the seq the decision was made on (`UPDATE ... WHERE seq = base_seq`; no
row -> `Conflict`). Under READ COMMITTED a concurrent writer of the same room
waits for the row lock, re-checks `seq = base_seq` on the winner's row and
finds nothing: `Conflict`.

A commit is one statement, `SELECT settlement_commit(...)` (migration 4,
postgres_commit.py): one round trip, its own implicit transaction, with
`synchronous_commit = on` for every session, so nothing is acknowledged before
PostgreSQL has flushed it. Group commit: while `max_in_flight` calls are
running, new commits queue, and the next call takes everything queued (up to
`max_batch`) as one transaction with one outcome per commit; a room that
moved on fails alone. Every caller is answered after its call returned.

Errors: a unique violation (or a deadlock / serialization failure) is
`Conflict` (in a batch of several: each is written again on its own, so only
its commit fails); anything else, including a refused or exhausted server and
a timeout before the call was sent, is `Unavailable`, and nothing was
committed. The one case where the outcome is not known by itself is a
connection lost *during* the call: then the store, on another connection,
ends the server process that ran it (`pg_terminate_backend`, waiting for it
to exit, so an orphaned call cannot commit later), then looks for each
commit's last event and answers success, `Conflict` or `Unavailable`
accordingly; if the call provably changed nothing and the link was a stale
pooled one, it is sent once more on a fresh connection. Schema and migrations:
postgres_schema.py; errors: postgres_errors.py; reads: postgres_reads.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import asyncpg
import orjson
import structlog

from . import postgres_commit, postgres_outbox, postgres_reads, postgres_schema
from .base import Commit, Conflict, IdempotencyRecord, StoredRoom, Unavailable
from .postgres_errors import (
    BROKEN,
    CONFLICT_ERRORS,
    RETRYABLE,
    VALUE_ERRORS,
    CommitOutcomeUnknown,
    NothingCommitted,
)
from .postgres_schema import (  # noqa: F401 - re-exported: tests and operations use them here
    MIGRATIONS,
    SCHEMA_VERSION,
    SchemaTooNew,
    migrate,
    redact,
    schema_version,
)

T = TypeVar("T")
log = structlog.get_logger("settlement.store")

MAX_BATCH = 64  # commits per call at most


async def _no_reset(conn: asyncpg.Connection) -> None:
    """The pool's reset between uses: nothing to send (no LISTEN, SET or session locks)."""


class PostgresStore:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        command_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        on_outbox: Callable[[], None] | None = None,
        max_batch: int = MAX_BATCH,
        max_in_flight: int | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        # Group commit: commits queued while `max_in_flight` calls are running go
        # together in the next call, up to `max_batch` (1: every commit its own call).
        # Half the pool by default: the rest stays free for reads and the deliverer
        # (1, 2 or 10 calls at once measured the same, bench/README.md).
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight or max(1, pool_size // 2)
        self._queue: list[tuple[Commit, asyncio.Future[BaseException | None]]] = []
        self._flushing = 0
        self._flushers: set[asyncio.Task[None]] = set()
        # server pid -> backend_start of each pooled connection, to end the right
        # backend when a call's outcome is unknown (a pid can be reused)
        self._backends: dict[int, Any] = {}
        self.url = url
        self.pool_size = pool_size
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        self._pool: asyncpg.Pool | None = None
        self.on_outbox = on_outbox  # called after a commit that wrote webhook messages
        self.webhooks = postgres_outbox.PostgresWebhooks(self._connection, self._with_retry)

    # -- life cycle ---------------------------------------------------------

    async def open(self) -> None:
        """Connect, then bring the schema up to date; raise `Unavailable` with the reason."""
        where = redact(self.url)
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=min(2, self.pool_size),
                max_size=self.pool_size,
                command_timeout=self.command_timeout,
                timeout=self.connect_timeout,
                max_inactive_connection_lifetime=300,
                init=self._init_connection,
                reset=_no_reset,  # the store leaves no session state behind: no round trip
                server_settings={
                    "application_name": "settlement",
                    "synchronous_commit": "on",
                    # a session orphaned by a lost client must not hold a room's row lock
                    "idle_in_transaction_session_timeout": "15000",
                },
            )
            async with self._pool.acquire(timeout=self.connect_timeout) as conn:
                await migrate(conn)
        except BaseException as exc:
            await self._discard_pool()
            if isinstance(exc, SchemaTooNew):
                raise
            if isinstance(exc, (*BROKEN, asyncpg.PostgresError)):
                raise Unavailable(f"cannot open the PostgreSQL store at {where}: {exc}") from exc
            raise
        log.info("store_opened", backend="postgresql", url=where, pool_size=self.pool_size)

    async def _init_connection(self, conn: asyncpg.Connection) -> None:
        self._backends[conn.get_server_pid()] = await conn.fetchval(
            "SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )

    async def _discard_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    async def close(self) -> None:
        if self._flushers:  # commits already queued are answered first
            await asyncio.wait(set(self._flushers))
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), timeout=self.command_timeout)
        except Exception:
            pool.terminate()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; one that failed is dropped, never handed out again.

        After a link error the pool's other idle connections are suspect too (a
        restarted server closed them all, and asyncpg may only notice on use), so
        they are expired: the next acquire of each reconnects.
        """
        pool = self._pool
        if pool is None:
            raise Unavailable("the PostgreSQL store is not open")
        async with pool.acquire(timeout=self.connect_timeout) as conn:
            try:
                yield conn
            except BaseException as exc:
                cause = exc.__cause__ if isinstance(exc, CommitOutcomeUnknown) else exc
                if isinstance(cause, BROKEN) and not isinstance(cause, VALUE_ERRORS):
                    try:
                        conn.terminate()
                    except asyncpg.InterfaceError:
                        pass  # already closed and handed back by asyncpg itself
                    if not isinstance(cause, TimeoutError):
                        await pool.expire_connections()
                raise

    async def _with_retry(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op`; one retry on a fresh connection if a pooled one turns out dead."""
        for attempt in (0, 1):
            try:
                return await op()
            except VALUE_ERRORS as exc:  # a value the column cannot hold; not the link
                raise Unavailable(f"PostgreSQL refused a value: {exc}") from exc
            except RETRYABLE as exc:
                if attempt:
                    raise Unavailable(f"PostgreSQL: {exc!r}") from exc
                log.info("store_retry_stale_connection", error=repr(exc))
            except BROKEN as exc:
                raise Unavailable(f"PostgreSQL: {exc!r}") from exc
            except asyncpg.PostgresError as exc:
                raise Unavailable(f"PostgreSQL: {exc!r}") from exc
        raise AssertionError("unreachable")

    # -- writes -------------------------------------------------------------

    async def commit(self, change: Commit) -> None:
        if self.max_batch <= 1:
            outcome = (await self._commit_batch([change]))[0]
        else:
            future: asyncio.Future[BaseException | None] = (
                asyncio.get_running_loop().create_future()
            )
            self._queue.append((change, future))
            if self._flushing < self.max_in_flight:
                self._flushing += 1
                task = asyncio.create_task(self._flush(), name="postgres-group-commit")
                self._flushers.add(task)
                task.add_done_callback(self._flushers.discard)
            outcome = await asyncio.shield(future)
        if outcome is not None:
            raise outcome
        if change.outbox and self.on_outbox is not None:
            self.on_outbox()

    async def _flush(self) -> None:
        """Write what is queued, a batch per call, until the queue is empty."""
        try:
            while self._queue:
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    outcomes = await self._commit_batch([c for c, _ in batch])
                except Exception as exc:  # pragma: no cover - _commit_batch answers all
                    outcomes = [Unavailable(f"PostgreSQL: {exc!r}")] * len(batch)
                for (_, future), outcome in zip(batch, outcomes, strict=True):
                    if not future.done():
                        future.set_result(outcome)
        finally:
            self._flushing -= 1

    async def _commit_batch(self, changes: list[Commit]) -> list[BaseException | None]:
        """Write `changes` in one call (one transaction); an outcome per commit.

        One retry on a fresh connection when the first one turns out dead and
        nothing was committed; a unique violation or a refused value in a batch
        of several: each again on its own, so that only its own commit fails.
        """
        for attempt in (0, 1):
            try:
                return await self._call(changes)
            except CommitOutcomeUnknown as exc:
                outcomes = await self._settle_unknown(changes, exc)
                cause = exc.__cause__
                retry = [i for i, o in enumerate(outcomes) if isinstance(o, NothingCommitted)]
                if attempt or not isinstance(cause, RETRYABLE) or len(retry) < len(changes):
                    return outcomes
                log.info("store_retry_stale_connection", error=repr(cause))
            except (*CONFLICT_ERRORS, *VALUE_ERRORS) as exc:
                if len(changes) > 1:
                    return await self._one_by_one(changes)
                if isinstance(exc, CONFLICT_ERRORS):
                    return [Conflict(f"{changes[0].connection_id}: {exc}")]
                return [Unavailable(f"PostgreSQL refused a value: {exc}")]
            except RETRYABLE as exc:  # raised before the call was sent (acquire)
                if attempt:
                    return [Unavailable(f"PostgreSQL: {exc!r}")] * len(changes)
                log.info("store_retry_stale_connection", error=repr(exc))
            except (*BROKEN, asyncpg.PostgresError) as exc:
                return [Unavailable(f"PostgreSQL: {exc!r}")] * len(changes)
        raise AssertionError("unreachable")

    async def _one_by_one(self, changes: list[Commit]) -> list[BaseException | None]:
        results = await asyncio.gather(*(self._commit_batch([c]) for c in changes))
        return [r[0] for r in results]

    async def _call(self, changes: list[Commit]) -> list[BaseException | None]:
        # Rooms in one order in every batch, so two batches never wait for each
        # other's row locks in a circle (a room's own commits keep their order).
        order = sorted(range(len(changes)), key=lambda i: changes[i].connection_id)
        args = postgres_commit.arguments([changes[i] for i in order])
        async with self._connection() as conn:
            backend = (conn.get_server_pid(), self._backends.get(conn.get_server_pid()))
            try:
                written = await self._send(conn, args)
            except VALUE_ERRORS:
                raise
            except BROKEN as exc:
                raise CommitOutcomeUnknown(backend) from exc
        outcomes: list[BaseException | None] = [None] * len(changes)
        for i, ok in zip(order, written, strict=True):
            if not ok:
                c = changes[i]
                outcomes[i] = Conflict(f"{c.connection_id}: room moved on from {c.base_seq}")
        return outcomes

    async def _send(self, conn: asyncpg.Connection, args: list[list[Any]]) -> list[bool]:
        """The one statement of a commit (a separate method so tests can fail it on purpose)."""
        written: list[bool] = await conn.fetchval(postgres_commit.CALL, *args)
        return written

    async def _settle_unknown(
        self, changes: list[Commit], unknown: CommitOutcomeUnknown
    ) -> list[BaseException | None]:
        """The call was sent and the link failed: find out whether it took effect.

        The server may still be running it (waiting for a row lock, say, or with
        the call still in its socket), so first that backend is ended
        (`pg_terminate_backend`, waiting for it to exit); after that its
        transaction is committed or rolled back for good. Then each commit's
        last event tells: our body there -> committed; another body -> someone
        else won (`Conflict`); the key free -> nothing of it was committed
        (`Unavailable`). If even that fails: `Unavailable` with the outcome stated
        as unknown (a retry with the same request_id is answered from the
        idempotency table if it did commit).
        """
        cause = unknown.__cause__
        pid, started = unknown.backend
        log.warning("commit_outcome_unknown", commits=len(changes), error=repr(cause))
        keys = [c.events[-1] for c in changes if c.events]

        async def probe() -> dict[tuple[str, int], str]:
            async with self._connection() as conn:
                if started is not None:
                    ended = await conn.fetchval(
                        "SELECT coalesce(bool_and(pg_terminate_backend(pid, $3)), true) "
                        "FROM pg_stat_activity WHERE pid = $1 AND backend_start = $2",
                        pid,
                        started,
                        int(self.command_timeout * 1000),
                    )
                    if not ended:
                        raise Unavailable(f"backend {pid} did not end")
                rows = await conn.fetch(
                    "SELECT k.cid, k.seq, e.body FROM unnest($1::text[], $2::bigint[]) "
                    "AS k(cid, seq) JOIN rooms AS r ON r.connection_id = k.cid "
                    "JOIN events AS e ON e.room = r.room AND e.seq = k.seq",
                    [k["connection_id"] for k in keys],
                    [k["seq"] for k in keys],
                )
            return {(r[0], r[1]): r[2] for r in rows}

        unknown_outcome: list[BaseException | None]
        try:
            if started is None:  # the backend was never identified: it cannot be ended
                raise Unavailable("the server process is not known")
            stored = await self._with_retry(probe)
        except Unavailable as exc:
            message = f"PostgreSQL: the commit's outcome is unknown ({cause!r}); {exc}"
            unknown_outcome = [Unavailable(message)] * len(changes)
            return unknown_outcome
        outcomes: list[BaseException | None] = []
        for c in changes:
            if not c.events:
                outcomes.append(
                    Unavailable(f"PostgreSQL: the commit's outcome is unknown: {cause}")
                )
                continue
            last = c.events[-1]
            body = stored.get((last["connection_id"], last["seq"]))
            if body is None:
                outcomes.append(NothingCommitted(f"PostgreSQL: nothing committed: {cause!r}"))
            elif body == orjson.dumps(last).decode():
                log.info("commit_outcome_committed", connection_id=c.connection_id)
                outcomes.append(None)
            else:
                outcomes.append(Conflict(f"{c.connection_id}: seq {last['seq']} taken"))
        return outcomes

    # -- reads (the queries: postgres_reads.py) ------------------------------

    async def _read(self, query: Callable[..., Awaitable[T]], *args: Any) -> T:
        async def op() -> T:
            async with self._connection() as conn:
                return await query(conn, *args)

        return await self._with_retry(op)

    async def load_room(self, connection_id: str) -> StoredRoom | None:
        return await self._read(postgres_reads.load_room, connection_id)

    async def events(self, connection_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        return await self._read(postgres_reads.events, connection_id, after_seq, limit)

    async def idempotency(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        return await self._read(postgres_reads.idempotency, scope, request_id)

    async def ping(self) -> bool:
        try:
            return await self._read(postgres_reads.ping, self.connect_timeout)
        except Unavailable:
            return False

    async def count_open_rooms(self) -> int:
        return await self._read(postgres_reads.count_open_rooms)


if __name__ == "__main__":  # python -m settlement.store.postgres postgresql://...
    postgres_schema.cli()
