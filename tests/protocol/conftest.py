"""Fixtures for the black-box protocol suite: bot factories and ready-made rooms."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServerProcess

from .bots import Bot

BotFactory = Callable[..., Awaitable[Bot]]


# The whole protocol suite runs against both stores: SQLite, and PostgreSQL.
@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _database_url(kind: str, request: pytest.FixtureRequest) -> str | None:
    if kind == "sqlite":
        return None  # the server's own file in its folder
    pg = request.getfixturevalue("postgres_url")
    pg.server.start_postgres()
    name = f"t_{uuid.uuid4().hex}"
    pg.server.psql(f"CREATE DATABASE {name}")
    return str(pg.server.url_for(name))


def _serve(folder: Path, kind: str, request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    srv = ServerProcess(folder, database_url=_database_url(kind, request))
    srv.kind = kind  # type: ignore[attr-defined]
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def server(
    tmp_path: Path, store_kind: str, request: pytest.FixtureRequest
) -> Iterator[ServerProcess]:
    yield from _serve(tmp_path, store_kind, request)


@pytest.fixture(scope="module")
def shared_server(
    tmp_path_factory: pytest.TempPathFactory, store_kind: str, request: pytest.FixtureRequest
) -> Iterator[ServerProcess]:
    yield from _serve(tmp_path_factory.mktemp("server"), store_kind, request)


class Bots:
    """Creates connected bots against one server and closes them all afterwards."""

    def __init__(self) -> None:
        self.made: list[Bot] = []
        self.url: str | None = None

    async def __call__(
        self,
        srv: Any = None,
        auth: dict[str, Any] | None = None,
        *,
        name: str = "bot",
        reconnection: bool = False,
    ) -> Bot:
        url = srv.url if srv is not None else self.url
        assert url, "no server url"
        bot = Bot(url, name=name)
        self.made.append(bot)
        await bot.connect(auth, reconnection=reconnection)
        return bot

    async def pair(
        self, srv: Any = None, currency: str | None = None, creator: str = "A"
    ) -> tuple[Bot, Bot]:
        """A room with both seats taken: returns (bot for A, bot for B)."""
        c = await self(srv, name=f"creator-{creator}")
        await c.create(creator, currency)
        j = await self(srv, name="joiner")
        await j.join(c.connection_id)
        return (c, j) if creator == "A" else (j, c)

    async def close(self) -> None:
        for bot in self.made:
            await bot.close()


@pytest.fixture
async def bots() -> AsyncIterator[Bots]:
    factory = Bots()
    try:
        yield factory
    finally:
        await factory.close()
