"""Protocol 1.1 statements: the exact bytes signed, key shapes, and a property over
random signed negotiations (every settled one verifies with --require-consent)."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from settlement import consent, ledger, money, negotiation
from settlement.negotiation import Join, Leave, Propose, Refusal, Respond

CID = "K7QF-3MZP-XW2D"
NOW = "2026-12-02T10:00:00.000Z"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Key:
    def __init__(self, seed: int = 0) -> None:
        self.private = (
            Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
            if seed
            else Ed25519PrivateKey.generate()
        )
        raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = b64(raw)

    def sign(self, statement: dict[str, Any]) -> str:
        return b64(self.private.sign(consent.statement_bytes(statement)))


# ------------------------------------------------------------ statement bytes


def test_propose_statement_bytes_are_prefix_and_canonical_json() -> None:
    statement = consent.propose_statement(CID, "USD", "1250.50", 3)
    assert consent.statement_bytes(statement) == (
        b"settlement/v1.1 statement\n"
        b'{"amount":"1250.50","connection_id":"K7QF-3MZP-XW2D","currency":"USD",'
        b'"type":"proposed","version":3}'
    )


def test_respond_statements_bytes() -> None:
    offer = {"amount": "1250", "version": 2, "hash": "ab" * 32}
    accepted = consent.respond_statement("accept", CID, "JPY", offer)
    assert consent.statement_bytes(accepted) == (
        b"settlement/v1.1 statement\n"
        b'{"amount":"1250","connection_id":"K7QF-3MZP-XW2D","currency":"JPY",'
        b'"offer_hash":"' + b"ab" * 32 + b'","type":"accepted","version":2}'
    )
    assert "reason" not in accepted
    disputed = consent.respond_statement("dispute", CID, "JPY", offer, None)
    assert consent.statement_bytes(disputed).endswith(
        b',"reason":null,"type":"disputed","version":2}'
    )
    # Non-ASCII stays as UTF-8, control characters are escaped as RFC 8785 says.
    noted = consent.respond_statement("dispute", CID, "JPY", offer, "zu hoch \u00e9\n\u2603")
    assert '"reason":"zu hoch \u00e9\\n\u2603"'.encode() in consent.statement_bytes(noted)


def test_key_id_and_spoken_form() -> None:
    raw = bytes(range(32))
    kid = consent.key_id(b64(raw))
    assert kid == hashlib.sha256(raw).hexdigest()[:16]
    assert consent.spoken("3f9a0c41b2d7e815") == "3f9a-0c41-b2d7-e815"
    assert consent.key_id(None) is None


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (b64(bytes(32)), True),
        (b64(bytes(32)).rstrip("="), False),
        (b64(bytes(31)), False),
        (b64(bytes(33)), False),
        ("B" + b64(bytes(32))[1:], True),
        (b64(bytes(32))[:-2] + "B=", False),  # non-zero padding bits: not canonical
        (b64(b"\xfb" * 32).replace("+", "-"), False),
        (32, False),
        (None, False),
    ],
)
def test_public_key_shape(value: object, ok: bool) -> None:
    assert (consent.decode_b64(value, 32) is not None) is ok


def test_verifies_only_the_exact_statement() -> None:
    key = Key(7)
    statement = consent.propose_statement(CID, "KWD", "1.500", 1)
    signature = key.sign(statement)
    assert consent.verifies(key.public, signature, statement)
    assert not consent.verifies(key.public, signature, {**statement, "amount": "1.5"})
    assert not consent.verifies(Key(8).public, signature, statement)
    assert not consent.verifies(key.public, "x", statement)


# ------------------------------------------------------------ property


def seal_all(state: Any, log: list[dict[str, Any]], bodies: list[dict[str, Any]]) -> Any:
    for body in bodies:
        event = ledger.seal(body, state.last_hash if state else ledger.GENESIS_HASH)
        state = negotiation.apply(state, event)
        log.append(event)
    return state


actions = st.lists(
    st.one_of(
        st.tuples(st.just("propose"), st.decimals("0.001", "99999", places=3)),
        st.tuples(st.just("dispute"), st.one_of(st.none(), st.text(max_size=20))),
        st.tuples(st.just("accept"), st.none()),
        st.tuples(st.just("rejoin_b"), st.booleans()),
    ),
    max_size=14,
)


@settings(max_examples=150, deadline=None)
@given(
    currency=st.sampled_from(["USD", "JPY", "KWD", "CLF"]),
    creator=st.sampled_from(["A", "B"]),
    steps=actions,
)
def test_any_signed_negotiation_verifies_with_require_consent(
    currency: str, creator: str, steps: list[tuple[str, Any]]
) -> None:
    """Signed commands only (B may re-join with a fresh key): every settled log's
    receipt verifies, every statement is party-signed, consent is complete."""
    keys = {"A": Key(), "B": Key()}
    log: list[dict[str, Any]] = []
    create = negotiation.Create(creator, currency, keys[creator].public)  # type: ignore[arg-type]
    state = seal_all(None, log, negotiation.decide_create(CID, create, NOW))
    other = "B" if creator == "A" else "A"
    state = seal_all(
        state, log, negotiation.decide(state, None, Join(other, keys[other].public), NOW)
    )  # type: ignore[arg-type]
    for action, arg in steps + [("propose", 5), ("accept", None)]:
        if state.status == "settled":
            break
        if action == "propose":
            exponent = {"USD": 2, "JPY": 0, "KWD": 3, "CLF": 4}[currency]
            raw = f"{arg:.{exponent}f}".lstrip("0") or "0"
            if raw.startswith("."):
                raw = "0" + raw
            version = (state.offer["version"] if state.offer else 0) + 1
            try:
                amount = money.normalise(money.parse_amount(raw, currency), currency)
            except money.MoneyError:
                continue
            sig = keys["A"].sign(consent.propose_statement(CID, currency, amount, version))
            result = negotiation.decide(state, "A", Propose(raw, version, sig), NOW)
        elif action in ("accept", "dispute"):
            if state.offer is None or state.status != "offer_pending":
                continue
            reason = arg if action == "dispute" else None
            statement = consent.respond_statement(action, CID, currency, state.offer, reason)
            command = Respond(action, state.offer["version"], reason, keys["B"].sign(statement))  # type: ignore[arg-type]
            result = negotiation.decide(state, "B", command, NOW)
        else:
            state = seal_all(state, log, negotiation.decide(state, "B", Leave(), NOW))  # type: ignore[arg-type]
            keys["B"] = Key()
            result = negotiation.decide(state, None, Join("B", keys["B"].public), NOW)
        assert not isinstance(result, Refusal), result
        state = seal_all(state, log, result)
    assert state.status == "settled"
    receipt = ledger.build_receipt(log)
    assert ledger.verify_receipt(receipt) is None
    fault, found = consent.party_signatures(receipt["events"])
    assert fault is None
    assert found and all(item["signed"] for item in found)
    assert consent.missing_consent(receipt["events"], found) is None
    # One flipped bit in any signature is named.
    for index, event in enumerate(receipt["events"]):
        if event.get("signature"):
            raw = bytearray(base64.b64decode(event["signature"]))
            raw[0] ^= 1
            forged = {**receipt, "events": [dict(e) for e in receipt["events"]]}
            forged["events"][index]["signature"] = b64(bytes(raw))
            fault, _ = consent.party_signatures(forged["events"])
            assert fault is not None and f"seq {event['seq']} " in fault
            break


def test_a_small_order_key_verifies_nothing() -> None:
    """The identity point as a key, with R = identity and S = 0: OpenSSL's Ed25519
    accepts that one signature for every message; the server's check must not."""
    identity = bytes([1]) + bytes(31)
    forged = b64(identity + bytes(32))
    for amount in ("1.00", "1000000.00"):
        statement = consent.propose_statement(CID, "USD", amount, 1)
        assert not consent.verifies(b64(identity), forged, statement)


def test_honest_signatures_verify_as_cryptography_says() -> None:
    for seed in range(1, 21):
        key = Key(seed)
        statement = consent.propose_statement(CID, "JPY", str(seed * 1000), seed)
        signature = key.sign(statement)
        assert consent.verifies(key.public, signature, statement)
        other = consent.propose_statement(CID, "JPY", str(seed * 1000 + 1), seed)
        assert not consent.verifies(key.public, signature, other)
        flipped = bytearray(base64.b64decode(signature))
        flipped[seed % 64] ^= 1
        assert not consent.verifies(key.public, b64(bytes(flipped)), statement)
