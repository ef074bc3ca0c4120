"""Webhook messages: the secret's form, the signature (checked by `standardwebhooks`),
the body's exact keys, the backoff's bounds, and the settings."""

from __future__ import annotations

import base64
import json
import random
import time
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from settlement import config, webhooks


def whsec(n: int) -> str:
    return "whsec_" + base64.b64encode(bytes(range(n))).decode()


@pytest.mark.parametrize("n", [24, 32, 64])
def test_a_secret_of_24_to_64_bytes_is_taken(n: int) -> None:
    assert webhooks.parse_secret(whsec(n)) == bytes(range(n))


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (whsec(23), "24 to 64 bytes (this one 23)"),
        (whsec(65), "24 to 64 bytes (this one 65)"),
        ("c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "starts with 'whsec_'"),
        ("whsec_" + "A" * 31, "standard base64"),  # unpadded
        ("whsec_" + base64.urlsafe_b64encode(b"\xff" * 30).decode(), "standard base64"),
        ("whsec_", "this one 0"),
    ],
)
def test_a_malformed_secret_is_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace(")", r"\)")):
        webhooks.parse_secret(text)


def test_the_signature_is_what_standard_webhooks_verifies() -> None:
    secret = webhooks.new_secret()
    payload = json.dumps({"type": "connection.created", "x": "✋"}, ensure_ascii=False).encode()
    now = int(time.time())
    sent = webhooks.headers(webhooks.parse_secret(secret), "evt_ABC_1", now, payload)
    assert sent["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(payload, sent) == json.loads(payload)
    other = webhooks.new_secret()
    with pytest.raises(Exception, match="signature"):
        Webhook(other).verify(payload, sent)


def test_a_message_has_exactly_the_protocols_keys() -> None:
    event = {
        "connection_id": "K7QF-3MZP-XW2D",
        "seq": 6,
        "type": "accepted",
        "at": "2026-11-23T10:15:02.123Z",
    }
    receipt = {"receipt_id": "h", "signature": {"alg": "ed25519"}}
    assert json.loads(webhooks.body(event, receipt)) == {
        "type": "connection.accepted",
        "timestamp": "2026-11-23T10:15:02.123Z",
        "data": {"event": event, "receipt": receipt},
    }
    proposed = dict(event, type="proposed")
    assert json.loads(webhooks.body(proposed, receipt))["data"] == {"event": proposed}
    assert webhooks.message_id("K7QF-3MZP-XW2D", 6) == "evt_K7QF3MZPXW2D_6"


def test_outbox_rows_one_per_event_per_endpoint_and_receipt_only_when_accepted() -> None:
    asked: list[int] = []

    def receipt() -> dict[str, str]:
        asked.append(1)
        return {"receipt_id": "h"}

    events = [{"connection_id": "C", "seq": 1, "type": "created", "at": "t"}]
    assert webhooks.outbox_rows(events, receipt, ()) == []
    rows = webhooks.outbox_rows(events, receipt, ("http://a/", "http://b/"))
    assert [(r.seq, r.endpoint) for r in rows] == [(1, "http://a/"), (1, "http://b/")]
    assert asked == []  # no accepted event: the receipt is not made


def test_the_kth_wait_is_base_times_two_to_the_k_minus_one_capped_with_jitter() -> None:
    rng = random.Random(1)
    for k in range(1, 40):
        wait = webhooks.retry_wait(k, 1.0, rng)
        low = min(2.0 ** (k - 1), 3600.0)
        assert low <= wait <= low * 1.25
    waits = [webhooks.retry_wait(1, 2.0, rng) for _ in range(200)]
    assert min(waits) < 2.1 and max(waits) > 2.4  # the jitter spreads them


def test_webhook_settings_from_flags_and_environment() -> None:
    s = config.parse(["--webhook-url", "http://a/x", "--webhook-url", "https://b/y"], env={})
    assert s.webhook_urls == ("http://a/x", "https://b/y")
    env = {
        "SETTLEMENT_WEBHOOK_URL": "http://a/x  https://b/y http://a/x",
        "SETTLEMENT_WEBHOOK_SECRET": whsec(32),
        "SETTLEMENT_WEBHOOK_RETRY_BASE": "0.5",
        "SETTLEMENT_WEBHOOK_RETRY_FOR": "60",
    }
    s = config.parse([], env=env)
    assert s.webhook_urls == ("http://a/x", "https://b/y")
    assert (s.webhook_secret, s.webhook_retry_base, s.webhook_retry_for) == (whsec(32), 0.5, 60.0)
    assert config.parse([], env={}).webhook_urls == ()
    with pytest.raises(SystemExit):
        config.parse([], env={"SETTLEMENT_WEBHOOK_LEASE": "5"})


def test_the_secret_file_is_made_once_owner_only(tmp_path: Path) -> None:
    first = webhooks.load_or_create_secret(tmp_path / "keys")
    assert webhooks.load_or_create_secret(tmp_path / "keys") == first
    path = tmp_path / "keys" / "webhook.secret"
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("whsec_broken")
    with pytest.raises(ValueError, match="webhook.secret"):
        webhooks.load_or_create_secret(tmp_path / "keys")
