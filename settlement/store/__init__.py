"""Durable stores: one interface (`base.Store`), SQLite embedded by default."""

from __future__ import annotations

from .base import Commit, Conflict, IdempotencyRecord, Store, StoredRoom, Unavailable

__all__ = [
    "Commit",
    "Conflict",
    "IdempotencyRecord",
    "Store",
    "StoredRoom",
    "Unavailable",
    "open_store",
]


def open_store(url: str, *, pool_size: int = 10) -> Store:
    """A store for a database URL.

    `sqlite:///relative.db`, `sqlite:////absolute.db`, or
    `postgresql://user[:password]@host[:port]/db` (also `postgres://`); `pool_size`
    is the most connections a PostgreSQL store opens (SQLite ignores it).
    """
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size)
    raise ValueError(
        f"unsupported database URL: {url.split(':', 1)[0]}:... "
        "(use sqlite:///path.db or postgresql://user@host:port/db)"
    )
