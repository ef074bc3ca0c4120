"""State snapshots to every socket, and leave."""

from __future__ import annotations

import asyncio

from .bots import assert_error, assert_ok, assert_state_shape, rid


async def test_snapshots_reach_every_socket_with_rising_seq_sender_included(shared_server, bots):
    a, b = await bots.pair(shared_server)
    acks = [
        assert_ok(await a.propose("10")),
        assert_ok(await b.respond("dispute", 1, reason="no")),
        assert_ok(await a.propose("9")),
        assert_ok(await b.respond("accept", 2)),
    ]
    last = acks[-1]["state"]["seq"]
    assert [x["state"]["seq"] for x in acks] == [3, 4, 5, 6]
    for bot in (a, b):
        await bot.wait_state_seq(last)
        seqs = [s["seq"] for s in bot.states]
        # never decreasing, and every stored event after the bot arrived was pushed
        assert seqs == sorted(seqs), seqs
        for n in range(3, last + 1):
            assert n in seqs, (bot.name, seqs)
        for s in bot.states:
            assert_state_shape(s)
    for ack in acks:
        seq = ack["state"]["seq"]
        snap_a = next(s for s in a.states if s["seq"] == seq)
        snap_b = next(s for s in b.states if s["seq"] == seq)
        assert snap_a == snap_b == ack["state"]


async def test_snapshot_seq_equals_last_event_seq(shared_server, bots):
    a, b = await bots.pair(shared_server)
    ack = assert_ok(await a.propose("10"))
    events = await a.all_events()
    assert ack["state"]["seq"] == events[-1]["seq"] == len(events)


async def test_other_rooms_do_not_receive_snapshots(shared_server, bots):
    a, b = await bots.pair(shared_server)
    c, d = await bots.pair(shared_server)
    await c.wait_state_seq(2)
    n = len(c.states)
    assert_ok(await a.propose("10"))
    await b.wait_state_seq(3)
    await asyncio.sleep(0.2)
    assert all(s["connection_id"] == c.connection_id for s in c.states)
    assert len(c.states) == n


async def test_leave_ack_is_exactly_ok_true(shared_server, bots):
    a, b = await bots.pair(shared_server)
    ack = await a.call("leave", {})
    assert ack == {"ok": True}


async def test_leave_gives_every_socket_of_the_seat_one_last_state_then_nothing(
    shared_server, bots
):
    a, b = await bots.pair(shared_server)
    a2 = await bots(shared_server)
    await a2.resume(a.connection_id, a.token)
    await a.wait_state_seq(2)
    await asyncio.sleep(0.2)  # let any presence snapshot of the resume arrive
    start_a, start_a2 = len(a.states), len(a2.states)
    assert await a.call("leave", {}) == {"ok": True}
    last_b = await b.wait_state_seq(3)
    assert last_b["parties"]["A"] == {"seated": False, "online": False, "key_id": None}
    for bot, start in ((a, start_a), (a2, start_a2)):
        last = await bot.wait_for("state", lambda s: s["seq"] == 3, start=start)
        assert last["parties"]["A"]["seated"] is False
    # more room updates must not reach the former A sockets
    x = await bots(shared_server)
    await x.join(a.connection_id, "A")
    assert_ok(await x.propose("10"))
    await b.wait_state_seq(5)
    await asyncio.sleep(0.3)
    for bot, start in ((a, start_a), (a2, start_a2)):
        after = bot.states[start:]
        assert len(after) == 1, (bot.name, after)
    # and both are unseated
    assert_error(await a.history(), "not_seated", seated=False)
    assert_error(await a2.history(), "not_seated", seated=False)


async def test_leave_frees_seat_and_records_left_then_joined(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("10"))
    assert await b.call("leave", {}) == {"ok": True}
    snap = await a.wait_state_seq(4)
    assert snap["parties"]["B"] == {"seated": False, "online": False, "key_id": None}
    assert snap["offer"]["amount"] == "10.00"  # the negotiation is kept
    assert snap["status"] == "offer_pending"
    c = await bots(shared_server)
    ack = await c.join(a.connection_id)
    assert ack["party"] == "B"
    assert ack["token"] != b.token
    assert ack["state"]["parties"]["B"] == {"seated": True, "online": True, "key_id": None}
    events = await a.all_events()
    assert [(e["type"], e["party"]) for e in events] == [
        ("created", "A"),
        ("joined", "B"),
        ("proposed", "A"),
        ("left", "B"),
        ("joined", "B"),
    ]
    # the new B may answer the kept offer
    assert_ok(await c.respond("accept", 1))


async def test_leaving_socket_can_create_or_join_again(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert await b.call("leave", {}) == {"ok": True}
    ack = await b.join(a.connection_id, "B")
    assert ack["party"] == "B"


async def test_left_token_no_longer_resumes(shared_server, bots):
    a, b = await bots.pair(shared_server)
    old = b.token
    assert await b.call("leave", {}) == {"ok": True}
    x = await bots(shared_server)
    assert_error(
        await x.call("resume", {"connection_id": a.connection_id, "token": old}),
        "bad_token",
        seated=False,
    )
    y = await bots(shared_server, auth={"connection_id": a.connection_id, "token": old})
    err = await y.wait_for("error", lambda e: True)
    assert err["code"] == "bad_token"


async def test_leave_settled_room_stays_settled(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("10"))
    settled = assert_ok(await b.respond("accept", 1))["state"]
    assert await a.call("leave", {}) == {"ok": True}
    snap = await b.wait_state_seq(5)
    assert snap["parties"]["A"] == {"seated": False, "online": False, "key_id": None}
    assert snap["status"] == "settled"
    assert snap["settlement"] == settled["settlement"]
    x = await bots(shared_server)
    ack = await x.join(a.connection_id)
    assert ack["party"] == "A"
    assert ack["state"]["status"] == "settled"
    assert_error(await x.propose("20"), "settled", seated=True)
    receipt = assert_ok(await b.call("receipt", {}))["receipt"]
    assert receipt["events"][-1]["type"] == "accepted"
    assert receipt["receipt_id"] == settled["settlement"]["receipt_id"]


async def test_leave_by_unseated_is_not_seated(shared_server, bots):
    x = await bots(shared_server)
    assert_error(await x.call("leave", {}), "not_seated", seated=False)


async def test_leave_keeps_other_rooms_untouched(shared_server, bots):
    a = await bots(shared_server)
    await a.create("A")
    assert await a.call("leave", {}) == {"ok": True}
    ack = assert_ok(await a.call("create", {"party": "B", "request_id": rid()}))
    assert ack["party"] == "B"
