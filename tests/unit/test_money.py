"""The amount and currency rules of PROTOCOL.md, one refusal at a time."""

from decimal import Decimal

import pytest

from settlement import money


@pytest.mark.parametrize(
    ("raw", "currency", "expected"),
    [
        ("1250", "USD", "1250.00"),
        ("1250.5", "USD", "1250.50"),
        ("1250.50", "USD", "1250.50"),
        ("0012.5", "USD", "12.50"),
        ("1250", "JPY", "1250"),
        ("1.234", "KWD", "1.234"),
        ("1.2345", "CLF", "1.2345"),
        ("1.5", "IQD", "1.500"),
        ("1000000000000", "USD", "1000000000000.00"),
        ("0.01", "USD", "0.01"),
    ],
)
def test_amounts_are_normalised_to_the_minor_unit(raw: str, currency: str, expected: str) -> None:
    assert money.normalise(money.parse_amount(raw, currency), currency) == expected


@pytest.mark.parametrize(
    "raw",
    [
        1250,
        12.5,
        None,
        True,
        ["1"],
        {"a": 1},
        "",
        "-1",
        "+1",
        "1e3",
        "1E3",
        "1,250",
        "1 250",
        " 12",
        "12 ",
        ".5",
        "5.",
        "١٢",
        "１２",
        "NaN",
        "Infinity",
        "0",
        "0.00",
        "000",
        "1.500",
        "1000000000000.01",
        "1000000000001",
        "1" * 41,
        "0x10",
        "1_000",
    ],
)
def test_invalid_amounts_are_refused(raw: object) -> None:
    with pytest.raises(money.MoneyError) as err:
        money.parse_amount(raw, "USD")
    assert err.value.code == "invalid_amount"
    assert err.value.message


def test_forty_characters_are_counted_on_the_raw_string() -> None:
    assert money.parse_amount("0" * 36 + "1.00", "USD") == Decimal("1")  # exactly 40
    with pytest.raises(money.MoneyError):
        money.parse_amount("0" * 37 + "1.00", "USD")  # 41


def test_jpy_has_no_fraction_digits() -> None:
    with pytest.raises(money.MoneyError, match="no decimal places"):
        money.parse_amount("1250.0", "JPY")


def test_maximum_is_configurable_and_inclusive() -> None:
    assert money.parse_amount("500", "USD", maximum=Decimal(500)) == Decimal(500)
    with pytest.raises(money.MoneyError):
        money.parse_amount("500.01", "USD", maximum=Decimal(500))


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("USD", 2), ("JPY", 0), ("KWD", 3), ("CLF", 4), ("IQD", 3), ("ISK", 0), ("EUR", 2)],
)
def test_exponents_are_iso_4217s(code: str, exponent: int) -> None:
    assert money.currency_exponent(code) == exponent


@pytest.mark.parametrize("code", ["usd", "XAU", "XXX", "DEM", "ABC", "", 840, None, "USD "])
def test_unknown_withdrawn_and_unitless_currencies_are_refused(code: object) -> None:
    with pytest.raises(money.MoneyError) as err:
        money.currency_exponent(code)
    assert err.value.code == "invalid_currency"


def test_amounts_never_become_floats() -> None:
    value = money.parse_amount("0.10", "USD") + money.parse_amount("0.20", "USD")
    assert isinstance(value, Decimal)
    assert money.normalise(value, "USD") == "0.30"
