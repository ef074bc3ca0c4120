"""What the negotiation page says, per reader: a visitor gets no amount, reason or history."""

from __future__ import annotations

from settlement import views

EVENTS = [
    {"type": "created", "party": "A", "seq": 1, "currency": "USD", "at": "2026-11-23T10:00:00.000Z"},
    {"type": "joined", "party": "B", "seq": 2, "at": "2026-11-23T10:00:01.000Z"},
    {"type": "proposed", "party": "A", "seq": 3, "amount": "1250.50", "version": 1, "at": "2026-11-23T10:00:02.000Z"},
    {"type": "disputed", "party": "B", "seq": 4, "version": 1, "reason": "too high", "at": "2026-11-23T10:00:03.000Z"},
]  # fmt: skip
STATE = {
    "connection_id": "K7QF-3MZP-XW2D",
    "seq": 4,
    "status": "disputed",
    "currency": "USD",
    "parties": {"A": {"seated": True, "online": True}, "B": {"seated": True, "online": True}},
    "offer": {"amount": "1250.50", "version": 1, "proposed_at": "2026-11-23T10:00:02.000Z"},
    "last_response": {"decision": "dispute", "version": 1, "reason": "too high", "at": "x"},
    "settlement": None,
}


def test_a_visitor_is_told_the_status_in_words_only() -> None:
    html = views.render_fragments(STATE, EVENTS, None, "en_US")
    for secret in ("1,250", "1250", "too high", "$", "version"):
        assert secret not in html, secret
    assert "Party B disputed the offer" in html
    assert "The history is shown only to the two parties." in html
    assert "Both seats are taken." in html


def test_a_party_hears_what_changed() -> None:
    html = views.render_fragments(STATE, EVENTS, "A", "en_US")
    assert "Party B disputed: too high" in html
    assert "$1,250.50" in html
    assert "You disputed: too high" in views.render_fragments(STATE, EVENTS, "B", "en_US")


def test_pages_are_english_whatever_the_browser_asks_for() -> None:
    assert views.negotiate_locale("de-DE,de;q=0.9") == "en_US"
    assert views.negotiate_locale("en-GB") == "en_US"
    assert views.negotiate_locale(None) == "en_US"
    assert views.format_amount("1250.50", "EUR", views.negotiate_locale("de-DE")) == "€1,250.50"


def test_final_screen_spells_out_rounds_and_offers() -> None:
    settled = dict(
        STATE,
        status="settled",
        seq=7,
        offer={"amount": "1200.00", "version": 3, "proposed_at": "x"},
        settlement={"amount": "1200.00", "currency": "USD", "version": 3,
                    "settled_at": "2026-11-23T10:00:09.000Z", "receipt_id": "ab" * 32},
    )  # fmt: skip
    events = EVENTS + [
        {"type": "proposed", "party": "A", "seq": 5, "amount": "1300", "version": 2, "at": "x"},
        {"type": "proposed", "party": "A", "seq": 6, "amount": "1200.00", "version": 3, "at": "x"},
        {"type": "accepted", "party": "B", "seq": 7, "amount": "1200.00", "version": 3, "at": "x"},
    ]
    model = views.view_model(settled, events, "A", "en_US")
    assert model["final"]["rounds_text"] == "2: Party B disputed once, then accepted"
    assert model["final"]["offers_text"] == "3 from Party A; version 3 was accepted"
    assert model["status_text"] == "Party B accepted $1,200.00."
    assert not model["show_invite"]
    assert views.view_model(settled, events, None, "en_US")["final"] is None
