"""Protocol 1.1, "Party keys and signed statements": bots with their own keys, every rule."""

from __future__ import annotations

import copy
import json

import pytest

from settlement.client import SettlementClient

from .bots import assert_error, assert_event_shape, assert_ok, rid
from .consent_keys import (
    PartyKey,
    b64,
    propose_statement,
    rechain,
    respond_statement,
    run_verify,
    signed_propose,
    signed_respond,
)


async def signed_pair(bots, srv, currency=None, *, sign_a=True, sign_b=True):
    """(a, b, key_a, key_b): a room whose seats were taken with keys (or not)."""
    ka = PartyKey() if sign_a else None
    kb = PartyKey() if sign_b else None
    a = await bots(srv, name="A")
    extra_a = {"public_key": ka.public_key} if ka else {}
    await a.create("A", currency, **extra_a)
    b = await bots(srv, name="B")
    extra_b = {"public_key": kb.public_key} if kb else {}
    ack = await b.join(a.connection_id, **extra_b)
    return a, b, ka, kb, ack["state"]


async def receipt_of(bot):
    ack = assert_ok(await bot.call("receipt", {}))
    return ack["receipt"]


async def nothing_changed(bot, seq: int) -> None:
    events = await bot.all_events()
    assert events[-1]["seq"] == seq, events[-1]


# ------------------------------------------------------------ keys and snapshots


async def test_public_key_is_recorded_and_key_id_is_in_every_snapshot(shared_server, bots):
    ka, kb = PartyKey(), PartyKey()
    a = await bots(shared_server)
    created = await a.create("A", public_key=ka.public_key)
    assert created["state"]["parties"]["A"]["key_id"] == ka.key_id
    assert created["state"]["parties"]["B"]["key_id"] is None
    b = await bots(shared_server)
    joined = await b.join(a.connection_id, public_key=kb.public_key)
    parties = joined["state"]["parties"]
    assert (parties["A"]["key_id"], parties["B"]["key_id"]) == (ka.key_id, kb.key_id)
    pushed = await a.wait_state_seq(2)
    assert pushed["parties"]["B"]["key_id"] == kb.key_id
    events = await a.all_events()
    for event in events:
        assert_event_shape(event, a.connection_id)
    assert [(e["type"], e["public_key"]) for e in events] == [
        ("created", ka.public_key),
        ("joined", kb.public_key),
    ]


async def test_a_seat_without_key_records_null(shared_server, bots):
    a, b, _, _, state = await signed_pair(bots, shared_server, sign_a=False, sign_b=False)
    assert state["parties"]["A"]["key_id"] is None and state["parties"]["B"]["key_id"] is None
    events = await a.all_events()
    assert [e["public_key"] for e in events] == [None, None]
    assert_ok(await a.propose("5"))
    assert_ok(await b.respond("dispute", 1))
    events = await a.all_events()
    assert [e["signature"] for e in events[2:]] == [None, None]


async def test_offer_hash_is_the_proposed_events_hash(shared_server, bots):
    a, b, ka, _, state = await signed_pair(bots, shared_server)
    ack = assert_ok(await signed_propose(a, ka, state, "12.50"))
    events = await a.all_events()
    assert ack["state"]["offer"]["hash"] == events[-1]["hash"]
    assert events[-1]["signature"] is not None
    pushed = await b.wait_state_seq(3)
    assert pushed["offer"]["hash"] == events[-1]["hash"]


# ------------------------------------------------------------ propose version


async def test_propose_version_ok_and_stale(shared_server, bots):
    a, b, _, _, _ = await signed_pair(bots, shared_server, sign_a=False, sign_b=False)
    assert_ok(await a.propose("10", version=1))
    for wrong in (1, 3, 0, -1, 10**12):
        ack = assert_error(await a.propose("11", version=wrong), "stale_offer", seated=True)
        assert ack["state"]["offer"]["version"] == 1
    await nothing_changed(a, 3)
    ok = assert_ok(await a.propose("11", version=2))
    assert ok["version"] == 2


@pytest.mark.parametrize("version", [True, 1.0, "2", [2]])
async def test_propose_version_of_the_wrong_type_is_bad_request(shared_server, bots, version):
    a, _, _, _, _ = await signed_pair(bots, shared_server, sign_a=False, sign_b=False)
    assert_error(await a.propose("10", version=version), "bad_request", seated=True)


async def test_signing_seat_must_send_version_and_signature(shared_server, bots):
    a, _, ka, _, state = await signed_pair(bots, shared_server)
    assert_error(await a.propose("10"), "signature_required", seated=True)
    assert_error(await a.propose("10", version=1), "signature_required", seated=True)
    signature = ka.sign(propose_statement(state, "10.00", 1))
    # A signature names a version, so a signed proposal without one is malformed.
    assert_error(await a.propose("10", signature=signature), "bad_request", seated=True)
    await nothing_changed(a, 2)
    assert_ok(await a.propose("10", version=1, signature=signature))


async def test_signature_covers_the_normalised_amount(shared_server, bots):
    a, _, ka, _, state = await signed_pair(bots, shared_server, "KWD")
    raw = ka.sign(propose_statement(state, "0012.5", 1))
    assert_error(await a.propose("0012.5", version=1, signature=raw), "bad_signature", seated=True)
    good = ka.sign(propose_statement(state, "12.500", 1))
    ack = assert_ok(await a.propose("0012.5", version=1, signature=good))
    assert ack["state"]["offer"]["amount"] == "12.500"


# ------------------------------------------------------- refusals change nothing


async def test_signature_required_and_bad_signature_change_nothing(shared_server, bots):
    a, b, ka, kb, state = await signed_pair(bots, shared_server)
    other = PartyKey()
    before = len(b.states)
    forged = other.sign(propose_statement(state, "10.00", 1))
    for ack, code in (
        (await a.propose("10", version=1), "signature_required"),
        (await a.propose("10", version=1, signature=forged), "bad_signature"),
        # Signed by A's own key, but for another amount than the one sent.
        (
            await a.propose(
                "10", version=1, signature=ka.sign(propose_statement(state, "11.00", 1))
            ),
            "bad_signature",
        ),
    ):
        refused = assert_error(ack, code, seated=True)
        assert refused["state"]["seq"] == 2 and refused["state"]["offer"] is None
    ack = assert_ok(await signed_propose(a, ka, state, "10.00"))
    state = ack["state"]
    await b.wait_state_seq(3)
    assert all(s["seq"] in (2, 3) for s in b.states[before:])
    for payload, code in (
        ({}, "signature_required"),
        ({"signature": other.sign(respond_statement(state, "accept"))}, "bad_signature"),
        # B's key, but the statement of a dispute: refused as an accept.
        ({"signature": kb.sign(respond_statement(state, "dispute"))}, "bad_signature"),
    ):
        refused = assert_error(await b.respond("accept", 1, **payload), code, seated=True)
        assert refused["state"]["status"] == "offer_pending"
    await nothing_changed(b, 3)
    assert_ok(await signed_respond(b, kb, state, "accept"))


async def test_signature_from_a_seat_without_key_is_bad_request(shared_server, bots):
    a, b, _, _, state = await signed_pair(bots, shared_server, sign_a=False, sign_b=False)
    somebody = PartyKey()
    sig = somebody.sign(propose_statement(state, "10.00", 1))
    assert_error(await a.propose("10", version=1, signature=sig), "bad_request", seated=True)
    ack = assert_ok(await a.propose("10", version=1))
    sig = somebody.sign(respond_statement(ack["state"], "accept"))
    assert_error(await b.respond("accept", 1, signature=sig), "bad_request", seated=True)
    await nothing_changed(a, 3)


MALFORMED = [
    "",
    "not base64!",
    b64(b"\x01" * 31),
    b64(b"\x01" * 33),
    b64(b"\x01" * 32).rstrip("="),  # unpadded
    b64(b"\xfb" * 32).replace("+", "-").replace("/", "_"),  # URL-safe alphabet
    " " + b64(b"\x01" * 32),
    b64(b"\x01" * 32) + "\n",
    b64(b"\x01" * 64),  # a signature's length, not a key's
    32,
    True,
    ["x"],
    {"key": "x"},
]


@pytest.mark.parametrize("value", MALFORMED, ids=range(len(MALFORMED)))
async def test_malformed_public_key_is_bad_request(shared_server, bots, value):
    a = await bots(shared_server)
    payload = {"party": "A", "request_id": rid(), "public_key": value}
    assert_error(await a.call("create", payload), "bad_request", seated=False)
    c = await bots(shared_server)
    await c.create("A")
    payload = {"connection_id": c.connection_id, "request_id": rid(), "public_key": value}
    assert_error(await a.call("join", payload), "bad_request", seated=False)


@pytest.mark.parametrize(
    "value",
    ["", "x", b64(b"\x01" * 63), b64(b"\x01" * 65), b64(b"\x01" * 64).rstrip("="), 7, None],
)
async def test_malformed_signature_is_bad_request(shared_server, bots, value):
    a, b, _, _, _ = await signed_pair(bots, shared_server)
    if value is None:  # null means absent: a signing seat then lacks its signature
        assert_error(await a.propose("1", version=1, signature=None), "signature_required")
        return
    assert_error(await a.propose("1", version=1, signature=value), "bad_request", seated=True)
    assert_error(await b.respond("accept", 1, signature=value), "bad_request", seated=True)


# ---------------------------------------------------------------- replay


async def test_replay_of_a_signed_command_returns_the_original_ack(shared_server, bots):
    a, b, ka, kb, state = await signed_pair(bots, shared_server)
    key = rid()
    sig = ka.sign(propose_statement(state, "10.00", 1))
    payload = {"amount": "10", "version": 1, "signature": sig, "request_id": key}
    first, raw1 = await a.call_raw("propose", payload)
    assert_ok(first)
    again, raw2 = await a.call_raw("propose", payload)
    assert raw2 == raw1
    other = {**payload, "signature": ka.sign(propose_statement(state, "10.00", 2))}
    assert_error(await a.call("propose", other), "idempotency_mismatch", seated=True)
    answer = {"decision": "accept", "version": 1, "request_id": rid()}
    answer["signature"] = kb.sign(respond_statement(first["state"], "accept"))
    r1, raw3 = await b.call_raw("respond", answer)
    assert_ok(r1)
    r2, raw4 = await b.call_raw("respond", answer)
    assert raw4 == raw3
    events = await a.all_events()
    assert [e["type"] for e in events] == ["created", "joined", "proposed", "accepted"]


# ---------------------------------------------------------- order of checks


async def test_order_of_checks_signature_checks_come_last(shared_server, bots):
    a, b, ka, kb, state = await signed_pair(bots, shared_server)
    junk = b64(b"\x07" * 64)
    # values before signatures
    assert_error(await a.propose("-1", version=1, signature=junk), "invalid_amount")
    assert_error(await a.propose("-1", version=1), "invalid_amount")
    # the room (stale version) before signatures
    assert_error(await a.propose("1", version=2, signature=junk), "stale_offer")
    assert_error(await a.propose("1", version=2), "stale_offer")
    # seat before signatures
    assert_error(await b.propose("1", version=1, signature=junk), "wrong_party")
    assert_error(await a.respond("accept", 1, signature=junk), "wrong_party")
    assert_error(await b.respond("accept", 1, signature=junk), "no_offer")
    assert_error(await b.respond("accept", 1), "no_offer")
    # shape before everything after it
    assert_error(await b.respond("accept", 1, signature="short"), "bad_request")
    state = assert_ok(await signed_propose(a, ka, state, "10.00"))["state"]
    assert_error(await b.respond("accept", 2, signature=junk), "stale_offer")
    assert_error(await b.respond("accept", 2), "stale_offer")
    assert_ok(await signed_respond(b, kb, state, "dispute", "too high"))
    assert_error(await b.respond("accept", 1, signature=junk), "already_responded")
    assert_error(await b.respond("accept", 1), "already_responded")
    state = assert_ok(await signed_propose(a, ka, state, "9.00"))["state"]
    assert_ok(await signed_respond(b, kb, state, "accept"))
    assert_error(await a.propose("1", version=3, signature=junk), "settled")
    assert_error(await b.respond("accept", 2, signature=junk), "settled")
    assert_error(await b.respond("accept", 2), "settled")


async def test_signature_from_keyless_seat_is_bad_request_before_seat_checks(shared_server, bots):
    a, b, ka, _, _ = await signed_pair(bots, shared_server, sign_b=False)
    junk = b64(b"\x07" * 64)
    # B has no key: its signature is malformed input, whatever else is wrong.
    assert_error(await b.propose("1", version=1, signature=junk), "bad_request")
    assert_error(await b.respond("accept", 1, signature=junk), "bad_request")


# --------------------------------------------------- receipts and `verify`


async def test_fully_signed_receipt_verifies_with_require_consent(shared_server, bots, tmp_path):
    a, b, ka, kb, state = await signed_pair(bots, shared_server, "JPY")
    state = assert_ok(await signed_propose(a, ka, state, "1250"))["state"]
    state = assert_ok(await signed_respond(b, kb, state, "dispute", "zu hoch — \u00e9\n\u2603"))[
        "state"
    ]
    state = assert_ok(await signed_propose(a, ka, state, "1000"))["state"]
    assert_ok(await signed_respond(b, kb, state, "accept"))
    receipt = await receipt_of(a)
    code, out = await run_verify(receipt, tmp_path, "--require-consent")
    assert code == 0, out
    assert f"party-signed: seq 6 accepted by Party B, key_id {kb.key_id}" in out
    assert f"party-signed: seq 3 proposed by Party A, key_id {ka.key_id}" in out
    assert "seq 4 disputed by Party B" in out


async def test_mixed_room_only_a_signs(shared_server, bots, tmp_path):
    a, b, ka, _, state = await signed_pair(bots, shared_server, sign_b=False)
    state = assert_ok(await signed_propose(a, ka, state, "7.00"))["state"]
    assert_ok(await b.respond("accept", 1))
    receipt = await receipt_of(b)
    code, out = await run_verify(receipt, tmp_path)
    assert code == 0, out
    assert "party-signed: seq 3 proposed by Party A" in out
    assert "unsigned: seq 4 accepted by Party B" in out
    code, out = await run_verify(receipt, tmp_path, "--require-consent")
    assert code == 1, out
    assert "seq 4 (accepted)" in out


async def test_unsigned_room_verifies_but_not_with_require_consent(shared_server, bots, tmp_path):
    a, b, _, _, _ = await signed_pair(bots, shared_server, sign_a=False, sign_b=False)
    assert_ok(await a.propose("7"))
    assert_ok(await b.respond("accept", 1))
    receipt = await receipt_of(a)
    assert (await run_verify(receipt, tmp_path))[0] == 0
    code, out = await run_verify(receipt, tmp_path, "--require-consent")
    assert code == 1 and "seq 3 (proposed)" in out, out


async def test_leave_and_rejoin_with_a_new_key(shared_server, bots, tmp_path):
    a, b, ka, kb, state = await signed_pair(bots, shared_server)
    state = assert_ok(await signed_propose(a, ka, state, "100.00"))["state"]
    assert_ok(await signed_respond(b, kb, state, "dispute", None))
    assert_ok(await b.call("leave", {"request_id": rid()}))
    kb2 = PartyKey()
    b2 = await bots(shared_server, name="B2")
    ack = await b2.join(a.connection_id, public_key=kb2.public_key)
    assert ack["state"]["parties"]["B"]["key_id"] == kb2.key_id
    state = assert_ok(await signed_propose(a, ka, ack["state"], "90.00"))["state"]
    # The old key no longer speaks for seat B.
    assert_error(await signed_respond(b2, kb, state, "accept"), "bad_signature", seated=True)
    assert_ok(await signed_respond(b2, kb2, state, "accept"))
    receipt = await receipt_of(a)
    code, out = await run_verify(receipt, tmp_path, "--require-consent")
    assert code == 0, out
    assert f"seq 4 disputed by Party B, key_id {kb.key_id}" in out
    assert f"seq 8 accepted by Party B, key_id {kb2.key_id}" in out


async def test_rejoin_without_key_makes_an_unsigned_seat(shared_server, bots):
    a, b, _, kb, state = await signed_pair(bots, shared_server)
    assert_ok(await b.call("leave", {"request_id": rid()}))
    left = await a.wait_for("state", lambda s: s["seq"] == 3)
    assert left["parties"]["B"]["key_id"] is None
    b2 = await bots(shared_server)
    ack = await b2.join(a.connection_id)
    assert ack["state"]["parties"]["B"]["key_id"] is None
    events = await a.all_events()
    assert events[-1]["type"] == "joined" and events[-1]["public_key"] is None


async def test_forged_signature_rechained_is_refused_naming_the_event(
    shared_server, bots, tmp_path
):
    a, b, ka, kb, state = await signed_pair(bots, shared_server)
    state = assert_ok(await signed_propose(a, ka, state, "1250.00"))["state"]
    assert_ok(await signed_respond(b, kb, state, "accept"))
    receipt = await receipt_of(a)
    assert (await run_verify(receipt, tmp_path, "--require-consent"))[0] == 0

    # The server (or anyone) edits the amount everywhere and re-chains: the chain
    # is intact again, but A's and B's signatures no longer match their statements.
    edited = copy.deepcopy(receipt)
    for event in edited["events"]:
        if event["type"] in ("proposed", "accepted"):
            event["amount"] = "1.00"
    edited["amount"] = "1.00"
    rechain(edited)
    code, out = await run_verify(edited, tmp_path)
    assert code == 1, out
    assert "seq 3 (proposed)" in out and "signature does not verify" in out

    # A signature lifted from another statement, re-chained.
    swapped = copy.deepcopy(receipt)
    swapped["events"][3]["signature"] = swapped["events"][2]["signature"]
    rechain(swapped)
    code, out = await run_verify(swapped, tmp_path)
    assert code == 1 and "seq 4 (accepted)" in out, out

    # The server swaps in its own key for B at join and signs nothing: the
    # acceptance still carries B's signature, which the new key does not check.
    mallory = PartyKey()
    rekeyed = copy.deepcopy(receipt)
    rekeyed["events"][1]["public_key"] = mallory.public_key
    rechain(rekeyed)
    code, out = await run_verify(rekeyed, tmp_path)
    assert code == 1 and "seq 4 (accepted)" in out, out

    # Dropping the signatures keeps the chain valid, but not consent.
    stripped = copy.deepcopy(receipt)
    for event in stripped["events"]:
        if "signature" in event:
            event["signature"] = None
    rechain(stripped)
    assert (await run_verify(stripped, tmp_path))[0] == 0
    code, out = await run_verify(stripped, tmp_path, "--require-consent")
    assert code == 1 and "seq 3 (proposed)" in out, out


async def test_the_http_receipt_carries_what_require_consent_needs(shared_server, bots, tmp_path):
    import aiohttp

    a, b, ka, kb, state = await signed_pair(bots, shared_server)
    state = assert_ok(await signed_propose(a, ka, state, "3.00"))["state"]
    assert_ok(await signed_respond(b, kb, state, "accept"))
    url = f"{shared_server.url}/api/connections/{a.connection_id}/receipt"
    headers = {"Authorization": f"Bearer {a.token}"}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        assert resp.status == 200
        receipt = json.loads(await resp.read())
    code, out = await run_verify(receipt, tmp_path, "--require-consent")
    assert code == 0, out


# --------------------------------------------------------- the Python client


async def test_python_client_signs_by_default(shared_server, tmp_path):
    a = SettlementClient(shared_server.url)
    b = SettlementClient(shared_server.url, key_file=tmp_path / "b.pem")
    await a.connect()
    await b.connect()
    try:
        created = await a.create("A", "KWD")
        assert created["state"]["parties"]["A"]["key_id"] == a.key_id
        joined = await b.join(a.connection_id)
        assert joined["state"]["parties"]["B"]["key_id"] == b.key_id
        assert (await a.propose("0007.5"))["state"]["offer"]["amount"] == "7.500"
        await b.wait_for_state(lambda s: s["seq"] == 3)
        await b.dispute(1, "no")
        await a.propose("7")
        await b.wait_for_state(lambda s: s["seq"] == 5)
        await b.accept(2)
        receipt = await a.receipt()
    finally:
        await a.close()
        await b.close()
    assert all(e["signature"] for e in receipt["events"][2:])
    code, out = await run_verify(receipt, tmp_path, "--require-consent")
    assert code == 0, out
    assert (tmp_path / "b.pem").stat().st_mode & 0o777 == 0o600
    again = SettlementClient(shared_server.url, key_file=tmp_path / "b.pem")
    assert again.key_id == b.key_id  # the key file is reused


async def test_python_client_resigns_after_another_tab_proposed(shared_server):
    a = SettlementClient(shared_server.url)
    tab2 = SettlementClient(shared_server.url, key=a.key)
    await a.connect()
    await tab2.connect()
    try:
        await a.create("A")
        stale = a.last_state
        await tab2.resume(a.connection_id, a.token or "")
        await tab2.propose("5")
        await a.wait_for_state(lambda s: s["seq"] == 2)
        a.last_state = stale  # as if `a` had not heard of version 1 yet: it re-signs
        ack = await a.propose("6")
        assert ack["version"] == 2
    finally:
        await a.close()
        await tab2.close()
