"""propose and respond: versions, amounts, currencies, responses, settlement."""

from __future__ import annotations

import pytest

from .bots import AT_RE, assert_error, assert_ok, rid

# ---------------------------------------------------------------- propose


async def test_propose_before_b_joins_gets_version_1(shared_server, bots):
    a = await bots(shared_server)
    await a.create("A")
    ack = await a.propose("1250.00")
    assert_ok(ack, {"ok", "version", "state"})
    assert ack["version"] == 1
    st = ack["state"]
    assert st["status"] == "offer_pending"
    assert st["seq"] == 2
    assert st["offer"]["amount"] == "1250.00"
    assert st["offer"]["version"] == 1
    assert AT_RE.match(st["offer"]["proposed_at"])
    assert st["parties"]["B"]["seated"] is False


async def test_propose_versions_rise_1_2_3_and_seq_rises(shared_server, bots):
    a, b = await bots.pair(shared_server)
    seqs = []
    for i, amount in enumerate(["10", "11", "12"], start=1):
        ack = assert_ok(await a.propose(amount))
        assert ack["version"] == i
        assert ack["state"]["offer"]["version"] == i
        seqs.append(ack["state"]["seq"])
    assert seqs == [3, 4, 5]
    snap = await b.wait_state_seq(5)
    assert snap["offer"] == {
        "amount": "12.00",
        "version": 3,
        "proposed_at": snap["offer"]["proposed_at"],
        "hash": snap["offer"]["hash"],  # protocol 1.1
    }


@pytest.mark.parametrize(
    ("currency", "amount", "expected"),
    [
        ("USD", "0012.5", "12.50"),
        ("USD", "1250", "1250.00"),
        ("USD", "1250.5", "1250.50"),
        ("USD", "1250.50", "1250.50"),
        ("USD", "0.01", "0.01"),
        ("USD", "1000000000000", "1000000000000.00"),
        ("USD", "1000000000000.00", "1000000000000.00"),
        ("USD", "0" * 36 + "1.00", "1.00"),  # exactly 40 characters
        ("JPY", "1250", "1250"),
        ("JPY", "0001250", "1250"),
        ("JPY", "1000000000000", "1000000000000"),
        ("KWD", "1.5", "1.500"),
        ("KWD", "1.005", "1.005"),
        ("KWD", "7", "7.000"),
        ("CLF", "1.5", "1.5000"),
        ("CLF", "0.0001", "0.0001"),
        ("IQD", "2", "2.000"),
        ("IQD", "2.125", "2.125"),
        ("ISK", "42", "42"),
        ("EUR", "99999999999.99", "99999999999.99"),
        ("USD", "00.50", "0.50"),
        ("CLF", "999999999999.9999", "999999999999.9999"),  # a binary float would round this
        ("KWD", "999999999999.999", "999999999999.999"),
        ("USD", "0" * 37 + ".01", "0.01"),
    ],
)
async def test_propose_amount_is_normalised_to_currency_minor_unit(
    shared_server, bots, currency, amount, expected
):
    a = await bots(shared_server)
    await a.create("A", currency)
    ack = assert_ok(await a.propose(amount))
    assert ack["state"]["offer"]["amount"] == expected
    assert ack["state"]["currency"] == currency
    events = await a.all_events()
    assert events[-1]["type"] == "proposed"
    assert events[-1]["amount"] == expected


INVALID_USD_AMOUNTS = [
    12.5,
    1250,
    0,
    None,
    True,
    False,
    ["10"],
    {"amount": "10"},
    "",
    "-5",
    "+5",
    "-0",
    "1e3",
    "1E3",
    "1.5e2",
    "1,250",
    "1_250",
    "1'250",
    " 12",
    "12 ",
    "1 2",
    "12\n",
    "\t12",
    ".5",
    "5.",
    ".",
    "1..2",
    "1.2.3",
    "١٢",  # Arabic-Indic digits
    "１２",  # full-width digits
    "12٫5",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "0x10",
    "0",
    "0.00",
    "000",
    "0.0",
    "1.500",  # three fraction digits in USD, even if the last is zero
    "0.001",
    "1000000000000.01",
    "1000000000001",
    "99999999999999999999",
    "0" * 37 + "1.00",  # 41 characters
    "1" * 41,
    "abc",
    "$10",
    "10 USD",
]


@pytest.mark.parametrize(
    "amount", INVALID_USD_AMOUNTS, ids=[repr(x)[:30] for x in INVALID_USD_AMOUNTS]
)
async def test_propose_invalid_amount_usd(shared_server, bots, amount):
    a = await bots(shared_server)
    await a.create("A", "USD")
    ack = assert_error(await a.propose(amount), "invalid_amount", seated=True)
    assert ack["state"]["offer"] is None
    assert ack["state"]["seq"] == 1


@pytest.mark.parametrize(
    ("currency", "amount"),
    [
        ("JPY", "1.0"),
        ("JPY", "1250.5"),
        ("KWD", "1.0001"),
        ("CLF", "1.00001"),
        ("ISK", "3.0"),
        ("JPY", "1000000000001"),
        ("KWD", "1000000000000.001"),
    ],
)
async def test_propose_too_many_fraction_digits_or_too_large_per_currency(
    shared_server, bots, currency, amount
):
    a = await bots(shared_server)
    await a.create("A", currency)
    assert_error(await a.propose(amount), "invalid_amount", seated=True)


async def test_propose_missing_amount_is_bad_request(shared_server, bots):
    a = await bots(shared_server)
    await a.create("A")
    assert_error(await a.call("propose", {}), "bad_request", seated=True)
    assert_error(await a.call("propose", {"request_id": "r1"}), "bad_request", seated=True)


async def test_propose_by_b_is_wrong_party(shared_server, bots):
    a, b = await bots.pair(shared_server)
    ack = assert_error(await b.propose("10"), "wrong_party", seated=True)
    assert ack["state"]["offer"] is None


async def test_propose_invalid_amount_by_b_is_wrong_party_seat_before_values(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_error(await b.propose("abc"), "wrong_party", seated=True)


async def test_propose_by_unseated_socket_is_not_seated_without_state(shared_server, bots):
    x = await bots(shared_server)
    assert_error(await x.propose("10"), "not_seated", seated=False)


async def test_propose_after_dispute_is_allowed_and_gets_next_version(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    assert_ok(await b.respond("dispute", 1, reason="too high"))
    ack = assert_ok(await a.propose("90"))
    assert ack["version"] == 2
    assert ack["state"]["status"] == "offer_pending"


# ---------------------------------------------------------------- respond


async def test_respond_accept_settles_room(shared_server, bots):
    a, b = await bots.pair(shared_server, currency="EUR")
    assert_ok(await a.propose("1250.5"))
    ack = await b.respond("accept", 1)
    assert_ok(ack, {"ok", "state"})
    st = ack["state"]
    assert st["status"] == "settled"
    assert st["seq"] == 4
    s = st["settlement"]
    assert s["amount"] == "1250.50" and s["currency"] == "EUR" and s["version"] == 1
    events = await b.all_events()
    accepted = events[-1]
    assert accepted["type"] == "accepted"
    assert accepted["party"] == "B"
    assert accepted["version"] == 1 and accepted["amount"] == "1250.50"
    assert s["settled_at"] == accepted["at"]
    assert s["receipt_id"] == accepted["hash"]
    snap = await a.wait_state_seq(4)
    assert snap["status"] == "settled"


async def test_respond_dispute_with_reason(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    ack = assert_ok(await b.respond("dispute", 1, reason="too high"))
    st = ack["state"]
    assert st["status"] == "disputed"
    lr = st["last_response"]
    assert lr["decision"] == "dispute" and lr["version"] == 1 and lr["reason"] == "too high"
    assert AT_RE.match(lr["at"])
    assert st["offer"]["version"] == 1
    ev = (await b.all_events())[-1]
    assert ev["type"] == "disputed" and ev["version"] == 1 and ev["reason"] == "too high"
    assert ev["party"] == "B"


async def test_respond_dispute_without_reason_stores_null(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    ack = assert_ok(await b.respond("dispute", 1))
    assert ack["state"]["last_response"]["reason"] is None
    ev = (await b.all_events())[-1]
    assert ev["reason"] is None


async def test_respond_dispute_with_null_reason_means_absent(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    ack = assert_ok(await b.respond("dispute", 1, reason=None))
    assert ack["state"]["last_response"]["reason"] is None


async def test_respond_dispute_with_empty_reason_is_stored_as_given(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    ack = assert_ok(await b.respond("dispute", 1, reason=""))
    assert ack["state"]["last_response"]["reason"] == ""


@pytest.mark.parametrize(
    "reason", ["a" * 500, "😀" * 500, "é" * 500, "<b>&amp;</b>" * 41 + "x" * 8]
)
async def test_respond_reason_of_500_code_points_is_accepted_as_given(shared_server, bots, reason):
    assert len(reason) == 500
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    ack = assert_ok(await b.respond("dispute", 1, reason=reason))
    assert ack["state"]["last_response"]["reason"] == reason
    ev = (await b.all_events())[-1]
    assert ev["reason"] == reason


@pytest.mark.parametrize("reason", ["a" * 501, "😀" * 501, "e\u0301" * 250 + "x"])
async def test_respond_reason_over_500_code_points_is_bad_request(shared_server, bots, reason):
    assert len(reason) == 501
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    ack = assert_error(await b.respond("dispute", 1, reason=reason), "bad_request", seated=True)
    assert ack["state"]["status"] == "offer_pending"


@pytest.mark.parametrize("reason", ["", "ok", " "])
async def test_respond_accept_with_reason_is_bad_request(shared_server, bots, reason):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    ack = assert_error(await b.respond("accept", 1, reason=reason), "bad_request", seated=True)
    assert ack["state"]["status"] == "offer_pending"


async def test_respond_accept_with_null_reason_is_accepted(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    ack = assert_ok(await b.respond("accept", 1, reason=None))
    assert ack["state"]["status"] == "settled"


@pytest.mark.parametrize("version", [True, 1.0, "1", None, [1], 1.5])
async def test_respond_version_not_a_json_integer_is_bad_request(shared_server, bots, version):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    assert_error(await b.respond("accept", version), "bad_request", seated=True)


async def test_respond_missing_version_or_decision_is_bad_request(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    assert_error(await b.call("respond", {"decision": "accept"}), "bad_request", seated=True)
    assert_error(await b.call("respond", {"version": 1}), "bad_request", seated=True)


@pytest.mark.parametrize("decision", ["ACCEPT", "Accept", "reject", "", 1, None])
async def test_respond_bad_decision_is_bad_request(shared_server, bots, decision):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    assert_error(await b.respond(decision, 1), "bad_request", seated=True)


@pytest.mark.parametrize("version", [0, 2, 99, -1, 2**63, 10**30])
async def test_respond_to_version_other_than_current_is_stale_offer(shared_server, bots, version):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    ack = assert_error(await b.respond("accept", version), "stale_offer", seated=True)
    st = ack["state"]
    assert st["status"] == "offer_pending"
    assert st["offer"]["version"] == 1 and st["offer"]["amount"] == "100.00"
    assert st["seq"] == 3


async def test_respond_to_superseded_version_is_stale_offer_and_changes_nothing(
    shared_server, bots
):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    ack2 = assert_ok(await a.propose("120"))
    seq = ack2["state"]["seq"]
    for decision in ("accept", "dispute"):
        ack = assert_error(await b.respond(decision, 1), "stale_offer", seated=True)
        assert ack["state"]["offer"]["version"] == 2
        assert ack["state"]["offer"]["amount"] == "120.00"
        assert ack["state"]["seq"] == seq
        assert ack["state"]["status"] == "offer_pending"
    events = await b.all_events()
    assert events[-1]["seq"] == seq
    assert [e["type"] for e in events].count("accepted") == 0


async def test_respond_before_any_offer_is_no_offer(shared_server, bots):
    a, b = await bots.pair(shared_server)
    ack = assert_error(await b.respond("accept", 1), "no_offer", seated=True)
    assert ack["state"]["status"] == "awaiting_offer"


async def test_respond_again_after_dispute_is_already_responded(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    assert_ok(await b.respond("dispute", 1))
    ack = assert_error(
        await b.respond("dispute", 1, reason="again"), "already_responded", seated=True
    )
    assert ack["state"]["status"] == "disputed"
    assert_error(await b.respond("accept", 1), "already_responded", seated=True)
    # after a new version B may answer again
    assert_ok(await a.propose("90"))
    assert_ok(await b.respond("accept", 2))


async def test_respond_after_dispute_with_other_version_is_stale_offer(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    assert_ok(await b.respond("dispute", 1))
    assert_error(await b.respond("accept", 2), "stale_offer", seated=True)


async def test_respond_by_a_is_wrong_party(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    assert_error(await a.respond("accept", 1), "wrong_party", seated=True)


async def test_respond_by_a_without_offer_is_wrong_party_before_no_offer(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_error(await a.respond("accept", 1), "wrong_party", seated=True)


async def test_respond_by_unseated_socket_is_not_seated(shared_server, bots):
    x = await bots(shared_server)
    assert_error(await x.respond("accept", 1), "not_seated", seated=False)


async def test_respond_bad_version_type_by_unseated_is_bad_request_before_not_seated(
    shared_server, bots
):
    x = await bots(shared_server)
    assert_error(await x.respond("accept", True), "bad_request", seated=False)


# ---------------------------------------------------------------- settled


async def _settled_pair(shared_server, bots):
    a, b = await bots.pair(shared_server)
    assert_ok(await a.propose("100"))
    ack = assert_ok(await b.respond("accept", 1))
    return a, b, ack["state"]["seq"]


async def test_propose_after_accept_is_settled(shared_server, bots):
    a, b, seq = await _settled_pair(shared_server, bots)
    ack = assert_error(await a.propose("200"), "settled", seated=True)
    assert ack["state"]["status"] == "settled" and ack["state"]["seq"] == seq


async def test_respond_after_accept_is_settled(shared_server, bots):
    a, b, seq = await _settled_pair(shared_server, bots)
    assert_error(await b.respond("accept", 1), "settled", seated=True)
    assert_error(await b.respond("dispute", 1), "settled", seated=True)
    assert_error(await b.respond("accept", 7), "settled", seated=True)


async def test_settled_beats_invalid_amount(shared_server, bots):
    a, b, seq = await _settled_pair(shared_server, bots)
    for amount in ("abc", "-1", 12, None, "0"):
        assert_error(await a.propose(amount), "settled", seated=True)


async def test_bad_request_beats_settled(shared_server, bots):
    a, b, seq = await _settled_pair(shared_server, bots)
    assert_error(await a.call("propose", {}), "bad_request", seated=True)
    assert_error(await a.call("propose", {"amount": "1", "x": 1}), "bad_request", seated=True)
    assert_error(await b.respond("accept", True), "bad_request", seated=True)
    assert_error(await b.respond("accept", 1, reason="x"), "bad_request", seated=True)


async def test_wrong_party_beats_settled(shared_server, bots):
    a, b, seq = await _settled_pair(shared_server, bots)
    assert_error(await b.propose("100"), "wrong_party", seated=True)
    assert_error(await a.respond("accept", 1), "wrong_party", seated=True)


# ---------------------------------------------------------------- currencies


@pytest.mark.parametrize(
    "currency",
    ["usd", "Usd", "XAU", "XXX", "XTS", "XDR", "DEM", "FRF", "ABC", "", "US", "USDD", " USD"],
)
async def test_create_with_invalid_currency_is_invalid_currency(shared_server, bots, currency):
    x = await bots(shared_server)
    assert_error(
        await x.call("create", {"party": "A", "currency": currency, "request_id": rid()}),
        "invalid_currency",
        seated=False,
    )
    # unseated after the refusal
    assert_error(await x.history(), "not_seated", seated=False)


@pytest.mark.parametrize(
    "currency", ["USD", "EUR", "JPY", "KWD", "CLF", "IQD", "ISK", "GBP", "CHF"]
)
async def test_create_with_active_currency_is_accepted(shared_server, bots, currency):
    x = await bots(shared_server)
    ack = await x.create("A", currency)
    assert ack["state"]["currency"] == currency
    events = await x.all_events()
    assert events[0]["type"] == "created" and events[0]["currency"] == currency
