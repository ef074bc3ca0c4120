"""PostgreSQL store (asyncpg): the SQLite store's schema and behaviour on a shared server.

Several nodes may use one database. Per-room serialisation is the same as in
SQLite and does not rely on any process: `events` has primary key
`(connection_id, seq)` and `rooms.seq` moves only from the seq the decision
was made on (`UPDATE ... WHERE seq = base_seq`; no row -> `Conflict`). Under
READ COMMITTED a concurrent writer of the same room waits for the row lock,
re-checks `seq = base_seq` on the winner's row and finds nothing: `Conflict`.

One transaction per `commit()`; `synchronous_commit = on` for every session,
so nothing is acknowledged before PostgreSQL has flushed it.

Errors: a unique violation (or a deadlock / serialization failure) is
`Conflict`; anything else, including a lost connection, a refused or
exhausted server and a timeout, is `Unavailable`, and nothing was committed.
The one case where the outcome is not known by itself is a connection lost
*during* COMMIT: then the store asks the database (on another connection,
waiting for the first one's transaction to finish) whether the commit's last
event is there, and answers success, `Conflict` or `Unavailable` accordingly.

The schema is created by numbered migrations applied in order, each in the
same transaction as the `meta.schema_version` bump, under a transaction-level
advisory lock so several nodes starting at once do not race.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson
import structlog

from . import postgres_outbox
from .base import Commit, Conflict, IdempotencyRecord, StoredRoom, Unavailable

T = TypeVar("T")
log = structlog.get_logger("settlement.store")

# Numbered migrations: MIGRATIONS[n - 1] takes the schema from version n - 1 to n.
# Never edit one that has shipped; append a new one.
MIGRATIONS: tuple[str, ...] = (
    # 1: the initial schema, column for column the SQLite one.
    """
    CREATE TABLE rooms (
        connection_id TEXT PRIMARY KEY,
        currency TEXT NOT NULL,
        status TEXT NOT NULL,
        seq BIGINT NOT NULL
    );
    CREATE TABLE events (
        connection_id TEXT NOT NULL,
        seq BIGINT NOT NULL,
        type TEXT NOT NULL,
        body TEXT NOT NULL,
        PRIMARY KEY (connection_id, seq)
    );
    CREATE TABLE seats (
        connection_id TEXT NOT NULL,
        party TEXT NOT NULL,
        token_hash TEXT,
        PRIMARY KEY (connection_id, party)
    );
    CREATE TABLE idempotency (
        scope TEXT NOT NULL,
        request_id TEXT NOT NULL,
        connection_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        ack TEXT NOT NULL,
        token_nonce TEXT,
        PRIMARY KEY (scope, request_id)
    );
    CREATE INDEX rooms_open ON rooms (status) WHERE status != 'settled';
    """,
    # 2: a room's idempotency records are loaded with the room.
    """
    CREATE INDEX idempotency_room ON idempotency (connection_id);
    """,
    # 3: the webhook outbox, written with the events (postgres_outbox.py).
    postgres_outbox.MIGRATION,
)
SCHEMA_VERSION = len(MIGRATIONS)
META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
# pg_advisory_xact_lock key for migrations (any constant bigint; "settlemt" in ASCII).
MIGRATION_LOCK = 0x736574746C656D74

MAX_SEQ = 2**63 - 1

# The server or the link to it failed: nothing this session did is committed.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,  # class 08, incl. ConnectionDoesNotExistError
    asyncpg.InterfaceError,  # connection closed / pool closing
    asyncpg.TooManyConnectionsError,
    asyncpg.CannotConnectNowError,  # starting up / shutting down
    asyncpg.exceptions.OperatorInterventionError,  # 57P01 admin shutdown, 57014 cancel
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: disk full, out of memory
    OSError,  # refused, reset, unreachable
    TimeoutError,  # command_timeout / connect timeout (asyncio.TimeoutError is the same)
)
# Worth one immediate retry on a fresh connection (a stale pooled socket after an outage).
RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.ConnectionDoesNotExistError,
    asyncpg.exceptions.InternalClientError,  # protocol confused by a server gone mid-idle
    asyncpg.InterfaceError,
    ConnectionResetError,
    BrokenPipeError,
    asyncpg.exceptions.AdminShutdownError,
)
# A connection that raised one of these is not reused.
BROKEN: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    asyncpg.exceptions.InternalClientError,
)
# A value the database or the driver refuses (server class 22; asyncpg's client-side
# DataError is an InterfaceError and a ValueError): the command's fault, not the link's.
VALUE_ERRORS: tuple[type[BaseException], ...] = (asyncpg.DataError, ValueError)
CONFLICT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.UniqueViolationError,
    asyncpg.exceptions.TransactionRollbackError,  # deadlock, serialization failure
)


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)
        user = netloc[0].split(":", 1)[0]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))
    except ValueError:
        return "postgresql://..."


class _CommitOutcomeUnknown(Exception):
    """The connection failed while COMMIT was in flight."""


class PostgresStore:
    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        command_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        on_outbox: Callable[[], None] | None = None,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
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

    async def _discard_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.terminate()

    async def close(self) -> None:
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
                cause = exc.__cause__ if isinstance(exc, _CommitOutcomeUnknown) else exc
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
        try:
            await self._with_retry(lambda: self._commit_once(change))
        except _CommitOutcomeUnknown as exc:
            await self._settle_unknown(change, exc)
        if change.outbox and self.on_outbox is not None:
            self.on_outbox()

    async def _commit_once(self, change: Commit) -> None:
        async with self._connection() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await self._apply(conn, change)
            except BaseException as exc:
                try:
                    await tx.rollback()
                except BaseException:
                    pass  # a dead connection rolled it back already
                if isinstance(exc, CONFLICT_ERRORS):
                    raise Conflict(f"{change.connection_id}: {exc}") from exc
                raise
            try:
                await self._finish(tx)
            except CONFLICT_ERRORS as exc:  # deferred checks or serialization at COMMIT
                raise Conflict(f"{change.connection_id}: {exc}") from exc
            except VALUE_ERRORS:
                raise
            except BROKEN as exc:
                raise _CommitOutcomeUnknown(repr(exc)) from exc

    async def _finish(self, tx: Any) -> None:
        """Send COMMIT (a separate method so tests can fail it on purpose)."""
        await tx.commit()

    @staticmethod
    async def _apply(conn: asyncpg.Connection, change: Commit) -> None:
        last_seq = change.events[-1]["seq"] if change.events else change.base_seq
        if change.base_seq == 0:
            await conn.execute(
                "INSERT INTO rooms (connection_id, currency, status, seq) VALUES ($1, $2, $3, $4)",
                change.connection_id,
                change.currency,
                change.status,
                last_seq,
            )
        else:
            done = await conn.fetchval(
                "UPDATE rooms SET seq = $1, status = $2 WHERE connection_id = $3 AND seq = $4 "
                "RETURNING 1",
                last_seq,
                change.status,
                change.connection_id,
                change.base_seq,
            )
            if done is None:
                raise Conflict(f"{change.connection_id}: room moved on from {change.base_seq}")
        if change.events:
            await conn.executemany(
                "INSERT INTO events (connection_id, seq, type, body) VALUES ($1, $2, $3, $4)",
                [
                    (e["connection_id"], e["seq"], e["type"], orjson.dumps(e).decode())
                    for e in change.events
                ],
            )
        if change.outbox:
            await postgres_outbox.insert(conn, change.outbox)
        for party, token_hash in change.seats.items():
            await conn.execute(
                "INSERT INTO seats (connection_id, party, token_hash) VALUES ($1, $2, $3) "
                "ON CONFLICT (connection_id, party) DO UPDATE SET token_hash = excluded.token_hash",
                change.connection_id,
                party,
                token_hash,
            )
        rec = change.idempotency
        if rec is not None:
            await conn.execute(
                "INSERT INTO idempotency "
                "(scope, request_id, connection_id, fingerprint, ack, token_nonce) "
                "VALUES ($1, $2, $3, $4, $5, $6)",
                *rec.row(),
            )

    async def _settle_unknown(self, change: Commit, cause: BaseException) -> None:
        """COMMIT was sent and the link failed: find out whether it took effect.

        Inserting the commit's last event key on another connection waits for any
        transaction still holding that key, so the answer is final: our body there
        -> committed; another body -> someone else won (`Conflict`); the key free
        -> nothing was committed (`Unavailable`). If even that fails: `Unavailable`
        with the outcome stated as unknown (a retry with the same request_id is
        answered from the idempotency table if it did commit).
        """
        log.warning("commit_outcome_unknown", connection_id=change.connection_id, error=str(cause))
        if not change.events:
            raise Unavailable(f"PostgreSQL: the commit's outcome is unknown: {cause}")
        last = change.events[-1]
        body = orjson.dumps(last).decode()

        async def probe() -> str | None:
            async with self._connection() as conn, conn.transaction():
                free = await conn.fetchval(
                    "INSERT INTO events (connection_id, seq, type, body) VALUES ($1, $2, '', '') "
                    "ON CONFLICT DO NOTHING RETURNING 1",
                    last["connection_id"],
                    last["seq"],
                )
                stored: str | None = None
                if free is None:
                    stored = await conn.fetchval(
                        "SELECT body FROM events WHERE connection_id = $1 AND seq = $2",
                        last["connection_id"],
                        last["seq"],
                    )
                raise _Probe(stored)  # always roll the probe back

        try:
            await self._with_retry(probe)
        except _Probe as answer:
            if answer.body == body:
                log.info("commit_outcome_committed", connection_id=change.connection_id)
                return
            if answer.body is None:
                raise Unavailable(f"PostgreSQL: nothing committed: {cause}") from None
            raise Conflict(f"{change.connection_id}: seq {last['seq']} taken") from None
        except Unavailable as exc:
            raise Unavailable(
                f"PostgreSQL: the commit's outcome is unknown ({cause}); {exc}"
            ) from exc

    # -- reads --------------------------------------------------------------

    async def load_room(self, connection_id: str) -> StoredRoom | None:
        async def op() -> StoredRoom | None:
            async with (
                self._connection() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                rows = await conn.fetch(
                    "SELECT body FROM events WHERE connection_id = $1 ORDER BY seq",
                    connection_id,
                )
                if not rows:
                    return None
                seats = await conn.fetch(
                    "SELECT party, token_hash FROM seats WHERE connection_id = $1",
                    connection_id,
                )
                keys = await conn.fetch(
                    "SELECT scope, request_id, connection_id, fingerprint, ack, token_nonce "
                    "FROM idempotency WHERE connection_id = $1",
                    connection_id,
                )
            hashes: dict[str, str | None] = {"A": None, "B": None}
            hashes.update({r["party"]: r["token_hash"] for r in seats})
            records = [IdempotencyRecord(*tuple(r)) for r in keys]
            return StoredRoom([orjson.loads(r["body"]) for r in rows], hashes, records)

        return await self._with_retry(op)

    async def events(self, connection_id: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        after = max(min(after_seq, MAX_SEQ), -MAX_SEQ)
        lim = None if limit < 0 else min(limit, MAX_SEQ)  # SQLite: a negative limit is none

        async def op() -> list[dict[str, Any]]:
            async with self._connection() as conn:
                rows = await conn.fetch(
                    "SELECT body FROM events WHERE connection_id = $1 AND seq > $2 "
                    "ORDER BY seq LIMIT $3",
                    connection_id,
                    after,
                    lim,
                )
            return [orjson.loads(r["body"]) for r in rows]

        return await self._with_retry(op)

    async def idempotency(self, scope: str, request_id: str) -> IdempotencyRecord | None:
        async def op() -> IdempotencyRecord | None:
            async with self._connection() as conn:
                row = await conn.fetchrow(
                    "SELECT connection_id, fingerprint, ack, token_nonce FROM idempotency "
                    "WHERE scope = $1 AND request_id = $2",
                    scope,
                    request_id,
                )
            if row is None:
                return None
            return IdempotencyRecord(
                scope,
                request_id,
                row["connection_id"],
                row["fingerprint"],
                row["ack"],
                row["token_nonce"],
            )

        return await self._with_retry(op)

    async def ping(self) -> bool:
        async def op() -> bool:
            async with self._connection() as conn:
                return bool(await conn.fetchval("SELECT 1", timeout=self.connect_timeout) == 1)

        try:
            return await self._with_retry(op)
        except Unavailable:
            return False

    async def count_open_rooms(self) -> int:
        async def op() -> int:
            async with self._connection() as conn:
                return int(
                    await conn.fetchval("SELECT count(*) FROM rooms WHERE status != 'settled'")
                )

        return await self._with_retry(op)


class _Probe(Exception):
    def __init__(self, body: str | None) -> None:
        super().__init__(body)
        self.body = body


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer release than this one."""


async def schema_version(conn: asyncpg.Connection) -> int:
    exists = await conn.fetchval("SELECT to_regclass('meta') IS NOT NULL")
    if not exists:
        return 0
    value = await conn.fetchval("SELECT value FROM meta WHERE key = 'schema_version'")
    return int(value) if value is not None else 0


async def migrate(
    conn: asyncpg.Connection, migrations: tuple[str, ...] = MIGRATIONS
) -> tuple[int, int]:
    """Apply the missing migrations in order, in one transaction; (version before, after).

    `pg_advisory_xact_lock` makes concurrent callers queue: the second one sees
    the first one's result and has nothing left to do.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(META)
        current = await schema_version(conn)
        target = len(migrations)
        if current > target:
            raise SchemaTooNew(
                f"the database schema is version {current}, newer than this release "
                f"understands ({target}): upgrade the service, do not downgrade it"
            )
        for number in range(current + 1, target + 1):
            await conn.execute(migrations[number - 1])
            log.info("schema_migrated", backend="postgresql", version=number)
        if target != current:
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                str(target),
            )
    return current, target


async def _main(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        before, after = await migrate(conn)
    finally:
        await conn.close()
    print(f"{redact(url)}: schema version {before} -> {after}")


if __name__ == "__main__":  # python -m settlement.store.postgres postgresql://...
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m settlement.store.postgres postgresql://user@host:port/db")
    asyncio.run(_main(sys.argv[1]))
