"""PostgreSQL test fixtures: a real server from Debian's packages, one fresh database per test.

Register them in a conftest with ``pytest_plugins = ["tests.pg"]`` (top-level conftest)
or ``from tests.pg import pg_database, postgres_url`` (any conftest).

- ``postgres_url`` (session): a ``PgUrl`` (a ``str``) for the ``postgres`` database of a
  server started in a temporary folder on a free loopback port, stopped at the end.
- ``pg_database`` (function): a ``PgUrl`` for a new, empty database ``t_<uuid>``.

Both carry ``stop_postgres(mode="fast")`` / ``start_postgres()`` (and ``.server``) so a test can
take the server down and bring it back on the same port and data folder.

CI runs as root and PostgreSQL refuses to: then the folder belongs to the ``postgres``
system user and every server binary runs through ``runuser -u postgres --``.
Without the binaries the fixtures fail (never skip: CI must run these tests).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_bindir() -> Path | None:
    """`$PG_BINDIR`, else the newest /usr/lib/postgresql/<n>/bin, else `pg_config --bindir`."""
    env = os.environ.get("PG_BINDIR")
    candidates = [env] if env else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            )
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.CalledProcessError):
            pass
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


class PostgresServer:
    """One PostgreSQL cluster in a temporary folder, listening on 127.0.0.1:<port>."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="settlement-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sockets"
        self.logfile = self.base / "postgres.log"
        self.port = _free_port()
        self.running = False
        self.sockets.mkdir()
        if self.as_root:
            # mkdtemp made it 0700 root: hand the whole folder to the postgres user.
            shutil.chown(self.base, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n{self.log()}"
            )

    def init(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",  # only speeds up initdb; the server itself runs with fsync=on
        )

    def start_postgres(self) -> None:
        if self.running:
            return
        options = (
            f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c fsync=on "
            "-c max_connections=200"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w", "start"
        )
        self.running = True

    def stop_postgres(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m fast` (clients told, then cut), or `immediate` (as in a crash)."""
        if not self.running:
            return
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self.running = False

    def psql(self, sql: str, database: str = "postgres") -> None:
        """Run one statement as the superuser (over TCP: psql as root is fine)."""
        proc = subprocess.run(
            [
                str(self.bindir / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-c",
                sql,
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"psql failed: {sql}\n{proc.stderr}")

    def log(self) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def destroy(self) -> None:
        try:
            self.stop_postgres()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


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
