"""RFC 8785 canonical JSON: the bytes every party hashes and signs.

The hash chain (`ledger.py`), the receipt signature, the party statements
(`consent.py`) and the pages' verifier all rest on these bytes being the same.
"""

from __future__ import annotations

from typing import Any

import orjson
import rfc8785

_SAFE_INT = 2**53 - 1


def _check_json_value(value: object, where: str) -> bool:
    """Refuse anything outside the protocol's value set before it reaches a hash.

    Booleans and floats would canonicalise fine, but they are not allowed in
    events, and letting one slip in would make a hash that other implementations
    (which follow the protocol) can never reproduce. Returns whether the value
    is in the domain where orjson's sorted output *is* RFC 8785 (ASCII keys,
    I-JSON safe integers).
    """
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, bool) or not isinstance(value, int | dict | list):
        raise TypeError(f"{where}: {type(value).__name__} is not allowed (str, int, null only)")
    if isinstance(value, int):
        return -_SAFE_INT <= value <= _SAFE_INT
    fast = True
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: object keys must be strings")
            fast = _check_json_value(item, f"{where}.{key}") and key.isascii() and fast
    else:
        for index, item in enumerate(value):
            fast = _check_json_value(item, f"{where}[{index}]") and fast
    return fast


def plain_json(value: object, max_int: int, *, bools: bool) -> bool:
    """Only str, null, ints within ±max_int, lists and objects with ASCII string
    keys (and bools if `bools`): the values where orjson's sorted output is the
    very bytes of RFC 8785 (max_int 2**53 - 1, no bools) or of the standard
    library's sorted json.dumps (max_int 2**63 - 1, bools). One pass, no paths:
    it runs for every event hashed and every command fingerprinted."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or item is None or (bools and kind is bool):
            continue
        if kind is int:
            if not -max_int <= item <= max_int:  # type: ignore[operator]
                return False
        elif kind is dict:
            for key, inner in item.items():  # type: ignore[attr-defined]
                if type(key) is not str or not key.isascii():
                    return False
                stack.append(inner)
        elif kind is list:
            stack.extend(item)  # type: ignore[arg-type]
        else:
            return False
    return True


def canonical_json(obj: Any) -> bytes:
    """RFC 8785 canonical JSON, so every party hashes and signs the very same bytes.

    For ASCII keys, safe integers, strings and null, orjson with sorted keys
    writes exactly RFC 8785's bytes (checked against the `rfc8785` package by a
    property test) at a fraction of the cost; anything else goes to `rfc8785`.
    Raises TypeError for values outside str/int/None/dict/list and ValueError
    (from rfc8785) for integers outside the I-JSON safe range or lone surrogates.
    """
    # The usual event takes one quick pass; anything else gets the full check,
    # which refuses what is not allowed, saying where.
    if plain_json(obj, _SAFE_INT, bools=False) or _check_json_value(obj, "value"):
        try:
            return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass  # e.g. a lone surrogate: let rfc8785 say what is wrong
    return rfc8785.dumps(obj)
