"""Failure counting and delays across connections (proxy.core.throttle)."""

from __future__ import annotations

from proxy.core.throttle import FailureCounter, ThrottleRule

RULE = ThrottleRule(count=3, window=60.0, base_delay=1.0, max_delay=10.0)


def test_no_delay_below_the_threshold() -> None:
    c = FailureCounter(RULE)
    assert c.delay("1.2.3.4", 0.0) == 0.0
    assert c.record("1.2.3.4", 0.0) == 1
    assert c.record("1.2.3.4", 1.0) == 2
    assert c.delay("1.2.3.4", 2.0) == 0.0


def test_delay_grows_past_the_threshold_and_is_capped() -> None:
    c = FailureCounter(RULE)
    delays = []
    for i in range(8):
        c.record("k", float(i))
        delays.append(c.delay("k", float(i)))
    assert delays == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_the_window_forgets_and_never_locks_out() -> None:
    c = FailureCounter(RULE)
    for i in range(20):
        c.record("k", float(i))
    assert c.delay("k", 19.0) == 10.0  # slowed, never refused
    assert c.count("k", 79.5) == 0  # everything older than the window is gone
    assert c.delay("k", 79.5) == 0.0


def test_keys_are_independent() -> None:
    c = FailureCounter(RULE)
    for i in range(5):
        c.record("attacker", float(i))
    assert c.delay("attacker", 5.0) > 0
    assert c.delay("alice", 5.0) == 0.0


def test_memory_is_bounded_under_a_flood_of_keys() -> None:
    c = FailureCounter(RULE, max_keys=100)
    for i in range(10_000):
        c.record(f"10.0.{i // 256}.{i % 256}", 1.0)
    assert len(c._seen) == 100
    for _ in range(10_000):
        c.record("one", 2.0)
    assert c.count("one", 2.0) <= RULE.count * 4 + 16
    assert c.delay("one", 2.0) == 10.0
