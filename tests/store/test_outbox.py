"""The webhook outbox, on both backends through the interface: messages are written with
their events (or not at all), queues run in seq order per (endpoint, connection), one
claim holds a message at a time, and leases run out."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from settlement.store import Commit, Conflict, OutboxRow, Store, WebhookClaim, open_store
from tests.store.conftest import Stores
from tests.store.test_store import new_room, step

E1, E2 = "http://one.example/hook", "http://two.example/hook"
T0 = 1_000_000.0  # the tests' clock: the store takes every time from its caller


def msgs(change: Commit, *endpoints: str, at: float = T0) -> Commit:
    change.outbox = [
        OutboxRow(e["connection_id"], e["seq"], url, f'{{"seq":{e["seq"]}}}', at)
        for url in endpoints
        for e in change.events
    ]
    return change


async def claim_all(store: Store, now: float, owner: str = "n1") -> list[WebhookClaim]:
    return await store.webhooks.claim(owner, now, 20.0, 100, [])


def keys(claims: list[WebhookClaim]) -> list[tuple[str, int, str]]:
    return sorted((c.connection_id, c.seq, c.endpoint) for c in claims)


async def test_messages_are_committed_with_their_events_and_run_in_seq_order(
    store: Store,
) -> None:
    await store.commit(msgs(new_room("r1"), E1, E2))
    await store.commit(msgs(step("r1", 1, 2), E1, E2))  # seq 2 and 3 in one commit
    assert await store.webhooks.stats() == (6, T0)
    delivered: dict[str, list[int]] = {E1: [], E2: []}
    now = T0
    while True:
        claims = await claim_all(store, now)
        if not claims:
            break
        # Only the head of each (endpoint, connection) queue is ever handed out.
        assert len({c.endpoint for c in claims}) == len(claims)
        for c in claims:
            assert c.body == f'{{"seq":{c.seq}}}' and c.attempts == 1 and c.first_attempt == now
            assert await store.webhooks.finish(c, "delivered", now)
            delivered[c.endpoint].append(c.seq)
        now += 1
    assert delivered == {E1: [1, 2, 3], E2: [1, 2, 3]}
    assert await store.webhooks.stats() == (0, None)
    assert await store.webhooks.pending() == []


async def test_a_conflicting_commit_writes_no_message(store: Store) -> None:
    await store.commit(msgs(new_room("r1"), E1))
    await store.commit(msgs(step("r1", 1), E1))
    with pytest.raises(Conflict):
        await store.commit(msgs(step("r1", 1), E1))  # seq 2 is taken
    with pytest.raises(Conflict):
        await store.commit(msgs(new_room("r1"), E2))  # the room exists
    rows = await store.webhooks.pending()
    assert [(r.seq, r.endpoint) for r in rows] == [(1, E1), (2, E1)]


async def test_a_failed_message_holds_its_queue_only_and_waits_for_its_time(
    store: Store,
) -> None:
    await store.commit(msgs(new_room("r1"), E1, E2))
    await store.commit(msgs(step("r1", 1), E1, E2))
    await store.commit(msgs(new_room("r2"), E1))
    first = {(c.connection_id, c.endpoint): c for c in await claim_all(store, T0)}
    assert len(first) == 3
    assert await store.webhooks.finish(first[("r1", E1)], "failed", T0, T0 + 5, "HTTP 500")
    for k in (("r1", E2), ("r2", E1)):
        assert await store.webhooks.finish(first[k], "delivered", T0)
    # r1 seq 2 for E2 is due; r1 for E1 waits (seq 1 until T0 + 5, seq 2 behind it).
    assert keys(await claim_all(store, T0 + 1)) == [("r1", 2, E2)]
    assert await claim_all(store, T0 + 4.9) == []
    again = await claim_all(store, T0 + 5)
    assert keys(again) == [("r1", 1, E1)] and again[0].attempts == 2
    assert again[0].first_attempt == T0  # the retry window runs from the first attempt
    rows = {(r.connection_id, r.seq, r.endpoint): r for r in await store.webhooks.pending()}
    assert (rows[("r1", 1, E1)].attempts, rows[("r1", 1, E1)].last_error) == (2, "HTTP 500")
    assert rows[("r1", 2, E1)].next_attempt is None  # behind seq 1


async def test_a_lease_holds_until_it_runs_out_and_a_lost_lease_finishes_nothing(
    stores: Stores,
) -> None:
    one, two = await stores.open(), await stores.open()
    await one.commit(msgs(new_room("r1"), E1))
    [held] = await one.webhooks.claim("node1:1", T0, 20.0, 10, [])
    assert await two.webhooks.claim("node2:1", T0 + 19, 20.0, 10, []) == []
    [taken] = await two.webhooks.claim("node2:2", T0 + 20, 20.0, 10, [])  # node1 is gone
    assert (taken.id, taken.attempts) == (held.id, 2)
    assert not await one.webhooks.finish(held, "delivered", T0 + 21)  # too late
    assert await two.webhooks.finish(taken, "delivered", T0 + 21)
    assert await one.webhooks.stats() == (0, None)


async def test_skipped_endpoints_are_not_claimed(store: Store) -> None:
    await store.commit(msgs(new_room("r1"), E1, E2))
    claims = await store.webhooks.claim("n", T0, 20.0, 10, [E1])
    assert keys(claims) == [("r1", 1, E2)]


async def test_abandoned_messages_are_listed_and_let_the_next_one_go(store: Store) -> None:
    await store.commit(msgs(new_room("r1"), E1))
    await store.commit(msgs(step("r1", 1), E1))
    [c] = await claim_all(store, T0)
    assert await store.webhooks.finish(c, "abandoned", T0 + 1, None, "HTTP 503")
    [c2] = await claim_all(store, T0 + 1)
    assert c2.seq == 2
    rows = await store.webhooks.pending()
    assert [(r.seq, r.state, r.last_error) for r in rows] == [
        (1, "abandoned", "HTTP 503"),
        (2, "waiting", None),
    ]
    assert await store.webhooks.stats() == (1, T0)


async def test_redeliver_queues_a_connection_again_in_order_with_a_new_window(
    store: Store,
) -> None:
    await store.commit(msgs(new_room("r1"), E1, E2))
    await store.commit(msgs(step("r1", 1), E1, E2))
    await store.commit(msgs(new_room("r2"), E1))
    now = T0
    for _ in range(3):
        for c in await claim_all(store, now):
            await store.webhooks.finish(c, "delivered", now)
        now += 1
    assert await claim_all(store, now) == []  # everything was delivered
    await store.commit(msgs(step("r1", 2), E1))
    [held] = await claim_all(store, now)  # r1 seq 3 for E1, in flight while...
    assert await store.webhooks.redeliver("r1", now + 1) == 5  # ...the operator redelivers
    assert await store.webhooks.redeliver("nope", now + 1) is None
    assert not await store.webhooks.finish(held, "delivered", now + 2)  # its lease is gone
    order: dict[str, list[int]] = {E1: [], E2: []}
    t = now + 2
    while claims := await claim_all(store, t):
        for c in claims:
            assert c.connection_id == "r1" and c.attempts == 1 and c.first_attempt == t
            order[c.endpoint].append(c.seq)
            await store.webhooks.finish(c, "delivered", t)
        t += 1
    assert order == {E1: [1, 2, 3], E2: [1, 2]}


async def test_two_nodes_claiming_at_once_never_share_a_message(stores: Stores) -> None:
    nodes = [await stores.open() for _ in range(3)]
    for i in range(30):
        await nodes[0].commit(msgs(new_room(f"r{i}"), E1))
    results = await asyncio.gather(
        *(n.webhooks.claim(f"node{k}", T0, 20.0, 12, []) for k, n in enumerate(nodes))
    )
    ids = [c.id for claims in results for c in claims]
    assert len(ids) == len(set(ids)) == 30


async def test_commit_wakes_the_deliverer_only_when_it_wrote_messages(
    stores: Stores, tmp_path: Path
) -> None:
    if stores.kind == "memory":
        pytest.skip("the memory store is never a server's store: nothing to wake")
    woken: list[int] = []
    store = open_store(stores.url, on_outbox=lambda: woken.append(1))
    await store.open()
    try:
        await store.commit(new_room("r1"))
        assert woken == []
        await store.commit(msgs(step("r1", 1), E1))
        assert woken == [1]
    finally:
        await store.close()


async def test_sqlite_file_of_schema_4_gains_the_outbox(tmp_path: Path) -> None:
    db = tmp_path / "four.db"
    store = open_store(f"sqlite:///{db}")
    await store.open()
    await store.commit(new_room("r1"))
    await store.close()
    with sqlite3.connect(db) as old:  # as a server of schema 4 left it
        old.execute("DROP TABLE webhooks")
        old.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    store = open_store(f"sqlite:///{db}")
    await store.open()
    try:
        assert (await store.load_room("r1")) is not None
        await store.commit(msgs(step("r1", 1), E1))
        assert [c.seq for c in await claim_all(store, T0)] == [2]
    finally:
        await store.close()
    with sqlite3.connect(db) as check:
        assert check.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            "5",
        )
