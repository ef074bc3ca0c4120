"""Hand-built version 1.1 receipts: real Ed25519 party keys and signatures, sealed with
the real hash chain, signed by a given server key. Used where today's server cannot
make one yet (it records no party keys), e.g. to check that a page renders and
verifies party signatures."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from settlement import ledger
from settlement.signing import Signer

CID = "K7QF-3MZP-XW2D"
STATEMENT_PREFIX = b"settlement/v1.1 statement\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PrivateKey) -> str:
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def statement_signature(key: Ed25519PrivateKey, statement: dict[str, Any]) -> str:
    return b64(key.sign(STATEMENT_PREFIX + ledger.canonical_json(statement)))


def reseal(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chain the events again from the genesis hash (after a test edited one)."""
    out: list[dict[str, Any]] = []
    prev = ledger.GENESIS_HASH
    for event in events:
        sealed = ledger.seal(event, prev)
        out.append(sealed)
        prev = sealed["hash"]
    return out


def signed_receipt(
    server: Signer,
    key_a: Ed25519PrivateKey | None,
    key_b: Ed25519PrivateKey | None,
    *,
    currency: str = "EUR",
    reason: str = 'zu teuer – "Preis" <b>',
) -> dict[str, Any]:
    """A settled negotiation: A offers 900.00, B disputes, A offers 850.50, B accepts.
    Each statement is signed by its party's key (a party without a key signs nothing)."""
    at = iter(f"2026-11-23T10:0{i}:00.000Z" for i in range(10))
    events: list[dict[str, Any]] = []
    prev = ledger.GENESIS_HASH

    def add(body: dict[str, Any]) -> dict[str, Any]:
        nonlocal prev
        event = ledger.seal(
            {"connection_id": CID, "seq": len(events) + 1, "at": next(at), **body}, prev
        )
        events.append(event)
        prev = event["hash"]
        return event

    def pub(key: Ed25519PrivateKey | None) -> str | None:
        return b64(raw_public(key)) if key else None

    def sign(key: Ed25519PrivateKey | None, statement: dict[str, Any]) -> str | None:
        return statement_signature(key, statement) if key else None

    add({"type": "created", "party": "A", "currency": currency, "public_key": pub(key_a)})
    add({"type": "joined", "party": "B", "public_key": pub(key_b)})
    offer = None
    for version, amount in ((1, "900.00"), (2, "850.50")):
        proposal = {
            "type": "proposed",
            "connection_id": CID,
            "currency": currency,
            "amount": amount,
            "version": version,
        }
        offer = add(
            {
                "type": "proposed",
                "party": "A",
                "amount": amount,
                "version": version,
                "signature": sign(key_a, proposal),
            }
        )
        answer = {
            "type": "disputed" if version == 1 else "accepted",
            "connection_id": CID,
            "currency": currency,
            "amount": amount,
            "version": version,
            "offer_hash": offer["hash"],
        }
        if version == 1:
            answer["reason"] = reason
            add(
                {
                    "type": "disputed",
                    "party": "B",
                    "version": 1,
                    "reason": reason,
                    "signature": sign(key_b, answer),
                }
            )
        else:
            add(
                {
                    "type": "accepted",
                    "party": "B",
                    "version": 2,
                    "amount": amount,
                    "signature": sign(key_b, answer),
                }
            )
    return server.sign_receipt(ledger.build_receipt(events))
