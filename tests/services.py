"""Real Redis and nginx processes from Debian's packages, on loopback ports, for tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.daemons import Nginx, RedisServer, require, wait_port

__all__ = ["Nginx", "RedisServer", "redis_server", "require", "wait_port"]


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
