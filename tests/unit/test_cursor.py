"""The event log's cursor: parsed strictly, printed back the same, never moving back."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.cursor import Cursor, FleetCursor


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


@given(
    st.dictionaries(
        st.from_regex(r"[a-z0-9][a-z0-9-]{0,8}", fullmatch=True), st.integers(0, 10**18 - 1)
    )
)
def test_a_fleet_cursor_reads_back_what_it_prints(positions: dict[str, int]) -> None:
    cursor = FleetCursor(tuple(sorted(positions.items())))
    assert FleetCursor.parse(str(cursor)) == cursor


def test_a_fleet_cursor_moves_each_node_forward_only() -> None:
    c = FleetCursor().after("bg-us1", 4).after("bg-eu1", 7)
    assert str(c) == "bg-eu1:7,bg-us1:4"
    assert c.after("bg-eu1", 3) == c
    assert str(c.after("bg-us1", 9)) == "bg-eu1:7,bg-us1:9"
    assert FleetCursor.parse(" ") == FleetCursor()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("12", "one node's cursor"),
        ("bg-eu1:12,bg-eu1:13", "twice"),
        ("BG:1", "not NODE:SEQ"),
        ("bg-eu1:-1", "not NODE:SEQ"),
        ("bg-eu1", "not NODE:SEQ"),
        ("a:1,,b:2", "not NODE:SEQ"),
    ],
)
def test_what_is_not_a_fleet_cursor_is_refused_clearly(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FleetCursor.parse(text)
