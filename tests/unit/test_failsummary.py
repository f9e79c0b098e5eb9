"""Which failed logins are written singly, and what the summaries of the rest hold."""

from __future__ import annotations

from proxy.config.model import AlertRules, RateRule
from proxy.core import anomaly
from proxy.core.failsummary import Attempt, FailureSummariser, SummaryLimits, network_of
from tests.eventdata import typed

T0 = 1_800_000_000.0  # a minute boundary


def attempt(t: float, source: str = "10.1.2.3", person: str | None = "alice", **kw: str) -> Attempt:
    return Attempt(t, source, person, kw.get("reason", "wrong_code"), kw.get("code_id", "AAAAAA"))


def test_networks() -> None:
    assert network_of("10.1.2.3") == "10.1.2.0/24"
    assert network_of("::ffff:10.1.2.3") == "10.1.2.0/24"
    assert network_of("2001:db8:1:2:3:4:5:6") == "2001:db8:1:2::/64"
    assert network_of("?") == "?"


def test_past_the_per_source_rate_failures_are_summarised_per_network_and_minute() -> None:
    s = FailureSummariser(SummaryLimits(per_source=3, total=100))
    singles = [s.offer(attempt(T0 + i)) for i in range(10)]
    assert singles == [True] * 3 + [False] * 7
    assert s.offer(attempt(T0 + 11, source="10.1.2.4"))  # another source has its own share
    assert s.offer(attempt(T0 + 30)) is False
    assert s.offer(attempt(T0 + 61))  # the window slid past the first singles
    assert s.due(T0 + 59) == []
    [first] = s.due(T0 + 60)
    assert first["network"] == "10.1.2.0/24"
    assert (first["first"], first["last"], first["count"]) == (T0 + 3, T0 + 30, 8)
    assert first["reasons"] == {"wrong_code": 8}
    assert first["persons"] == [["alice", 8]]
    assert first["credential_ids"] == [["AAAAAA", 8]]
    assert first["attempts"] == [["10.1.2.3", "alice", "wrong_code", 8]]
    assert s.due(T0 + 1000) == []


def test_the_global_cap_summarises_many_sources_too() -> None:
    s = FailureSummariser(SummaryLimits(per_source=5, total=10))
    singles = sum(s.offer(attempt(T0 + i / 100, source=f"10.0.{i}.1")) for i in range(50))
    assert singles == 10
    assert sum(d["count"] for d in s.due(T0 + 60)) == 40


def test_verified_failures_are_never_summarised() -> None:
    s = FailureSummariser(SummaryLimits(per_source=1, total=1))
    assert all(s.offer(attempt(T0 + i), verified=True) for i in range(20))
    assert all(s.offer(attempt(T0 + i), verified=True, room=False) for i in range(20))
    assert s.summarised == 0


def test_summaries_are_bounded_whatever_the_flood() -> None:
    limits = SummaryLimits(per_source=0, total=0, max_networks=4, max_rows=8, top=3)
    s = FailureSummariser(limits)
    for i in range(5000):
        s.offer(attempt(T0 + i / 1000, source=f"10.{i % 50}.{i % 7}.{i % 13}", person=f"p{i}"))
    out = s.due(T0 + 60)
    assert len(out) == 5  # 4 networks, then everyone else as "*"
    assert [d["network"] for d in out].count("*") == 1
    assert sum(d["count"] for d in out) == 5000
    for d in out:
        assert len(d["attempts"]) <= 8
        assert len(d["persons"]) <= 3
        assert sum(r[3] for r in d["attempts"]) + d["unitemised"] == d["count"]


def test_held_summaries_merge_into_one_and_come_out_once() -> None:
    s = FailureSummariser(SummaryLimits(per_source=0, total=0))
    for minute in range(10):
        for i in range(5):
            s.offer(attempt(T0 + 60 * minute + i, source=f"10.{minute}.0.1"), room=False)
        s.hold(T0 + 60 * minute + 60)
    assert s.due(T0 + 10_000) == []
    held = s.release()
    assert held is not None
    assert (held["degraded"], held["count"]) == (True, 50)
    assert s.release() is None


def test_the_rate_rules_count_summarised_attempts_as_single_ones() -> None:
    rules = AlertRules(
        failed_logins_per_source=RateRule(count=10, window=600.0),
        failed_logins_per_person=RateRule(count=10, window=600.0),
    )
    singles = [anomaly.Failure(T0 + i, "10.1.2.3", "alice", "wrong_code") for i in range(4)]
    s = FailureSummariser(SummaryLimits(per_source=0, total=0))
    for i in range(5):
        s.offer(attempt(T0 + 10 + i))
    [summary] = s.due(T0 + 60)
    history = anomaly.History(failures=singles + anomaly.summary_failures(summary, T0 + 14))
    # 4 single + 5 summarised + this one = 10: both rules fire, as with 10 singles.
    fired = anomaly.evaluate(
        typed("login_failed", {"reason": "wrong_code", "source": "10.1.2.3", "person": "alice"}),
        rules,
        history,
        T0 + 20,
    )
    assert {f.rule for f in fired} == {"failed_logins_per_source", "failed_logins_per_person"}
    # And a summary itself fires the rules it completes.
    s.offer(attempt(T0 + 70))
    [late] = s.due(T0 + 200)
    history = anomaly.History(
        failures=[*singles, anomaly.Failure(T0 + 10, "10.1.2.3", "alice", "wrong_code", 5)]
    )
    fired = anomaly.evaluate(typed(anomaly.SUMMARY_EVENT, late), rules, history, T0 + 200)
    assert {f.rule for f in fired} == {"failed_logins_per_source", "failed_logins_per_person"}


def test_slots_full_alerts_at_most_once_per_quiet_period() -> None:
    data = typed(anomaly.SLOTS_FULL_EVENT, {"dropped": 3, "refused": 1})
    fired = anomaly.evaluate(data, AlertRules(), anomaly.History(), T0)
    assert [f.rule for f in fired] == ["at_capacity"]
    recent = anomaly.History(last_fired={("at_capacity", "unauthenticated"): T0 - 60})
    assert anomaly.evaluate(data, AlertRules(), recent, T0) == []
    later = T0 + anomaly.CAPACITY_QUIET
    assert anomaly.evaluate(data, AlertRules(), recent, later)
