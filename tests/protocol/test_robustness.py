"""Hostile input: every command answers with one well-formed ack and the socket stays."""

from __future__ import annotations

import asyncio
import random

from .bots import ERROR_CODES, assert_error, assert_ok, rid

KEYS = {
    "create": ["party", "currency", "request_id"],
    "join": ["connection_id", "party", "request_id"],
    "resume": ["connection_id", "token"],
    "propose": ["amount", "request_id"],
    "respond": ["decision", "version", "reason", "request_id"],
    "leave": ["request_id"],
    "history": ["after_seq", "request_id"],
    "receipt": ["request_id"],
}


def _value(rng: random.Random, depth: int = 0):
    pool = [
        None,
        True,
        False,
        0,
        1,
        -1,
        2,
        2**31,
        2**53 + 1,
        2**63 - 1,
        -(2**63),
        0.5,
        1.0,
        -0.0,
        1e300,
        "",
        "A",
        "B",
        "USD",
        "JPY",
        "accept",
        "dispute",
        "1250.00",
        "0",
        "1e3",
        "\u0000",
        "é😀",
        "<script>",
        "x" * 600,
        "9" * 39,
        "0000-0000-0000",
        rid(),
    ]
    if depth < 2:
        pool += [[_value(rng, depth + 1)], {"k": _value(rng, depth + 1)}]
    return rng.choice(pool)


def _payload(rng: random.Random, event: str):
    if rng.random() < 0.08:
        return rng.choice([[1], "x", 3, 2.5, True])
    keys = KEYS[event] + ["zzz"] if rng.random() < 0.1 else KEYS[event]
    return {k: _value(rng) for k in keys if rng.random() < 0.7}


async def _call_paced(bot, event, payload):
    for _ in range(50):
        ack = await bot.call(event, payload)
        if isinstance(ack, dict) and ack.get("error", {}).get("code") == "rate_limited":
            await asyncio.sleep(0.1)
            continue
        return ack
    raise AssertionError("still rate limited")


async def test_random_payloads_always_get_one_well_formed_ack(shared_server, bots):
    rng = random.Random(20261123)
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("10"))
    x = await bots(shared_server)
    seen = []
    for i in range(240):
        event = rng.choice(list(KEYS))
        bot = (a, b, x)[i % 3]
        payload = _payload(rng, event)
        ack = await _call_paced(bot, event, payload)
        assert isinstance(ack, dict), (event, payload, ack)
        assert isinstance(ack.get("ok"), bool), (event, payload, ack)
        if not ack["ok"]:
            code = ack["error"]["code"]
            assert code in ERROR_CODES, (event, payload, ack)
            # the store is healthy: a refusal must name the input problem, not "retry later"
            assert code != "unavailable", (event, payload, ack)
            assert ack["error"]["message"], ack
        seen.append((event, ack["ok"]))
        assert bot.connected, (event, payload)
    assert any(ok for _, ok in seen) and any(not ok for _, ok in seen)


async def test_lone_surrogate_in_payload_gets_bad_request_ack(shared_server, bots):
    # "\ud800" is valid JSON text; only frames over the size limit may be dropped
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("10"))
    assert_error(await b.respond("dispute", 1, reason="\ud800x"), "bad_request", seated=True)
    assert b.connected
    assert_ok(await b.respond("dispute", 1, reason="fine"))


async def test_large_but_legal_frame_is_answered(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("10"))
    ack = await b.respond("dispute", 1, reason="r" * 30000)
    assert_error(ack, "bad_request", seated=True)
    assert_error(await a.propose("1" * 30000), "invalid_amount", seated=True)
    assert b.connected and a.connected


async def test_unknown_event_name_gets_error_ack(shared_server, bots):
    x = await bots(shared_server)
    ack = await x.call("bogus", {})
    assert isinstance(ack, dict) and ack.get("ok") is False, ack
    assert x.connected
