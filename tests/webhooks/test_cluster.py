"""Two nodes on one PostgreSQL database and one Redis: each message is held by one node at
a time, and a node killed while it holds messages has them finished by the other within
30 s (a lease of 11 s here, 20 s by default)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from settlement.client import SettlementClient
from tests.conftest import ServerProcess
from tests.pg import PgUrl
from tests.services import RedisServer

from .receiver import Delivery, Receiver, secret
from .test_delivery import webhook_args

LEASE = 11


async def stored_ids(url: str) -> set[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT connection_id, seq FROM events")
    finally:
        await conn.close()
    return {f"evt_{r['connection_id'].replace('-', '')}_{r['seq']}" for r in rows}


async def lease_holders(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT lease_owner, count(*) AS n FROM webhooks "
            "WHERE lease_owner IS NOT NULL GROUP BY lease_owner"
        )
    finally:
        await conn.close()
    return {r["lease_owner"]: r["n"] for r in rows}


@pytest.mark.slow  # about 40 s: two nodes, a lease to run out, hanging attempts to time out
async def test_a_node_killed_holding_messages_has_them_finished_by_the_other(
    tmp_path: Path, pg_database: PgUrl, redis_server: RedisServer
) -> None:
    key = secret()
    hold = asyncio.Event()  # deliveries hang until this is set
    hold.set()

    def mode(_: Delivery) -> str:
        return "hang" if hold.is_set() else "ok"

    async with Receiver(key, mode=mode) as receiver:
        nodes = [
            ServerProcess(
                tmp_path,
                {"SETTLEMENT_WEBHOOK_LEASE": str(LEASE), "SETTLEMENT_NODE_TTL": "3"},
                database_url=pg_database,
                extra_args=[
                    "--redis",
                    redis_server.url,
                    "--key-dir",
                    str(tmp_path / "keys"),
                    *webhook_args(receiver.url, key=key),
                ],
            )
            for _ in range(2)
        ]
        n1, n2 = nodes
        for node in nodes:
            await asyncio.to_thread(node.start)
        try:
            rooms = []
            for _ in range(6):  # commits on node 1: it is woken at once and claims them
                async with SettlementClient(n1.url) as a:
                    rooms.append((await a.create("A"))["connection_id"])
                    await a.propose("12.50")
            await receiver.until(lambda: len(receiver.received) >= 6)
            holders = await lease_holders(pg_database)
            assert n1.proc is not None
            held_by_n1 = sum(n for owner, n in holders.items() if f":{n1.proc.pid}:" in owner)
            assert held_by_n1 >= 1, holders
            # One node at a time: six heads held, each attempted once so far.
            assert sum(holders.values()) == 6 and sorted(set(receiver.ids())) == sorted(
                receiver.ids()
            )
            await asyncio.to_thread(n1.kill)
            killed_at = time.monotonic()
            hold.clear()  # the endpoint answers again
            async with SettlementClient(n2.url) as b:  # and node 2 has work of its own
                await b.create("A")
                await b.propose("99")
            expected = await stored_ids(pg_database)
            assert len(expected) == 14

            def answered() -> set[str]:
                return {d.id for d in receiver.received if d.answer == "ok"}

            await receiver.until(lambda: expected <= answered(), timeout=30)
            assert time.monotonic() - killed_at < 30  # node 1's messages were taken over
            await asyncio.sleep(0.5)
            assert answered() == expected == set(receiver.ids())
            assert all(len(b) == 1 for b in receiver.bodies_by_id().values())
        finally:
            for node in nodes:
                await asyncio.to_thread(node.stop)
    assert receiver.rejected == []


async def test_two_nodes_on_one_sqlite_file_deliver_each_message_once_in_order(
    tmp_path: Path,
) -> None:
    key = secret()
    async with Receiver(key) as receiver:
        nodes = [
            ServerProcess(tmp_path, extra_args=webhook_args(receiver.url, key=key))
            for _ in range(2)
        ]
        for node in nodes:
            await asyncio.to_thread(node.start)
        try:
            async with SettlementClient(nodes[0].url) as a, SettlementClient(nodes[1].url) as b:
                cid = (await a.create("A"))["connection_id"]
                await b.join(cid)
                for i in range(10):  # commits alternate between the nodes
                    offer = await a.propose(str(10 + i))
                    await b.dispute(offer["version"])
            compact = cid.replace("-", "")
            expected = [f"evt_{compact}_{seq}" for seq in range(1, 23)]
            await receiver.until(lambda: len(receiver.received) >= len(expected))
            await asyncio.sleep(1.5)  # a poll of each node: nothing more comes
        finally:
            for node in nodes:
                await asyncio.to_thread(node.stop)
    assert receiver.ids() == expected
    assert receiver.rejected == []
