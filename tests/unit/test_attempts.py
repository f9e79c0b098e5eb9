"""Failed attempts as ``breakglass attempts`` and the report count them: single events,
and a flood summarised into one event counting as the attempts it stands for."""

from __future__ import annotations

from typing import Any

from proxy.audit.attempts import (
    NOT_ITEMISED,
    AttemptFilter,
    attempts,
    attempts_table_lines,
    summary,
)
from proxy.store.base import StoredEvent


def event(seq: int, type_: str, data: dict[str, Any]) -> StoredEvent:
    return StoredEvent(seq, 1796300000.0 + seq, type_, None, None, data, "0" * 64, "1" * 64)


SINGLE = event(
    1,
    "login_failed",
    {"reason": "wrong_code", "person": "alice", "source": "192.0.2.7", "username": "a@db01"},
)
FLOOD = event(
    2,
    "login_failures_summarised",
    {
        "network": "198.51.100.0/24",
        "first": 1796300001.0,
        "last": 1796300059.0,
        "count": 130,
        "attempts": [
            ["198.51.100.9", "bob", "unknown_code", 100],
            ["198.51.100.10", None, "bad_username", 20],
            ["malformed"],
        ],
    },
)


def test_a_summary_counts_as_the_attempts_it_stands_for() -> None:
    found = attempts([SINGLE, FLOOD], AttemptFilter())
    assert [(a.source, a.person, a.reason, a.count) for a in found] == [
        ("192.0.2.7", "alice", "wrong_code", 1),
        ("198.51.100.9", "bob", "unknown_code", 100),
        ("198.51.100.10", None, "bad_username", 20),
        ("198.51.100.0/24", None, NOT_ITEMISED, 10),
    ]
    counted = summary(found)
    assert counted["total"] == 131
    assert counted["by_person"] == {"bob": 100, "-": 30, "alice": 1}
    assert counted["by_source"]["198.51.100.0/24"] == 10


def test_filters_take_networks_and_summaries() -> None:
    inside = attempts([SINGLE, FLOOD], AttemptFilter(source="198.51.100.0/24"))
    assert sum(a.count for a in inside) == 130
    assert attempts([SINGLE, FLOOD], AttemptFilter(source="192.0.2.7")) == attempts(
        [SINGLE], AttemptFilter()
    )
    assert [a.count for a in attempts([FLOOD], AttemptFilter(person="BOB"))] == [100]
    assert attempts([SINGLE, FLOOD], AttemptFilter(reason="nope")) == []


def test_the_table_escapes_what_was_typed() -> None:
    hostile = event(3, "login_failed", {"reason": "bad_username", "username": "x\x1b[2Jy"})
    lines = list(attempts_table_lines(attempts([hostile], AttemptFilter())))
    assert "\x1b" not in "\n".join(lines)
    assert "1 failed attempt(s)" in lines
    assert list(attempts_table_lines([]))[-1] == "(no failed attempts)"
