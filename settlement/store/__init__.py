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


def open_store(url: str) -> Store:
    """A store for a database URL (`sqlite:///relative.db`, `sqlite:////absolute.db`)."""
    if url.startswith("sqlite:///"):
        from .sqlite import SQLiteStore

        return SQLiteStore(url.removeprefix("sqlite:///"))
    raise ValueError(
        f"unsupported database URL: {url.split(':', 1)[0]}:... (use sqlite:///path.db)"
    )
