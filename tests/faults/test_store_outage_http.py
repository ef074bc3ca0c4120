"""SQLite outages seen from HTTP: never a 500, never a traceback; back by themselves.

Two real ways another process can get in the server's way on its SQLite file:

- it holds the write lock (`BEGIN EXCLUSIVE` through sqlite3): in WAL mode that
  blocks writers only, so commands answer `unavailable` (after the 5 s busy
  timeout, twice: batch, then one by one) while pages and receipts are still
  read and served; a retry with the same request_id commits once the lock goes;
- it holds the WAL's read locks (POSIX locks on the `-shm` file, as SQLite
  itself takes them): then reads fail too (SQLite gives up with "locking
  protocol" after about 10 s), and every HTTP route that reads the store
  answers 503 with Retry-After (a page that reloads itself, a JSON error on
  `/api/`) until the locks go; a page this node has cached is still shown.

The pytest process is not the server's, so its locks really are another
process's locks.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp

from settlement.client import SettlementClient
from tests import outage
from tests.conftest import ServerProcess

# SQLite's unix VFS: the WAL-index locks are bytes 120.. of the -shm file
# (WRITE, CHECKPOINT, RECOVER, then the five READ marks).
SHM_LOCKS = 120
READ_MARKS = (SHM_LOCKS + 3, 5)


@contextmanager
def wal_read_locks(db_path: Path) -> Iterator[None]:
    """Hold every WAL read mark exclusively, as a stuck reader-recovery would."""
    fd = os.open(f"{db_path}-shm", os.O_RDWR)
    try:
        start, length = READ_MARKS
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, length, start)
        yield
    finally:
        os.close(fd)  # closing the descriptor drops its locks


@contextmanager
def exclusive_transaction(db_path: Path) -> Iterator[None]:
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def settle(url: str, amount: str = "12.00") -> tuple[str, str]:
    """A settled room and A's token."""
    async with SettlementClient(url) as a, SettlementClient(url) as b:
        cid = (await a.create("A"))["connection_id"]
        await b.join(cid)
        await b.accept((await a.propose(amount))["version"])
        assert a.token is not None
        return cid, a.token


def no_traceback(server: ServerProcess) -> None:
    log = server.log()
    assert "Traceback" not in log and "Error handling request" not in log, log[-4000:]


async def test_sqlite_read_locks_held_elsewhere_make_pages_and_receipts_503_then_recover(
    server: ServerProcess,
) -> None:
    old, old_token = await settle(server.url)
    async with aiohttp.ClientSession() as http:
        before = await outage.get(http, server.url, outage.receipt(old), old_token)
        assert before.status == 200
        server.restart()  # `old` is no longer in this node's memory
        cached, cached_token = await settle(server.url, "7.00")
        with wal_read_locks(server.db_path):
            started = time.monotonic()
            shown = await outage.get(http, server.url, outage.page(cached))
            assert shown.status == 200 and cached in shown.text  # from memory, no read
            # Both need the store; the server's one reader thread takes them in turn.
            page, receipt = await asyncio.gather(
                outage.get(http, server.url, outage.page(old)),
                outage.get(http, server.url, outage.receipt(cached), cached_token),
            )
            waited = time.monotonic() - started
        outage.assert_unavailable_page(page)
        outage.assert_unavailable_json(receipt)
        assert waited < 40, waited
        # The locks are gone: the same routes answer, with nothing restarted.
        page = await outage.get(http, server.url, outage.page(old))
        assert page.status == 200 and old in page.text
        again = await outage.get(http, server.url, outage.receipt(old), old_token)
        assert again.status == 200 and again.json() == before.json()
        receipt = await outage.get(http, server.url, outage.receipt(cached), cached_token)
        assert receipt.status == 200
        counts = await outage.unavailable_counts(http, server.url)
    assert counts == {outage.PAGE_ROUTE: 1.0, outage.RECEIPT_ROUTE: 1.0}, counts
    lines = outage.outage_lines(server.log())
    assert sorted(line["route"] for line in lines) == [outage.RECEIPT_ROUTE, outage.PAGE_ROUTE]
    assert all("locking protocol" in line["error"] for line in lines), lines
    no_traceback(server)


async def test_sqlite_write_lock_held_elsewhere_refuses_commands_but_serves_reads(
    server: ServerProcess,
) -> None:
    old, old_token = await settle(server.url)
    server.restart()  # `old` is not in memory: its page and receipt are read from the file
    async with (
        aiohttp.ClientSession() as http,
        # unsigned (a 1.0 bot): the raw propose retried below carries no signature
        SettlementClient(server.url, timeout=30, sign=False) as a,
    ):
        await a.create("A")
        with exclusive_transaction(server.db_path):
            refused = await a.call("propose", {"amount": "5", "request_id": "while-locked-1"})
            assert refused["ok"] is False and refused["error"]["code"] == "unavailable"
            # WAL: readers are not blocked by a writer, so the pages still answer.
            page = await outage.get(http, server.url, outage.page(old))
            assert page.status == 200 and old in page.text
            got = await outage.get(http, server.url, outage.receipt(old), old_token)
            assert got.status == 200 and got.json()["connection_id"] == old
        retried = await a.call("propose", {"amount": "5", "request_id": "while-locked-1"})
        assert retried["ok"] is True and retried["version"] == 1
        assert await a.call("propose", {"amount": "5", "request_id": "while-locked-1"}) == retried
    assert '"commit_failed"' in server.log()
    no_traceback(server)
