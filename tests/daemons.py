"""Throwaway server processes from Debian's packages: PostgreSQL, Redis, nginx, on loopback.

No pytest in here: the fixtures (tests/pg.py, tests/services.py) and the benchmark
(`python -m bench --database postgresql`, bench/cluster.py) both start their servers
with these classes. A missing binary raises `MissingBinary` (a test then fails,
never skips: CI must run those tests).

CI runs as root and PostgreSQL refuses to: then the folder belongs to the ``postgres``
system user and every server binary runs through ``runuser -u postgres --``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class MissingBinary(RuntimeError):
    """A server binary is not installed."""


def free_port() -> int:
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

    def __init__(self, bindir: Path, options: str = "") -> None:
        """`options`: extra `postgres` command-line settings (`-c name=value ...`)."""
        self.bindir = bindir
        self.options = options
        self.as_root = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="settlement-pg-"))
        self.data = self.base / "data"
        self.sockets = self.base / "sockets"
        self.logfile = self.base / "postgres.log"
        self.port = free_port()
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
        if self.options:
            options += " " + self.options
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


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def require(binary: str) -> str:
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/usr/bin/{binary}") if Path(p).exists()), None
    )
    if path is None:
        raise MissingBinary(f"{binary} is not installed (./scripts/test installs it with apt-get)")
    return path


class RedisServer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                require("redis-server"),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class Nginx:
    """nginx with the repository's deploy/nginx.conf, its ports rewritten."""

    def __init__(self, folder: Path, upstreams: list[int]) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = (ROOT / "deploy" / "nginx.conf").read_text()
        servers = "".join(f"        server 127.0.0.1:{p};\n" for p in upstreams)
        conf = conf.replace(
            "        server 127.0.0.1:8081;\n        server 127.0.0.1:8082;\n", servers
        )
        conf = conf.replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{self.port};")
        assert str(self.port) in conf and all(str(p) in conf for p in upstreams)
        (folder / "tmp").mkdir(exist_ok=True)
        (folder / "nginx.conf").write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                require("nginx"),
                "-p",
                str(self.folder),
                "-c",
                str(self.folder / "nginx.conf"),
                "-g",
                f"daemon off; pid {self.folder}/nginx.pid; error_log {self.folder}/error.log;",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
