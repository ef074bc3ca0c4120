"""Payload validation: a socket's raw payload becomes a typed command, or `bad_request`.

Only the shape is checked here (keys and JSON types). Values that carry
their own error codes (amounts, currencies, connection ids) are passed
through for the later checks, so the protocol's order of checks holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from .consent import valid_public_key, valid_signature_shape
from .negotiation import Refusal

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
SEATING_REQUEST_ID_MIN = 22
MAX_REASON = 500

# event -> (allowed keys, required keys); `request_id` is allowed everywhere.
SCHEMAS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "create": (frozenset({"party", "currency", "public_key"}), frozenset({"party"})),
    "join": (frozenset({"connection_id", "party", "public_key"}), frozenset({"connection_id"})),
    "resume": (frozenset({"connection_id", "token"}), frozenset({"connection_id", "token"})),
    "propose": (frozenset({"amount", "version", "signature"}), frozenset({"amount"})),
    "respond": (
        frozenset({"decision", "version", "reason", "signature"}),
        frozenset({"decision", "version"}),
    ),
    "leave": (frozenset(), frozenset()),
    "history": (frozenset({"after_seq"}), frozenset()),
    "receipt": (frozenset(), frozenset()),
}
SEATED = frozenset({"propose", "respond", "leave", "history", "receipt"})
READ_ONLY = frozenset({"history", "receipt", "resume"})


def bad(message: str) -> Refusal:
    return Refusal("bad_request", message)


@dataclass(frozen=True)
class Payload:
    """A payload whose shape is valid: known keys only, `null`s dropped."""

    event: str
    fields: dict[str, Any]
    request_id: str | None


def check_envelope(event: str, payload: Any) -> Payload | Refusal:
    """Known event, object payload, well-formed `request_id`: enough to look up the key."""
    if event not in SCHEMAS:
        return bad(f"Unknown command {event[:40]!r}.")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        return bad("The payload must be a JSON object.")
    if not _valid_unicode(payload):
        return bad("The payload must be JSON text in valid Unicode (no lone surrogates).")
    # A JSON null for an *optional* field means absent; a null for a required
    # field stays, to be refused as the wrong type (and `amount: null` as
    # invalid_amount); a null under an unknown key is still an unknown key.
    allowed, required = SCHEMAS[event]
    optional = (allowed - required) | {"request_id"}
    fields = {k: v for k, v in payload.items() if not (v is None and k in optional)}
    request_id = fields.pop("request_id", None)
    if request_id is not None:
        if not isinstance(request_id, str) or not REQUEST_ID_RE.fullmatch(request_id):
            return bad("request_id must be 1-64 characters of A-Z, a-z, 0-9, '_' or '-'.")
        if event in ("create", "join") and len(request_id) < SEATING_REQUEST_ID_MIN:
            return bad(
                f"request_id for {event} must be at least {SEATING_REQUEST_ID_MIN} characters "
                "(a random UUID, say), because its ack carries a seat token."
            )
    return Payload(event, fields, request_id)


def check_shape(p: Payload) -> Refusal | None:
    """Unknown keys, missing keys and wrong JSON types are `bad_request`."""
    allowed, required = SCHEMAS[p.event]
    unknown = sorted(set(p.fields) - allowed)
    if unknown:
        return bad(f"Unknown field {unknown[0][:40]!r} for {p.event}.")
    missing = sorted(required - set(p.fields))
    if missing:
        return bad(f"Missing field {missing[0]!r} for {p.event}.")
    f = p.fields
    if "party" in f and f["party"] not in ("A", "B"):
        return bad('party must be "A" or "B".')
    for key in ("currency", "connection_id", "token"):
        if key in f and not isinstance(f[key], str):
            return bad(f"{key} must be a string.")
    if p.event == "respond":
        if f["decision"] not in ("accept", "dispute"):
            return bad('decision must be "accept" or "dispute".')
        if not _is_int(f["version"]):
            return bad("version must be a whole number (the offer's version).")
        if "reason" in f:
            if f["decision"] == "accept":
                return bad("A reason goes with a dispute only, not with accept.")
            if not isinstance(f["reason"], str):
                return bad("reason must be a string.")
            if len(f["reason"]) > MAX_REASON:
                return bad(f"reason is longer than {MAX_REASON} characters.")
    consent = _check_consent_shape(p)
    if consent is not None:
        return consent
    if "after_seq" in f and (not _is_int(f["after_seq"]) or f["after_seq"] < 0):
        return bad("after_seq must be a whole number, 0 or more.")
    return None


def _check_consent_shape(p: Payload) -> Refusal | None:
    """Protocol 1.1 fields: a well-formed key and signature, and a signed offer names its version."""
    f = p.fields
    if "public_key" in f and not valid_public_key(f["public_key"]):
        return bad(
            "public_key must be standard base64 (padded) of a raw 32-byte Ed25519 public key."
        )
    if "signature" in f and not valid_signature_shape(f["signature"]):
        return bad("signature must be standard base64 (padded) of a 64-byte Ed25519 signature.")
    if p.event == "propose" and "version" in f and not _is_int(f["version"]):
        return bad("version must be a whole number (the version this offer creates).")
    if p.event == "propose" and "signature" in f and "version" not in f:
        return bad("A signed proposal must name the version it creates (version).")
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _valid_unicode(value: Any) -> bool:
    """No lone surrogates anywhere (they cannot be stored, hashed or sent back)."""
    try:
        orjson.dumps(value)  # refuses lone surrogates; one C call for the usual payload
        return True
    except orjson.JSONEncodeError:
        pass  # a surrogate, or something else orjson refuses (a 70-bit integer): look
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True
