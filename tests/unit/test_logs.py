"""proxy.logs.LineBudget: lines a stranger can cause are bounded per kind and minute,
and the first line let through after a hold says how many were held."""

from __future__ import annotations

from proxy.logs import LineBudget, held_note


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_at_most_per_minute_lines_of_a_kind_then_the_held_count_is_told() -> None:
    clock = Clock()
    budget = LineBudget(per_minute=3, clock=clock)
    let = [budget.allow("failed") for _ in range(10)]
    assert let == [0, 0, 0, None, None, None, None, None, None, None]
    # Another kind has its own budget.
    assert budget.allow("throttled") == 0
    clock.now += 60
    assert budget.allow("failed") == 7  # the seven held back, told once
    assert budget.allow("failed") == 0


def test_a_clock_going_back_starts_a_new_minute() -> None:
    clock = Clock()
    budget = LineBudget(per_minute=1, clock=clock)
    assert budget.allow("x") == 0
    assert budget.allow("x") is None
    clock.now -= 5
    assert budget.allow("x") == 1


def test_held_note() -> None:
    assert held_note(0) == ""
    assert held_note(4) == " (4 similar lines not logged)"
