"""The deliverer in process, on a real SQLite store and a real receiver: a message claimed
after its window closed is abandoned without an attempt, and a stopping node releases
what it holds so that the next one takes it at once."""

from __future__ import annotations

import time
from pathlib import Path

from settlement import webhooks
from settlement.delivery import Deliverer
from settlement.metrics import Metrics
from settlement.store import Commit, Store, open_store

from .receiver import Receiver, secret


async def room_with_message(path: Path, url: str) -> Store:
    store = open_store(f"sqlite:///{path}")
    await store.open()
    event = {"connection_id": "AAAA-BBBB-CCCC", "seq": 1, "type": "created", "at": "t"}
    await store.commit(
        Commit(
            connection_id="AAAA-BBBB-CCCC",
            base_seq=0,
            events=[event],
            status="awaiting_offer",
            currency="USD",
            outbox=webhooks.outbox_rows([event], lambda: None, [url]),
        )
    )
    return store


async def test_a_message_claimed_after_its_window_is_abandoned_unsent(tmp_path: Path) -> None:
    key = secret()
    async with Receiver(key) as receiver:
        store = await room_with_message(tmp_path / "s.db", receiver.url)
        try:
            now = time.time()
            [first] = await store.webhooks.claim("old-node:1", now, 20, 10, [])  # attempt 1
            await store.webhooks.finish(first, "failed", now, now + 1.5, "HTTP 500")
            metrics = Metrics()
            abandoned = metrics._webhook_outcomes["abandoned"]
            deliverer = Deliverer(key, retry_for=1.0)  # attempt 2 would start after it
            await deliverer.start(store, metrics)
            try:
                await receiver.until(lambda: abandoned._value.get() == 1, timeout=5)
            finally:
                await deliverer.close()
            [row] = await store.webhooks.pending()
            assert (row.state, row.last_error) == ("abandoned", "the retry window closed")
        finally:
            await store.close()
    assert receiver.received == []


async def test_a_stopping_node_releases_the_message_it_holds(tmp_path: Path) -> None:
    key = secret()
    async with Receiver(key, mode=lambda _: "hang") as receiver:
        store = await room_with_message(tmp_path / "s.db", receiver.url)
        try:
            deliverer = Deliverer(key)
            await deliverer.start(store, Metrics())
            await receiver.until(lambda: len(receiver.received) == 1, timeout=5)
            assert await store.webhooks.claim("other:1", time.time(), 20, 10, []) == []
            await deliverer.close()  # the attempt is cut; the lease is given back
            [taken] = await store.webhooks.claim("other:2", time.time(), 20, 10, [])
            assert (taken.seq, taken.attempts) == (1, 2)
        finally:
            await store.close()
