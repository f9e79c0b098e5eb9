"""Hash chain links and session ids."""

from __future__ import annotations

import pytest

from proxy.core import chain, ids


def test_canonical_is_stable_and_compact() -> None:
    assert chain.canonical({"b": 1, "a": "é\n"}) == '{"a":"é\\n","b":1}'


def test_link_binds_every_field_and_the_previous_hash() -> None:
    base = ("0" * 64, 1, 10.0, "session_start", "s1", None, "{}")
    h = chain.link(*base)
    assert len(h) == 64
    assert chain.link(*base) == h
    changes: list[object] = ["1" * 64, 2, 10.5, "session_end", "s2", 1, '{"a":1}']
    for i, changed in enumerate(changes):
        variant: list[object] = list(base)
        variant[i] = changed
        assert chain.link(*variant) != h, f"field {i} is not bound"  # type: ignore[arg-type]


def test_session_ids_sort_by_time_and_are_short() -> None:
    a = ids.session_id(1_700_000_000.000, b"\xff\xff")
    b = ids.session_id(1_700_000_000.001, b"\x00\x00")
    c = ids.session_id(1_800_000_000.0, b"\x12\x34")
    assert len(a) == 12
    assert a < b < c
    assert all(ids.is_session_id(x) for x in (a, b, c))
    assert ids.session_id(1_700_000_000.0, b"\x00\x01") != ids.session_id(
        1_700_000_000.0, b"\x00\x02"
    )


def test_session_id_validation() -> None:
    assert not ids.is_session_id("1m8d55d61gd")
    assert not ids.is_session_id("1m8d55d61gdI")
    assert not ids.is_session_id("../etc/passw")
    with pytest.raises(ValueError, match="random bytes"):
        ids.session_id(1.0, b"\x00")
