"""Guarantees of the server beyond single commands: two processes on one database,
forged reserved events in raw Socket.IO frames, oversized frames, secrets in logs."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from settlement import ledger
from settlement.client import SettlementClient
from tests.conftest import ServerProcess


class RawSocket:
    """Socket.IO spoken by hand over an Engine.IO websocket: frames no client library sends."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[str] = []

    @classmethod
    async def open(
        cls, session: aiohttp.ClientSession, url: str, auth: dict[str, Any] | None = None
    ) -> RawSocket:
        ws = await session.ws_connect(
            url.replace("http", "ws") + "/socket.io/?EIO=4&transport=websocket"
        )
        raw = cls(ws)
        opened = await raw.recv()
        assert opened.startswith("0{")
        await ws.send_str("40/settlement," + (json.dumps(auth) if auth else ""))
        connected = await raw.recv_matching("40/settlement,")
        assert '"sid"' in connected
        return raw

    async def recv(self) -> str:
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            if msg.data == "2":  # Engine.IO ping
                await self.ws.send_str("3")
                continue
            self.frames.append(msg.data)
            return str(msg.data)

    async def recv_matching(self, prefix: str) -> str:
        while True:
            frame = await self.recv()
            if frame.startswith(prefix):
                return frame

    async def call(self, ack_id: int, *data: Any) -> Any:
        await self.ws.send_str(f"42/settlement,{ack_id}" + json.dumps(list(data)))
        frame = await self.recv_matching(f"43/settlement,{ack_id}")
        return json.loads(frame[len(f"43/settlement,{ack_id}") :])[0]


async def test_forged_disconnect_and_connect_events_are_refused(server: ServerProcess) -> None:
    async with SettlementClient(server.url) as b, aiohttp.ClientSession() as http:
        a = await RawSocket.open(http, server.url)
        created = await a.call(1, "create", {"party": "A", "request_id": "r" * 22})
        assert created["ok"] is True
        await b.join(created["connection_id"])
        for ack_id, name in enumerate(
            ["disconnect", "connect", "connect_error", "disconnecting"], 2
        ):
            forged = await a.call(ack_id, name, {"REMOTE_ADDR": "6.6.6.6"}, {"token": "x"})
            assert forged["ok"] is False
            assert forged["error"]["code"] == "bad_request"
        await asyncio.sleep(0.2)
        # A's presence did not flip: the fake disconnect reached no handler.
        assert b.last_state is not None
        assert b.last_state["parties"]["A"]["online"] is True
        assert not any(s["parties"]["A"]["online"] is False for s in b.states)
        # and the same socket still works
        proposed = await a.call(9, "propose", {"amount": "5"})
        assert proposed["ok"] is True and proposed["version"] == 1
        await a.ws.close()


async def test_malformed_frames_get_an_error_ack_and_the_socket_stays_usable(
    server: ServerProcess,
) -> None:
    async with aiohttp.ClientSession() as http:
        raw = await RawSocket.open(http, server.url)
        for ack_id, data in enumerate(
            [[42], ["create", {"party": "A"}, "extra"], ["nope", {}], ["create", [1]]], 1
        ):
            ack = await raw.call(ack_id, *data)
            assert ack["ok"] is False and ack["error"]["code"] == "bad_request", ack
        created = await raw.call(
            20, "create", {"party": "B", "currency": "JPY", "request_id": "x" * 30}
        )
        assert created["ok"] is True and created["state"]["currency"] == "JPY"
        await raw.ws.close()


async def test_frames_over_64_kib_are_dropped_and_others_keep_working(
    server: ServerProcess,
) -> None:
    async with SettlementClient(server.url) as big, SettlementClient(server.url) as other:
        with pytest.raises((ConnectionError, Exception)):
            await big.sio.call(
                "create",
                {"party": "A", "currency": "x" * 70_000},
                namespace="/settlement",
                timeout=2,
            )
        created = await other.create("A")
        assert created["ok"] is True


async def test_two_processes_on_one_database_never_fork_a_room(tmp_path: Path) -> None:
    """Per-room serialisation holds across processes: the (connection_id, seq) key decides."""
    first = ServerProcess(tmp_path)
    second = ServerProcess(tmp_path)  # same folder, same SQLite file, same keys
    first.start()
    second.start()
    try:
        a1 = await SettlementClient(first.url).connect()
        created = await a1.create("A")
        cid, token = created["connection_id"], created["token"]
        # A second tab of seat A signs with the seat's key (protocol 1.1).
        a2 = await SettlementClient(second.url, key=a1.key).connect()
        await a2.resume(cid, token)
        b = await SettlementClient(second.url).connect()
        await b.join(cid)

        async def propose_many(client: SettlementClient, start: int) -> list[int]:
            versions = []
            for i in range(15):
                ack = await client.propose(str(start + i))
                versions.append(ack["version"])
            return versions

        v1, v2 = await asyncio.gather(propose_many(a1, 100), propose_many(a2, 500))
        versions = sorted(v1 + v2)
        assert versions == list(range(1, 31)), versions  # no version given twice
        accepted = await b.accept(30)
        assert accepted["state"]["settlement"]["version"] == 30
        events = await a1.history()
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        assert ledger.verify_chain(events) is None
        receipt = await a2.receipt()
        assert ledger.verify_receipt(receipt) is None
        for c in (a1, a2, b):
            await c.close()
    finally:
        first.stop()
        second.stop()
    with sqlite3.connect(first.db_path) as db:
        (count,) = db.execute(
            "SELECT COUNT(*) FROM events WHERE connection_id = ?", (cid,)
        ).fetchone()
    assert count == len(events)


async def test_tokens_never_reach_logs_or_the_database(server: ServerProcess) -> None:
    async with SettlementClient(server.url) as a, SettlementClient(server.url) as b:
        created = await a.create("A")
        joined = await b.join(created["connection_id"])
        await a.propose("12")
        await b.dispute(1, "no")
        tokens = [created["token"], joined["token"]]
    await asyncio.sleep(0.2)
    log = server.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert sum(1 for line in lines if line.get("event") == "command") >= 4
    dump = "\n".join(sqlite3.connect(server.db_path).iterdump())
    for token in tokens:
        assert len(token) >= 22
        assert token not in log
        assert token not in dump
