"""request_id: replays, mismatches, scopes (PROTOCOL.md "Commands", "Idempotency")."""

from __future__ import annotations

import asyncio
import json

import pytest

from .bots import assert_error, assert_ok, rid


def same(x, y) -> bool:
    """Equal including key order (the JSON text is what matters)."""
    return json.dumps(x) == json.dumps(y)


async def test_replayed_propose_returns_identical_ack_and_changes_nothing(shared_server, bots):
    a, b = await bots.pair(shared_server)
    key = rid()
    first, raw1 = await a.call_raw("propose", {"amount": "10", "request_id": key})
    assert_ok(first)
    await b.wait_state_seq(3)
    n_states = len(b.states)
    again, raw2 = await a.call_raw("propose", {"amount": "10", "request_id": key})
    assert raw2 == raw1, (raw1, raw2)  # byte for byte
    assert same(again, first)
    events = await a.all_events()
    assert events[-1]["seq"] == 3
    assert [e["type"] for e in events].count("proposed") == 1
    await asyncio.sleep(0.2)
    assert all(s["seq"] <= 3 for s in b.states[n_states:])


async def test_replay_returns_original_ack_even_after_room_changed(shared_server, bots):
    a, b = await bots.pair(shared_server)
    key = rid()
    first = assert_ok(await a.propose("10", request_id=key))
    assert_ok(await a.propose("20"))
    assert_ok(await b.respond("accept", 2))
    again = await a.propose("10", request_id=key)
    assert same(again, first)
    assert again["version"] == 1 and again["state"]["seq"] == 3
    # still settled, nothing changed
    events = await a.all_events()
    assert events[-1]["type"] == "accepted" and len(events) == 5


async def test_replay_from_another_socket_of_the_same_seat(shared_server, bots):
    a, b = await bots.pair(shared_server)
    key = rid()
    first = assert_ok(await a.propose("10", request_id=key))
    a2 = await bots(shared_server)
    await a2.resume(a.connection_id, a.token)
    assert same(await a2.propose("10", request_id=key), first)
    assert len(await a.all_events()) == 3


async def test_replayed_respond_returns_identical_ack(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("10"))
    key = rid()
    first = assert_ok(await b.respond("dispute", 1, reason="no", request_id=key))
    again = await b.respond("dispute", 1, reason="no", request_id=key)
    assert same(again, first)  # not already_responded
    assert len(await b.all_events()) == 4


async def test_same_key_different_payload_is_idempotency_mismatch(shared_server, bots):
    a, b = await bots.pair(shared_server)
    key = rid()
    assert_ok(await a.propose("10", request_id=key))
    ack = assert_error(await a.propose("11", request_id=key), "idempotency_mismatch", seated=True)
    assert ack["state"]["offer"]["amount"] == "10.00"
    assert len(await a.all_events()) == 3


async def test_same_key_different_command_is_idempotency_mismatch(shared_server, bots):
    a, b = await bots.pair(shared_server)
    key = rid()
    assert_ok(await a.propose("10", request_id=key))
    assert_error(await a.call("leave", {"request_id": key}), "idempotency_mismatch", seated=True)
    assert_ok(await a.history())  # the leave did not happen


async def test_idempotency_is_checked_before_payload_shape(shared_server, bots):
    a, b = await bots.pair(shared_server)
    key = rid()
    assert_ok(await a.propose("10", request_id=key))
    assert_error(
        await a.call("propose", {"amount": "10", "bogus": 1, "request_id": key}),
        "idempotency_mismatch",
        seated=True,
    )


async def test_refused_command_leaves_its_key_free(shared_server, bots):
    a, b = await bots.pair(shared_server)
    key = rid()
    assert_error(await a.propose("abc", request_id=key), "invalid_amount", seated=True)
    assert_error(await b.propose("10", request_id=key), "wrong_party", seated=True)
    ack = assert_ok(await a.propose("10", request_id=key))
    assert ack["version"] == 1


async def test_seated_key_scope_is_the_seat(shared_server, bots):
    a, b = await bots.pair(shared_server)
    key = "shared-key"
    assert_ok(await a.propose("10", request_id=key))
    # same key from seat B is a different scope
    assert_ok(await b.respond("dispute", 1, request_id=key))
    # same key in another room's seat A is a different scope
    c, d = await bots.pair(shared_server)
    ack = assert_ok(await c.propose("99", request_id=key))
    assert ack["state"]["offer"]["amount"] == "99.00"


@pytest.mark.parametrize("length", [1, 10, 21])
async def test_create_with_short_request_id_is_bad_request(shared_server, bots, length):
    x = await bots(shared_server)
    assert_error(
        await x.call("create", {"party": "A", "request_id": "k" * length}),
        "bad_request",
        seated=False,
    )


async def test_create_with_22_char_request_id_is_accepted(shared_server, bots):
    x = await bots(shared_server)
    assert_ok(await x.call("create", {"party": "A", "request_id": rid()[:22]}))


@pytest.mark.parametrize("request_id", ["x" * 65, "a b" * 11, "ü" * 30])
async def test_create_with_malformed_request_id_is_bad_request(shared_server, bots, request_id):
    x = await bots(shared_server)
    assert_error(
        await x.call("create", {"party": "A", "request_id": request_id}),
        "bad_request",
        seated=False,
    )


async def test_join_with_short_request_id_is_bad_request(shared_server, bots):
    a = await bots(shared_server)
    await a.create("A")
    x = await bots(shared_server)
    assert_error(
        await x.call("join", {"connection_id": a.connection_id, "request_id": "short"}),
        "bad_request",
        seated=False,
    )
    assert (await x.join(a.connection_id))["party"] == "B"  # nothing was taken


async def test_replayed_create_from_new_socket_returns_same_ack_and_seats_it(shared_server, bots):
    x = await bots(shared_server)
    key = rid()
    first = assert_ok(await x.call("create", {"party": "A", "currency": "JPY", "request_id": key}))
    assert_ok(await x.propose("100"))
    y = await bots(shared_server)
    again = await y.call("create", {"party": "A", "currency": "JPY", "request_id": key})
    assert same(again, first)
    assert again["state"]["seq"] == 1  # the original ack, not today's state
    # y is now seated as A of that room
    h = assert_ok(await y.history())
    assert [e["type"] for e in h["events"]] == ["created", "proposed"]
    assert_ok(await y.propose("200"))


async def test_replayed_create_with_other_payload_is_idempotency_mismatch(shared_server, bots):
    x = await bots(shared_server)
    key = rid()
    assert_ok(await x.call("create", {"party": "A", "request_id": key}))
    y = await bots(shared_server)
    assert_error(
        await y.call("create", {"party": "B", "request_id": key}),
        "idempotency_mismatch",
        seated=False,
    )
    assert_error(
        await y.call("create", {"party": "A", "currency": "EUR", "request_id": key}),
        "idempotency_mismatch",
        seated=False,
    )
    assert_error(await y.history(), "not_seated", seated=False)


async def test_replayed_create_that_would_be_refused_is_still_a_replay(shared_server, bots):
    """A repeated `create` is recognised whatever else is wrong with it: from the
    socket it seated (not `already_seated`), with a bad shape or an unknown
    currency (a mismatch, not a validation error)."""
    x = await bots(shared_server)
    key = rid()
    first = assert_ok(await x.call("create", {"party": "A", "request_id": key}))
    assert same(await x.call("create", {"party": "A", "request_id": key}), first)
    assert_error(
        await x.call("create", {"party": "A", "bogus": 1, "request_id": key}),
        "idempotency_mismatch",
        seated=True,
    )
    y = await bots(shared_server)
    assert_error(
        await y.call("create", {"party": "A", "currency": "XXX1", "request_id": key}),
        "idempotency_mismatch",
        seated=False,
    )
    fresh = await y.call("create", {"party": "A", "currency": "XXX1", "request_id": rid()})
    assert fresh["ok"] is False and fresh["error"]["code"] != "idempotency_mismatch"


async def test_replayed_create_after_leave_returns_ack_but_does_not_seat(shared_server, bots):
    x = await bots(shared_server)
    key = rid()
    first = assert_ok(await x.call("create", {"party": "A", "request_id": key}))
    assert await x.call("leave", {}) == {"ok": True}
    y = await bots(shared_server)
    again = await y.call("create", {"party": "A", "request_id": key})
    assert same(again, first)
    assert_error(await y.history(), "not_seated", seated=False)


async def test_replayed_join_from_new_socket_seats_it(shared_server, bots):
    a = await bots(shared_server)
    await a.create("A")
    key = rid()
    b = await bots(shared_server)
    payload = {"connection_id": a.connection_id, "request_id": key}
    first = assert_ok(await b.call("join", payload))
    b2 = await bots(shared_server)
    again = await b2.call("join", dict(payload))
    assert same(again, first)
    assert_ok(await b2.history())
    assert_error(await b2.propose("1"), "wrong_party", seated=True)  # it holds seat B
    events = await a.all_events()
    assert [e["type"] for e in events] == ["created", "joined"]


async def test_join_key_scope_is_the_connection(shared_server, bots):
    key = rid()
    r1 = await bots(shared_server)
    await r1.create("A")
    r2 = await bots(shared_server)
    await r2.create("A")
    j1 = await bots(shared_server)
    j2 = await bots(shared_server)
    ack1 = assert_ok(await j1.call("join", {"connection_id": r1.connection_id, "request_id": key}))
    ack2 = assert_ok(await j2.call("join", {"connection_id": r2.connection_id, "request_id": key}))
    assert ack1["connection_id"] != ack2["connection_id"]


async def test_join_replay_with_other_party_is_idempotency_mismatch(shared_server, bots):
    a = await bots(shared_server)
    await a.create("A")
    key = rid()
    b = await bots(shared_server)
    assert_ok(await b.call("join", {"connection_id": a.connection_id, "request_id": key}))
    c = await bots(shared_server)
    assert_error(
        await c.call("join", {"connection_id": a.connection_id, "party": "B", "request_id": key}),
        "idempotency_mismatch",
        seated=False,
    )


async def test_concurrent_identical_creates_make_one_room(shared_server, bots):
    key = rid()
    xs = [await bots(shared_server) for _ in range(4)]
    acks = await asyncio.gather(*(x.call("create", {"party": "B", "request_id": key}) for x in xs))
    assert all(a.get("ok") for a in acks), acks
    assert len({json.dumps(a) for a in acks}) == 1, acks


async def test_replayed_join_after_that_seat_left_returns_ack_but_does_not_seat(
    shared_server, bots
):
    a = await bots(shared_server)
    await a.create("A")
    key = rid()
    payload = {"connection_id": a.connection_id, "party": "B", "request_id": key}
    b = await bots(shared_server)
    first = assert_ok(await b.call("join", payload))
    assert await b.call("leave", {}) == {"ok": True}
    b2 = await bots(shared_server)
    again = await b2.call("join", dict(payload))
    assert same(again, first)
    assert_error(await b2.history(), "not_seated", seated=False)
    assert [e["type"] for e in await a.all_events()] == ["created", "joined", "left"]


async def test_seat_key_survives_leave_and_rejoin_of_that_seat(shared_server, bots):
    # the key's scope is the seat (connection_id, party), not the token holder
    a, b = await bots.pair(shared_server)
    key = rid()
    first = assert_ok(await a.propose("10", request_id=key))
    assert await a.call("leave", {}) == {"ok": True}
    x = await bots(shared_server)
    await x.join(a.connection_id, "A")
    again = await x.propose("10", request_id=key)
    assert same(again, first)
    assert_error(await x.propose("11", request_id=key), "idempotency_mismatch", seated=True)
    types = [e["type"] for e in await b.all_events()]
    assert types.count("proposed") == 1
