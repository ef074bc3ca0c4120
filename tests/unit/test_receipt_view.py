"""The readable receipt and the timeline, rendered from receipts built by hand
(party keys and signatures: today's server records none)."""

from __future__ import annotations

import re

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from settlement import ledger, receipt_view, timeline
from settlement.signing import Signer
from tests.signed_receipts import key_id, signed_receipt


def render(receipt: dict) -> str:
    model = receipt_view.receipt_model(receipt)
    return receipt_view._ENV.get_template("receipt_body.html").render(model)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_signed_receipt_shows_both_fingerprints_and_signatures() -> None:
    key_a, key_b = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    server = Signer.generate()
    receipt = signed_receipt(server, key_a, key_b)
    assert ledger.verify_receipt(receipt, {server.key_id: server.public_key_raw}) is None
    html = render(receipt)
    text = text_of(html)
    for key in (key_a, key_b):
        kid = key_id(key)
        grouped = f"{kid[0:4]}-{kid[4:8]}-{kid[8:12]}-{kid[12:16]}"
        assert re.fullmatch(r"[0-9a-f]{4}(-[0-9a-f]{4}){3}", grouped)
        assert grouped in text
    assert "Signed the agreed offer (version 2)" in text
    assert "Signed the acceptance (version 2)" in text
    assert "Not signed" not in text and "no key" not in text
    assert "€850.50" in text and "Exactly 850.50 EUR (Euro)" in text
    short = receipt["receipt_id"][:12]
    assert f"{short[0:4]}-{short[4:8]}-{short[8:12]}" in text
    assert receipt["receipt_id"] in text
    assert "signed by Party A" in text and "signed by Party B" in text
    # The reason is text: escaped, never markup.
    assert "&lt;b&gt;" in html and "<b>" not in html
    sid = server.key_id
    assert f"{sid[0:4]}-{sid[4:8]}-{sid[8:12]}-{sid[12:16]}" in text


def test_unsigned_receipt_says_no_key_and_not_signed() -> None:
    receipt = signed_receipt(Signer.generate(), None, None)
    text = text_of(render(receipt))
    assert text.count("no key") == 2
    assert text.count("Not signed") == 2
    assert "signed by Party" not in text


def test_one_signing_party_is_told_apart() -> None:
    key_b = Ed25519PrivateKey.generate()
    consent = receipt_view.party_consent(signed_receipt(Signer.generate(), None, key_b)["events"])
    assert consent["A"]["fingerprint"] is None and not consent["A"]["signed"]
    assert consent["B"]["fingerprint"] == receipt_view.group_key_id(key_id(key_b))
    assert consent["B"]["signed"]


def test_fingerprint_refuses_what_is_not_a_32_byte_key() -> None:
    assert receipt_view.fingerprint(None) is None
    assert receipt_view.fingerprint("not base64!") is None
    assert receipt_view.fingerprint("AAAA") is None  # 3 bytes
    assert receipt_view.fingerprint("A" * 43 + "=") is not None  # 32 zero-ish bytes


def test_timeline_steps_bars_and_notes() -> None:
    def money(amount: str) -> str:
        return f"${amount}"

    def when(at: str) -> str:
        return at

    events = [
        {"type": "created", "party": "A", "currency": "USD", "at": "t1"},
        {"type": "proposed", "party": "A", "amount": "400.00", "version": 1, "at": "t2"},
        {"type": "disputed", "party": "B", "version": 1, "reason": "too high", "at": "t3"},
        {"type": "proposed", "party": "A", "amount": "200.00", "version": 2, "at": "t4"},
        {"type": "proposed", "party": "A", "amount": "300.00", "version": 3, "at": "t5"},
    ]
    tl = timeline.timeline(events, money, when)
    kinds = [s["kind"] for s in tl["steps"]]
    assert kinds == ["offer", "dispute", "offer", "offer"]
    assert [s["bar"] for s in tl["steps"] if s["kind"] == "offer"] == ["100.0", "50.0", "75.0"]
    assert tl["steps"][1]["reason"] == "too high"
    assert tl["steps"][2]["note"] == "Replaced before Party B answered."
    assert tl["steps"][3]["note"] == ""  # the offer on the table
    assert tl["waiting"] and not tl["settled"]
    accepted = {"type": "accepted", "party": "B", "amount": "300.00", "version": 3, "at": "t6"}
    tl = timeline.timeline([*events, accepted], money, when)
    assert (
        tl["settled"] and tl["steps"][-1]["text"] == "Party B accepted version 3: $300.00. Settled."
    )
    assert timeline.for_party(events, None, money, when) is None  # a visitor sees no amounts
    assert timeline.for_party(events, "B", money, when) is not None
