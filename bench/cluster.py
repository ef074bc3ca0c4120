"""The many-node path for `python -m bench --database postgresql [--nodes 2]`.

A throwaway PostgreSQL (tests/daemons.py, the tests' own server class, with
pg_stat_statements preloaded), and for two nodes a Redis and nginx from
deploy/nginx.conf (ports rewritten, as the cluster test does), all in the
run's temporary folder. A `PgPath` is one service path on them: one node, or
two nodes behind nginx. It looks like a `ServerProcess` to the bench (url,
cpu_seconds, rss, processes, counters), so every phase runs against it as is.

Two nodes: nginx's `ip_hash` sends every loopback client to one node, so the A
sockets connect through nginx (whichever node it picks; a probe finds out
which) and the B sockets straight to the other node. Every command then
changes a room whose other seat sits on the other node: each state crosses
Redis.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import redis

from tests.daemons import MissingBinary, Nginx, PostgresServer, RedisServer, find_bindir

from .servers import ServerProcess, start_service

# pg_stat_statements counts every statement a backend runs, BEGIN and COMMIT too
# (track_utility), in shared memory at once (pg_stat_database lags up to a second).
# `commits` are explicit COMMITs plus the store's one-statement commit calls
# (`SELECT settlement_commit(...)`, each its own transaction: a batch of commands).
PG_OPTIONS = (
    "-c shared_preload_libraries=pg_stat_statements "
    "-c pg_stat_statements.track_utility=on -c pg_stat_statements.max=10000"
)

# asyncpg's pool resets a connection on release with one simple query of four
# statements (SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL):
# one round trip, four pg_stat_statements entries. `round_trips` counts it once.
RESET_TAIL = ("SELECT pg_advisory_unlock_all()", "CLOSE ALL", "UNLISTEN *")

COUNTERS_SQL = """
SELECT
  coalesce(sum(s.calls), 0)::float8 AS statements,
  coalesce(sum(s.calls) FILTER (WHERE NOT s.query = ANY($2::text[])), 0)::float8
    AS round_trips,
  coalesce(sum(s.calls) FILTER (WHERE upper(ltrim(s.query)) LIKE 'COMMIT%'
    OR s.query LIKE '%settlement_commit(%'), 0)::float8 AS commits,
  pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8 AS wal
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = $1
"""


MIX_SQL = """
SELECT s.query, sum(s.calls)::float8 AS calls
FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
WHERE d.datname = $1 GROUP BY s.query
"""


def statement_mix(
    before: dict[str, float], after: dict[str, float], per_command: float, top: int = 12
) -> list[dict[str, Any]]:
    """The statements between two `statement_calls`, commonest first: each one's share
    of them all, and that share of `per_command` (the windows' statements per command)."""
    calls = {q: n - before.get(q, 0.0) for q, n in after.items()}
    total = sum(calls.values())
    ranked = sorted(((n, q) for q, n in calls.items() if n > 0), reverse=True)[:top]
    return [
        {
            "query": " ".join(q.split())[:200],
            "share": round(n / total, 4),
            "per_command": round(n / total * per_command, 3),
        }
        for n, q in ranked
    ]


class Postgres:
    """The run's PostgreSQL server, and a connection (to `postgres`) that reads its counters."""

    def __init__(self) -> None:
        bindir = find_bindir()
        if bindir is None:
            raise MissingBinary("PostgreSQL server binaries not found (apt-get install postgresql)")
        self.server = PostgresServer(bindir, PG_OPTIONS)
        self._loop = asyncio.new_event_loop()
        self._conn: Any = None
        try:
            self.server.init()
            self.server.start_postgres()
            self.server.psql("CREATE EXTENSION pg_stat_statements")
            self._conn = self._loop.run_until_complete(asyncpg.connect(self.server.url))
        except BaseException:
            self.close()
            raise

    def database(self, name: str) -> str:
        self.server.psql(f"CREATE DATABASE {name}")
        return self.server.url_for(name)

    def processes(self) -> list[tuple[str, psutil.Process]]:
        """The postmaster and every child: backends, WAL writer, checkpointer, ..."""
        pid = int((self.server.data / "postmaster.pid").read_text().split()[0])
        master = psutil.Process(pid)
        return [("postgres", p) for p in (master, *master.children(recursive=True))]

    def counters(self, database: str) -> dict[str, float]:
        row = self._loop.run_until_complete(
            self._conn.fetchrow(COUNTERS_SQL, database, list(RESET_TAIL))
        )
        return {
            "pg_statements": float(row["statements"]),
            "pg_round_trips": float(row["round_trips"]),
            "pg_commits": float(row["commits"]),
            "pg_wal_bytes": float(row["wal"]),
        }

    def statement_calls(self, database: str) -> dict[str, float]:
        """pg_stat_statements' calls by (normalised) statement text, for one database."""
        rows = self._loop.run_until_complete(self._conn.fetch(MIX_SQL, database))
        return {str(r["query"]): float(r["calls"]) for r in rows}

    def log_tail(self) -> str:
        return self.server.log()

    def close(self) -> None:
        try:
            if self._conn is not None:
                self._loop.run_until_complete(self._conn.close())
        finally:
            self._loop.close()
            self.server.destroy()


class Redis:
    """redis-server on a free port, no persistence; INFO counters."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        self.server = RedisServer(folder)
        self.server.start()
        assert self.server.proc is not None
        self.proc = psutil.Process(self.server.proc.pid)
        self.client = redis.Redis(host="127.0.0.1", port=self.server.port)
        self._own = 0  # our INFO commands so far (counted in total_commands_processed)

    @property
    def url(self) -> str:
        return self.server.url

    def counters(self) -> dict[str, float]:
        stats = self.client.info("stats")
        commands = self.client.info("commandstats")
        own, self._own = self._own, self._own + 2
        return {
            "redis_commands": float(stats["total_commands_processed"]) - own,
            "redis_publishes": float(commands.get("cmdstat_publish", {}).get("calls", 0)),
        }

    def close(self) -> None:
        self.client.close()
        self.server.stop()


def routed_port(nginx: Nginx, ports: list[int]) -> int:
    """Which node nginx sends this machine's clients to: open one websocket, look."""
    with socket.create_connection(("127.0.0.1", nginx.port), timeout=5) as s:
        s.sendall(
            b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = s.recv(4096)
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"nginx did not upgrade the probe: {head[:200]!r}")
        assert nginx.proc is not None
        master = psutil.Process(nginx.proc.pid)
        for proc in (master, *master.children()):
            for c in proc.net_connections("tcp"):
                if c.raddr and c.raddr.port in ports and c.status == psutil.CONN_ESTABLISHED:
                    return int(c.raddr.port)
    raise RuntimeError("could not tell which node nginx chose")


class PgPath:
    """One service path on PostgreSQL: one node, or several behind nginx with Redis."""

    def __init__(
        self,
        name: str,
        nodes: list[ServerProcess],
        pg: Postgres,
        database: str,
        redis_server: Redis | None = None,
        nginx: Nginx | None = None,
    ) -> None:
        self.name = name
        self.nodes = nodes
        self.pg = pg
        self.database = database
        self.redis = redis_server
        self.nginx = nginx
        self.url = self.url_b = nodes[0].url
        self.spread = "A and B on the one node"
        if nginx is not None:
            chosen = routed_port(nginx, [n.port for n in nodes])
            other = next(n for n in nodes if n.port != chosen)
            self.url, self.url_b = nginx.url, other.url
            self.spread = (
                f"A through nginx (to the node on :{chosen}), B straight to the node on "
                f":{other.port}"
            )

    @property
    def pid(self) -> int:
        return self.nodes[0].pid

    def cpu_seconds(self) -> float:
        return sum(n.cpu_seconds() for n in self.nodes)

    def rss(self) -> int:
        return sum(n.rss() for n in self.nodes)

    def processes(self) -> list[tuple[str, psutil.Process]]:
        procs = [("node", n.proc) for n in self.nodes] + self.pg.processes()
        if self.redis is not None:
            procs.append(("redis", self.redis.proc))
        if self.nginx is not None and self.nginx.proc is not None:
            master = psutil.Process(self.nginx.proc.pid)
            procs += [("nginx", p) for p in (master, *master.children())]
        return procs

    def counters(self) -> dict[str, float]:
        got = self.pg.counters(self.database)
        if self.redis is not None:
            got.update(self.redis.counters())
        return got

    def statement_calls(self) -> dict[str, float]:
        return self.pg.statement_calls(self.database)

    def log_tail(self) -> str:
        tails = [f"[{n.name}]\n{n.log_tail()}" for n in self.nodes]
        return "\n".join([*tails, f"[postgres]\n{self.pg.log_tail()}"])

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
        if self.nginx is not None:
            self.nginx.stop()


class Backends:
    """The servers a PostgreSQL run needs, started on demand, all stopped by `close()`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.pg = Postgres()
        self.redis: Redis | None = None

    def one_node(self, tag: str, extra: list[str]) -> PgPath:
        url = self.pg.database(tag)
        keys = ["--key-dir", str(self.tmp / f"{tag}.keys")]
        node = start_service(self.tmp, tag, [*extra, *keys], database=url, kind="pg")
        return PgPath("pg", [node], self.pg, tag)

    def two_nodes(self, tag: str, extra: list[str]) -> PgPath:
        if self.redis is None:
            self.redis = Redis(self.tmp / "redis")
        url = self.pg.database(tag)
        # Both nodes share the signing key and token secret, as deployed.
        flags = [*extra, "--redis", self.redis.url, "--key-dir", str(self.tmp / f"{tag}.keys")]
        nodes: list[ServerProcess] = []
        try:
            for i in (1, 2):
                nodes.append(
                    start_service(self.tmp, f"{tag}-node{i}", flags, database=url, kind="pg2")
                )
            folder = self.tmp / f"{tag}-nginx"
            folder.mkdir()
            nginx = Nginx(folder, [n.port for n in nodes])
        except BaseException:
            for n in nodes:
                n.stop()
            raise
        try:
            nginx.start()
            return PgPath("pg2", nodes, self.pg, tag, self.redis, nginx)
        except BaseException:
            nginx.stop()
            for n in nodes:
                n.stop()
            raise

    def close(self) -> None:
        try:
            if self.redis is not None:
                self.redis.close()
        finally:
            self.pg.close()
