"""Shared fixtures: a real server process on a loopback port, on its own SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import free_port

ROOT = Path(__file__).resolve().parent.parent

# Real PostgreSQL, Redis and nginx processes for the tests that need them.
pytest_plugins = ["tests.pg", "tests.services"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="run long fault and load tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long run: pass --long")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


class ServerProcess:
    """`python app.py` on 127.0.0.1:<free port> with SQLite in a temporary folder."""

    def __init__(
        self,
        folder: Path,
        extra_env: dict[str, str] | None = None,
        *,
        database_url: str | None = None,
        extra_args: list[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.folder = folder
        self.db_path = folder / "settlement.db"
        self.database_url = database_url or f"sqlite:///{self.db_path}"
        self.extra_args = extra_args or []
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / f"server-{self.port}.log"
        self.extra_env = extra_env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        env.update(self.extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "app.py"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database",
                self.database_url,
                *self.extra_args,
            ],
            cwd=str(self.folder),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as in a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def restart(self, *, hard: bool = True) -> None:
        self.kill() if hard else self.stop()
        self.start()

    def dump_store(self) -> bytes:
        """Everything the store holds, as bytes (to search it for secrets)."""
        if self.database_url.startswith("sqlite:///"):
            data = b""
            for suffix in ("", "-wal", "-journal"):
                path = self.db_path.with_name(self.db_path.name + suffix)
                if path.exists():
                    data += path.read_bytes()
            return data
        tables = ("meta", "rooms", "events", "seats", "idempotency")
        sql = ";".join(f"COPY {t} TO STDOUT" for t in tables)
        out = subprocess.run(
            ["psql", self.database_url, "-q", "-c", sql], capture_output=True, check=True
        )
        return out.stdout

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh server per test (own port, own database)."""
    srv = ServerProcess(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a whole test module (tests must use their own rooms)."""
    srv = ServerProcess(tmp_path_factory.mktemp("server"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
