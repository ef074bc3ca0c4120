"""Durable stores: one interface (`base.Store`), SQLite embedded by default."""

from __future__ import annotations

from collections.abc import Callable

from .base import (
    Commit,
    Conflict,
    IdempotencyRecord,
    OutboxRow,
    Store,
    StoredRoom,
    Unavailable,
    WebhookClaim,
    WebhookQueue,
    WebhookRow,
)

__all__ = [
    "Commit",
    "Conflict",
    "IdempotencyRecord",
    "OutboxRow",
    "Store",
    "StoredRoom",
    "Unavailable",
    "WebhookClaim",
    "WebhookQueue",
    "WebhookRow",
    "open_store",
]


def open_store(
    url: str, *, pool_size: int = 10, on_outbox: Callable[[], None] | None = None
) -> Store:
    """A store for a database URL.

    `sqlite:///relative.db`, `sqlite:////absolute.db`, or
    `postgresql://user[:password]@host[:port]/db` (also `postgres://`); `pool_size`
    is the most connections a PostgreSQL store opens (SQLite ignores it); `on_outbox`
    is called after every commit that wrote webhook messages (to wake the deliverer).
    """
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"), on_outbox=on_outbox)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(url, pool_size=pool_size, on_outbox=on_outbox)
    raise ValueError(
        f"unsupported database URL: {url.split(':', 1)[0]}:... "
        "(use sqlite:///path.db or postgresql://user@host:port/db)"
    )
