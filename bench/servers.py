"""Server processes under test: the settlement server (`app.py`) and the ceiling."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A server subprocess on a free loopback port; its log goes to a file."""

    def __init__(self, name: str, argv: list[str], port: int, log_path: Path) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.url_b = self.url  # where the B sockets connect (bench/cluster.py: another node)
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.proc = psutil.Process(self.popen.pid)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def cpu_seconds(self) -> float:
        t = self.proc.cpu_times()
        return float(t.user + t.system)

    def rss(self) -> int:
        return int(self.proc.memory_info().rss)

    def processes(self) -> list[tuple[str, psutil.Process]]:
        """Every process that serves this target, by group (bench/meters.py)."""
        return [("node", self.proc)]

    def counters(self) -> dict[str, float]:
        return {}

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


def start_service(
    tmp: Path, tag: str, extra: list[str], database: str | None = None, kind: str = "service"
) -> ServerProcess:
    """`app.py` on a fresh SQLite file in `tmp` (durable: WAL, synchronous=FULL), or on
    `database` (a PostgreSQL URL, bench/cluster.py); `kind` names it in the results."""
    port = free_port()
    argv = [
        sys.executable,
        "app.py",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--database",
        database or f"sqlite:///{tmp / f'{tag}.db'}",  # absolute: sqlite:////abs/path.db
        "--rate",
        "1000000",
        "--burst",
        "1000000",
        *extra,
    ]
    server = ServerProcess(f"{kind}[{tag}]", argv, port, tmp / f"{tag}.log")
    server.wait_ready()
    return server


def start_receiver(tmp: Path, tag: str) -> ServerProcess:
    """A webhook endpoint that answers 204 (`--webhooks`)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.receiver", "--host", "127.0.0.1", "--port", str(port)]
    server = ServerProcess(f"receiver[{tag}]", argv, port, tmp / f"{tag}.log")
    server.wait_ready()
    return server


def start_ceiling(tmp: Path, tag: str) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, "-m", "bench.ceiling", "--host", "127.0.0.1", "--port", str(port)]
    server = ServerProcess(f"ceiling[{tag}]", argv, port, tmp / f"{tag}.log")
    server.wait_ready()
    return server
