"""Connection ids and seat tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_SET = frozenset(CROCKFORD)


def new_connection_id() -> str:
    """12 Crockford base32 characters (60 random bits), shown as `XXXX-XXXX-XXXX`."""
    bits = secrets.randbits(60)
    chars = "".join(CROCKFORD[(bits >> (5 * i)) & 31] for i in range(12))
    return f"{chars[0:4]}-{chars[4:8]}-{chars[8:12]}"


#: A pasted id may carry spaces (leading, trailing, or between groups); at most this long.
MAX_RAW_ID = 64


def normalise_connection_id(raw: object) -> str | None:
    """The canonical form of an id typed in any case, with or without hyphens; else None.

    Whitespace anywhere (a leading space, `K7QF 3MZP XW2D`, a tab or a
    non-breaking space from a copied text) is ignored like a hyphen.
    """
    if not isinstance(raw, str) or len(raw) > MAX_RAW_ID:
        return None
    chars = "".join(raw.split()).replace("-", "").upper()
    if len(chars) != 12 or not set(chars) <= _CROCKFORD_SET:
        return None
    return f"{chars[0:4]}-{chars[4:8]}-{chars[8:12]}"


class TokenMint:
    """Seat tokens derived from a server secret and a random 128-bit nonce.

    The database stores only the SHA-256 of a token (to check it) and, in the
    idempotency record of a `create`/`join`, the nonce (to give a replayed ack
    its original token back). Neither is usable without the secret.
    """

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 32:
            raise ValueError("the token secret must be at least 32 bytes")
        self._secret = secret

    @classmethod
    def load_or_create(cls, path: Path) -> TokenMint:
        if path.exists():
            return cls(path.read_bytes())
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_bytes(32)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secret)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return cls(secret)

    def new(self) -> tuple[str, str]:
        """A fresh (token, nonce)."""
        nonce = secrets.token_urlsafe(16)
        return self.from_nonce(nonce), nonce

    def from_nonce(self, nonce: str) -> str:
        mac = hmac.new(self._secret, b"seat-token:" + nonce.encode(), hashlib.sha256).digest()
        return "st_" + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_matches(token: str, stored_hash: str | None) -> bool:
    """Constant-time comparison of a presented token against a stored hash."""
    if stored_hash is None:
        return False
    return hmac.compare_digest(token_hash(token), stored_hash)
