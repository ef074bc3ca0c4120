"""Crash durability (SIGKILL + restart) and the per-socket rate limit. Own server per test."""

from __future__ import annotations

import asyncio
import json

import aiohttp

from .bots import assert_chain, assert_error, assert_ok, rid, verify_signature


async def _keys(srv):
    async with aiohttp.ClientSession() as http, http.get(srv.url + "/api/keys") as resp:
        return await resp.json()


async def test_acked_commands_survive_sigkill_and_tokens_resume(server, bots):
    a, b = await bots.pair(server)
    assert_ok(await a.propose("10"))
    assert_ok(await b.respond("dispute", 1, reason="nope"))
    last = assert_ok(await a.propose("9.99"))["state"]
    # a second, settled room
    c, d = await bots.pair(server, currency="KWD")
    assert_ok(await c.propose("1.5"))
    settled = assert_ok(await d.respond("accept", 1))["state"]
    receipt = assert_ok(await c.call("receipt", {}))["receipt"]
    events_before = await a.all_events()
    keys_before = await _keys(server)

    await asyncio.to_thread(server.kill)
    await asyncio.to_thread(server.start)

    a2 = await bots(server)
    ra = await a2.resume(a.connection_id, a.token)
    assert ra["party"] == "A"
    st = ra["state"]
    assert st["seq"] == last["seq"] == 5
    assert st["offer"] == last["offer"]
    assert st["last_response"] == last["last_response"]
    assert st["status"] == "offer_pending"
    b2 = await bots(server)
    assert (await b2.resume(b.connection_id, b.token))["party"] == "B"
    events_after = await a2.all_events()
    assert events_after == events_before
    assert_chain(events_after)
    # the negotiation continues where it was
    ack = assert_ok(await b2.respond("accept", 2))
    assert ack["state"]["settlement"]["amount"] == "9.99"

    d2 = await bots(server, auth={"connection_id": d.connection_id, "token": d.token})
    r2 = assert_ok(await d2.call("receipt", {}))["receipt"]
    assert r2 == receipt
    assert settled["settlement"]["receipt_id"] == r2["receipt_id"]
    # signing keys persist across restarts
    keys_after = await _keys(server)
    verify_signature(r2, keys_after)
    assert {k["key_id"] for k in keys_before["keys"]} <= {k["key_id"] for k in keys_after["keys"]}


async def test_replay_after_restart_returns_identical_ack(server, bots):
    x = await bots(server)
    ckey = rid()
    create_payload = {"party": "A", "currency": "USD", "request_id": ckey}
    created, raw_created = await x.call_raw("create", create_payload)
    assert_ok(created)
    pkey = rid()
    proposed, raw_proposed = await x.call_raw("propose", {"amount": "42", "request_id": pkey})
    assert_ok(proposed)

    await asyncio.to_thread(server.restart)

    y = await bots(server)
    again, raw_again = await y.call_raw("create", dict(create_payload))
    assert raw_again == raw_created  # byte for byte
    assert json.dumps(again) == json.dumps(created)
    # the replay seated y; the propose replay is the original too
    pagain, raw_pagain = await y.call_raw("propose", {"amount": "42", "request_id": pkey})
    assert raw_pagain == raw_proposed
    assert json.dumps(pagain) == json.dumps(proposed)
    assert_error(await y.propose("43", request_id=pkey), "idempotency_mismatch", seated=True)
    events = await y.all_events()
    assert [e["type"] for e in events] == ["created", "proposed"]


async def test_bot_with_connect_auth_comes_back_seated_after_restart(server, bots):
    a, b = await bots.pair(server)
    auto = await bots(
        server, auth={"connection_id": a.connection_id, "token": a.token}, reconnection=True
    )
    assert_ok(await auto.history())
    await asyncio.to_thread(server.restart)
    # the Socket.IO client reconnects by itself and resends its auth
    for _ in range(100):
        if auto.disconnects and auto.connected:
            break
        await asyncio.sleep(0.1)
    assert auto.disconnects >= 1 and auto.connected
    ack = None
    for _ in range(20):
        ack = await auto.history()
        if ack.get("ok"):
            break
        await asyncio.sleep(0.1)
    assert_ok(ack)
    assert auto.errors == []
    assert_ok(await auto.propose("1"))


async def test_rate_limit_refuses_past_burst_and_keeps_connection(server, bots):
    a = await bots(server)
    await a.create("A")
    flood = await asyncio.gather(*(a.propose(str(i)) for i in range(1, 61)))
    ok = [x for x in flood if x.get("ok")]
    limited = [x for x in flood if not x.get("ok")]
    assert all(x["error"]["code"] == "rate_limited" for x in limited), limited[:3]
    assert len(limited) >= 10, len(limited)
    assert 35 <= len(ok) <= 50, len(ok)
    assert sorted(x["version"] for x in ok) == list(range(1, len(ok) + 1))
    assert a.connected
    await asyncio.sleep(1.2)
    for i in range(15):
        assert_ok(await a.propose(str(1000 + i)))
    assert a.connected


async def test_rate_limited_ack_carries_state_when_seated(server, bots):
    a = await bots(server)
    await a.create("A")
    flood = await asyncio.gather(*(a.call("history", {}) for _ in range(60)))
    limited = [x for x in flood if not x.get("ok")]
    assert limited
    for x in limited:
        assert_error(x, "rate_limited", seated=True)


async def test_rate_limit_is_per_socket(server, bots):
    a = await bots(server)
    created = await a.create("A")
    a2 = await bots(server)
    await a2.resume(created["connection_id"], created["token"])
    flood = await asyncio.gather(*(a.call("history", {}) for _ in range(60)))
    assert any(not x.get("ok") for x in flood)
    # the other socket of the same seat still has its own full budget
    other = await asyncio.gather(*(a2.call("history", {}) for _ in range(30)))
    assert all(x.get("ok") for x in other), [x for x in other if not x.get("ok")][:2]


async def test_rate_limited_is_checked_before_payload_shape(server, bots):
    x = await bots(server)
    await x.create("A")
    # create + 39 valid commands use up the burst; what follows at once is rate_limited
    calls = [x.call("history", {}) for _ in range(39)] + [
        x.call("propose", ["junk"]) for _ in range(10)
    ]
    acks = await asyncio.gather(*calls)
    tail = acks[39:]
    codes = [t["error"]["code"] for t in tail]
    assert codes.count("rate_limited") >= 7, codes


async def test_rate_limited_refusals_take_no_token(server, bots):
    a = await bots(server)
    await a.create("A")
    await asyncio.gather(*(a.call("history", {}) for _ in range(45)))
    # keep hammering while empty; these refusals must not dig the bucket deeper
    for _ in range(5):
        await asyncio.gather(*(a.call("history", {}) for _ in range(20)))
    await asyncio.sleep(1.05)
    acks = await asyncio.gather(*(a.call("history", {}) for _ in range(15)))
    assert all(x.get("ok") for x in acks), [x for x in acks if not x.get("ok")][:2]
