"""The Engine.IO websocket transport (settlement/transport.py): heartbeats, drops, order.

The server runs with a 1 s ping interval and 1 s ping timeout, so a peer that
stops answering pings must be dropped within a few seconds, and its seat shown
offline, while a peer that answers stays connected however long it is idle.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess

from .helpers import WireSocket, http_session, rid


@pytest.fixture
def fast_ping_server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path, extra_args=["--ping-interval", "1", "--ping-timeout", "1"])
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def test_a_silent_peer_is_dropped_and_shown_offline_a_live_one_stays(
    fast_ping_server: ServerProcess,
) -> None:
    url = fast_ping_server.url
    async with http_session() as http:
        a = await WireSocket.open(http, url)
        b = await WireSocket.open(http, url)
        created = await a.call("create", {"party": "A", "request_id": rid()})
        assert created["ok"], created
        cid = created["connection_id"]
        joined = await b.call("join", {"connection_id": cid, "request_id": rid()})
        assert joined["ok"] and joined["state"]["parties"]["B"]["online"] is True

        a.events.clear()  # only what A is told from now on
        b.pong = False  # B's network goes quiet: frames still arrive, nothing goes back
        started = time.monotonic()
        await asyncio.wait_for(b.closed.wait(), 15)
        dropped_after = time.monotonic() - started
        # interval + timeout = 2 s; allow for the ping schedule and a slow machine
        assert 1.0 <= dropped_after <= 10.0, dropped_after
        assert b.pings >= 1

        _, offline = await a.wait_event(
            lambda e: e[0] == "state" and e[1]["parties"]["B"]["online"] is False, timeout=5
        )
        assert offline["parties"]["B"]["seated"] is True  # still B's seat, just offline

        # A answered every ping meanwhile: still connected and served.
        assert not a.closed.is_set() and a.pings >= 2
        ack = await a.call("propose", {"amount": "10.00", "request_id": rid()})
        assert ack["ok"] and ack["state"]["offer"]["amount"] == "10.00"
        await a.close()
        await b.close()


async def test_many_commands_on_one_socket_are_answered_in_order(
    fast_ping_server: ServerProcess,
) -> None:
    """Packets queued faster than the writer sends them go out in order, none lost."""
    async with http_session() as http:
        a = await WireSocket.open(http, fast_ping_server.url)
        created = await a.call("create", {"party": "A", "request_id": rid()})
        assert created["ok"], created
        futures = [
            a.send("propose", {"amount": f"{i}.00", "request_id": f"p{i}"}) for i in range(1, 31)
        ]
        acks = await asyncio.wait_for(asyncio.gather(*futures), 20)
        assert [ack["version"] for ack in acks] == list(range(1, 31))
        await a.wait_event(
            lambda e: e[0] == "state" and (e[1]["offer"] or {}).get("amount") == "30.00"
        )
        offers = [s["offer"]["amount"] for s in a.states() if s["offer"] is not None]
        assert offers == [f"{i}.00" for i in range(1, 31)]
        await a.close()
