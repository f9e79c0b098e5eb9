"""Unauthenticated slots and argon2 turns: fair shares between sources."""

from __future__ import annotations

from proxy.core.fairqueue import FairQueue
from proxy.core.slots import SlotTable


def test_when_full_the_heaviest_sources_oldest_connection_makes_room() -> None:
    table = SlotTable(total=6, per_source=10)
    for i in range(4):
        assert table.admit("heavy", f"h{i}", now=float(i)).ok
    assert table.admit("light", "l0", now=0.5).ok  # older than most of heavy's
    assert table.admit("light", "l1", now=5.0).ok
    admission = table.admit("fresh", "f0", now=10.0)
    assert admission.ok
    assert admission.evict == "h0"  # not l0, although l0 is older than h1..h3
    assert (table.held_by("heavy"), table.held_by("light"), table.held_by("fresh")) == (3, 2, 1)
    assert len(table) == 6


def test_on_a_tie_the_source_with_the_oldest_connection_loses_it() -> None:
    table = SlotTable(total=4, per_source=10)
    table.admit("a", "a0", now=2.0)
    table.admit("a", "a1", now=3.0)
    table.admit("b", "b0", now=1.0)
    table.admit("b", "b1", now=4.0)
    assert table.admit("c", "c0", now=5.0).evict == "b0"


def test_the_per_source_share_refuses_and_release_gives_slots_back() -> None:
    table = SlotTable(total=100, per_source=2)
    assert table.admit("a", 1, 0.0).ok
    assert table.admit("a", 2, 0.0).ok
    refused = table.admit("a", 3, 0.0)
    assert (refused.ok, refused.refused, refused.evict) == (False, "per_source", None)
    assert table.release(1)
    assert not table.release(1)
    assert table.admit("a", 3, 0.0).ok
    assert len(table) == 2


def test_a_full_table_of_one_source_still_admits_a_newcomer() -> None:
    table = SlotTable(total=3, per_source=3)
    for i in range(3):
        table.admit("flood", i, float(i))
    admission = table.admit("fresh", "me", 9.0)
    assert (admission.ok, admission.evict) == (True, 0)


def test_argon2_turns_go_round_the_sources() -> None:
    queue: FairQueue[str] = FairQueue()
    for i in range(100):
        queue.push("flood", f"flood{i}")
    queue.push("fresh", "fresh0")
    order = [queue.pop() for _ in range(3)]
    assert order == ["flood0", "fresh0", "flood1"]  # one of the flood's at most
    assert len(queue) == 98
    while queue.pop() is not None:
        pass
    assert len(queue) == 0
