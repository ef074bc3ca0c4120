"""Payload shape (bad_request), error-ack shape and the order of checks."""

from __future__ import annotations

import pytest

from .bots import assert_error, assert_ok, rid

COMMANDS = ["create", "join", "resume", "propose", "respond", "leave", "history", "receipt"]
NON_OBJECTS = [["party", "A"], "create", 5, 1.5, True]


@pytest.mark.parametrize("event", COMMANDS)
@pytest.mark.parametrize("payload", NON_OBJECTS, ids=["list", "string", "int", "float", "bool"])
async def test_non_object_payload_is_bad_request_and_socket_stays_usable(
    shared_server, bots, event, payload
):
    x = await bots(shared_server)
    assert_error(await x.call(event, payload), "bad_request", seated=False)
    assert x.connected
    assert_ok(await x.call("create", {"party": "A", "request_id": rid()}))


@pytest.mark.parametrize("event", ["propose", "respond", "leave", "history", "receipt"])
async def test_non_object_payload_from_seated_socket_is_bad_request_with_state(
    shared_server, bots, event
):
    a = await bots(shared_server)
    await a.create("A")
    assert_error(await a.call(event, ["x"]), "bad_request", seated=True)
    assert_error(await a.call(event, "x"), "bad_request", seated=True)


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("create", {"party": "A", "colour": "red"}),
        ("create", {"party": "A", "Currency": "USD"}),
        ("join", {"connection_id": "0000-0000-0000", "seat": "B"}),
        ("resume", {"connection_id": "0000-0000-0000", "token": "t", "party": "A"}),
        ("propose", {"amount": "10", "currency": "USD"}),
        ("respond", {"decision": "accept", "version": 1, "comment": "x"}),
        ("leave", {"now": True}),
        ("history", {"after_seq": 0, "limit": 10}),
        ("receipt", {"format": "json"}),
    ],
)
async def test_unknown_key_is_bad_request_even_when_unseated(shared_server, bots, event, payload):
    x = await bots(shared_server)
    # payload shape is checked before the seat: not `not_seated`, not `not_found`
    assert_error(await x.call(event, payload), "bad_request", seated=False)
    assert x.connected


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("propose", {"amount": "10", "extra": 1}),
        ("respond", {"decision": "accept", "version": 1, "extra": None}),
        ("leave", {"extra": 1}),
        ("history", {"extra": 1}),
        ("receipt", {"extra": 1}),
    ],
)
async def test_unknown_key_from_seated_socket_is_bad_request_with_state(
    shared_server, bots, event, payload
):
    a, b = await bots.pair(shared_server)
    who = b if event == "respond" else a
    ack = assert_error(await who.call(event, payload), "bad_request", seated=True)
    assert ack["state"]["connection_id"] == a.connection_id
    # the refused leave did not leave
    assert_ok(await who.history())


async def test_missing_amount_from_unseated_socket_is_bad_request_not_not_seated(
    shared_server, bots
):
    x = await bots(shared_server)
    assert_error(await x.call("propose", {}), "bad_request", seated=False)


@pytest.mark.parametrize("after_seq", ["1", 1.0, True, [1]])
async def test_history_after_seq_wrong_type_is_bad_request(shared_server, bots, after_seq):
    a = await bots(shared_server)
    await a.create("A")
    assert_error(await a.call("history", {"after_seq": after_seq}), "bad_request", seated=True)


@pytest.mark.parametrize(
    "request_id", ["", "has space", "emoji😀", "dot.dot", "slash/x", "x" * 65, 5, True, ["x"]]
)
async def test_bad_request_id_is_bad_request(shared_server, bots, request_id):
    a = await bots(shared_server)
    await a.create("A")
    ack = assert_error(await a.propose("10", request_id=request_id), "bad_request", seated=True)
    assert ack["state"]["offer"] is None


async def test_request_id_of_64_allowed_chars_is_accepted(shared_server, bots):
    a = await bots(shared_server)
    await a.create("A")
    assert_ok(await a.propose("10", request_id=("aZ0_-" * 13)[:64]))


async def test_request_id_of_one_char_is_accepted_for_seated_commands(shared_server, bots):
    a = await bots(shared_server)
    await a.create("A")
    assert_ok(await a.propose("10", request_id="q"))


async def test_null_request_id_means_absent(shared_server, bots):
    a = await bots(shared_server)
    await a.create("A")
    assert_ok(await a.propose("10", request_id=None))
    assert_ok(await a.call("history", {"request_id": None}))


@pytest.mark.parametrize("event", ["propose", "respond", "leave", "history", "receipt"])
async def test_seated_commands_from_unseated_socket_are_not_seated_without_state(
    shared_server, bots, event
):
    x = await bots(shared_server)
    payload = {
        "propose": {"amount": "10"},
        "respond": {"decision": "accept", "version": 1},
        "leave": {},
        "history": {},
        "receipt": {},
    }[event]
    assert_error(await x.call(event, payload), "not_seated", seated=False)


async def test_error_ack_of_seated_socket_carries_current_state(shared_server, bots):
    a, b = await bots.pair(shared_server)
    ok = assert_ok(await a.propose("55"))
    ack = assert_error(await a.propose("-1"), "invalid_amount", seated=True)
    assert ack["state"] == ok["state"]


async def test_refused_commands_change_nothing(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("10"))
    before = await a.all_events()
    for ack in [
        await a.propose("-1"),
        await a.call("propose", {}),
        await b.propose("5"),
        await b.respond("accept", 2),
        await b.respond("accept", 1, reason=""),
        await a.call("leave", {"x": 1}),
    ]:
        assert ack["ok"] is False
    after = await a.all_events()
    assert after == before


async def test_bad_request_beats_already_seated(shared_server, bots):
    a = await bots(shared_server)
    await a.create("A")
    assert_error(
        await a.call("join", {"connection_id": a.connection_id, "request_id": "short"}),
        "bad_request",
        seated=True,
    )
    assert_error(
        await a.call("create", {"party": "C", "request_id": rid()}), "bad_request", seated=True
    )


async def test_bad_request_beats_invalid_currency(shared_server, bots):
    x = await bots(shared_server)
    assert_error(
        await x.call("create", {"party": "C", "currency": "XXX", "request_id": rid()}),
        "bad_request",
        seated=False,
    )


async def test_bad_request_beats_not_found(shared_server, bots):
    x = await bots(shared_server)
    assert_error(
        await x.call("join", {"connection_id": "nope", "party": "C", "request_id": rid()}),
        "bad_request",
        seated=False,
    )


@pytest.mark.parametrize("reason", [5, ["x"], {"t": "x"}, True])
async def test_dispute_reason_not_a_string_is_bad_request(shared_server, bots, reason):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("10"))
    assert_error(await b.respond("dispute", 1, reason=reason), "bad_request", seated=True)


async def test_read_only_commands_ignore_a_key_used_by_a_write(shared_server, bots):
    a, b = await bots.pair(shared_server)
    key = rid()
    assert_ok(await a.propose("10", request_id=key))
    assert_ok(await b.respond("accept", 1))
    assert_ok(await a.call("history", {"request_id": key}))
    assert_ok(await a.call("receipt", {"request_id": key}))
