"""The store's bulk reads for ``report`` (period_sessions, period_summary,
period_recordings) against what the report computed before them, in Python, from
``list_sessions`` and ``events_for_sessions``: on a small store with awkward data
(live sessions, a clock that went back, fractional milliseconds, flags, reviews,
prunes, sessions outside the period). Every check runs on the SQLite store (a real
file) and on the in-memory one."""

from __future__ import annotations

import dataclasses
import math
import random
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from proxy.audit.facts import INTERESTING_TYPES, facts_of_rows, session_facts
from proxy.audit.report import summary_doc
from proxy.core.chaincheck import ALERT_TYPES, FLAG_TYPES, PRUNED
from proxy.store.base import NewEvent, SessionFilter, Store
from proxy.store.factory import CREATE, open_store_at
from proxy.store.memory import MemoryStore
from tests.eventdata import fill

T0 = 1_800_000_000.0
DAY = 86400.0


async def _memory(tmp_path: Path) -> Store:
    whole: Store = MemoryStore()
    return whole


STORES = {
    "sqlite": lambda tmp_path: open_store_at(tmp_path / "audit.db", CREATE),
    "memory": _memory,
}


@pytest.fixture(params=sorted(STORES))
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _store(tmp_path: Path, kind: str, n: int = 60, seed: int = 6) -> Store:
    rng = random.Random(seed)
    store = await STORES[kind](tmp_path)
    events: list[NewEvent] = []
    for k in range(n):
        t = T0 + k * 0.37 * DAY + rng.choice([0.0, 0.0005, 0.123456, 0.9995])
        sid = f"s{k:04d}"
        events.append(
            NewEvent(
                "session_start",
                t,
                sid,
                None,
                {
                    "person": rng.choice(["alice", "bob", "carol", "é|`x`"]),
                    "credential_id": "C1",
                    "source": "127.0.0.1",
                    "client_version": "SSH-2.0-test",
                    "target": rng.choice(["db01", "web01", "db02"]),
                    "login": "root",
                    "justification": f"INC-{k}",
                    "deadline": t + 3600,
                },
            )
        )
        for ch in range(1, 1 + k % 3):
            events.append(
                NewEvent(
                    "channel_start",
                    t + ch,
                    sid,
                    ch,
                    {"kind": "exec", "command": f"cmd {k}", "pty": False, "term": None,
                     "recording": f"/nowhere/{sid}/{ch}.cast"},
                )
            )  # fmt: skip
            events.append(
                NewEvent(
                    "channel_end",
                    t + ch + 1,
                    sid,
                    ch,
                    {"exit_status": 0, "exit_signal": None, "recording_sha256": "ab" * 32,
                     "recording_bytes": 10},
                )
            )  # fmt: skip
        events.append(NewEvent("command", t + 1, sid, 1, {"text": f"ls {k}", "offset": 0.5}))
        events.append(NewEvent("file_open", t + 2, sid, 1, {"path": "/etc/passwd"}))
        events.append(NewEvent("request_refused", t + 1, sid, None, {"request": "x11"}))
        if k % 4 == 0:
            events.append(NewEvent("alert", t, sid, None, {"rule": "session_start"}))
        if k % 5 == 1:
            events.append(NewEvent("flag", t + 3, sid, None, {"rule": "quiet_hours"}))
            events.append(NewEvent("flag", t + 4, sid, None, {"rule": "again"}))
        if k % 6 == 2:
            events.append(NewEvent("review", t + 9, sid, None, {"by": "aud", "note": "ok"}))
        if k % 7 == 3 and k % 3:
            events.append(NewEvent(PRUNED, t + 8, sid, 1, {"path": "x"}))
            events.append(NewEvent(PRUNED, t + 9, sid, 1, {"path": "x"}))
        if k % 9 == 8:
            continue  # still live
        # Whole seconds, fractions of a millisecond, and now and then a clock that
        # went back (an end before the start).
        duration = rng.choice([60.0, 600.1234567, 3599.9996, 0.0004, -5.0, 7200.5])
        reason = rng.choice(["client_exit", "time_limit", "killed"])
        events.append(NewEvent("session_end", t + duration, sid, None, {"reason": reason}))
    events.append(NewEvent("alert", T0 + 5 * DAY, None, None, {"rule": "failed_logins"}))
    await store.append([dataclasses.replace(e, data=fill(e.type, e.data)) for e in events])
    return store


def _old_summary(facts: list[Any], alerts: list[Any], flags: list[Any]) -> dict[str, Any]:
    """report.summary() as it was, over every session's facts, in Python."""
    people: dict[str, dict[str, Any]] = {}
    targets: dict[str, dict[str, Any]] = {}
    durations: list[float] = []
    for f in facts:
        s = f.session
        d = None if s.ended_at is None else s.ended_at - s.started_at
        if d is not None:
            durations.append(d)
        for table, key in ((people, s.person), (targets, s.target)):
            entry = table.setdefault(key, {"sessions": 0, "total_seconds": 0.0, "longest": 0.0})
            entry["sessions"] += 1
            if d is not None:
                entry["total_seconds"] = round(entry["total_seconds"] + d, 3)
                entry["longest"] = round(max(entry["longest"], d), 3)
    reasons = Counter(f.session.end_reason or "live" for f in facts)
    checks = Counter(v for f in facts for v in f.recording_checks.values())
    alert_rules = Counter(str(e.data.get("rule") or e.data.get("kind") or e.type) for e in alerts)
    return {
        "sessions": len(facts),
        "people": len(people),
        "by_person": dict(sorted(people.items())),
        "by_target": dict(sorted(targets.items())),
        "durations": {
            "total": round(sum(durations), 3),
            "mean": round(statistics.fmean(durations), 3) if durations else None,
            "median": round(statistics.median(durations), 3) if durations else None,
            "longest": round(max(durations), 3) if durations else None,
        },
        "end_reasons": dict(sorted(reasons.items())),
        "alerts": len(alerts),
        "alerts_by_rule": dict(sorted(alert_rules.items())),
        "flags": len(flags),
        "flagged_sessions": sum(1 for f in facts if f.flags),
        "reviewed_sessions": sum(1 for f in facts if f.reviews),
        "recordings": dict(sorted(checks.items())),
    }


PERIODS = [
    (None, None),
    (T0 + 3 * DAY, None),
    (T0 + 3 * DAY, T0 + 12 * DAY),
    (T0 + 100 * DAY, None),  # empty
]


@pytest.mark.parametrize(("since", "until"), PERIODS)
async def test_summary_aggregates_match_the_python_computation(
    tmp_path: Path, kind: str, since: float | None, until: float | None
) -> None:
    store = await _store(tmp_path, kind)
    try:
        rows = await store.list_sessions(SessionFilter(since=since, until=until))
        events = await store.events_for_sessions([r.id for r in rows], INTERESTING_TYPES)
        facts = [session_facts(r, [e for e in events if e.session_id == r.id]) for r in rows]
        alerts = await store.events_between(ALERT_TYPES, since, until)
        flags = await store.events_between(FLAG_TYPES, since, until)
        old = _old_summary(facts, alerts, flags)
        new = summary_doc(await store.period_summary(since, until), alerts, flags, {})
    finally:
        await store.close()
    # Per person and target, the old code rounded the running total at every session
    # (drifting by up to half a millisecond each); the store sums exactly and rounds
    # once. Everything else is the same value.
    for key in ("by_person", "by_target"):
        assert new[key].keys() == old[key].keys()
        group: str
        for group, entry in new[key].items():
            was = old[key][group]
            assert entry["sessions"] == was["sessions"]
            assert entry["longest"] == was["longest"]
            exact = math.fsum(
                f.session.ended_at - f.session.started_at
                for f in facts
                if f.session.ended_at is not None
                and (f.session.person if key == "by_person" else f.session.target) == group
            )
            assert entry["total_seconds"] == pytest.approx(round(exact, 3), abs=1e-9)
            assert abs(entry["total_seconds"] - was["total_seconds"]) <= 0.0005 * was["sessions"]
            assert type(entry["total_seconds"]) is type(was["total_seconds"])
        old[key] = new[key] = None
    assert new["durations"]["mean"] == pytest.approx(old["durations"]["mean"], abs=1e-3)
    new["durations"]["mean"] = old["durations"]["mean"]
    assert new == old
    assert type(new["durations"]["total"]) is type(old["durations"]["total"])


async def test_period_sessions_are_the_sessions_with_their_events(
    tmp_path: Path, kind: str
) -> None:
    store = await _store(tmp_path, kind)
    try:
        for since, until in PERIODS:
            rows = await store.list_sessions(SessionFilter(since=since, until=until))
            events = await store.events_for_sessions([r.id for r in rows], INTERESTING_TYPES)
            got = []
            async for batch in store.period_sessions(since, until, INTERESTING_TYPES, batch=7):
                assert 0 < len(batch) <= 7
                got += batch
            assert [s for s, _ in got] == rows  # channels included, in order
            for (s, evs), r in zip(got, rows, strict=True):
                mine = [e for e in events if e.session_id == r.id]
                assert [e[0] for e in evs] == [e.seq for e in mine]
                assert facts_of_rows(s, evs) == session_facts(r, mine)
    finally:
        await store.close()


async def test_period_recordings_carry_the_latest_prune(tmp_path: Path, kind: str) -> None:
    store = await _store(tmp_path, kind)
    try:
        since = T0 + 3 * DAY
        rows = await store.list_sessions(SessionFilter(since=since))
        events = await store.events_for_sessions([r.id for r in rows], INTERESTING_TYPES)
        expected = []
        for r in rows:
            pruned = session_facts(r, [e for e in events if e.session_id == r.id]).pruned
            expected += [(c, pruned.get(c.n)) for c in r.channels]
        got = await store.period_recordings(since, None)
    finally:
        await store.close()
    assert got == expected
    assert any(seq is not None for _, seq in got)


async def test_list_sessions_with_and_without_channels(tmp_path: Path, kind: str) -> None:
    store = await _store(tmp_path, kind)
    try:
        every = await store.list_sessions(SessionFilter())
        assert {len(s.channels) for s in every} == {0, 1, 2}
        assert [c.n for s in every for c in s.channels if len(s.channels) == 2][:2] == [1, 2]
        bare = await store.list_sessions(SessionFilter(), channels=False)
        assert bare == [dataclasses.replace(s, channels=()) for s in every]
        assert await store.list_sessions(SessionFilter(limit=5)) == every[:5]
        live = await store.list_sessions(SessionFilter(live=True))
        assert live == [s for s in every if s.ended_at is None]
        assert await store.get_session(every[4].id) == every[4]
        assert await store.get_session("nosuch") is None
    finally:
        await store.close()
