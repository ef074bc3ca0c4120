"""create and join: ack shapes, ids, seats (PROTOCOL.md "Commands", "Ids")."""

from __future__ import annotations

import asyncio

import pytest

from .bots import (
    CONNECTION_ID_RE,
    assert_error,
    assert_ok,
    assert_state_shape,
    rid,
)

SEATED_ACK_KEYS = {"ok", "connection_id", "party", "token", "state"}


async def test_create_as_a_acks_exact_shape_and_initial_state(shared_server, bots):
    bot = await bots(shared_server)
    ack = await bot.call("create", {"party": "A", "request_id": rid()})
    assert_ok(ack, SEATED_ACK_KEYS)
    assert CONNECTION_ID_RE.match(ack["connection_id"]), ack["connection_id"]
    assert ack["party"] == "A"
    assert isinstance(ack["token"], str) and len(ack["token"]) >= 16
    state = ack["state"]
    assert_state_shape(state)
    assert state["connection_id"] == ack["connection_id"]
    assert state["seq"] == 1
    assert state["status"] == "awaiting_offer"
    assert state["currency"] == "USD"
    assert state["parties"] == {
        "A": {"seated": True, "online": True, "key_id": None},
        "B": {"seated": False, "online": False, "key_id": None},
    }
    assert state["offer"] is None
    assert state["last_response"] is None
    assert state["settlement"] is None


async def test_create_as_b_seats_b_and_leaves_a_free(shared_server, bots):
    bot = await bots(shared_server)
    ack = await bot.create("B")
    assert ack["party"] == "B"
    assert ack["state"]["parties"] == {
        "A": {"seated": False, "online": False, "key_id": None},
        "B": {"seated": True, "online": True, "key_id": None},
    }


async def test_create_with_currency_sets_room_currency(shared_server, bots):
    bot = await bots(shared_server)
    ack = await bot.create("A", "JPY")
    assert ack["state"]["currency"] == "JPY"


async def test_create_with_null_currency_means_default_usd(shared_server, bots):
    bot = await bots(shared_server)
    ack = assert_ok(await bot.call("create", {"party": "A", "currency": None, "request_id": rid()}))
    assert ack["state"]["currency"] == "USD"


async def test_create_sends_state_snapshot_to_creator(shared_server, bots):
    bot = await bots(shared_server)
    ack = await bot.create("A")
    snap = await bot.wait_state_seq(1)
    assert snap["connection_id"] == ack["connection_id"]
    assert snap["parties"]["A"] == {"seated": True, "online": True, "key_id": None}


async def test_create_without_request_id_is_accepted(shared_server, bots):
    bot = await bots(shared_server)
    ack = await bot.call("create", {"party": "A"})
    assert_ok(ack, SEATED_ACK_KEYS)


async def test_connection_ids_and_tokens_are_distinct_per_room(shared_server, bots):
    ids, tokens = set(), set()
    for _ in range(5):
        bot = await bots(shared_server)
        ack = await bot.create("A")
        ids.add(ack["connection_id"])
        tokens.add(ack["token"])
    assert len(ids) == 5 and len(tokens) == 5


@pytest.mark.parametrize("party", ["a", "b", "C", "", "AB", 1, True, ["A"]])
async def test_create_with_bad_party_is_bad_request(shared_server, bots, party):
    bot = await bots(shared_server)
    assert_error(
        await bot.call("create", {"party": party, "request_id": rid()}), "bad_request", seated=False
    )


async def test_create_without_party_is_bad_request(shared_server, bots):
    bot = await bots(shared_server)
    assert_error(await bot.call("create", {"request_id": rid()}), "bad_request", seated=False)
    assert_error(
        await bot.call("create", {"party": None, "request_id": rid()}), "bad_request", seated=False
    )


async def test_create_with_numeric_currency_is_bad_request(shared_server, bots):
    bot = await bots(shared_server)
    assert_error(
        await bot.call("create", {"party": "A", "currency": 840, "request_id": rid()}),
        "bad_request",
        seated=False,
    )


async def test_create_while_seated_is_already_seated(shared_server, bots):
    bot = await bots(shared_server)
    first = await bot.create("A")
    ack = assert_error(
        await bot.call("create", {"party": "B", "request_id": rid()}), "already_seated", seated=True
    )
    assert ack["state"]["connection_id"] == first["connection_id"]


async def test_join_takes_free_seat_b_and_acks_exact_shape(shared_server, bots):
    a = await bots(shared_server)
    created = await a.create("A")
    b = await bots(shared_server)
    ack = await b.call("join", {"connection_id": created["connection_id"], "request_id": rid()})
    assert_ok(ack, SEATED_ACK_KEYS)
    assert ack["connection_id"] == created["connection_id"]
    assert ack["party"] == "B"
    assert ack["token"] != created["token"]
    st = ack["state"]
    assert st["seq"] == 2
    assert st["status"] == "awaiting_offer"
    assert st["parties"] == {
        "A": {"seated": True, "online": True, "key_id": None},
        "B": {"seated": True, "online": True, "key_id": None},
    }


async def test_join_without_party_takes_a_when_creator_was_b(shared_server, bots):
    b = await bots(shared_server)
    created = await b.create("B")
    a = await bots(shared_server)
    ack = await a.join(created["connection_id"])
    assert ack["party"] == "A"


async def test_join_with_named_free_seat(shared_server, bots):
    a = await bots(shared_server)
    created = await a.create("A")
    b = await bots(shared_server)
    ack = await b.join(created["connection_id"], "B")
    assert ack["party"] == "B"


@pytest.mark.parametrize("transform", ["lower", "nohyphens", "lower_nohyphens", "mixed"])
async def test_join_accepts_id_in_any_case_and_without_hyphens(shared_server, bots, transform):
    a = await bots(shared_server)
    cid = (await a.create("A"))["connection_id"]
    given = {
        "lower": cid.lower(),
        "nohyphens": cid.replace("-", ""),
        "lower_nohyphens": cid.replace("-", "").lower(),
        "mixed": "".join(c.lower() if i % 2 else c for i, c in enumerate(cid)),
    }[transform]
    b = await bots(shared_server)
    ack = await b.join(given)
    assert ack["connection_id"] == cid  # upper case with hyphens in acks
    assert ack["state"]["connection_id"] == cid


async def test_join_sends_snapshot_to_both_seats(shared_server, bots):
    a, b = await bots.pair(shared_server)
    snap_a = await a.wait_state_seq(2)
    snap_b = await b.wait_state_seq(2)
    assert snap_a == snap_b
    assert snap_a["parties"]["B"] == {"seated": True, "online": True, "key_id": None}


async def test_join_named_seat_taken_while_other_free_is_seat_taken(shared_server, bots):
    a = await bots(shared_server)
    cid = (await a.create("A"))["connection_id"]
    x = await bots(shared_server)
    ack = assert_error(
        await x.call("join", {"connection_id": cid, "party": "A", "request_id": rid()}),
        "seat_taken",
        seated=False,
    )
    # the refusal changed nothing: B is still free and joinable
    assert (await x.join(cid))["party"] == "B"
    assert "state" not in ack


async def test_join_full_room_without_party_is_room_full(shared_server, bots):
    a, b = await bots.pair(shared_server)
    x = await bots(shared_server)
    assert_error(
        await x.call("join", {"connection_id": a.connection_id, "request_id": rid()}),
        "room_full",
        seated=False,
    )


@pytest.mark.parametrize("party", ["A", "B"])
async def test_join_full_room_naming_a_seat_is_room_full(shared_server, bots, party):
    a, b = await bots.pair(shared_server)
    x = await bots(shared_server)
    assert_error(
        await x.call(
            "join", {"connection_id": a.connection_id, "party": party, "request_id": rid()}
        ),
        "room_full",
        seated=False,
    )


@pytest.mark.parametrize(
    "cid",
    [
        "",
        "nope",
        "0000-0000-0000",
        "ZZZZ-ZZZZ-ZZZZ",
        "K7QF-3MZP-XW2D-",
        "K7QF3MZPXW2DX",
        "K7QF-3MZP-XW2",
        "ÄÖÜ-1234-5678",
        "../../etc/passwd",
        "x" * 300,
        "K7QF 3MZP XW2D",
    ],
)
async def test_join_unknown_or_malformed_id_is_not_found(shared_server, bots, cid):
    x = await bots(shared_server)
    assert_error(
        await x.call("join", {"connection_id": cid, "request_id": rid()}),
        "not_found",
        seated=False,
    )


async def test_join_non_string_connection_id_is_bad_request(shared_server, bots):
    x = await bots(shared_server)
    assert_error(
        await x.call("join", {"connection_id": 12, "request_id": rid()}),
        "bad_request",
        seated=False,
    )


async def test_join_missing_connection_id_is_bad_request(shared_server, bots):
    x = await bots(shared_server)
    assert_error(await x.call("join", {"request_id": rid()}), "bad_request", seated=False)


@pytest.mark.parametrize("party", ["b", "C", 2])
async def test_join_bad_party_is_bad_request(shared_server, bots, party):
    a = await bots(shared_server)
    cid = (await a.create("A"))["connection_id"]
    x = await bots(shared_server)
    assert_error(
        await x.call("join", {"connection_id": cid, "party": party, "request_id": rid()}),
        "bad_request",
        seated=False,
    )


async def test_join_with_null_party_takes_free_seat(shared_server, bots):
    a = await bots(shared_server)
    cid = (await a.create("A"))["connection_id"]
    x = await bots(shared_server)
    ack = assert_ok(
        await x.call("join", {"connection_id": cid, "party": None, "request_id": rid()})
    )
    assert ack["party"] == "B"


async def test_join_while_seated_is_already_seated(shared_server, bots):
    a = await bots(shared_server)
    await a.create("A")
    other = await bots(shared_server)
    cid2 = (await other.create("A"))["connection_id"]
    assert_error(
        await a.call("join", {"connection_id": cid2, "request_id": rid()}),
        "already_seated",
        seated=True,
    )


async def test_already_seated_is_checked_before_room_not_found(shared_server, bots):
    a = await bots(shared_server)
    await a.create("A")
    assert_error(
        await a.call("join", {"connection_id": "nope", "request_id": rid()}),
        "already_seated",
        seated=True,
    )


async def test_creator_joining_own_room_is_already_seated(shared_server, bots):
    a = await bots(shared_server)
    cid = (await a.create("A"))["connection_id"]
    assert_error(
        await a.call("join", {"connection_id": cid, "party": "B", "request_id": rid()}),
        "already_seated",
        seated=True,
    )


async def test_concurrent_joins_seat_exactly_one(shared_server, bots):
    a = await bots(shared_server)
    cid = (await a.create("A"))["connection_id"]
    joiners = [await bots(shared_server, name=f"j{i}") for i in range(4)]
    acks = await asyncio.gather(
        *(j.call("join", {"connection_id": cid, "request_id": rid()}) for j in joiners)
    )
    oks = [x for x in acks if x.get("ok")]
    assert len(oks) == 1, acks
    for x in acks:
        if not x.get("ok"):
            assert x["error"]["code"] == "room_full", x
    hist = await a.all_events()
    assert [e["type"] for e in hist] == ["created", "joined"]
