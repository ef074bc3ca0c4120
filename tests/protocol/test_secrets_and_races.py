"""Token secrecy (never logged, stored only as a hash) and command races."""

from __future__ import annotations

import asyncio

import aiohttp

from .bots import assert_ok


def _db_bytes(srv) -> bytes:
    return srv.dump_store()


async def test_tokens_are_never_logged(shared_server, bots):
    a = await bots(shared_server)
    created = assert_ok(await a.call("create", {"party": "A"}))
    b = await bots(shared_server)
    await b.join(created["connection_id"])
    a2 = await bots(
        shared_server, auth={"connection_id": created["connection_id"], "token": created["token"]}
    )
    assert_ok(await a2.history())
    x = await bots(shared_server)
    await x.call(
        "resume", {"connection_id": created["connection_id"], "token": created["token"] + "z"}
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{shared_server.url}/api/connections/{created['connection_id']}/receipt",
            headers={"Authorization": f"Bearer {b.token}"},
        ) as resp,
    ):
        assert resp.status == 409
    await asyncio.sleep(0.3)
    log = shared_server.log()
    for token in (created["token"], b.token):
        assert token not in log
        assert token[:16] not in log


async def test_tokens_are_not_stored_in_clear(shared_server, bots):
    # Without request_id there is no ack to keep for replays, so the token must
    # appear nowhere in the store (it is "stored only as a hash").
    a = await bots(shared_server)
    created = assert_ok(await a.call("create", {"party": "A"}))
    b = await bots(shared_server)
    joined = assert_ok(await b.call("join", {"connection_id": created["connection_id"]}))
    assert_ok(await a.propose("1"))  # a later commit, so the earlier ones are on disk
    await asyncio.sleep(0.3)
    data = _db_bytes(shared_server)
    assert data, "no database file found"
    for token in (created["token"], joined["token"]):
        assert token.encode() not in data


async def test_accept_racing_a_new_proposal_never_accepts_an_unseen_amount(shared_server, bots):
    for _ in range(8):
        a, b = await bots.pair(shared_server)
        assert_ok(await a.propose("100"))
        p, r = await asyncio.gather(a.propose("200"), b.respond("accept", 1))
        if r["ok"]:
            assert r["state"]["settlement"]["amount"] == "100.00"
            assert p["ok"] is False and p["error"]["code"] == "settled", p
        else:
            assert r["error"]["code"] == "stale_offer", r
            assert p["ok"] is True and p["version"] == 2
        events = await a.all_events()
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        await a.close()
        await b.close()


async def test_concurrent_proposals_from_two_sockets_get_distinct_versions(shared_server, bots):
    a, b = await bots.pair(shared_server)
    a2 = await bots(shared_server)
    await a2.resume(a.connection_id, a.token)
    acks = await asyncio.gather(*(s.propose(str(i)) for i in range(1, 16) for s in (a, a2)))
    oks = [x for x in acks if x.get("ok")]
    assert len(oks) == 30, [x for x in acks if not x.get("ok")][:2]
    assert sorted(x["version"] for x in oks) == list(range(1, 31))
    last = max(oks, key=lambda x: x["version"])
    snap = await b.wait_state_seq(32)
    assert snap["offer"] == last["state"]["offer"]
