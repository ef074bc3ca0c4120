"""Connection ids as people type and paste them."""

from __future__ import annotations

import pytest

from settlement.ids import new_connection_id, normalise_connection_id


@pytest.mark.parametrize(
    "typed",
    [
        "K7QF-3MZP-XW2D",
        "k7qf3mzpxw2d",
        " K7QF-3MZP-XW2D",
        "K7QF-3MZP-XW2D \n",
        "K7QF 3MZP XW2D",
        "k7qf - 3mzp - xw2d",
        "\tK7QF\u00a03MZP\u2003XW2D",
    ],
)
def test_spaces_are_ignored_like_hyphens(typed: str) -> None:
    assert normalise_connection_id(typed) == "K7QF-3MZP-XW2D"


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "   ",
        "K7QF",
        "K7QF-3MZP-XW2",
        "K7QF-3MZP-XW2DX",
        "K7QF-3MZP-XWU2",
        "K7QF_3MZP_XW2D",
        None,
        12,
    ],
)
def test_anything_else_is_no_id(typed: object) -> None:
    assert normalise_connection_id(typed) is None


def test_a_very_long_paste_is_refused_before_any_work() -> None:
    assert normalise_connection_id("K7QF-3MZP-XW2D" + " " * 100) is None


def test_new_ids_are_their_own_canonical_form() -> None:
    for _ in range(50):
        cid = new_connection_id()
        assert normalise_connection_id(cid) == cid
