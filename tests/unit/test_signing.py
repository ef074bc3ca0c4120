"""Receipt signing keys: their names, their persistence, and the public keys that check them."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from settlement.ledger import (
    GENESIS_HASH,
    SIGNATURE_MISMATCH,
    build_receipt,
    canonical_json,
    seal,
    verify_receipt,
)
from settlement.signing import Signer, load_public_keys


def small_receipt() -> dict[str, Any]:
    """The shortest settled log: created, proposed, accepted."""
    bodies: list[dict[str, Any]] = [
        {"type": "created", "party": "A", "at": "2026-11-23T10:00:00.000Z", "currency": "JPY"},
        {
            "type": "proposed",
            "party": "A",
            "at": "2026-11-23T10:00:01.000Z",
            "amount": "1250",
            "version": 1,
        },
        {
            "type": "accepted",
            "party": "B",
            "at": "2026-11-23T10:00:02.000Z",
            "amount": "1250",
            "version": 1,
        },
    ]
    events: list[dict[str, Any]] = []
    prev = GENESIS_HASH
    for seq, body in enumerate(bodies, start=1):
        events.append(seal({"connection_id": "K7QF-3MZP-XW2D", "seq": seq, **body}, prev))
        prev = events[-1]["hash"]
    return build_receipt(events)


def test_key_id_is_the_start_of_sha256_of_the_raw_public_key() -> None:
    signer = Signer.generate()
    raw = base64.b64decode(signer.public_key_b64, validate=True)
    assert len(raw) == 32
    assert signer.key_id == hashlib.sha256(raw).hexdigest()[:16]


def test_public_key_is_padded_standard_base64() -> None:
    signer = Signer.generate()
    assert len(signer.public_key_b64) == 44 and signer.public_key_b64.endswith("=")


def test_signature_is_base64_ed25519_over_canonical_receipt_without_signature() -> None:
    signer = Signer.generate()
    receipt = small_receipt()
    signed = signer.sign_receipt(receipt)
    signature = signed["signature"]
    assert signature["alg"] == "ed25519" and signature["key_id"] == signer.key_id
    value = base64.b64decode(signature["value"], validate=True)
    assert len(value) == 64
    public = Ed25519PublicKey.from_public_bytes(signer.public_key_raw)
    public.verify(value, canonical_json(receipt))  # raises if wrong


def test_sign_receipt_returns_a_copy() -> None:
    receipt = small_receipt()
    signed = Signer.generate().sign_receipt(receipt)
    assert "signature" not in receipt
    assert {k: v for k, v in signed.items() if k != "signature"} == receipt


def test_resigning_replaces_the_old_signature() -> None:
    first, second = Signer.generate(), Signer.generate()
    signed = second.sign_receipt(first.sign_receipt(small_receipt()))
    assert signed["signature"]["key_id"] == second.key_id
    assert verify_receipt(signed, {second.key_id: second.public_key_raw}) is None


def test_flipped_signature_byte_is_a_mismatch() -> None:
    signer = Signer.generate()
    signed = signer.sign_receipt(small_receipt())
    value = bytearray(base64.b64decode(signed["signature"]["value"]))
    value[0] ^= 1
    signed["signature"]["value"] = base64.b64encode(bytes(value)).decode()
    assert verify_receipt(signed, {signer.key_id: signer.public_key_raw}) == SIGNATURE_MISMATCH


def test_a_different_key_claiming_the_same_key_id_is_a_mismatch() -> None:
    real, impostor = Signer.generate(), Signer.generate()
    forged = impostor.sign_receipt(small_receipt())
    forged["signature"]["key_id"] = real.key_id
    assert verify_receipt(forged, {real.key_id: real.public_key_raw}) == SIGNATURE_MISMATCH


def test_keys_document_lists_the_public_key_by_id() -> None:
    signer = Signer.generate()
    assert signer.keys_document() == {
        "keys": [{"key_id": signer.key_id, "alg": "ed25519", "public_key": signer.public_key_b64}]
    }


def test_key_is_created_owner_only_and_the_same_after_reload(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "nested" / "receipt-signing.pem"
    first = Signer.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    again = Signer.load_or_create(path)
    assert again.key_id == first.key_id
    signed_before = first.sign_receipt(small_receipt())
    assert verify_receipt(signed_before, {again.key_id: again.public_key_raw}) is None


def test_load_or_create_leaves_no_temporary_files(tmp_path: Path) -> None:
    Signer.load_or_create(tmp_path / "signing.pem")
    assert [p.name for p in tmp_path.iterdir()] == ["signing.pem"]


def test_an_existing_key_file_is_loaded_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "signing.pem"
    original = Signer.generate()
    path.write_bytes(original.private_pem())
    assert Signer.load_or_create(path).key_id == original.key_id
    assert path.read_bytes() == original.private_pem()


def test_from_pem_refuses_a_key_that_is_not_ed25519() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="Ed25519"):
        Signer.from_pem(pem)


def test_bare_base64_key_is_named_by_its_key_id() -> None:
    signer = Signer.generate()
    assert load_public_keys(signer.public_key_b64 + "\n") == {signer.key_id: signer.public_key_raw}


def test_saved_keys_document_is_accepted() -> None:
    signer = Signer.generate()
    text = json.dumps(signer.keys_document(), indent=2)
    assert load_public_keys(text) == {signer.key_id: signer.public_key_raw}


@pytest.mark.parametrize(
    "text",
    [
        "not base64!",
        base64.b64encode(b"\x01" * 31).decode(),
        '{"keys": []}',
        '{"keys": [{"key_id": "x", "alg": "ed25519"}]}',
        '{"nokeys": 1}',
        "{broken json",
    ],
)
def test_unusable_key_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        load_public_keys(text)
