"""Bounded resources under load: thousands of sockets, a flooding client, a slow reader, memory.

Sockets here are raw Engine.IO/Socket.IO over aiohttp websockets (many per
process). The test process raises its RLIMIT_NOFILE before starting the
server, which inherits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from settlement.client import SettlementClient
from tests.conftest import ServerProcess

from .helpers import WireSocket, log_errors, metric, raise_nofile, rid, rss_kib

MiB = 1024


async def wait_metric(
    http: aiohttp.ClientSession, url: str, name: str, value: float, timeout: float = 20
) -> float:
    deadline = time.monotonic() + timeout
    while True:
        current = await metric(http, url, name)
        if current == value or time.monotonic() > deadline:
            return current
        await asyncio.sleep(0.2)


async def open_many(
    http: aiohttp.ClientSession, url: str, auths: list[dict[str, Any] | None]
) -> tuple[list[WireSocket], int]:
    """Open every socket at once; returns the open ones and the number that failed."""
    results = await asyncio.gather(
        *(WireSocket.open(http, url, auth, timeout=60) for auth in auths), return_exceptions=True
    )
    socks = [r for r in results if isinstance(r, WireSocket)]
    return socks, len(results) - len(socks)


async def close_all(socks: list[WireSocket]) -> None:
    await asyncio.gather(*(s.close() for s in socks), return_exceptions=True)


async def socket_rounds(tmp_path: Path, sockets: int, rounds: int) -> dict[str, Any]:
    raise_nofile(4 * sockets + 1000)
    srv = ServerProcess(tmp_path, extra_args=["--rate", "1000", "--burst", "1000"])
    srv.start()
    assert srv.proc is not None
    figures: dict[str, Any] = {"sockets": sockets, "rounds": rounds, "rss_mib": []}
    try:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            # warm-up round: half the sockets create rooms, the other half join them
            t0 = time.monotonic()
            creators, failed = await open_many(http, srv.url, [None] * (sockets // 2))
            joiners, failed2 = await open_many(http, srv.url, [None] * (sockets // 2))
            figures["open_seconds"] = round(time.monotonic() - t0, 2)
            assert failed == failed2 == 0
            assert await metric(http, srv.url, "settlement_connected_sockets") == sockets
            created = await asyncio.gather(
                *(
                    s.call("create", {"party": "A", "request_id": rid()}, timeout=60)
                    for s in creators
                )
            )
            assert all(c["ok"] for c in created)
            joined = await asyncio.gather(
                *(
                    s.call(
                        "join",
                        {"connection_id": c["connection_id"], "request_id": rid()},
                        timeout=60,
                    )
                    for s, c in zip(joiners, created, strict=True)
                )
            )
            assert all(j["ok"] for j in joined)
            seats = [
                {"connection_id": x["connection_id"], "token": x["token"]} for x in created + joined
            ]
            figures["rss_mib_peak_warmup"] = round(rss_kib(srv.proc.pid) / MiB, 1)
            await close_all(creators + joiners)
            assert await wait_metric(http, srv.url, "settlement_connected_sockets", 0) == 0
            await asyncio.sleep(1)
            baseline = rss_kib(srv.proc.pid)
            figures["rss_mib_baseline"] = round(baseline / MiB, 1)
            # measured rounds: every seat comes back at once (connect-time resume), acts, leaves
            for n in range(rounds):
                t0 = time.monotonic()
                socks, failed = await open_many(http, srv.url, seats)
                opened = time.monotonic() - t0
                assert failed == 0
                assert await metric(http, srv.url, "settlement_connected_sockets") == sockets
                assert await metric(http, srv.url, "settlement_seated_sockets") == sockets
                acks = await asyncio.gather(
                    *(
                        s.call(
                            "propose", {"amount": f"{n + 1}.00", "request_id": rid()}, timeout=60
                        )
                        if i < sockets // 2
                        else s.call("history", {"after_seq": 10**6}, timeout=60)
                        for i, s in enumerate(socks)
                    )
                )
                assert all(a["ok"] for a in acks), [a for a in acks if not a["ok"]][:3]
                peak = rss_kib(srv.proc.pid)
                await close_all(socks)
                assert await wait_metric(http, srv.url, "settlement_connected_sockets", 0) == 0
                assert await metric(http, srv.url, "settlement_seated_sockets") == 0
                await asyncio.sleep(1)
                after = rss_kib(srv.proc.pid)
                figures["rss_mib"].append(
                    {
                        "round": n + 1,
                        "open_s": round(opened, 2),
                        "peak": round(peak / MiB, 1),
                        "after": round(after / MiB, 1),
                    }
                )
            figures["rss_mib_final"] = round(rss_kib(srv.proc.pid) / MiB, 1)
    finally:
        srv.stop()
    print("sockets:", figures)
    assert log_errors(srv.log()) == []
    if rounds == 1:
        # one round: back to within 30 MiB of the baseline once the sockets left
        assert figures["rss_mib_final"] <= figures["rss_mib_baseline"] + 30, figures
    else:
        # several rounds: no leak. CPython's allocator keeps a working set after the
        # first full round (the server trims the heap after disconnect waves, but
        # partly used arenas stay), so later rounds must not climb above it.
        first = figures["rss_mib"][0]["after"]
        assert figures["rss_mib_final"] <= first + 30, figures
    return figures


@pytest.mark.timeout(180)
async def test_2000_sockets_at_once_and_memory_returns_to_baseline(tmp_path: Path) -> None:
    figures = await socket_rounds(tmp_path, 2000, 1)  # asserts inside; the figures too:
    assert figures["rss_mib_final"] <= figures["rss_mib_baseline"] + 30


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_5000_sockets_five_rounds_memory_returns_to_baseline(tmp_path: Path) -> None:
    figures = await socket_rounds(tmp_path, 5000, 5)
    assert len(figures["rss_mib"]) == 5


# -- a client that floods -----------------------------------------------------------


async def flood(tmp_path: Path, seconds: float, per_second: int) -> dict[str, Any]:
    srv = ServerProcess(tmp_path)  # default budget: 20 a second, bursts of 40
    srv.start()
    try:
        async with aiohttp.ClientSession() as http:
            flooder = await WireSocket.open(http, srv.url)
            assert (await flooder.call("create", {"party": "A", "request_id": rid()}))["ok"]
            other = await SettlementClient(srv.url).connect()
            await other.create("A")
            latencies: list[float] = []
            stop = asyncio.Event()

            async def steady() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    t = time.perf_counter()
                    await other.propose(f"{n}.00")
                    latencies.append(time.perf_counter() - t)
                    await asyncio.sleep(0.1)

            steady_task = asyncio.create_task(steady())
            futures: list[asyncio.Future[Any]] = []
            t0 = time.monotonic()
            sent = 0
            while (elapsed := time.monotonic() - t0) < seconds:
                due = int(elapsed * per_second) - sent
                for _ in range(due):
                    sent += 1
                    futures.append(
                        flooder.send("propose", {"amount": f"{sent}.00", "request_id": rid()})
                    )
                await asyncio.sleep(0.005)
            elapsed = time.monotonic() - t0
            acks = await asyncio.wait_for(asyncio.gather(*futures), 30)
            stop.set()
            await steady_task
            await other.close()
            await flooder.close()
    finally:
        srv.stop()
    ok = sum(1 for a in acks if a["ok"])
    limited = sum(1 for a in acks if not a["ok"] and a["error"]["code"] == "rate_limited")
    figures = {
        "sent": sent,
        "rate_per_s": round(sent / elapsed),
        "ok": ok,
        "rate_limited": limited,
        "other_acks": len(latencies),
        "other_p50_ms": round(statistics.median(latencies) * 1000, 1),
        "other_max_ms": round(max(latencies) * 1000, 1),
    }
    print("flood:", figures)
    assert sent >= per_second * seconds * 0.9
    assert ok + limited == sent  # every command answered
    assert ok <= 40 + 20 * (elapsed + 1) + 2  # the budget held
    assert ok >= 40  # and the budget was usable
    assert len(latencies) >= seconds * 5
    assert max(latencies) < 1.0, figures  # the other client kept being served
    assert log_errors(srv.log()) == []
    return figures


async def test_a_client_sending_1000_commands_a_second_is_rate_limited(tmp_path: Path) -> None:
    figures = await flood(tmp_path, 3, 1000)
    assert figures["rate_limited"] > 0 and figures["ok"] > 0


@pytest.mark.slow
async def test_a_client_flooding_for_30_seconds_is_rate_limited(tmp_path: Path) -> None:
    figures = await flood(tmp_path, 30, 1000)
    assert figures["rate_limited"] > 0 and figures["ok"] > 0


# -- a client that never reads ----------------------------------------------------------


def tiny_buffer_socket(addr_info: Any) -> socket.socket:
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


def memory_folder(fallback: Path) -> Path:
    """A fresh folder in /dev/shm (memory), or `fallback` where there is none."""
    return Path(tempfile.mkdtemp(dir="/dev/shm")) if os.path.isdir("/dev/shm") else fallback


async def slow_reader(tmp_path: Path, max_proposals: int, budget: float) -> dict[str, Any]:
    # The commands go to one room, so they commit one after another: each waits
    # for its fsync. On a disk whose fsync takes 50 ms the ~720 proposals needed
    # took longer than the budget, and what is tested is the slow socket, not the
    # disk: its database lives in memory (/dev/shm) where there is one.
    folder = memory_folder(tmp_path)
    srv = ServerProcess(folder, extra_args=["--rate", "100000", "--burst", "100000"])
    srv.start()
    figures: dict[str, Any] = {}
    try:
        async with (
            aiohttp.ClientSession() as http,
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(socket_factory=tiny_buffer_socket)
            ) as slow_http,
        ):
            a = await WireSocket.open(http, srv.url)
            created = await a.call("create", {"party": "A", "request_id": rid()})
            cid = created["connection_id"]
            # B: an html-view tab (big fragments) that stops reading once seated
            slow = await WireSocket.open(slow_http, srv.url, {"view": "html"})
            joined = await slow.call("join", {"connection_id": cid, "request_id": rid()})
            assert joined["ok"]
            await a.wait_event(lambda e: e[0] == "state" and e[1]["parties"]["B"]["online"])
            slow._reader.cancel()  # never read again
            # a bystander in another room
            other = await SettlementClient(srv.url).connect()
            await other.create("A")
            latencies: list[float] = []
            t0 = time.monotonic()
            acked = 0
            n = 0
            dropped_at = None
            while n < max_proposals and time.monotonic() - t0 < budget:
                batch = [
                    a.send("propose", {"amount": f"{n + i + 1}.00", "request_id": rid()})
                    for i in range(20)
                ]
                n += len(batch)
                results = await asyncio.wait_for(asyncio.gather(*batch), 20)
                acked += sum(1 for r in results if r["ok"])
                t = time.perf_counter()
                await other.propose(f"{n}.00")
                latencies.append(time.perf_counter() - t)
                if dropped_at is None and "slow_client_dropped" in srv.log():
                    dropped_at = n
                if dropped_at is not None and any(
                    s["parties"]["B"]["online"] is False for s in a.states()[-50:]
                ):
                    break
            figures.update(
                proposals=n,
                acked=acked,
                dropped_after_proposals=dropped_at,
                seconds=round(time.monotonic() - t0, 1),
                bystander_max_ms=round(max(latencies) * 1000, 1),
            )
            print("slow reader:", figures)
            assert dropped_at is not None, "the slow socket was never dropped"
            assert acked == n  # the room's other party was served throughout
            # the slow socket is gone: presence says so, and the seat can be resumed
            await a.wait_event(
                lambda e: e[0] == "state" and e[1]["parties"]["B"]["online"] is False, timeout=15
            )
            back = await WireSocket.open(
                http, srv.url, {"connection_id": cid, "token": joined["token"]}
            )
            await a.wait_event(
                lambda e: (
                    e[0] == "state"
                    and e[1]["parties"]["B"]["online"] is True
                    and e[1]["seq"] >= n + 2
                ),
                timeout=15,
            )
            assert (await back.call("history", {"after_seq": n}))["ok"]
            assert max(latencies) < 2.0, figures
            await other.close()
            for s in (a, back):
                await s.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(slow.close(), 3)
    finally:
        srv.stop()
    log = srv.log()
    if folder != tmp_path:
        shutil.rmtree(folder, ignore_errors=True)
    assert log.count("slow_client_dropped") == 1
    assert log_errors(log) == []
    return figures


SLOW_READER_BUG = (
    "server bug: the 500-packet bound lives in SettlementServer._send_packet, but room "
    "broadcasts (sio.emit(to=room)) go AsyncManager.emit -> _send_eio_packet -> "
    "eio.send_packet and never pass it: a reader that stops reading is never dropped and "
    "its queue grows without bound"
)


@pytest.mark.timeout(120)
@pytest.mark.timeout(240)
async def test_a_client_that_never_reads_is_dropped_and_others_are_served(tmp_path: Path) -> None:
    # the send buffers hold ~220 html snapshots here; 500 more must be queued for a drop
    figures = await slow_reader(tmp_path, 1000, 90)
    assert figures["dropped_after_proposals"] <= figures["proposals"]


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_client_that_never_reads_is_dropped_long(tmp_path: Path) -> None:
    figures = await slow_reader(tmp_path, 4000, 180)
    assert figures["dropped_after_proposals"] <= figures["proposals"]
