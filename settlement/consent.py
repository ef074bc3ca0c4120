"""Party keys and signed statements (protocol 1.1): what a party signs, and checking it.

A seat may hold its own Ed25519 key (`public_key` on `create`/`join`). Every
`propose` and `respond` of such a seat carries `signature` over a *statement*:
a small JSON object naming the connection, currency, amount and version (and,
for an answer, the hash of the `proposed` event answered). The bytes signed
are `settlement/v1.1 statement\\n` followed by the statement's RFC 8785
canonical JSON, so any party can rebuild them from the receipt alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

from .canonical import canonical_json

STATEMENT_PREFIX = b"settlement/v1.1 statement\n"
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
# Standard, padded base64 of exactly 32 and 64 bytes: 44 and 88 characters.
_B64_RE = {
    PUBLIC_KEY_BYTES: re.compile(r"[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]="),
    SIGNATURE_BYTES: re.compile(r"[A-Za-z0-9+/]{85}[AQgw]=="),
}


def decode_b64(value: object, size: int) -> bytes | None:
    """Strict standard base64 (padded, canonical) of exactly `size` bytes, else None."""
    if not isinstance(value, str) or not _B64_RE[size].fullmatch(value):
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == size else None


def valid_public_key(value: object) -> bool:
    """Base64 of 32 bytes that are a usable Ed25519 public key."""
    raw = decode_b64(value, PUBLIC_KEY_BYTES)
    if raw is None:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        return False
    return True


def valid_signature_shape(value: object) -> bool:
    return decode_b64(value, SIGNATURE_BYTES) is not None


def key_id(public_key_b64: str | None) -> str | None:
    """The fingerprint: first 16 lowercase hex characters of sha256 of the raw key."""
    if public_key_b64 is None:
        return None
    raw = base64.b64decode(public_key_b64)
    return hashlib.sha256(raw).hexdigest()[:16]


def spoken(kid: str) -> str:
    """`3f9a0c41b2d7e815` -> `3f9a-0c41-b2d7-e815`, for reading aloud."""
    return "-".join(kid[i : i + 4] for i in range(0, len(kid), 4))


def propose_statement(
    connection_id: str, currency: str, amount: str, version: int
) -> dict[str, Any]:
    return {
        "type": "proposed",
        "connection_id": connection_id,
        "currency": currency,
        "amount": amount,
        "version": version,
    }


def respond_statement(
    decision: str,
    connection_id: str,
    currency: str,
    offer: dict[str, Any],
    reason: str | None = None,
) -> dict[str, Any]:
    """`offer` is the answered offer: its `amount`, `version` and `hash`."""
    statement: dict[str, Any] = {
        "type": "accepted" if decision == "accept" else "disputed",
        "connection_id": connection_id,
        "currency": currency,
        "amount": offer["amount"],
        "version": offer["version"],
        "offer_hash": offer["hash"],
    }
    if decision != "accept":
        statement["reason"] = reason
    return statement


def statement_bytes(statement: dict[str, Any]) -> bytes:
    """The exact bytes a party signs."""
    return STATEMENT_PREFIX + canonical_json(statement)


def verifies(public_key_b64: str, signature_b64: str, statement: dict[str, Any]) -> bool:
    """Whether `signature_b64` is the seat key's Ed25519 signature of `statement`.

    Checked by libsodium (PyNaCl), not OpenSSL: about 40 us against 64, and it
    refuses a small-order public key or `R` (OpenSSL accepts, for the
    identity key, one signature that "verifies" every statement, which would
    let a party make its consent deniable). Honest keys and signatures verify
    the same in both.
    """
    raw_key = decode_b64(public_key_b64, PUBLIC_KEY_BYTES)
    raw_sig = decode_b64(signature_b64, SIGNATURE_BYTES)
    if raw_key is None or raw_sig is None:
        return False
    try:
        crypto_sign_open(raw_sig + statement_bytes(statement), raw_key)
    except (CryptoError, ValueError, TypeError):
        return False
    return True


def statement_of_event(
    event: dict[str, Any], currency: str, offer: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Rebuild the statement a stored `proposed`/`disputed`/`accepted` event answers for.

    `offer` is the `proposed` event that was current when the answer was given.
    None when the event carries no statement (another type, or no offer).
    """
    kind = event["type"]
    cid = event["connection_id"]
    if kind == "proposed":
        return propose_statement(cid, currency, event["amount"], event["version"])
    if kind in ("accepted", "disputed") and offer is not None:
        decision = "accept" if kind == "accepted" else "dispute"
        return respond_statement(decision, cid, currency, offer, event.get("reason"))
    return None


# --- receipts: who signed what --------------------------------------------------

STATEMENT_TYPES = ("proposed", "disputed", "accepted")


def _label(event: dict[str, Any]) -> str:
    return f"event seq {event.get('seq')} ({event.get('type')})"


def party_signatures(
    events: list[dict[str, Any]],
) -> tuple[str | None, list[dict[str, Any]]]:
    """Check every party signature in a (chain-checked) receipt's events.

    Each signature is checked against the key of its seat as it was at that
    event: the `public_key` of the last `created`/`joined` of that party before
    it. Returns the first fault (None if every signature verifies) and, for each
    statement event, `{"seq", "type", "party", "signed", "key_id"}` (`key_id`
    the seat's key fingerprint, or None).
    """
    keys: dict[str, str | None] = {"A": None, "B": None}
    currency = ""
    offer: dict[str, Any] | None = None
    found: list[dict[str, Any]] = []
    for event in events:
        kind, party = event["type"], event["party"]
        if kind in ("created", "joined"):
            key = event.get("public_key")
            if key is not None and not valid_public_key(key):
                return f"{_label(event)}: public_key is not base64 of an Ed25519 key", found
            keys[party] = key
            if kind == "created":
                currency = event["currency"]
            continue
        if kind not in STATEMENT_TYPES:
            continue
        key = keys.get(party)
        signature = event.get("signature")
        statement = statement_of_event(event, currency, offer)
        if kind == "proposed":
            offer = event
        found.append(
            {
                "seq": event["seq"],
                "type": kind,
                "party": party,
                "signed": signature is not None,
                "key_id": key_id(key),
            }
        )
        if signature is None:
            continue
        if key is None:
            return f"{_label(event)} is signed, but Party {party}'s seat had no key", found
        if statement is None or not verifies(key, signature, statement):
            return (
                f"{_label(event)}: Party {party}'s signature does not verify with "
                f"key {key_id(key)} (the statement was altered or not signed by that seat)",
                found,
            )
    return None, found


def missing_consent(events: list[dict[str, Any]], found: list[dict[str, Any]]) -> str | None:
    """For `--require-consent`: the agreed `proposed` and the `accepted` must be party-signed."""
    signed = {item["seq"]: item["signed"] for item in found}
    accepted = events[-1]
    agreed = next((e for e in reversed(events) if e["type"] == "proposed"), None)
    for event in (agreed, accepted):
        if event is not None and not signed.get(event["seq"], False):
            what = "agreed offer" if event["type"] == "proposed" else "acceptance"
            return f"{_label(event)}: the {what} is not signed by Party {event['party']}"
    return None


class PartyKey:
    """A party's Ed25519 key and its base64 public key (for bots and the benchmark)."""

    def __init__(self, private: Ed25519PrivateKey | None = None) -> None:
        self.private = private or Ed25519PrivateKey.generate()
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = base64.b64encode(raw).decode("ascii")
        self.key_id = hashlib.sha256(raw).hexdigest()[:16]

    def sign(self, statement: dict[str, Any]) -> str:
        return base64.b64encode(self.private.sign(statement_bytes(statement))).decode("ascii")
