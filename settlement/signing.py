"""Ed25519 signing of receipts, and loading the public keys that check them.

The hash chain proves a receipt was not edited; only a signature proves the
server issued it (anyone can re-chain an edited log). The private key lives in a
PEM file so receipts signed before a restart still verify against `/api/keys`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from settlement.ledger import signed_bytes

ALG = "ed25519"
PUBLIC_KEY_BYTES = 32


def key_id_for(raw_public_key: bytes) -> str:
    """A short, stable name for a key: the first 16 hex chars of sha256 of its raw bytes."""
    return hashlib.sha256(raw_public_key).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class Signer:
    """Holds the server's receipt-signing key and signs receipts with it."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key_raw: bytes = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.key_id: str = key_id_for(self.public_key_raw)
        self.public_key_b64: str = _b64(self.public_key_raw)

    @classmethod
    def generate(cls) -> Signer:
        """A fresh key, for tests and for the first start of a server."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> Signer:
        """Load an unencrypted PKCS8 PEM private key; anything but Ed25519 is refused."""
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the signing key file does not hold an Ed25519 private key")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> Signer:
        """Load the key at `path`, or create it there (mode 0600) on first start.

        Creation must never replace a key another process just wrote: receipts it
        signed would stop verifying. So the new file is linked into place, which
        fails if the name exists, and the loser of such a race loads the winner's key.
        """
        path = Path(path)
        if path.exists():
            return cls.from_pem(path.read_bytes())
        signer = cls.generate()
        _write_new_file(path, signer.private_pem())
        return cls.from_pem(path.read_bytes())

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS8 PEM, the form `load_or_create` stores."""
        return self._private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign_receipt(self, receipt: dict[str, Any]) -> dict[str, Any]:
        """A copy of the receipt with `signature` over its canonical JSON (sans signature)."""
        signature = self._private_key.sign(signed_bytes(receipt))
        signed = {key: value for key, value in receipt.items() if key != "signature"}
        signed["signature"] = {"alg": ALG, "key_id": self.key_id, "value": _b64(signature)}
        return signed

    def keys_document(self) -> dict[str, Any]:
        """The body of `GET /api/keys`, which `verify --key` also accepts when saved."""
        return {"keys": [{"key_id": self.key_id, "alg": ALG, "public_key": self.public_key_b64}]}


def _write_new_file(path: Path, data: bytes) -> None:
    """Write `data` to a new file at `path` atomically, owner-only, without clobbering.

    Written to a temp file in the same folder (0600 from the start, fsynced), then
    hard-linked into place, which refuses an existing name. Where hard links are not
    supported it falls back to `os.replace`, still atomic.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        _move_into_place(tmp_name, path)
        _fsync_dir(path.parent)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def _move_into_place(tmp_name: str, path: Path) -> None:
    try:
        os.link(tmp_name, path)
    except FileExistsError:
        return  # another process created the key first; the caller loads theirs
    except OSError:
        os.replace(tmp_name, path)


def _fsync_dir(folder: Path) -> None:
    """Make the new directory entry durable too, so a crash cannot lose the key."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _decode_public_key(text: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("the public key is not valid base64") from exc
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError(f"the public key is {len(raw)} bytes, an Ed25519 key is 32")
    Ed25519PublicKey.from_public_bytes(raw)
    return raw


def _keys_from_document(document: object) -> dict[str, bytes]:
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError('a keys document must be an object with a "keys" list')
    keys: dict[str, bytes] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict):
            raise ValueError("each entry in keys must be an object")
        key_id, alg, public_key = entry.get("key_id"), entry.get("alg"), entry.get("public_key")
        if not isinstance(key_id, str) or not isinstance(public_key, str):
            raise ValueError("each key needs a string key_id and public_key")
        if alg != ALG:
            continue  # a key for another algorithm cannot check an ed25519 signature
        keys[key_id] = _decode_public_key(public_key)
    if not keys:
        raise ValueError("the keys document lists no ed25519 key")
    return keys


def load_public_keys(text: str) -> dict[str, bytes]:
    """Read `verify --key` input: a bare base64 key, or a saved `/api/keys` document.

    Returns key_id -> raw 32-byte public key. Raises ValueError if it is neither.
    """
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the keys document is not valid JSON: {exc}") from exc
        return _keys_from_document(document)
    raw = _decode_public_key(stripped)
    return {key_id_for(raw): raw}
