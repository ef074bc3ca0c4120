"""Webhook messages (protocol 1.1, "Webhooks"): the secret, the body, the headers.

What goes over the wire is fixed here; delivering it is `delivery.py`'s job.
Standard Webhooks: `webhook-id`, `webhook-timestamp` (Unix seconds) and
`webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`,
keyed with the decoded bytes of the `whsec_` secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import random
import secrets
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from .signing import _write_new_file
from .store import OutboxRow

SECRET_PREFIX = "whsec_"
SECRET_FILE = "webhook.secret"
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64
MAX_WAIT = 3600.0  # seconds: the longest wait between two attempts, before jitter


def parse_secret(text: str) -> bytes:
    """The key bytes of a `whsec_<base64>` secret; ValueError saying what is wrong."""
    if not text.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        key = base64.b64decode(text.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"a webhook secret is {SECRET_PREFIX!r} followed by standard base64 (padded)"
        ) from None
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        raise ValueError(
            f"a webhook secret holds {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} bytes "
            f"(this one {len(key)})"
        )
    return key


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def load_or_create_secret(key_dir: Path) -> str:
    """The secret in `<key_dir>/webhook.secret`, made (mode 0600) if absent."""
    path = Path(key_dir) / SECRET_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            _write_new_file(path, (new_secret() + "\n").encode())
        except FileExistsError:  # another node or process made it first: use theirs
            pass
    text = path.read_text().strip()
    try:
        parse_secret(text)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return text


def check_url(url: str) -> str:
    """An endpoint must be an absolute http(s) URL with a host; ValueError otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise ValueError(f"webhook URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL {url!r} is not an absolute http:// or https:// URL")
    return url


def message_id(connection_id: str, seq: int) -> str:
    """`evt_<connection id without hyphens>_<seq>`: the same on every attempt and node."""
    return f"evt_{connection_id.replace('-', '')}_{seq}"


def body(event: dict[str, Any], receipt: dict[str, Any] | None = None) -> str:
    """The message of one stored event, exactly these keys (the receipt for `accepted`)."""
    data: dict[str, Any] = {"event": event}
    if receipt is not None and event["type"] == "accepted":
        data["receipt"] = receipt
    message = {"type": "connection." + event["type"], "timestamp": event["at"], "data": data}
    return orjson.dumps(message).decode()


def outbox_rows(
    events: list[dict[str, Any]],
    receipt: Callable[[], dict[str, Any] | None],
    endpoints: Sequence[str],
) -> list[OutboxRow]:
    """The messages of a commit's events for every endpoint, to go into its `Commit`.

    `receipt` gives the signed receipt of the room as this commit leaves it; it is
    asked for only when there are endpoints and an `accepted` event."""
    if not endpoints:
        return []
    now = time.time()
    signed = receipt() if any(e["type"] == "accepted" for e in events) else None
    bodies = [(e, body(e, signed)) for e in events]
    return [
        OutboxRow(e["connection_id"], e["seq"], url, text, now)
        for url in endpoints
        for e, text in bodies
    ]


def sign(key: bytes, msg_id: str, timestamp: int, payload: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + payload, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(key: bytes, msg_id: str, timestamp: int, payload: bytes) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, msg_id, timestamp, payload),
    }


def retry_wait(attempts: int, base: float, rng: random.Random | None = None) -> float:
    """The wait after the `attempts`-th failed attempt: min(base * 2^(k-1), 3600 s)
    times a random factor between 1 and 1.25."""
    exponent = min(max(attempts - 1, 0), 64)  # 2^64 s is past any cap already
    factor = (rng or random).uniform(1.0, 1.25)
    return min(base * 2.0**exponent, MAX_WAIT) * factor
