"""PostgreSQL's schema: numbered migrations applied in order under an advisory
lock (so several nodes starting at once do not race), and the URL redaction
every message about the database uses."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

from . import postgres_commit, postgres_outbox

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
    # 4: a commit in one statement: the function settlement_commit (postgres_commit.py).
    postgres_commit.MIGRATION,
    # 5: rooms numbered, and the keys of events, seats and idempotency start with
    # the number (postgres_commit.py, MIGRATION_5).
    postgres_commit.MIGRATION_5,
)
SCHEMA_VERSION = len(MIGRATIONS)
META = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
# pg_advisory_xact_lock key for migrations (any constant bigint; "settlemt" in ASCII).
MIGRATION_LOCK = 0x736574746C656D74


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


async def main(url: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        before, after = await migrate(conn)
    finally:
        await conn.close()
    print(f"{redact(url)}: schema version {before} -> {after}")


def cli() -> None:
    """`python -m settlement.store.postgres URL`: bring a database's schema up to date."""
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m settlement.store.postgres postgresql://user@host:port/db")
    asyncio.run(main(sys.argv[1]))


if __name__ == "__main__":
    cli()
