"""Fixtures for the black-box protocol suite: bot factories and ready-made rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from .bots import Bot

BotFactory = Callable[..., Awaitable[Bot]]


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
