"""The hash chain, the receipt built from it, and the offline verifier's verdicts."""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement import ledger
from settlement.ledger import (
    GENESIS_HASH,
    SIGNATURE_MISMATCH,
    build_receipt,
    canonical_json,
    event_hash,
    seal,
    verify_chain,
    verify_receipt,
)
from settlement.signing import Signer

CID = "K7QF-3MZP-XW2D"


def chain(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Seal bodies in order, numbering them from seq 1, as the store would."""
    events: list[dict[str, Any]] = []
    prev = GENESIS_HASH
    for seq, body in enumerate(bodies, start=1):
        event = seal({"connection_id": CID, "seq": seq, **body}, prev)
        events.append(event)
        prev = event["hash"]
    return events


def negotiation_bodies() -> list[dict[str, Any]]:
    """A realistic negotiation: an offer, a dispute, a lower offer, acceptance."""
    return [
        {"type": "created", "party": "A", "at": "2026-11-23T10:00:00.000Z", "currency": "USD"},
        {"type": "joined", "party": "B", "at": "2026-11-23T10:00:05.120Z"},
        {
            "type": "proposed",
            "party": "A",
            "at": "2026-11-23T10:01:00.000Z",
            "amount": "1000.00",
            "version": 1,
        },
        {
            "type": "disputed",
            "party": "B",
            "at": "2026-11-23T10:02:00.000Z",
            "version": 1,
            "reason": "too high",
        },
        {
            "type": "proposed",
            "party": "A",
            "at": "2026-11-23T10:03:00.000Z",
            "amount": "900.00",
            "version": 2,
        },
        {
            "type": "accepted",
            "party": "B",
            "at": "2026-11-23T10:04:00.250Z",
            "amount": "900.00",
            "version": 2,
        },
    ]


def sample_receipt() -> dict[str, Any]:
    return build_receipt(chain(negotiation_bodies()))


def rechain(receipt: dict[str, Any], bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """What a forger can do: rebuild a whole consistent chain from edited bodies."""
    forged = build_receipt(chain(bodies))
    if "signature" in receipt:
        forged["signature"] = receipt["signature"]
    return forged


# --- canonical JSON and sealing ---------------------------------------------------


def test_canonical_json_sorts_keys_drops_spaces_and_keeps_utf8() -> None:
    assert canonical_json({"b": 1, "a": "é", "c": None}) == b'{"a":"\xc3\xa9","b":1,"c":null}'


@pytest.mark.parametrize("value", [1.5, True, b"x", (1, 2)])
def test_canonical_json_refuses_values_outside_the_protocol(value: object) -> None:
    with pytest.raises(TypeError):
        canonical_json({"x": value})


def test_seal_hashes_prev_hash_followed_by_canonical_event_without_hash() -> None:
    body = {"connection_id": CID, "seq": 1, "type": "joined", "party": "B", "at": "t"}
    sealed = seal(body, GENESIS_HASH)
    unhashed = {**body, "prev_hash": GENESIS_HASH}
    text = json.dumps(unhashed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    expected = hashlib.sha256(GENESIS_HASH.encode() + text.encode("utf-8")).hexdigest()
    assert sealed["hash"] == expected
    assert sealed["prev_hash"] == GENESIS_HASH


def test_seal_returns_a_new_dict_and_leaves_the_body_untouched() -> None:
    body = {"connection_id": CID, "seq": 1, "type": "joined", "party": "B", "at": "t"}
    original = dict(body)
    sealed = seal(body, GENESIS_HASH)
    assert body == original
    assert sealed is not body


def test_event_hash_recomputes_the_sealed_hash() -> None:
    for event in chain(negotiation_bodies()):
        assert event_hash(event) == event["hash"]


def test_each_event_links_to_the_previous_hash_from_genesis() -> None:
    events = chain(negotiation_bodies())
    assert events[0]["prev_hash"] == GENESIS_HASH
    for before, after in zip(events, events[1:], strict=False):
        assert after["prev_hash"] == before["hash"]


# --- building receipts ------------------------------------------------------------


def test_receipt_summarises_the_accepted_event() -> None:
    events = chain(negotiation_bodies())
    receipt = build_receipt(events)
    assert receipt["connection_id"] == CID
    assert receipt["currency"] == "USD"
    assert receipt["amount"] == "900.00"
    assert receipt["version"] == 2
    assert receipt["settled_at"] == "2026-11-23T10:04:00.250Z"
    assert receipt["receipt_id"] == events[-1]["hash"]
    assert receipt["events"] == events


def test_receipt_stops_at_the_accepted_event() -> None:
    bodies = negotiation_bodies() + [{"type": "left", "party": "A", "at": "2026-11-23T11:00Z"}]
    receipt = build_receipt(chain(bodies))
    assert [e["seq"] for e in receipt["events"]] == [1, 2, 3, 4, 5, 6]
    assert verify_receipt(receipt) is None


def test_receipt_of_an_unsettled_log_is_refused() -> None:
    with pytest.raises(ValueError, match="accepted"):
        build_receipt(chain(negotiation_bodies()[:-1]))


# --- verifying: the valid case and each tampering --------------------------------


def test_untouched_receipt_is_valid() -> None:
    assert verify_receipt(sample_receipt()) is None


def test_edited_receipt_amount_is_named() -> None:
    receipt = sample_receipt()
    receipt["amount"] = "1000.00"
    assert verify_receipt(receipt) == (
        "receipt amount 1000.00 does not match the accepted event's 900.00"
    )


def test_edited_amount_inside_an_event_breaks_that_events_hash() -> None:
    receipt = sample_receipt()
    receipt["events"][4]["amount"] = "800.00"
    assert verify_receipt(receipt) == "event seq 5 (proposed): hash does not match its contents"


def test_dropped_event_is_reported_missing() -> None:
    receipt = sample_receipt()
    del receipt["events"][3]
    assert verify_receipt(receipt) == "event with seq 4 is missing"


def test_dropped_first_event_is_reported_missing() -> None:
    receipt = sample_receipt()
    del receipt["events"][0]
    assert verify_receipt(receipt) == "event with seq 1 is missing"


def test_reordered_events_are_reported_out_of_order() -> None:
    receipt = sample_receipt()
    events = receipt["events"]
    events[2], events[3] = events[3], events[2]
    assert verify_receipt(receipt) == ("event 4 is out of order (position 3 should hold seq 3)")


def test_repeated_event_is_reported() -> None:
    receipt = sample_receipt()
    receipt["events"].insert(3, copy.deepcopy(receipt["events"][2]))
    assert verify_receipt(receipt) == "event 3 appears more than once"


def test_wrong_hash_is_named() -> None:
    receipt = sample_receipt()
    receipt["events"][1]["hash"] = "ab" * 32
    assert verify_receipt(receipt) == "event seq 2 (joined): hash does not match its contents"


def test_wrong_prev_hash_is_named() -> None:
    receipt = sample_receipt()
    receipt["events"][2]["prev_hash"] = "cd" * 32
    assert verify_receipt(receipt) == (
        "event seq 3 (proposed): prev_hash does not match the previous event's hash"
    )


def test_first_prev_hash_must_be_genesis() -> None:
    receipt = sample_receipt()
    receipt["events"] = [seal(receipt["events"][0], "1" * 64)] + receipt["events"][1:]
    assert verify_receipt(receipt) == (
        "event seq 1 (created): prev_hash is not the genesis hash (64 zeros)"
    )


def test_extra_event_after_accepted_is_refused() -> None:
    bodies = negotiation_bodies() + [{"type": "left", "party": "A", "at": "2026-11-23T11:00Z"}]
    receipt = sample_receipt()
    receipt["events"] = chain(bodies)
    assert verify_receipt(receipt) == "event seq 7 (left) comes after the accepted event"


def test_rechained_receipt_verifies_as_chain_but_fails_the_signature() -> None:
    signer = Signer.generate()
    receipt = signer.sign_receipt(sample_receipt())
    bodies = negotiation_bodies()
    bodies[4]["amount"] = bodies[5]["amount"] = "9000.00"
    forged = rechain(receipt, bodies)
    assert verify_receipt(forged) is None
    assert verify_receipt(forged, {signer.key_id: signer.public_key_raw}) == SIGNATURE_MISMATCH


def test_signed_receipt_verifies_with_its_key() -> None:
    signer = Signer.generate()
    receipt = signer.sign_receipt(sample_receipt())
    assert verify_receipt(receipt, {signer.key_id: signer.public_key_raw}) is None


def test_unsigned_receipt_fails_when_a_key_is_given() -> None:
    signer = Signer.generate()
    fault = verify_receipt(sample_receipt(), {signer.key_id: signer.public_key_raw})
    assert fault == "the receipt is not signed"


def test_receipt_signed_by_an_unknown_key_is_refused() -> None:
    receipt = Signer.generate().sign_receipt(sample_receipt())
    other = Signer.generate()
    fault = verify_receipt(receipt, {other.key_id: other.public_key_raw})
    assert fault is not None and "not a given key" in fault


def test_unknown_top_level_key_is_a_fault() -> None:
    receipt = sample_receipt()
    receipt["note"] = "paid"
    assert verify_receipt(receipt) == "the receipt has an unknown field 'note'"


def test_missing_receipt_field_is_named() -> None:
    receipt = sample_receipt()
    del receipt["settled_at"]
    assert verify_receipt(receipt) == "the receipt has no 'settled_at' field"


def test_boolean_version_is_not_an_integer() -> None:
    receipt = sample_receipt()
    receipt["version"] = True
    assert verify_receipt(receipt) == "the receipt's 'version' is a boolean"


def test_empty_events_are_refused() -> None:
    receipt = sample_receipt()
    receipt["events"] = []
    assert verify_receipt(receipt) == "the receipt has no events"


def test_event_that_is_not_an_object_is_refused() -> None:
    receipt = sample_receipt()
    receipt["events"][2] = "proposed"
    assert verify_receipt(receipt) == "event at position 3 is a string, not an object"


def test_event_float_value_is_refused_before_hashing() -> None:
    receipt = sample_receipt()
    receipt["events"][2]["version"] = 1.0
    assert verify_receipt(receipt) == (
        "event seq 3 (proposed): 'version' is a number with a fraction"
    )


def test_event_of_another_connection_is_refused() -> None:
    bodies = negotiation_bodies()
    bodies[1]["connection_id"] = "AAAA-BBBB-CCCC"
    fault = verify_receipt(rechain(sample_receipt(), bodies))
    assert fault == (
        f"event seq 2 (joined) belongs to connection AAAA-BBBB-CCCC, not the receipt's {CID}"
    )


def test_currency_must_match_the_created_event() -> None:
    receipt = sample_receipt()
    receipt["currency"] = "EUR"
    assert verify_receipt(receipt) == (
        "receipt currency EUR does not match the created event's USD"
    )


def test_first_event_must_be_created() -> None:
    bodies = negotiation_bodies()
    bodies[0], bodies[1] = bodies[1], bodies[0]
    receipt = rechain(sample_receipt(), bodies)
    assert verify_receipt(receipt) == "the first event is joined, not created"


def test_receipt_without_accepted_event_is_refused() -> None:
    receipt = sample_receipt()
    receipt["events"] = chain(negotiation_bodies()[:-1])
    assert verify_receipt(receipt) == "the receipt has no accepted event"


def test_receipt_id_must_be_the_accepted_hash() -> None:
    receipt = sample_receipt()
    receipt["receipt_id"] = receipt["events"][0]["hash"]
    assert verify_receipt(receipt) == "receipt_id does not match the accepted event's hash"


def test_settled_at_must_be_the_accepted_time() -> None:
    receipt = sample_receipt()
    receipt["settled_at"] = "2026-11-23T10:04:00.000Z"
    fault = verify_receipt(receipt)
    assert fault is not None and fault.startswith("receipt settled_at")


def test_accepting_an_outdated_version_is_refused() -> None:
    bodies = negotiation_bodies()
    bodies[5]["version"] = 1
    assert verify_receipt(rechain(sample_receipt(), bodies)) == (
        "the accepted version 1 is not the last proposed version 2"
    )


def test_accepting_an_amount_never_proposed_is_refused() -> None:
    bodies = negotiation_bodies()
    bodies[5]["amount"] = "950.00"
    assert verify_receipt(rechain(sample_receipt(), bodies)) == (
        "the accepted amount 950.00 is not the proposed amount 900.00 of version 2"
    )


def test_accepted_event_needs_a_proposal_before_it() -> None:
    bodies = [negotiation_bodies()[0], negotiation_bodies()[1], negotiation_bodies()[5]]
    assert verify_receipt(rechain(sample_receipt(), bodies)) == (
        "the accepted event has no proposal before it"
    )


# --- properties ---------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=12)
INTS = st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)


@st.composite
def event_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Any protocol-shaped event body, with arbitrary (but JSON-legal) values."""
    kind = draw(st.sampled_from(["created", "joined", "left", "proposed", "disputed", "accepted"]))
    body: dict[str, Any] = {
        "connection_id": draw(TEXT.filter(bool)),
        "type": kind,
        "party": draw(TEXT),
        "at": draw(TEXT),
    }
    if kind == "created":
        body["currency"] = draw(TEXT)
    if kind in ("proposed", "accepted"):
        body["amount"] = draw(TEXT)
    if kind in ("proposed", "accepted", "disputed"):
        body["version"] = draw(INTS)
    if kind == "disputed":
        body["reason"] = draw(st.none() | TEXT)
    return body


def seal_all(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    prev = GENESIS_HASH
    for seq, body in enumerate(bodies, start=1):
        events.append(seal({**body, "seq": seq}, prev))
        prev = events[-1]["hash"]
    return events


@settings(max_examples=150, deadline=None)
@given(st.lists(event_bodies(), min_size=1, max_size=8))
def test_any_sealed_sequence_is_an_intact_chain(bodies: list[dict[str, Any]]) -> None:
    assert verify_chain(seal_all(bodies)) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(event_bodies(), min_size=1, max_size=6), st.data())
def test_any_single_character_change_in_a_string_field_is_detected(
    bodies: list[dict[str, Any]], data: st.DataObject
) -> None:
    events = seal_all(bodies)
    targets = [
        (index, key)
        for index, event in enumerate(events)
        for key, value in event.items()
        if isinstance(value, str) and value
    ]
    index, key = data.draw(st.sampled_from(targets))
    original: str = events[index][key]
    position = data.draw(st.integers(min_value=0, max_value=len(original) - 1))
    replacement = data.draw(st.characters(codec="utf-8").filter(lambda c: c != original[position]))
    events[index][key] = original[:position] + replacement + original[position + 1 :]
    assert verify_chain(events) is not None


@settings(max_examples=2000, deadline=None)
@given(
    st.recursive(
        st.none() | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1) | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127)), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_fast_canonical_json_is_byte_for_byte_rfc8785(value: object) -> None:
    assert ledger.canonical_json(value) == rfc8785.dumps(value)


def test_canonical_json_falls_back_for_non_ascii_keys_and_big_integers() -> None:
    assert ledger.canonical_json({"é": 1, "a": 2}) == rfc8785.dumps({"é": 1, "a": 2})
    with pytest.raises(ValueError):
        ledger.canonical_json({"n": 2**60})
