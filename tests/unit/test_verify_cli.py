"""`python -m settlement verify`: exit codes and messages, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from settlement.ledger import GENESIS_HASH, build_receipt, seal
from settlement.signing import Signer

ROOT = Path(__file__).resolve().parents[2]


def settled_receipt(amount: str = "1250.00") -> dict[str, Any]:
    """Seven events: created, joined, two proposals around a dispute, A leaves, B accepts."""
    bodies: list[dict[str, Any]] = [
        {"type": "created", "party": "A", "at": "2026-11-23T10:00:00.000Z", "currency": "USD"},
        {"type": "joined", "party": "B", "at": "2026-11-23T10:00:01.000Z"},
        {
            "type": "proposed",
            "party": "A",
            "at": "2026-11-23T10:00:02.000Z",
            "amount": "1500.00",
            "version": 1,
        },
        {
            "type": "disputed",
            "party": "B",
            "at": "2026-11-23T10:00:03.000Z",
            "version": 1,
            "reason": None,
        },
        {
            "type": "proposed",
            "party": "A",
            "at": "2026-11-23T10:00:04.000Z",
            "amount": amount,
            "version": 2,
        },
        {"type": "left", "party": "A", "at": "2026-11-23T10:00:05.000Z"},
        {
            "type": "accepted",
            "party": "B",
            "at": "2026-11-23T10:00:06.000Z",
            "amount": amount,
            "version": 2,
        },
    ]
    events: list[dict[str, Any]] = []
    prev = GENESIS_HASH
    for seq, body in enumerate(bodies, start=1):
        events.append(seal({"connection_id": "K7QF-3MZP-XW2D", "seq": seq, **body}, prev))
        prev = events[-1]["hash"]
    return build_receipt(events)


def verify(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "settlement", "verify", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_json(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def signer() -> Signer:
    return Signer.generate()


def test_valid_receipt_exits_0_and_says_the_chain_is_intact(tmp_path: Path) -> None:
    receipt = settled_receipt()
    result = verify(write_json(tmp_path / "r.json", receipt))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        f"valid: receipt {receipt['receipt_id']} for 1250.00 USD, 7 events, chain intact",
        "signature not checked (no --key given)",
    ]


def test_valid_signature_with_a_bare_base64_key(tmp_path: Path, signer: Signer) -> None:
    receipt = write_json(tmp_path / "r.json", signer.sign_receipt(settled_receipt()))
    key = tmp_path / "key.txt"
    key.write_text(signer.public_key_b64 + "\n")
    result = verify(receipt, "--key", key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"signature valid (key {signer.key_id})" in result.stdout.splitlines()


def test_valid_signature_with_a_saved_keys_document(tmp_path: Path, signer: Signer) -> None:
    receipt = write_json(tmp_path / "r.json", signer.sign_receipt(settled_receipt()))
    key = write_json(tmp_path / "keys.json", signer.keys_document())
    result = verify(receipt, "--key", key)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"signature valid (key {signer.key_id})" in result.stdout


def test_edited_amount_exits_1_naming_it(tmp_path: Path) -> None:
    receipt = settled_receipt()
    receipt["amount"] = "125.00"
    result = verify(write_json(tmp_path / "r.json", receipt))
    assert result.returncode == 1
    assert result.stdout.strip() == (
        "invalid: receipt amount 125.00 does not match the accepted event's 1250.00"
    )


def test_dropped_event_exits_1(tmp_path: Path) -> None:
    receipt = settled_receipt()
    del receipt["events"][2]
    result = verify(write_json(tmp_path / "r.json", receipt))
    assert result.returncode == 1
    assert result.stdout.strip() == "invalid: event with seq 3 is missing"


def test_rechained_forgery_exits_1_with_a_key(tmp_path: Path, signer: Signer) -> None:
    forged = settled_receipt(amount="12.50")
    forged["signature"] = signer.sign_receipt(settled_receipt())["signature"]
    path = write_json(tmp_path / "r.json", forged)
    key = write_json(tmp_path / "keys.json", signer.keys_document())
    assert verify(path).returncode == 0
    result = verify(path, "--key", key)
    assert result.returncode == 1
    assert result.stdout.strip() == (
        "invalid: signature does not match: the receipt was altered or not issued by this key"
    )


def test_missing_file_exits_2(tmp_path: Path) -> None:
    result = verify(tmp_path / "absent.json")
    assert result.returncode == 2
    assert "cannot read receipt file" in result.stderr


def test_not_json_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("receipt: yes\n")
    result = verify(path)
    assert result.returncode == 2
    assert "is not valid JSON" in result.stderr


def test_json_that_is_not_an_object_exits_2(tmp_path: Path) -> None:
    result = verify(write_json(tmp_path / "r.json", [settled_receipt()]))
    assert result.returncode == 2
    assert "does not hold a JSON object" in result.stderr


def test_duplicate_keys_exit_2(tmp_path: Path) -> None:
    text = json.dumps(settled_receipt())
    path = tmp_path / "r.json"
    path.write_text(text[:-1] + ', "amount": "1.00"}')
    result = verify(path)
    assert result.returncode == 2
    assert "duplicate key 'amount'" in result.stderr


def test_unusable_key_file_exits_2(tmp_path: Path) -> None:
    receipt = write_json(tmp_path / "r.json", settled_receipt())
    key = tmp_path / "key.txt"
    key.write_text("not a key")
    result = verify(receipt, "--key", key)
    assert result.returncode == 2
    assert "key file" in result.stderr
