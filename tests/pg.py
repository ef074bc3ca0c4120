"""PostgreSQL test fixtures: a real server from Debian's packages, one fresh database per test.

Register them in a conftest with ``pytest_plugins = ["tests.pg"]`` (top-level conftest)
or ``from tests.pg import pg_database, postgres_url`` (any conftest).

- ``postgres_url`` (session): a ``PgUrl`` (a ``str``) for the ``postgres`` database of a
  server started in a temporary folder on a free loopback port, stopped at the end.
- ``pg_database`` (function): a ``PgUrl`` for a new, empty database ``t_<uuid>``.

Both carry ``stop_postgres(mode="fast")`` / ``start_postgres()`` (and ``.server``) so a test can
take the server down and bring it back on the same port and data folder.

The server itself is `tests.daemons.PostgresServer` (shared with the benchmark).
CI runs as root and PostgreSQL refuses to: then the folder belongs to the ``postgres``
system user and every server binary runs through ``runuser -u postgres --``.
Without the binaries the fixtures fail (never skip: CI must run these tests).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.daemons import PostgresServer, find_bindir
from tests.daemons import free_port as _free_port

__all__ = ["PgUrl", "PostgresServer", "_free_port", "find_bindir", "pg_database", "postgres_url"]


class PgUrl(str):
    """A database URL that also lets a test stop and start its server."""

    server: PostgresServer

    def __new__(cls, url: str, server: PostgresServer) -> PgUrl:
        obj = super().__new__(cls, url)
        obj.server = server
        return obj

    def stop_postgres(self, mode: str = "fast") -> None:
        self.server.stop_postgres(mode)

    def start_postgres(self) -> None:
        self.server.start_postgres()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[PgUrl]:
    """A real PostgreSQL server for the whole session; its `postgres` database's URL."""
    bindir = find_bindir()
    if bindir is None:
        # fail, never skip: CI must run these tests
        pytest.fail(
            "PostgreSQL server binaries not found (apt-get install postgresql, or PG_BINDIR)"
        )
    server = PostgresServer(bindir)
    try:
        server.init()
        server.start_postgres()
        yield PgUrl(server.url, server)
    finally:
        server.destroy()


@pytest.fixture
def pg_database(postgres_url: PgUrl) -> Iterator[PgUrl]:
    """A fresh, empty database for one test; dropped afterwards."""
    server = postgres_url.server
    server.start_postgres()  # a previous test may have left it down
    name = f"t_{uuid.uuid4().hex}"
    server.psql(f"CREATE DATABASE {name}")
    try:
        yield PgUrl(server.url_for(name), server)
    finally:
        server.start_postgres()
        try:
            server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        except RuntimeError:
            pass
