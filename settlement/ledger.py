"""The hash-chained event log and the receipt built from it.

Every stored event carries the hash of the event before it, so editing, dropping
or reordering any event breaks the chain. A receipt is the settled prefix of the
log plus a summary; `verify_receipt` lets anyone re-check it offline, without
trusting the server, and names the first thing that does not agree.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS_HASH = "0" * 64

EVENT_TYPES = frozenset({"created", "joined", "left", "proposed", "disputed", "accepted"})

# Fields every event must have, and the JSON type each must be.
_EVENT_FIELDS: dict[str, type] = {
    "connection_id": str,
    "seq": int,
    "type": str,
    "party": str,
    "at": str,
    "prev_hash": str,
    "hash": str,
}

# Type-specific fields the verifier relies on; `reason` may also be null.
_TYPE_FIELDS: dict[str, dict[str, type]] = {
    "created": {"currency": str},
    "proposed": {"amount": str, "version": int},
    "disputed": {"version": int},
    "accepted": {"amount": str, "version": int},
}

_RECEIPT_FIELDS: dict[str, type] = {
    "connection_id": str,
    "currency": str,
    "amount": str,
    "version": int,
    "settled_at": str,
    "events": list,
    "receipt_id": str,
}
_OPTIONAL_RECEIPT_FIELDS = frozenset({"signature"})
_SIGNATURE_FIELDS = ("alg", "key_id", "value")

SIGNATURE_MISMATCH = "signature does not match: the receipt was altered or not issued by this key"


# --- canonical form and hashing -------------------------------------------------


_SAFE_INT = 2**53 - 1


def _check_json_value(value: object, where: str) -> bool:
    """Refuse anything outside the protocol's value set before it reaches a hash.

    Booleans and floats would canonicalise fine, but they are not allowed in
    events, and letting one slip in would make a hash that other implementations
    (which follow the protocol) can never reproduce. Returns whether the value
    is in the domain where orjson's sorted output *is* RFC 8785 (ASCII keys,
    I-JSON safe integers).
    """
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, bool) or not isinstance(value, int | dict | list):
        raise TypeError(f"{where}: {type(value).__name__} is not allowed (str, int, null only)")
    if isinstance(value, int):
        return -_SAFE_INT <= value <= _SAFE_INT
    fast = True
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: object keys must be strings")
            fast = _check_json_value(item, f"{where}.{key}") and key.isascii() and fast
    else:
        for index, item in enumerate(value):
            fast = _check_json_value(item, f"{where}[{index}]") and fast
    return fast


def plain_json(value: object, max_int: int, *, bools: bool) -> bool:
    """Only str, null, ints within ±max_int, lists and objects with ASCII string
    keys (and bools if `bools`): the values where orjson's sorted output is the
    very bytes of RFC 8785 (max_int 2**53 - 1, no bools) or of the standard
    library's sorted json.dumps (max_int 2**63 - 1, bools). One pass, no paths:
    it runs for every event hashed and every command fingerprinted."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or item is None or (bools and kind is bool):
            continue
        if kind is int:
            if not -max_int <= item <= max_int:  # type: ignore[operator]
                return False
        elif kind is dict:
            for key, inner in item.items():  # type: ignore[attr-defined]
                if type(key) is not str or not key.isascii():
                    return False
                stack.append(inner)
        elif kind is list:
            stack.extend(item)  # type: ignore[arg-type]
        else:
            return False
    return True


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 canonical JSON, so every party hashes and signs the very same bytes.

    For ASCII keys, safe integers, strings and null, orjson with sorted keys
    writes exactly RFC 8785's bytes (checked against the `rfc8785` package by a
    property test) at a fraction of the cost; anything else goes to `rfc8785`.
    Raises TypeError for values outside str/int/None/dict/list and ValueError
    (from rfc8785) for integers outside the I-JSON safe range or lone surrogates.
    """
    # The usual event takes one quick pass; anything else gets the full check,
    # which refuses what is not allowed, saying where.
    if plain_json(obj, _SAFE_INT, bools=False) or _check_json_value(obj, "value"):
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # e.g. a lone surrogate: let rfc8785 say what is wrong
    return rfc8785.dumps(obj)


def _hash_of(prev_hash: str, unhashed: Mapping[str, Any]) -> str:
    """The chain rule: sha256(prev_hash bytes + canonical JSON of the event without `hash`)."""
    digest = hashlib.sha256(prev_hash.encode("utf-8") + canonical_json(dict(unhashed)))
    return digest.hexdigest()


def seal(body: Mapping[str, Any], prev_hash: str) -> dict[str, Any]:
    """Link an event body onto the chain: a new dict with `prev_hash` and `hash` added.

    The caller's body is left untouched so a half-built event can never be
    mistaken for a stored one.
    """
    event = {key: value for key, value in body.items() if key not in ("hash", "prev_hash")}
    event["prev_hash"] = prev_hash
    event["hash"] = _hash_of(prev_hash, event)
    return event


def event_hash(event: Mapping[str, Any]) -> str:
    """Recompute an event's hash from its own `prev_hash` and other fields (not `hash`)."""
    prev_hash = event["prev_hash"]
    if not isinstance(prev_hash, str):
        raise TypeError("prev_hash must be a string")
    unhashed = {key: value for key, value in event.items() if key != "hash"}
    return _hash_of(prev_hash, unhashed)


# --- receipts ---------------------------------------------------------------------


def _index_of_type(events: list[dict[str, Any]], event_type: str) -> int:
    for index, event in enumerate(events):
        if event.get("type") == event_type:
            return index
    raise ValueError(f"the log has no {event_type} event")


def build_receipt(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Build the unsigned receipt from a room's full sealed log (starting at seq 1).

    Only the prefix up to the `accepted` event is included: the settlement is
    final there, and later events (a `left`, say) are not part of what was agreed.
    Raises ValueError if the log has no `accepted` (or no `created`) event.
    """
    accepted_at = _index_of_type(events, "accepted")
    created = events[_index_of_type(events, "created")]
    accepted = events[accepted_at]
    return {
        "connection_id": accepted["connection_id"],
        "currency": created["currency"],
        "amount": accepted["amount"],
        "version": accepted["version"],
        "settled_at": accepted["at"],
        "events": [dict(event) for event in events[: accepted_at + 1]],
        "receipt_id": accepted["hash"],
    }


# --- verification -----------------------------------------------------------------


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {
        str: "a string",
        int: "an integer",
        float: "a number with a fraction",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _is_type(value: object, expected: type) -> bool:
    """JSON-minded isinstance: `true` is not an integer here."""
    if expected is int and isinstance(value, bool):
        return False
    return isinstance(value, expected)


def _label(event: Mapping[str, Any]) -> str:
    return f"event seq {event.get('seq')} ({event.get('type')})"


def _check_receipt_fields(receipt: object) -> str | None:
    if not isinstance(receipt, dict):
        return f"the receipt must be a JSON object, not {_type_name(receipt)}"
    for key in receipt:
        if key not in _RECEIPT_FIELDS and key not in _OPTIONAL_RECEIPT_FIELDS:
            return f"the receipt has an unknown field {key!r}"
    for key, expected in _RECEIPT_FIELDS.items():
        if key not in receipt:
            return f"the receipt has no {key!r} field"
        if not _is_type(receipt[key], expected):
            return f"the receipt's {key!r} is {_type_name(receipt[key])}"
    if "signature" in receipt:
        return _check_signature_shape(receipt["signature"])
    return None


def _check_signature_shape(signature: object) -> str | None:
    if not isinstance(signature, dict):
        return f"the receipt's 'signature' is {_type_name(signature)}, not an object"
    for key in signature:
        if key not in _SIGNATURE_FIELDS:
            return f"the signature has an unknown field {key!r}"
    for key in _SIGNATURE_FIELDS:
        if not isinstance(signature.get(key), str):
            return f"the signature's {key!r} is missing or not a string"
    return None


def _check_event_shape(position: int, event: object) -> str | None:
    """Each event is an object of strings, integers and nulls, with the fields we rely on."""
    if not isinstance(event, dict):
        return f"event at position {position} is {_type_name(event)}, not an object"
    for key, expected in _EVENT_FIELDS.items():
        if not _is_type(event.get(key), expected):
            got = "missing" if key not in event else _type_name(event[key])
            return f"event at position {position}: {key!r} is {got}"
    for key, value in event.items():
        if value is not None and not _is_type(value, str) and not _is_type(value, int):
            return f"{_label(event)}: {key!r} is {_type_name(value)}"
    if event["type"] not in EVENT_TYPES:
        return f"{_label(event)} has an unknown type"
    for key, expected in _TYPE_FIELDS.get(event["type"], {}).items():
        if not _is_type(event.get(key), expected):
            got = "missing" if key not in event else _type_name(event[key])
            return f"{_label(event)}: {key!r} is {got}"
    return None


def _check_sequence(events: list[dict[str, Any]]) -> str | None:
    """Seq must run 1, 2, 3, ...; tell a reordering apart from a gap or a repeat."""
    seen: set[int] = set()
    for position, event in enumerate(events, start=1):
        seq = event["seq"]
        if seq == position:
            seen.add(seq)
            continue
        if seq in seen:
            return f"event {seq} appears more than once"
        later = {other["seq"] for other in events[position:]}
        if position in later or seq < position:
            return f"event {seq} is out of order (position {position} should hold seq {position})"
        return f"event with seq {position} is missing"
    return None


def _check_links(events: list[dict[str, Any]]) -> str | None:
    """Walk the chain: genesis, then each prev_hash is the previous hash, each hash recomputes."""
    expected_prev = GENESIS_HASH
    for event in events:
        if event["prev_hash"] != expected_prev:
            if expected_prev == GENESIS_HASH:
                return f"{_label(event)}: prev_hash is not the genesis hash (64 zeros)"
            return f"{_label(event)}: prev_hash does not match the previous event's hash"
        try:
            recomputed = event_hash(event)
        except (TypeError, ValueError):
            return f"{_label(event)}: its contents cannot be put in canonical form"
        if event["hash"] != recomputed:
            return f"{_label(event)}: hash does not match its contents"
        expected_prev = event["hash"]
    return None


def verify_chain(events: object) -> str | None:
    """Check that `events` is an intact hash chain from seq 1; None if so, else the first fault.

    This says nothing about what the events mean; `verify_receipt` adds that.
    """
    if not isinstance(events, list) or not events:
        return "the receipt has no events"
    for position, event in enumerate(events, start=1):
        fault = _check_event_shape(position, event)
        if fault:
            return fault
    return _check_sequence(events) or _check_links(events)


def _check_connection(receipt: Mapping[str, Any]) -> str | None:
    for event in receipt["events"]:
        if event["connection_id"] != receipt["connection_id"]:
            return (
                f"{_label(event)} belongs to connection {event['connection_id']}, "
                f"not the receipt's {receipt['connection_id']}"
            )
    return None


def _check_created(receipt: Mapping[str, Any]) -> str | None:
    events = receipt["events"]
    first = events[0]
    if first["type"] != "created":
        return f"the first event is {first['type']}, not created"
    for event in events[1:]:
        if event["type"] == "created":
            return f"{_label(event)}: a connection is created only once"
    if receipt["currency"] != first["currency"]:
        return (
            f"receipt currency {receipt['currency']} does not match "
            f"the created event's {first['currency']}"
        )
    return None


def _check_accepted(receipt: Mapping[str, Any]) -> str | None:
    events = receipt["events"]
    accepted = [event for event in events if event["type"] == "accepted"]
    if not accepted:
        return "the receipt has no accepted event"
    if len(accepted) > 1:
        return f"{_label(accepted[1])}: a connection is settled only once"
    if events[-1] is not accepted[0]:
        return f"{_label(events[-1])} comes after the accepted event"
    return None


def _check_summary(receipt: Mapping[str, Any]) -> str | None:
    """The receipt's summary fields must be exactly what the accepted event says."""
    accepted = receipt["events"][-1]
    pairs = (("amount", "amount"), ("version", "version"), ("settled_at", "at"))
    for field, source in pairs:
        if receipt[field] != accepted[source]:
            return (
                f"receipt {field} {receipt[field]} does not match "
                f"the accepted event's {accepted[source]}"
            )
    if receipt["receipt_id"] != accepted["hash"]:
        return "receipt_id does not match the accepted event's hash"
    return None


def _check_agreed_offer(receipt: Mapping[str, Any]) -> str | None:
    """B can only accept the offer that was on the table: the last proposal before it."""
    accepted = receipt["events"][-1]
    proposals = [event for event in receipt["events"] if event["type"] == "proposed"]
    if not proposals:
        return "the accepted event has no proposal before it"
    offer = proposals[-1]
    if accepted["version"] != offer["version"]:
        return (
            f"the accepted version {accepted['version']} is not the last proposed "
            f"version {offer['version']}"
        )
    if accepted["amount"] != offer["amount"]:
        return (
            f"the accepted amount {accepted['amount']} is not the proposed "
            f"amount {offer['amount']} of version {offer['version']}"
        )
    return None


def _decode_b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def signed_bytes(receipt: Mapping[str, Any]) -> bytes:
    """What the signature covers: the canonical receipt without its `signature`."""
    return canonical_json({key: value for key, value in receipt.items() if key != "signature"})


def _check_signature(receipt: Mapping[str, Any], public_keys: Mapping[str, bytes]) -> str | None:
    signature = receipt.get("signature")
    if signature is None:
        return "the receipt is not signed"
    if signature["alg"] != "ed25519":
        return f"the signature algorithm {signature['alg']!r} is not ed25519"
    raw_key = public_keys.get(signature["key_id"])
    if raw_key is None:
        return f"the receipt is signed by key {signature['key_id']}, which is not a given key"
    value = _decode_b64(signature["value"])
    if value is None or len(value) != 64:
        return "the signature value is not base64 of a 64-byte Ed25519 signature"
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(value, signed_bytes(receipt))
    except (InvalidSignature, ValueError):
        return SIGNATURE_MISMATCH
    return None


def _receipt_checks(receipt: dict[str, Any]) -> Iterator[str | None]:
    """The checks after the chain, in the order their faults are reported."""
    yield _check_connection(receipt)
    yield _check_created(receipt)
    yield _check_accepted(receipt)
    yield _check_summary(receipt)
    yield _check_agreed_offer(receipt)


def verify_receipt(
    receipt: dict[str, Any], public_keys: dict[str, bytes] | None = None
) -> str | None:
    """Check a saved receipt offline: None when it is valid, else the first fault in words.

    The chain shows nothing was edited; every party signature in the events must
    verify with its seat's key (protocol 1.1); with `public_keys` (key_id -> raw
    32-byte Ed25519 key) the server's signature also shows who issued it.
    """
    fault = _check_receipt_fields(receipt) or verify_chain(receipt["events"])
    if fault:
        return fault
    for fault in _receipt_checks(receipt):
        if fault:
            return fault
    from .consent import party_signatures  # consent builds on this module's canonical form

    fault, _ = party_signatures(receipt["events"])
    if fault:
        return fault
    if public_keys is not None:
        return _check_signature(receipt, public_keys)
    return None
