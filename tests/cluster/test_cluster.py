"""Several nodes on one database and one Redis: bots on different nodes settle,
presence and leaves cross nodes, races never fork a room, Redis outages heal."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import socketio

from settlement import ledger
from settlement.client import SettlementClient
from tests import outage
from tests.conftest import ServerProcess
from tests.pg import PgUrl
from tests.services import Nginx, RedisServer


class Cluster:
    def __init__(self, folder: Path, redis: RedisServer, database_url: str, n: int = 2) -> None:
        keys = folder / "keys"  # every node must share the signing key and token secret
        self.nodes = [
            ServerProcess(
                folder,
                # Racing bots send as fast as they can: the per-socket limit (tested in
                # tests/protocol) would answer some of them rate_limited here.
                {"SETTLEMENT_NODE_TTL": "3", "SETTLEMENT_RATE": "1000", "SETTLEMENT_BURST": "1000"},
                database_url=database_url,
                extra_args=["--redis", redis.url, "--key-dir", str(keys)],
            )
            for _ in range(n)
        ]

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    async def events_of(self, cid: str) -> list[dict[str, Any]]:
        """A room's stored events, read from the database itself."""
        url = self.nodes[0].database_url
        if url.startswith("sqlite:///"):
            with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
                rows = db.execute(
                    "SELECT body FROM events WHERE connection_id = ? ORDER BY seq", (cid,)
                ).fetchall()
            return [json.loads(body) for (body,) in rows]
        conn = await asyncpg.connect(url)
        try:
            records = await conn.fetch(
                "SELECT body FROM events WHERE connection_id = $1 ORDER BY seq", cid
            )
        finally:
            await conn.close()
        return [json.loads(r["body"]) for r in records]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


@pytest.fixture(params=["postgres", "sqlite"])
def cluster(
    tmp_path: Path, redis_server: RedisServer, request: pytest.FixtureRequest
) -> Iterator[Cluster]:
    if request.param == "postgres":
        url = str(request.getfixturevalue("pg_database"))
    else:  # two processes on one SQLite file: also serialised by (connection_id, seq)
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    c = Cluster(tmp_path, redis_server, url)
    c.start()
    try:
        yield c
    finally:
        c.stop()


async def until(predicate, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_bots_on_different_nodes_settle_and_see_each_other(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes
    async with SettlementClient(n1.url) as a, SettlementClient(n2.url) as b:
        created = await a.create("A", "EUR")
        cid = created["connection_id"]
        await b.join(cid)
        await until(lambda: a.last_state is not None and a.last_state["parties"]["B"]["online"])
        offer = await a.propose("1250.00")
        await until(lambda: b.last_state is not None and b.last_state["offer"] is not None)
        assert b.last_state["offer"]["amount"] == "1250.00"
        await b.dispute(offer["version"], "too much")
        await until(lambda: a.last_state["status"] == "disputed")
        offer = await a.propose("1100.00")
        await until(lambda: b.last_state["offer"]["version"] == offer["version"])
        settled = await b.accept(offer["version"])
        await until(lambda: a.last_state["status"] == "settled")
        assert a.last_state["settlement"] == settled["state"]["settlement"]
        receipt = await a.receipt()
        assert ledger.verify_receipt(receipt) is None
        # both nodes sign with the shared key
        async with aiohttp.ClientSession() as http:
            docs = [await (await http.get(n.url + "/api/keys")).json() for n in (n1, n2)]
        assert docs[0] == docs[1]
        keys = {
            k["key_id"]: __import__("base64").b64decode(k["public_key"]) for k in docs[0]["keys"]
        }
        assert ledger.verify_receipt(receipt, keys) is None
        seqs = [s["seq"] for s in b.states]
        assert seqs == sorted(seqs)


async def test_presence_and_leave_cross_nodes(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes
    a = await SettlementClient(n1.url).connect()
    created = await a.create("A")
    cid = created["connection_id"]
    b = await SettlementClient(n2.url).connect()
    await b.join(cid)
    b2 = await SettlementClient(n1.url).connect()  # B's second tab, on the other node
    await b2.resume(cid, b.token or "")
    await until(lambda: a.last_state["parties"]["B"]["online"])
    await b.close()  # B still online through b2
    await asyncio.sleep(0.5)
    assert a.last_state["parties"]["B"]["online"] is True
    await b2.close()
    await until(lambda: a.last_state["parties"]["B"]["online"] is False)
    # B comes back on node 2 and leaves: every socket of seat B on node 1 is unseated
    b = SettlementClient(n2.url)
    b.connection_id, b.token = cid, b2.token
    await b.connect()
    b3 = await SettlementClient(n1.url).connect()
    await b3.resume(cid, b2.token or "")
    await until(lambda: b.last_state is not None and b.last_state["parties"]["B"]["online"])
    await b.leave()
    await until(
        lambda: b3.last_state is not None and b3.last_state["parties"]["B"]["seated"] is False
    )
    ack = await b3.call("history", {})
    assert ack["ok"] is False and ack["error"]["code"] == "not_seated"
    for c in (a, b, b3):
        await c.close()


async def test_both_nodes_racing_on_one_room_never_fork_it(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes
    a1 = await SettlementClient(n1.url).connect()
    created = await a1.create("A")
    cid = created["connection_id"]
    # Seat A's second tab signs with the seat's key (protocol 1.1).
    a2 = await SettlementClient(n2.url, key=a1.key).connect()
    await a2.resume(cid, created["token"])

    async def hammer(client: SettlementClient, base: int) -> list[int]:
        return [(await client.propose(str(base + i)))["version"] for i in range(20)]

    v1, v2 = await asyncio.gather(hammer(a1, 100), hammer(a2, 900))
    assert sorted(v1 + v2) == list(range(1, 41))
    events = await a2.history()
    assert [e["seq"] for e in events] == list(range(1, 42))
    assert ledger.verify_chain(events) is None
    await a1.close()
    await a2.close()


async def test_redis_outage_keeps_committing_and_sockets_converge(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    n1, n2 = cluster.nodes
    async with SettlementClient(n1.url) as a, SettlementClient(n2.url) as b:
        created = await a.create("A")
        await b.join(created["connection_id"])
        await until(lambda: b.last_state is not None)
        redis_server.stop()
        acked = []
        for amount in ("10", "20", "30"):
            ack = await a.propose(amount)  # commits go on without the message queue
            acked.append(ack["version"])
        assert acked == [1, 2, 3]
        redis_server.start()  # a fresh, empty Redis on the same port
        # every socket converges to the latest state without doing anything
        await until(
            lambda: b.last_state["offer"] is not None and b.last_state["offer"]["version"] == 3, 20
        )
        assert b.last_state["offer"]["amount"] == "30.00"
        await until(lambda: a.last_state["parties"]["B"]["online"], 20)
        final = await b.accept(3)
        assert final["state"]["status"] == "settled"


async def test_a_crashed_nodes_sockets_stop_counting(cluster: Cluster) -> None:
    n1, n2 = cluster.nodes
    a = await SettlementClient(n1.url).connect()
    created = await a.create("A")
    b = SettlementClient(n2.url, retries=0)
    b.sio.reconnection = False
    await b.connect()
    await b.join(created["connection_id"])
    await until(lambda: a.last_state["parties"]["B"]["online"])
    n2.kill()  # SIGKILL: no disconnect handler runs on node 2
    await until(lambda: a.last_state["parties"]["B"]["online"] is False, 15)
    assert a.last_state["parties"]["B"]["seated"] is True  # offline, not gone
    await a.close()


async def test_bots_settle_through_nginx(cluster: Cluster, tmp_path: Path) -> None:
    proxy = Nginx(tmp_path, [n.port for n in cluster.nodes])
    proxy.start()
    try:
        async with SettlementClient(proxy.url) as a, SettlementClient(proxy.url) as b:
            created = await a.create("A")
            await b.join(created["connection_id"].lower())
            offer = await a.propose("42.00")
            await until(lambda: b.last_state is not None and b.last_state["offer"] is not None)
            await b.accept(offer["version"])
            await until(lambda: a.last_state["status"] == "settled")
        async with SettlementClient(proxy.url, transports=["polling", "websocket"]) as c:
            other = await c.create("B")
            assert other["state"]["parties"]["B"]["online"] is True
        async with aiohttp.ClientSession() as http:
            r = await http.get(proxy.url + "/healthz")
            assert r.status == 200 and await r.json() == {"status": "ok"}
    finally:
        proxy.stop()


async def test_postgres_outage_gives_unavailable_and_recovers_without_restart(
    tmp_path: Path, redis_server: RedisServer, pg_database: PgUrl
) -> None:
    c = Cluster(tmp_path, redis_server, str(pg_database))
    c.start()
    try:
        n1, n2 = c.nodes
        # Unsigned (protocol 1.0) clients: the raw `propose` retried below carries no
        # signature, as a 1.0 bot's would.
        a = await SettlementClient(n1.url, sign=False).connect()
        b = await SettlementClient(n2.url, sign=False).connect()
        created = await a.create("A")
        await b.join(created["connection_id"])
        first = await a.propose("100")
        # A room settled on node 1 only: cached there, never loaded by node 2.
        async with SettlementClient(n1.url) as sa, SettlementClient(n1.url) as sb:
            settled = (await sa.create("A"))["connection_id"]
            await sb.join(settled)
            await sb.respond("accept", (await sa.propose("42.50"))["version"])
            token = sa.token
        assert token is not None
        async with aiohttp.ClientSession() as http:
            before = await outage.get(http, n1.url, outage.receipt(settled), token)
            assert before.status == 200
        pg_database.stop_postgres("immediate")  # as in a crash: every link just drops
        async with aiohttp.ClientSession() as http:
            r = await http.get(n1.url + "/healthz")
            assert r.status == 503 and int(r.headers["Retry-After"]) >= 1
            await http_routes_during_outage(http, n1, n2, settled, token)
        refused = await a.call("propose", {"amount": "200", "request_id": "during-outage-1"})
        assert refused["ok"] is False and refused["error"]["code"] == "unavailable"
        pg_database.start_postgres()
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                r = await http.get(n1.url + "/healthz")
                if r.status == 200:
                    break
                await asyncio.sleep(0.1)
            assert r.status == 200
            # the same routes answer again, on both nodes, without a restart
            for node in (n1, n2):
                shown = await outage.get(http, node.url, outage.page(settled))
                assert shown.status == 200 and settled in shown.text, node.url
                again = await outage.get(http, node.url, outage.receipt(settled), token)
                assert again.status == 200 and again.json() == before.json(), node.url
        # the same request_id now commits, once; nothing acked before was lost
        retried = await a.call("propose", {"amount": "200", "request_id": "during-outage-1"})
        assert retried["ok"] is True and retried["version"] == first["version"] + 1
        again = await a.call("propose", {"amount": "200", "request_id": "during-outage-1"})
        assert again == retried
        await until(lambda: b.last_state is not None and b.last_state["offer"]["version"] == 2)
        await b.accept(2)
        events = await b.history()
        assert [e["type"] for e in events] == [
            "created",
            "joined",
            "proposed",
            "proposed",
            "accepted",
        ]
        await a.close()
        await b.close()
    finally:
        c.stop()


async def http_routes_during_outage(
    http: aiohttp.ClientSession,
    n1: ServerProcess,
    n2: ServerProcess,
    settled: str,
    token: str,
) -> None:
    """PostgreSQL is down. Every route that reads the store answers 503 with
    Retry-After (pages: a page that retries by itself; API: a JSON error), once
    logged and counted each, no traceback; a page node 1 has in memory is still shown."""
    # Node 1 has the room cached: its page needs no store and is still served.
    cached = await outage.get(http, n1.url, outage.page(settled))
    assert cached.status == 200 and settled in cached.text and "Settled" in cached.text
    answered: dict[str, list[str]] = {n1.url: [], n2.url: []}
    # The receipt is read fresh from the store on every node, cached or not.
    for node in (n1, n2):
        for bearer in (token, None, "not-a-token"):
            got = await outage.get(http, node.url, outage.receipt(settled), bearer)
            outage.assert_unavailable_json(got)
            answered[node.url].append(outage.RECEIPT_ROUTE)
    # Node 2 never loaded the room: its page must read the store.
    for path in (outage.page(settled), outage.page(settled.lower()), "/c/0000-0000-0000"):
        got = await outage.get(http, n2.url, path)
        outage.assert_unavailable_page(got)
        answered[n2.url].append(outage.PAGE_ROUTE)
    # The page's socket, following the room without a seat, on the node without it.
    errors: list[Any] = []
    watcher = socketio.AsyncClient(reconnection=False)
    watcher.on("error", errors.append, namespace="/settlement")
    await watcher.connect(
        n2.url,
        namespaces=["/settlement"],
        transports=["websocket"],
        auth={"view": "html", "connection_id": settled},
    )
    try:
        await until(lambda: bool(errors))
    finally:
        await watcher.disconnect()
    assert [e["code"] for e in errors] == ["unavailable"], errors
    for node in (n1, n2):
        routes = answered[node.url]
        counts = await outage.unavailable_counts(http, node.url)
        expected = {r: float(routes.count(r)) for r in (outage.PAGE_ROUTE, outage.RECEIPT_ROUTE)}
        assert counts == expected, (node.url, counts)
        lines = outage.outage_lines(node.log())
        assert sorted(line["route"] for line in lines) == sorted(routes)
        assert all(line["level"] == "warning" and "exception" not in line for line in lines)
        assert "Traceback" not in node.log(), node.log()[-3000:]


async def settle_across_nodes(cluster: Cluster, rooms: int, concurrency: int) -> dict[str, int]:
    """A on node 1 and B on node 2 settle `rooms` negotiations; then count from the store."""
    n1, n2 = cluster.nodes
    acked: list[tuple[str, str, int]] = []  # (connection_id, event, version) of every ok ack
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem, SettlementClient(n1.url) as a, SettlementClient(n2.url) as b:
            created = await a.create("A")
            cid = created["connection_id"]
            await b.join(cid)
            acked.extend([(cid, "create", 0), (cid, "join", 0)])
            first = await a.propose(f"{100 + i}.00")
            acked.append((cid, "propose", first["version"]))
            await until(lambda: b.last_state is not None and b.last_state["offer"] is not None)
            await b.dispute(first["version"], "lower, please")
            acked.append((cid, "dispute", first["version"]))
            second = await a.propose(f"{90 + i}.50")
            acked.append((cid, "propose", second["version"]))
            await until(lambda: b.last_state["offer"]["version"] == second["version"])
            await b.accept(second["version"])
            acked.append((cid, "accept", second["version"]))
            await until(lambda: a.last_state["status"] == "settled")

    await asyncio.gather(*(one(i) for i in range(rooms)))
    # From the database itself: every acked command is
    # there exactly once, nothing else is, and every chain verifies.
    lost = duplicated = settled = 0
    by_room: dict[str, list[tuple[str, int]]] = {}
    for cid, event, version in acked:
        by_room.setdefault(cid, []).append((event, version))
    kinds = {
        "created": "create",
        "joined": "join",
        "proposed": "propose",
        "disputed": "dispute",
        "accepted": "accept",
    }
    for cid, commands in by_room.items():
        stored = await cluster.events_of(cid)
        assert ledger.verify_chain(stored) is None
        seen = [(kinds[e["type"]], e.get("version", 0)) for e in stored]
        for command in commands:
            count = seen.count(command)
            lost += count == 0
            duplicated += count > 1
        settled += stored[-1]["type"] == "accepted"
        assert len(seen) == len(commands)
    return {
        "rooms": rooms,
        "commands_acked": len(acked),
        "settled": settled,
        "lost": lost,
        "duplicated": duplicated,
    }


async def test_two_nodes_settle_many_rooms_with_nothing_lost_or_duplicated(
    cluster: Cluster,
) -> None:
    figures = await settle_across_nodes(cluster, rooms=20, concurrency=10)
    print("two-node run:", figures)
    assert figures["settled"] == 20
    assert figures["lost"] == 0 and figures["duplicated"] == 0


@pytest.mark.slow
async def test_two_nodes_settle_many_rooms_long(cluster: Cluster) -> None:
    figures = await settle_across_nodes(cluster, rooms=400, concurrency=40)
    print("two-node run:", figures)
    assert figures["settled"] == 400
    assert figures["lost"] == 0 and figures["duplicated"] == 0
