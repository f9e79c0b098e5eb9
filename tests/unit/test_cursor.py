"""The event log's cursor: parsed strictly, printed back the same, never moving back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.cursor import Cursor


@given(st.integers(min_value=0, max_value=10**18 - 1))
def test_a_cursor_reads_back_what_it_prints(seq: int) -> None:
    assert Cursor.parse(str(Cursor(seq))) == Cursor(seq)


def test_after_only_moves_forward() -> None:
    assert Cursor(5).after(9) == Cursor(9)
    assert Cursor(9).after(5) == Cursor(9)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bg-eu1:12,bg-us1:40", "fleet cursor"),
        ("-1", "not a cursor"),
        ("12abc", "not a cursor"),
        ("", "not a cursor"),
        ("1" * 19, "not a cursor"),
    ],
)
def test_what_is_not_a_cursor_is_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Cursor.parse(text)
