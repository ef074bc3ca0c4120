"""Webhooks end to end: a real server process delivers to a real receiver (tests/webhooks/
receiver.py) that checks every message with the `standardwebhooks` package."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from settlement import ledger
from settlement.client import SettlementClient
from tests.conftest import ROOT, ServerProcess
from tests.faults.helpers import log_errors, log_records, read_store

from .receiver import Delivery, Receiver, secret

BASE = 0.3  # --webhook-retry-base for the tests


async def cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "settlement",
        *args,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


def webhook_args(*urls: str, key: str | None = None, **flags: float) -> list[str]:
    args = [a for url in urls for a in ("--webhook-url", url)]
    if key is not None:
        args += ["--webhook-secret", key]
    for name, value in flags.items():
        args += ["--webhook-" + name.replace("_", "-"), str(value)]
    return args


@contextlib.asynccontextmanager
async def running(srv: ServerProcess) -> AsyncIterator[ServerProcess]:
    await asyncio.to_thread(srv.start)  # the receiver runs in this loop meanwhile
    try:
        yield srv
    finally:
        await asyncio.to_thread(srv.stop)


async def negotiate(url: str) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """A whole room: create, join, propose, dispute, propose, accept, both leave."""
    async with SettlementClient(url) as a, SettlementClient(url) as b:
        cid = (await a.create("A", "EUR"))["connection_id"]
        await b.join(cid)
        offer = await a.propose("1250.00")
        await b.dispute(offer["version"], "too much ✋")
        offer = await a.propose("1100.50")
        await b.accept(offer["version"])
        receipt = await a.receipt()
        history = await a.history()
        await a.leave()
        await b.leave()
    return cid, history, receipt


def message_of(d: Delivery) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(d.body)
    return parsed


async def metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
        return await r.text()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise KeyError(name)


async def test_every_event_is_delivered_once_in_order_exactly_as_history_returns_it(
    tmp_path: Path,
) -> None:
    srv = ServerProcess(tmp_path)
    # No --webhook-secret: the server makes one in its key directory; the CLI prints it.
    code, printed, _ = await cli(
        "webhook-secret", "--key-dir", str(tmp_path / "settlement.db.keys")
    )
    assert code == 0 and printed.startswith("whsec_")
    key_file = tmp_path / "settlement.db.keys" / "webhook.secret"
    assert key_file.stat().st_mode & 0o777 == 0o600
    async with Receiver(printed.strip()) as receiver:
        srv.extra_args = webhook_args(receiver.url)
        async with running(srv):
            cid, seen, receipt = await negotiate(srv.url)
            await receiver.until(lambda: len(receiver.unique()) >= len(seen) + 2)
            await asyncio.sleep(0.5)  # nothing more arrives
            text = await metrics_text(srv.url)
        assert (tmp_path / "settlement.db.keys" / "webhook.secret").read_text().strip() == (
            printed.strip()
        )
    assert receiver.rejected == [] and receiver.redirected == 0
    history = read_store(srv.db_path).events[cid]
    assert history[: len(seen)] == seen  # the store holds what `history` returned
    compact = cid.replace("-", "")
    assert receiver.ids() == [f"evt_{compact}_{e['seq']}" for e in history]  # once each, in order
    types = [e["type"] for e in history]
    assert types == ["created", "joined", "proposed", "disputed", "proposed", "accepted"] + [
        "left",
        "left",
    ]
    for d, event in zip(receiver.received, history, strict=True):
        message = message_of(d)
        assert list(message) == ["type", "timestamp", "data"]
        assert message["type"] == "connection." + event["type"]
        assert message["timestamp"] == event["at"]
        assert message["data"]["event"] == event
        assert list(message["data"]) == (
            ["event", "receipt"] if event["type"] == "accepted" else ["event"]
        )
        assert d.headers["Content-Type"] == "application/json"
        assert abs(int(d.headers["webhook-timestamp"]) - time.time()) < 60
    accepted = message_of(receiver.received[types.index("accepted")])
    assert accepted["data"]["receipt"] == receipt  # signed at commit, the same receipt
    assert ledger.verify_receipt(accepted["data"]["receipt"]) is None
    assert metric(text, 'settlement_webhook_deliveries_total{outcome="delivered"}') == len(history)
    assert metric(text, "settlement_webhook_waiting") == 0
    assert metric(text, "settlement_webhook_oldest_waiting_seconds") == 0
    assert log_errors(srv.log()) == []


async def test_failed_attempts_are_retried_with_exponential_backoff_and_jitter(
    tmp_path: Path,
) -> None:
    key = secret()
    failures = 4
    first_id: list[str] = []

    def mode(d: Delivery) -> str:
        first_id[:] = first_id or [d.id]
        seen = sum(1 for r in receiver.received if r.id == d.id)
        return "fail" if d.id == first_id[0] and seen < failures else "ok"

    async with Receiver(key, mode=mode) as receiver:
        srv = ServerProcess(
            tmp_path, extra_args=webhook_args(receiver.url, key=key, retry_base=BASE)
        )
        async with running(srv):
            async with SettlementClient(srv.url) as a:
                cid = (await a.create("A"))["connection_id"]
                await a.propose("10")
            compact = cid.replace("-", "")
            await receiver.until(lambda: f"evt_{compact}_2" in receiver.ids(), timeout=20)
            text = await metrics_text(srv.url)
    attempts = [d for d in receiver.received if d.id == f"evt_{compact}_1"]
    assert len(attempts) == failures + 1
    gaps = [b.at - a.at for a, b in zip(attempts, attempts[1:], strict=False)]
    for k, gap in enumerate(gaps, start=1):
        wait = BASE * 2 ** (k - 1)
        assert wait <= gap <= wait * 1.25 + 0.25, (k, gaps)
    # seq 2 waited for seq 1: it arrived once, after seq 1 got through
    assert receiver.ids().index(f"evt_{compact}_2") > receiver.ids().index(attempts[-1].id)
    assert receiver.ids().count(f"evt_{compact}_2") == 1
    assert len({d.body for d in attempts}) == 1  # the same bytes every time
    assert metric(text, 'settlement_webhook_deliveries_total{outcome="failed"}') == failures


async def test_a_message_is_abandoned_after_its_window_and_redelivered_on_request(
    tmp_path: Path,
) -> None:
    key = secret()
    failing = True
    async with Receiver(key, mode=lambda _: "fail" if failing else "ok") as receiver:
        srv = ServerProcess(
            tmp_path, extra_args=webhook_args(receiver.url, key=key, retry_base=0.2, retry_for=0.5)
        )
        async with running(srv):
            async with SettlementClient(srv.url) as a:
                cid = (await a.create("A"))["connection_id"]
                await a.propose("10")
            compact = cid.replace("-", "")
            logs: list[dict[str, Any]] = []

            def abandoned() -> list[dict[str, Any]]:
                logs[:] = [
                    r for r in log_records(srv.log()) if r.get("event") == "webhook_abandoned"
                ]
                return logs

            await receiver.until(lambda: len(abandoned()) >= 2, timeout=15)
            assert [r["id"] for r in logs] == [f"evt_{compact}_1", f"evt_{compact}_2"]
            ids = receiver.ids()
            for seq in (1, 2):  # tried at least once, never after the window
                assert 1 <= ids.count(f"evt_{compact}_{seq}") <= 3
            text = await metrics_text(srv.url)
            assert metric(text, 'settlement_webhook_deliveries_total{outcome="abandoned"}') == 2
            code, out, _ = await cli("webhooks", "--database", srv.database_url)
            assert code == 0
            lines = out.splitlines()
            assert len(lines) == 2 and all(line.startswith(cid + " ") for line in lines)
            assert all(" abandoned " in line for line in lines)
            # The endpoint is back: queue the connection again.
            failing = False
            before = len(receiver.received)
            code, out, _ = await cli(
                "webhooks", "--database", srv.database_url, "--redeliver", compact.lower()
            )
            assert (code, out.strip()) == (0, f"{cid}: 2 messages queued again")
            started = time.monotonic()
            await receiver.until(lambda: len(receiver.received) >= before + 2, timeout=10)
            assert time.monotonic() - started < 10
            assert receiver.ids()[before:] == [f"evt_{compact}_1", f"evt_{compact}_2"]
            code, out, err = await cli(
                "webhooks", "--database", srv.database_url, "--redeliver", "ZZZZ-ZZZZ-ZZZZ"
            )
            assert code == 1 and "no connection" in err
            code, out, _ = await cli("webhooks", "--database", srv.database_url)
            assert (code, out) == (0, "")
    assert receiver.rejected == []


async def test_a_hanging_endpoint_delays_no_ack_and_holds_up_no_other_endpoint(
    tmp_path: Path,
) -> None:
    key = secret()
    async with Receiver(key, mode=lambda _: "hang") as hanging, Receiver(key) as healthy:
        flags = ["--rate", "2000", "--burst", "2000"]
        srv = ServerProcess(
            tmp_path, extra_args=flags + webhook_args(hanging.url, healthy.url, key=key)
        )
        async with running(srv):
            acks: list[float] = []
            async with SettlementClient(srv.url) as a, SettlementClient(srv.url) as b:
                cid = (await a.create("A"))["connection_id"]
                await b.join(cid)
                for i in range(30):
                    started = time.perf_counter()
                    offer = await a.propose(str(100 + i))
                    acks.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    await b.dispute(offer["version"])
                    acks.append(time.perf_counter() - started)
                await b.leave()
                others = []
                for _ in range(24):  # more connections than the endpoint's 16 slots
                    others.append((await b.create("B"))["connection_id"])
                    await b.leave()
            total = 2 + 60 + 1 + 2 * len(others)
            await healthy.until(lambda: len(healthy.unique()) >= total, timeout=15)
            await asyncio.sleep(1.5)
    # An ack that waited for the hanging endpoint would take its 10 s timeout; the
    # bounds leave room for a loaded machine (2 cores shared by several test runs).
    acks.sort()
    assert acks[len(acks) // 2] < 0.25 and acks[-1] < 3.0, acks[-5:]
    compact = cid.replace("-", "")
    got = healthy.ids()
    assert [i for i in got if compact in i] == [f"evt_{compact}_{n}" for n in range(1, 64)]
    for other in others:
        c = other.replace("-", "")
        assert [i for i in got if c in i] == [f"evt_{c}_1", f"evt_{c}_2"]
    # The hanging endpoint holds at most 16 attempts at once, each the head of its queue.
    assert len(hanging.ids()) == len(set(hanging.ids())) <= 16
    assert all(i.endswith("_1") for i in hanging.ids())


async def test_a_redirect_is_a_failure_and_is_not_followed(tmp_path: Path) -> None:
    key = secret()
    async with Receiver(key, mode=lambda _: "redirect") as receiver:
        srv = ServerProcess(
            tmp_path, extra_args=webhook_args(receiver.url, key=key, retry_base=0.2)
        )
        async with running(srv):
            async with SettlementClient(srv.url) as a:
                await a.create("A")
            await receiver.until(lambda: len(receiver.received) >= 3)
    assert receiver.redirected == 0
    assert len(set(receiver.ids())) == 1  # the same message again, nothing after it


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--webhook-secret", "whsec_c2hvcnQ="], "24 to 64 bytes"),
        (["--webhook-secret", "secret"], "starts with 'whsec_'"),
        (["--webhook-secret", "whsec_not base64!"], "base64"),
        (["--webhook-url", "ftp://example.com/x"], "not an absolute http"),
        (["--webhook-retry-base", "0"], "--webhook-retry-base must be positive"),
    ],
)
async def test_bad_webhook_settings_refuse_to_start_saying_why(
    tmp_path: Path, flags: list[str], says: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "app.py"),
        "--database",
        f"sqlite:///{tmp_path / 'x.db'}",
        *flags,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert says in err.decode()
