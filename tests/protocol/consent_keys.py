"""Party keys for the 1.1 protocol bots, written from PROTOCOL.md ("Party keys and
signed statements") alone: the statement bytes, fingerprints, and re-chaining."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .bots import event_hash

PREFIX = b"settlement/v1.1 statement\n"
ROOT = Path(__file__).resolve().parents[2]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class PartyKey:
    """One seat's Ed25519 key, as a bot holds it."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.raw = self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public_key = b64(self.raw)
        self.key_id = hashlib.sha256(self.raw).hexdigest()[:16]

    def sign(self, statement: dict[str, Any]) -> str:
        return b64(self.private.sign(PREFIX + rfc8785.dumps(statement)))


def propose_statement(state: dict[str, Any], amount: str, version: int) -> dict[str, Any]:
    return {
        "type": "proposed",
        "connection_id": state["connection_id"],
        "currency": state["currency"],
        "amount": amount,
        "version": version,
    }


def respond_statement(
    state: dict[str, Any], decision: str, reason: str | None = None
) -> dict[str, Any]:
    """The statement answering the offer in `state` (amount, version, hash)."""
    offer = state["offer"]
    statement: dict[str, Any] = {
        "type": "accepted" if decision == "accept" else "disputed",
        "connection_id": state["connection_id"],
        "currency": state["currency"],
        "amount": offer["amount"],
        "version": offer["version"],
        "offer_hash": offer["hash"],
    }
    if decision == "dispute":
        statement["reason"] = reason
    return statement


async def signed_propose(bot: Any, key: PartyKey, state: dict[str, Any], amount: str) -> Any:
    """Propose `amount` (already normalised) as the next version, signed."""
    version = (state["offer"]["version"] if state["offer"] else 0) + 1
    signature = key.sign(propose_statement(state, amount, version))
    return await bot.propose(amount, version=version, signature=signature)


async def signed_respond(
    bot: Any, key: PartyKey, state: dict[str, Any], decision: str, reason: str | None = None
) -> Any:
    extra: dict[str, Any] = {"signature": key.sign(respond_statement(state, decision, reason))}
    if reason is not None:
        extra["reason"] = reason
    return await bot.respond(decision, state["offer"]["version"], **extra)


def rechain(receipt: dict[str, Any]) -> dict[str, Any]:
    """Recompute every prev_hash/hash (and receipt_id) so the chain is intact again."""
    prev = "0" * 64
    for event in receipt["events"]:
        event["prev_hash"] = prev
        event["hash"] = event_hash(event)
        prev = event["hash"]
    receipt["receipt_id"] = prev
    receipt.pop("signature", None)
    return receipt


async def run_verify(receipt: dict[str, Any], folder: Path, *extra: str) -> tuple[int, str]:
    path = folder / f"receipt-{hashlib.sha256(json.dumps(receipt).encode()).hexdigest()[:8]}.json"
    path.write_text(json.dumps(receipt), encoding="utf-8")
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
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")
