"""Store tests: the real-PostgreSQL fixtures from tests/pg.py, and `stores`/`store`
on every backend (SQLite, PostgreSQL, memory) for the contract and outbox suites.

Imported here only while tests/conftest.py does not register them itself
(`pytest_plugins = ["tests.pg"]`), so a session never starts two servers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from settlement.store import Store, open_store
from settlement.store.memory import MemoryData, MemoryStore
from tests import conftest as _root

if "tests.pg" not in getattr(_root, "pytest_plugins", ()):
    from tests.pg import pg_database, postgres_url  # noqa: F401


# -- stores on every backend, for the contract and outbox suites ---------------


class Stores:
    """Opens stores on one database (one backend) and closes them all afterwards."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.open_ones: list[Store] = []
        self.memory = MemoryData()

    async def open(self, **kwargs: Any) -> Store:
        store: Store
        if self.kind == "memory":  # one MemoryData per test: "the database"
            store = MemoryStore(self.memory)
        else:
            store = open_store(self.url, **kwargs)
        await store.open()
        self.open_ones.append(store)
        return store

    async def close(self, store: Store) -> None:
        self.open_ones.remove(store)
        await store.close()

    async def close_all(self) -> None:
        while self.open_ones:
            await self.close(self.open_ones[-1])


@pytest.fixture(params=["sqlite", "postgres", "memory"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    # `memory` is the in-process test seam (tests/pipeline): it keeps the same contract.
    if request.param == "memory":
        url = "memory:"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'settlement.db'}"
    else:
        url = request.getfixturevalue("pg_database")
    s = Stores(request.param, url)
    try:
        yield s
    finally:
        await s.close_all()


@pytest.fixture
async def store(stores: Stores) -> Store:
    return await stores.open()
