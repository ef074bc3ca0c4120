"""history (hash chain, paging) and receipt (socket and HTTP, signature, verify CLI)."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
from pathlib import Path

import aiohttp
import pytest

from .bots import (
    RECEIPT_KEYS,
    ZERO_HASH,
    assert_chain,
    assert_error,
    assert_event_shape,
    assert_ok,
    rid,
    verify_signature,
)

ROOT = Path(__file__).resolve().parents[2]


async def _negotiated(srv, bots):
    """created, joined, proposed v1, disputed v1 (emoji reason), proposed v2, accepted v2."""
    a, b = await bots.pair(srv, currency="EUR")
    assert_ok(await a.propose("1250"))
    assert_ok(await b.respond("dispute", 1, reason="zu hoch 😀 <b>"))
    assert_ok(await a.propose("1100.5"))
    ack = assert_ok(await b.respond("accept", 2))
    return a, b, ack["state"]


async def test_history_lists_events_oldest_first_with_exact_shapes(shared_server, bots):
    a, b, state = await _negotiated(shared_server, bots)
    ack = await a.history()
    assert_ok(ack)
    assert set(ack) <= {"ok", "events", "more"}, ack
    assert ack.get("more") in (None, False)
    events = ack["events"]
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
    assert [(e["type"], e["party"]) for e in events] == [
        ("created", "A"),
        ("joined", "B"),
        ("proposed", "A"),
        ("disputed", "B"),
        ("proposed", "A"),
        ("accepted", "B"),
    ]
    for e in events:
        assert_event_shape(e, a.connection_id)
    assert events[0]["currency"] == "EUR"
    assert (events[2]["amount"], events[2]["version"]) == ("1250.00", 1)
    assert (events[3]["version"], events[3]["reason"]) == (1, "zu hoch 😀 <b>")
    assert (events[4]["amount"], events[4]["version"]) == ("1100.50", 2)
    assert (events[5]["amount"], events[5]["version"]) == ("1100.50", 2)
    ats = [e["at"] for e in events]
    assert ats == sorted(ats)
    assert state["seq"] == 6


async def test_history_hash_chain_verifies(shared_server, bots):
    a, b, state = await _negotiated(shared_server, bots)
    events = await b.all_events()
    assert events[0]["prev_hash"] == ZERO_HASH
    assert_chain(events)
    assert state["settlement"]["receipt_id"] == events[-1]["hash"]
    assert state["settlement"]["settled_at"] == events[-1]["at"]


async def test_history_is_same_for_both_seats(shared_server, bots):
    a, b, _ = await _negotiated(shared_server, bots)
    assert await a.all_events() == await b.all_events()


async def test_history_after_seq_pages(shared_server, bots):
    a, b, _ = await _negotiated(shared_server, bots)
    full = (await a.history())["events"]
    part = assert_ok(await a.history(3))
    assert part["events"] == full[3:]
    assert assert_ok(await a.history(0))["events"] == full
    assert assert_ok(await a.history(6))["events"] == []
    assert assert_ok(await a.history(100))["events"] == []
    assert assert_ok(await a.call("history", {"after_seq": None}))["events"] == full


async def test_history_after_seq_huge_json_integer_returns_no_events(shared_server, bots):
    # after_seq is "<int>"; an integer past the last seq simply has nothing after it
    a = await bots(shared_server)
    await a.create("A")
    assert assert_ok(await a.history(2**63))["events"] == []
    assert assert_ok(await a.history(10**30))["events"] == []


async def test_history_ignores_request_id(shared_server, bots):
    a, b = await bots.pair(shared_server)
    h1 = assert_ok(await a.call("history", {"request_id": "same-key"}))
    assert_ok(await a.propose("5"))
    h2 = assert_ok(await a.call("history", {"request_id": "same-key"}))
    assert len(h2["events"]) == len(h1["events"]) + 1


async def test_history_over_500_events_pages_at_500_with_more(shared_server, bots):
    a = await bots(shared_server)
    created = await a.create("A")
    cid, token = created["connection_id"], created["token"]
    # The command budget is per socket (burst 40): spread ~520 proposals over
    # several sockets holding seat A, each staying inside its burst.
    sockets = [a]
    for i in range(13):
        s = await bots(shared_server, name=f"a{i}")
        await s.resume(cid, token)
        sockets.append(s)
    per_socket = 38
    counter = iter(range(1, 10_000))

    unavailable = []

    async def burst(bot):
        out = []
        for _ in range(per_socket):
            key, amount = rid(), str(next(counter))
            for _attempt in range(20):
                ack = await bot.propose(amount, request_id=key)
                if ack.get("ok") or ack["error"]["code"] != "unavailable":
                    break
                # the protocol's advice: retry with the same request_id
                unavailable.append(ack)
                await asyncio.sleep(0.05)
            out.append(ack)
        return out

    results = await asyncio.gather(*(burst(s) for s in sockets))
    acks = [x for r in results for x in r]
    assert all(x["ok"] for x in acks), [x for x in acks if not x["ok"]][:3]
    print(f"unavailable acks retried: {len(unavailable)}")
    total = 1 + len(acks)
    assert total > 500
    versions = sorted(x["version"] for x in acks)
    assert versions == list(range(1, len(acks) + 1))

    reader = await bots(shared_server, name="reader")
    await reader.resume(cid, token)
    page1 = assert_ok(await reader.history())
    assert len(page1["events"]) == 500
    assert page1["more"] is True
    assert [e["seq"] for e in page1["events"]] == list(range(1, 501))
    page2 = assert_ok(await reader.history(500))
    assert [e["seq"] for e in page2["events"]] == list(range(501, total + 1))
    assert page2.get("more") in (None, False)
    events = page1["events"] + page2["events"]
    assert_chain(events)
    # a client ignores snapshots whose seq is not above the last it applied:
    # every socket must get them in order, and the last one is the newest
    for s in sockets:
        seqs = [st["seq"] for st in s.states]
        assert seqs == sorted(seqs), s.name
    await asyncio.gather(*(s.wait_state_seq(total) for s in sockets))
    mid = assert_ok(await reader.history(10))
    assert len(mid["events"]) == 500 and mid["more"] is True
    assert mid["events"][0]["seq"] == 11


# ------------------------------------------------------------- receipt


async def test_receipt_before_settlement_is_not_settled(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_error(await a.call("receipt", {}), "not_settled", seated=True)
    assert_ok(await a.propose("10"))
    assert_error(await b.call("receipt", {}), "not_settled", seated=True)


async def test_receipt_by_unseated_is_not_seated(shared_server, bots):
    x = await bots(shared_server)
    assert_error(await x.call("receipt", {}), "not_seated", seated=False)


async def test_receipt_fields_chain_and_signature(shared_server, bots):
    a, b, state = await _negotiated(shared_server, bots)
    ack = await a.call("receipt", {})
    assert_ok(ack, {"ok", "receipt"})
    r = ack["receipt"]
    assert set(r) == RECEIPT_KEYS, sorted(r)
    assert r["connection_id"] == a.connection_id
    assert r["currency"] == "EUR"
    assert r["amount"] == "1100.50"
    assert r["version"] == 2
    events = await a.all_events()
    assert r["events"] == events[:6]
    assert r["events"][-1]["type"] == "accepted"
    assert r["receipt_id"] == r["events"][-1]["hash"] == state["settlement"]["receipt_id"]
    assert r["settled_at"] == r["events"][-1]["at"] == state["settlement"]["settled_at"]
    assert_chain(r["events"])
    assert r["signature"]["alg"] == "ed25519"
    async with aiohttp.ClientSession() as http, http.get(shared_server.url + "/api/keys") as resp:
        assert resp.status == 200
        keys = await resp.json()
    verify_signature(r, keys)
    # B gets the same receipt
    rb = assert_ok(await b.call("receipt", {}))["receipt"]
    assert rb == r


async def test_receipt_signature_fails_for_edited_receipt(shared_server, bots):
    a, b, _ = await _negotiated(shared_server, bots)
    r = assert_ok(await a.call("receipt", {}))["receipt"]
    async with aiohttp.ClientSession() as http, http.get(shared_server.url + "/api/keys") as resp:
        keys = await resp.json()
    edited = copy.deepcopy(r)
    edited["amount"] = "1.00"
    from cryptography.exceptions import InvalidSignature

    with pytest.raises(InvalidSignature):
        verify_signature(edited, keys)


async def test_receipt_events_end_at_accepted_even_after_later_events(shared_server, bots):
    a, b, state = await _negotiated(shared_server, bots)
    assert await b.call("leave", {}) == {"ok": True}
    c = await bots(shared_server)
    await c.join(a.connection_id)
    r = assert_ok(await a.call("receipt", {}))["receipt"]
    assert [e["seq"] for e in r["events"]] == [1, 2, 3, 4, 5, 6]
    assert r["receipt_id"] == state["settlement"]["receipt_id"]
    assert len(await a.all_events()) == 8


async def test_receipt_ignores_request_id(shared_server, bots):
    a, b, _ = await _negotiated(shared_server, bots)
    r1 = assert_ok(await a.call("receipt", {"request_id": "k"}))
    r2 = assert_ok(await a.call("receipt", {"request_id": "k"}))
    assert r1 == r2


async def test_api_keys_lists_ed25519_keys(shared_server):
    async with aiohttp.ClientSession() as http, http.get(shared_server.url + "/api/keys") as resp:
        assert resp.status == 200
        doc = await resp.json()
    assert set(doc) == {"keys"}
    assert doc["keys"], doc
    import base64

    for k in doc["keys"]:
        assert set(k) == {"key_id", "alg", "public_key"}
        assert k["alg"] == "ed25519"
        assert len(base64.b64decode(k["public_key"], validate=True)) == 32


async def _get_receipt(srv, cid, token=None, auth_header=None):
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if auth_header is not None:
        headers["Authorization"] = auth_header
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{srv.url}/api/connections/{cid}/receipt", headers=headers) as resp,
    ):
        body = await resp.read()
        return resp.status, body


async def test_http_receipt_with_bearer_token_matches_socket_receipt(shared_server, bots):
    a, b, _ = await _negotiated(shared_server, bots)
    r = assert_ok(await a.call("receipt", {}))["receipt"]
    for cid in (a.connection_id, a.connection_id.lower(), a.connection_id.replace("-", "").lower()):
        for token in (a.token, b.token):
            status, body = await _get_receipt(shared_server, cid, token)
            assert status == 200, (cid, status, body[:200])
            assert json.loads(body) == r


async def test_http_receipt_missing_or_wrong_token_is_401(shared_server, bots):
    a, b, _ = await _negotiated(shared_server, bots)
    other_a, _ = await bots.pair(shared_server)
    cid = a.connection_id
    assert (await _get_receipt(shared_server, cid))[0] == 401
    assert (await _get_receipt(shared_server, cid, "wrong"))[0] == 401
    assert (await _get_receipt(shared_server, cid, other_a.token))[0] == 401
    assert (await _get_receipt(shared_server, cid, auth_header=a.token))[0] == 401
    assert (await _get_receipt(shared_server, cid, auth_header="Basic " + a.token))[0] == 401


async def test_http_receipt_revoked_token_is_401(shared_server, bots):
    a, b, _ = await _negotiated(shared_server, bots)
    old = b.token
    assert await b.call("leave", {}) == {"ok": True}
    assert (await _get_receipt(shared_server, a.connection_id, old))[0] == 401
    assert (await _get_receipt(shared_server, a.connection_id, a.token))[0] == 200


async def test_http_receipt_unknown_room_is_404(shared_server, bots):
    a, b, _ = await _negotiated(shared_server, bots)
    assert (await _get_receipt(shared_server, "0000-0000-0000", a.token))[0] == 404
    assert (await _get_receipt(shared_server, "nope"))[0] == 404


async def test_http_receipt_not_settled_is_409(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert (await _get_receipt(shared_server, a.connection_id, a.token))[0] == 409
    assert_ok(await a.propose("3"))
    assert (await _get_receipt(shared_server, a.connection_id, b.token))[0] == 409


# ------------------------------------------------------------- verify CLI


async def _verify(path: Path, *extra: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "settlement",
        "verify",
        str(path),
        *extra,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, out.decode(errors="replace")


async def test_verify_cli_accepts_saved_receipt_and_rejects_edits(shared_server, bots, tmp_path):
    a, b, _ = await _negotiated(shared_server, bots)
    status, body = await _get_receipt(shared_server, a.connection_id, a.token)
    assert status == 200
    good = tmp_path / "receipt.json"
    good.write_bytes(body)
    code, out = await _verify(good)
    assert code == 0, out
    assert out.strip()

    async with aiohttp.ClientSession() as http, http.get(shared_server.url + "/api/keys") as resp:
        keys_doc = await resp.read()
    keyfile = tmp_path / "keys.json"
    keyfile.write_bytes(keys_doc)
    code, out = await _verify(good, "--key", str(keyfile))
    assert code == 0, out
    rawkey = tmp_path / "key.b64"
    rawkey.write_text(json.loads(keys_doc)["keys"][0]["public_key"])
    code, out = await _verify(good, "--key", str(rawkey))
    assert code == 0, out

    receipt = json.loads(body)
    edits = {
        "amount": lambda r: r.__setitem__("amount", "1.00"),
        "event_amount": lambda r: r["events"][4].__setitem__("amount", "1.00"),
        "dropped": lambda r: r["events"].pop(3),
        "reordered": lambda r: r["events"].insert(2, r["events"].pop(3)),
        "hash": lambda r: r["events"][1].__setitem__("hash", "f" * 64),
    }
    for name, edit in edits.items():
        bad = copy.deepcopy(receipt)
        edit(bad)
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(bad))
        code, out = await _verify(path)
        assert code == 1, (name, out)
        assert out.strip(), name
