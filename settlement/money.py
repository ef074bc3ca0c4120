"""Amounts and currencies: the one place where money is parsed and normalised.

Amounts are parsed from the exact string the client sent into `decimal.Decimal`
and never pass through a binary float. Currency exponents are ISO 4217's, from
the maintained `iso4217` data package (not CLDR's, which differ for e.g. IQD).
"""

from __future__ import annotations

import re
from decimal import Decimal, localcontext
from functools import cache

from iso4217 import Currency

DEFAULT_CURRENCY = "USD"
DEFAULT_MAXIMUM = Decimal("1000000000000")
MAX_AMOUNT_CHARS = 40
_AMOUNT_RE = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class MoneyError(ValueError):
    """A refused amount or currency; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@cache
def _exponents() -> dict[str, int]:
    # Only currencies on ISO's current list with a defined minor unit:
    # withdrawn codes are absent from the data, and XAU/XXX have no exponent.
    return {c.code: c.exponent for c in Currency if c.exponent is not None}


def currency_exponent(code: object) -> int:
    """The ISO 4217 minor-unit exponent of an active currency code, or `invalid_currency`."""
    if isinstance(code, str):
        exponent = _exponents().get(code)
        if exponent is not None:
            return exponent
    shown = code if isinstance(code, str) else repr(code)
    raise MoneyError(
        "invalid_currency",
        f"{shown!s:.20} is not an active ISO 4217 currency code with a minor unit "
        "(use upper case, e.g. USD, EUR, JPY).",
    )


def known_currencies() -> list[str]:
    """Every accepted currency code, sorted."""
    return sorted(_exponents())


def parse_amount(raw: object, currency: str, maximum: Decimal = DEFAULT_MAXIMUM) -> Decimal:
    """Parse a protocol amount string exactly, or raise `MoneyError('invalid_amount')`.

    Accepts ASCII digits with an optional fraction (`"1250"`, `"1250.50"`); the
    number of fraction digits as written may not exceed the currency's exponent.
    """
    if not isinstance(raw, str):
        raise MoneyError(
            "invalid_amount", 'The amount must be a string of digits, such as "1250.00".'
        )
    if len(raw) > MAX_AMOUNT_CHARS:
        raise MoneyError(
            "invalid_amount", f"The amount is longer than {MAX_AMOUNT_CHARS} characters."
        )
    # fullmatch with an explicit ASCII class: no signs, exponents, separators, spaces,
    # non-ASCII digits, "NaN" or "Infinity" get through.
    if not _AMOUNT_RE.fullmatch(raw):
        raise MoneyError(
            "invalid_amount",
            "The amount must be plain digits with an optional decimal point, "
            'such as "1250" or "1250.50" (no signs, spaces or separators).',
        )
    exponent = currency_exponent(currency)
    fraction = raw.partition(".")[2]
    if len(fraction) > exponent:
        if exponent == 0:
            detail = f"{currency} amounts have no decimal places"
        else:
            detail = f"{currency} amounts have at most {exponent} decimal places"
        raise MoneyError("invalid_amount", f"Too many decimal places: {detail}.")
    value = Decimal(raw)
    if value == 0:
        raise MoneyError("invalid_amount", "The amount must be greater than zero.")
    if value > maximum:
        raise MoneyError(
            "invalid_amount", f"The amount is above the maximum of {format_plain(maximum)}."
        )
    return value


def normalise(value: Decimal, currency: str) -> str:
    """The protocol's string form of an amount: exactly the currency's minor unit."""
    exponent = currency_exponent(currency)
    quantum = Decimal(1).scaleb(-exponent)
    # Enough digits for any 40-character amount (the default context has 28: a
    # configured maximum above 10**28 would make quantize raise).
    with localcontext() as context:
        context.prec = MAX_AMOUNT_CHARS + 8
        return format_plain(value.quantize(quantum))


def format_plain(value: Decimal) -> str:
    """A Decimal as plain digits, never in exponent notation."""
    return f"{value:f}"
