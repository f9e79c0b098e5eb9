"""The alert rules in proxy.core.anomaly, with an injected clock (no sleeps)."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping

import pytest

from proxy.config.model import AlertRules, QuietHours, RateRule
from proxy.core import anomaly
from proxy.core.anomaly import Failure, Firing, History
from proxy.core.events import Event, decode
from tests.eventdata import fill

T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
HOUR = 3600.0
OFF = AlertRules(
    max_sessions_per_person=None,
    max_sessions_total=None,
    failed_logins_per_source=None,
    failed_logins_per_person=None,
)


def rules(
    *,
    max_sessions_per_person: RateRule | None = None,
    max_sessions_total: RateRule | None = None,
    failed_logins_per_source: RateRule | None = None,
    failed_logins_per_person: RateRule | None = None,
    quiet_hours: QuietHours | None = None,
) -> AlertRules:
    """Only the rules named are on."""
    return AlertRules(
        max_sessions_per_person=max_sessions_per_person,
        max_sessions_total=max_sessions_total,
        failed_logins_per_source=failed_logins_per_source,
        failed_logins_per_person=failed_logins_per_person,
        quiet_hours=quiet_hours,
    )


def names(firings: list[Firing]) -> list[str]:
    return [f.rule for f in firings]


def start(r: AlertRules, h: History, person: str = "alice", now: float = T0) -> list[str]:
    return names(anomaly.on_session_start(r, h, person=person, now=now))


def fail(
    r: AlertRules,
    h: History,
    *,
    reason: str = "wrong_code",
    source: str = "10.0.0.1",
    person: str | None = "alice",
    now: float = T0,
) -> list[str]:
    return names(
        anomaly.on_login_failure(r, h, reason=reason, source=source, person=person, now=now)
    )


# ------------------------------------------------------------------- session starts


def test_every_session_start_raises_an_alert_that_does_not_flag() -> None:
    firings = anomaly.on_session_start(OFF, History(), person="alice", now=T0)
    assert firings == [Firing("session_start", "break-glass session started by alice", flag=False)]


def test_session_start_names_the_code_to_rotate() -> None:
    (firing,) = anomaly.on_session_start(
        OFF, History(), person="alice", now=T0, credential_id="7KQ2MX"
    )
    assert "7KQ2MX" in firing.detail


@pytest.mark.parametrize(("earlier", "fires"), [(0, False), (1, False), (2, False), (3, True)])
def test_per_person_fires_only_over_the_maximum(earlier: int, fires: bool) -> None:
    r = rules(max_sessions_per_person=RateRule(count=3, window=HOUR))
    h = History(session_starts=[(T0 - 60 * (i + 1), "alice") for i in range(earlier)])
    assert ("max_sessions_per_person" in start(r, h)) is fires


def test_per_person_fires_again_for_each_further_session_and_flags_it() -> None:
    r = rules(max_sessions_per_person=RateRule(count=1, window=HOUR))
    h = History(session_starts=[(T0 - 30, "alice"), (T0 - 20, "alice")])
    firings = anomaly.on_session_start(r, h, person="alice", now=T0)
    hit = [f for f in firings if f.rule == "max_sessions_per_person"]
    assert len(hit) == 1
    assert hit[0].flag
    assert hit[0].subject == "person:alice"
    assert hit[0].detail.startswith("3 sessions by alice within 1h")


def test_per_person_counts_only_that_person() -> None:
    r = rules(max_sessions_per_person=RateRule(count=1, window=HOUR))
    h = History(session_starts=[(T0 - 10, "bob"), (T0 - 20, "carol")])
    assert "max_sessions_per_person" not in start(r, h, "alice")


def test_window_is_half_open_at_its_far_end() -> None:
    r = rules(max_sessions_per_person=RateRule(count=1, window=HOUR))
    exactly_a_window_ago = History(session_starts=[(T0 - HOUR, "alice")])
    just_inside = History(session_starts=[(T0 - HOUR + 0.001, "alice")])
    assert "max_sessions_per_person" not in start(r, exactly_a_window_ago)
    assert "max_sessions_per_person" in start(r, just_inside)


def test_history_from_the_future_is_not_counted() -> None:
    # A clock stepped back must not count sessions "after" now.
    r = rules(max_sessions_per_person=RateRule(count=1, window=HOUR))
    assert "max_sessions_per_person" not in start(r, History(session_starts=[(T0 + 5, "alice")]))


@pytest.mark.parametrize(("earlier", "fires"), [(9, False), (10, True)])
def test_total_counts_everyone(earlier: int, fires: bool) -> None:
    r = rules(max_sessions_total=RateRule(count=10, window=HOUR))
    h = History(session_starts=[(T0 - i - 1, f"p{i}") for i in range(earlier)])
    assert ("max_sessions_total" in start(r, h, "zed")) is fires


def test_rules_that_are_off_never_fire() -> None:
    h = History(
        session_starts=[(T0 - 1, "alice")] * 50,
        failures=[Failure(T0 - 1, "10.0.0.1", "alice", "wrong_code")] * 50,
    )
    assert start(OFF, h) == ["session_start"]
    assert fail(OFF, h) == []


def test_the_default_rules_are_the_documented_ones() -> None:
    d = AlertRules()
    assert d.max_sessions_per_person == RateRule(count=3, window=HOUR)
    assert anomaly.horizon(d) == HOUR
    assert anomaly.horizon(OFF) == 0.0


# ------------------------------------------------------------------- quiet hours


def at(hhmm: str, tz: str = "UTC", day: str = "2024-03-05") -> float:
    h, m = hhmm.split(":")
    local = dt.datetime.fromisoformat(f"{day}T{int(h):02d}:{m}:00").replace(
        tzinfo=zoneinfo.ZoneInfo(tz)
    )
    return local.timestamp()


@pytest.mark.parametrize(
    ("hhmm", "fires"),
    [("07:59", True), ("08:00", False), ("12:00", False), ("17:59", False), ("18:00", True)],
)
def test_quiet_hours_flag_sessions_outside_the_hours(hhmm: str, fires: bool) -> None:
    r = rules(quiet_hours=QuietHours(start="08:00", end="18:00", tz="UTC"))
    firings = anomaly.on_session_start(r, History(), person="alice", now=at(hhmm))
    hit = [f for f in firings if f.rule == "quiet_hours"]
    assert bool(hit) is fires
    if hit:
        assert hit[0].flag
        assert f"at {hhmm} UTC" in hit[0].detail


@pytest.mark.parametrize(
    ("hhmm", "inside"), [("21:59", False), ("22:00", True), ("03:00", True), ("06:00", False)]
)
def test_quiet_hours_may_span_midnight(hhmm: str, inside: bool) -> None:
    hours = QuietHours(start="22:00", end="06:00", tz="UTC")
    assert anomaly.in_hours(at(hhmm), hours) is inside


def test_quiet_hours_use_the_configured_zone_across_dst() -> None:
    hours = QuietHours(start="08:00", end="18:00", tz="Europe/Berlin")
    # 07:30 UTC is 08:30 in Berlin in winter (CET) and 09:30 in summer (CEST).
    winter = dt.datetime(2024, 1, 10, 7, 30, tzinfo=dt.UTC).timestamp()
    summer = dt.datetime(2024, 7, 10, 6, 30, tzinfo=dt.UTC).timestamp()  # 08:30 CEST
    before_summer = dt.datetime(2024, 7, 10, 5, 59, tzinfo=dt.UTC).timestamp()  # 07:59
    assert anomaly.in_hours(winter, hours)
    assert anomaly.in_hours(summer, hours)
    assert not anomaly.in_hours(before_summer, hours)


# ------------------------------------------------------------------- failed logins


def failures(n: int, *, source: str = "10.0.0.1", person: str | None = "alice") -> list[Failure]:
    return [Failure(T0 - 10 * (i + 1), source, person, "wrong_code") for i in range(n)]


@pytest.mark.parametrize(("earlier", "fires"), [(0, False), (3, False), (4, True), (9, True)])
def test_failed_logins_per_source_fire_at_count(earlier: int, fires: bool) -> None:
    r = rules(failed_logins_per_source=RateRule(count=5, window=600))
    h = History(failures=failures(earlier, person=None))
    assert ("failed_logins_per_source" in fail(r, h, person=None)) is fires


def test_failed_logins_per_source_count_only_that_source() -> None:
    r = rules(failed_logins_per_source=RateRule(count=2, window=600))
    h = History(failures=failures(5, source="10.9.9.9"))
    assert fail(r, h, source="10.0.0.1") == []


@pytest.mark.parametrize(("earlier", "fires"), [(3, False), (4, True)])
def test_failed_logins_per_person_fire_at_count(earlier: int, fires: bool) -> None:
    r = rules(failed_logins_per_person=RateRule(count=5, window=600))
    # From many sources: a person-targeted guess spread over addresses still counts.
    h = History(
        failures=[Failure(T0 - i - 1, f"10.0.0.{i}", "bob", "wrong_code") for i in range(earlier)]
    )
    assert ("failed_logins_per_person" in fail(r, h, person="bob", source="10.1.1.1")) is fires


def test_a_failure_without_a_person_never_counts_per_person() -> None:
    r = rules(failed_logins_per_person=RateRule(count=1, window=600))
    assert fail(r, History(), person=None) == []


def test_a_burst_is_alerted_once_per_window_while_it_lasts() -> None:
    r = rules(failed_logins_per_source=RateRule(count=3, window=600))
    h = History(
        failures=failures(10, person=None),
        last_fired={("failed_logins_per_source", "source:10.0.0.1"): T0 - 100},
    )
    assert fail(r, h, person=None) == []  # said 100 s ago, burst goes on
    later = History(
        failures=failures(10, person=None),
        last_fired={("failed_logins_per_source", "source:10.0.0.1"): T0 - 600},
    )
    assert fail(r, later, person=None) == ["failed_logins_per_source"]


def test_a_previous_alert_for_another_source_does_not_suppress() -> None:
    r = rules(failed_logins_per_source=RateRule(count=1, window=600))
    h = History(last_fired={("failed_logins_per_source", "source:10.9.9.9"): T0 - 1})
    assert fail(r, h, person=None) == ["failed_logins_per_source"]


@pytest.mark.parametrize(
    "reason",
    [
        "justification_too_short",
        "justification_too_long",
        "justification_pattern",
        "store_unavailable",
        "internal_error",
        "disk_full",
        "too_many_sessions",
    ],
)
def test_reprompts_and_proxy_faults_are_not_guesses(reason: str) -> None:
    r = rules(failed_logins_per_source=RateRule(count=1, window=600))
    assert "failed_logins_per_source" not in fail(r, History(), reason=reason)
    # ...and do not count when they are in the history either.
    h = History(failures=[Failure(T0 - 1, "10.0.0.1", "alice", reason)] * 5)
    r2 = rules(failed_logins_per_source=RateRule(count=2, window=600))
    assert fail(r2, h) == []


def test_burst_details_say_how_many_and_over_what() -> None:
    r = rules(failed_logins_per_source=RateRule(count=2, window=600))
    (hit,) = anomaly.on_login_failure(
        r,
        History(failures=failures(1)),
        reason="wrong_code",
        source="10.0.0.1",
        person="alice",
        now=T0,
    )
    assert hit.detail == "2 failed logins from 10.0.0.1 within 10m"
    assert hit.subject == "source:10.0.0.1"
    assert not hit.flag


# ------------------------------------------------------------------- fixed rules


@pytest.mark.parametrize(
    "reason",
    [
        "unknown_target",
        "target_not_allowed",
        "login_not_allowed",
        "source_not_allowed",
        "wrong_person",
    ],
)
def test_attempts_at_what_is_not_allowed(reason: str) -> None:
    assert fail(OFF, History(), reason=reason) == ["not_allowed"]


@pytest.mark.parametrize("reason", ["revoked", "expired", "burnt", "spent"])
def test_use_of_an_unusable_code(reason: str) -> None:
    (hit,) = anomaly.on_login_failure(
        OFF, History(), reason=reason, source="s", person="p", now=T0, credential_id="ABC123"
    )
    assert hit.rule == "unusable_code"
    assert hit.detail == f"code ABC123 was used but is {reason}"


@pytest.mark.parametrize("reason", ["wrong_code", "unknown_code", "bad_username"])
def test_a_single_ordinary_failure_raises_nothing(reason: str) -> None:
    assert fail(AlertRules(), History(), reason=reason) == []


@pytest.mark.parametrize(
    ("reason", "rule"),
    [
        ("time_limit", "time_limit"),
        ("idle", "idle_timeout"),
        ("store_error", "audit_write_failed"),
        ("recording_error", "audit_write_failed"),
        ("forwarding_only", "forwarding_only"),
    ],
)
def test_session_ends_that_alert(reason: str, rule: str) -> None:
    (hit,) = anomaly.on_session_end(reason, "why")
    assert hit.rule == rule
    assert hit.flag
    assert hit.detail.endswith(": why")


@pytest.mark.parametrize("reason", ["client_exit", "killed", "target_error", "proxy_shutdown"])
def test_other_session_ends_do_not(reason: str) -> None:
    assert anomaly.on_session_end(reason) == []


def test_operator_actions_alert_with_who_and_why() -> None:
    (kill,) = anomaly.on_operator("operator_kill", "root", "INC-1 done")
    assert (kill.rule, kill.detail) == ("operator_kill", "session killed by root: INC-1 done")
    (ext,) = anomaly.on_operator("operator_extend", "root", "needs time", " by 15m")
    assert ext.detail == "session extended by 15m by root: needs time"
    assert anomaly.on_operator("something_else", "root", "x") == []


# ------------------------------------------------------------------- evaluate


def ev(type_: str, data: Mapping[str, object]) -> Event:
    """The event ``evaluate`` judges, with the fields the test does not care about empty."""
    return decode(type_, fill(type_, data))


def test_evaluate_dispatches_on_the_event_type() -> None:
    r = rules(failed_logins_per_source=RateRule(count=1, window=600))
    data = {"reason": "target_not_allowed", "source": "10.0.0.1", "person": "alice"}
    assert names(anomaly.evaluate(ev("login_failed", data), r, History(), T0)) == [
        "not_allowed",
        "failed_logins_per_source",
    ]
    start_data = {"person": "alice", "credential_id": "ABC123"}
    assert names(anomaly.evaluate(ev("session_start", start_data), OFF, History(), T0)) == [
        "session_start"
    ]
    assert names(anomaly.evaluate(ev("session_end", {"reason": "idle"}), OFF, History(), T0)) == [
        "idle_timeout"
    ]
    assert names(anomaly.evaluate(ev("drill", {}), OFF, History(), T0)) == ["drill"]
    assert anomaly.evaluate(ev("channel_start", {}), AlertRules(), History(), T0) == []


# ------------------------------------------------------------------- ids


def test_alert_ids_are_stable_text_sortable_by_time() -> None:
    a = anomaly.alert_id(T0, b"\x00" * 5)
    b = anomaly.alert_id(T0 + 0.001, b"\xff" * 5)
    assert a.startswith("A")
    assert len(a) == 18
    assert a < b
    assert anomaly.alert_id(T0, b"\x01\x02\x03\x04\x05") == anomaly.alert_id(
        T0, b"\x01\x02\x03\x04\x05"
    )
    with pytest.raises(ValueError, match="random"):
        anomaly.alert_id(T0, b"\x00")


@pytest.mark.parametrize(
    ("reason", "rule"),
    [
        ("store_unavailable", "audit_write_failed"),
        ("disk_full", "audit_write_failed"),
        ("too_many_sessions", "at_capacity"),
    ],
)
def test_a_proven_engineer_refused_by_the_proxy_is_alerted(reason: str, rule: str) -> None:
    (hit,) = anomaly.on_login_failure(
        AlertRules(), History(), reason=reason, source="s", person="p", now=T0
    )
    assert (hit.rule, hit.detail) == (rule, f"a proven engineer was refused: {reason}")


def test_disk_space_crossings_alert() -> None:
    data = {"free_bytes": 300 << 20}
    (low,) = anomaly.evaluate(ev("disk_space_low", data), OFF, History(), T0)
    assert (low.rule, low.detail) == (
        "disk_space",
        "disk space low for the audit trail: 300 MiB free",
    )
    assert names(anomaly.evaluate(ev("disk_space_critical", {}), OFF, History(), T0)) == [
        "disk_space"
    ]
    assert anomaly.evaluate(ev("disk_space_ok", data), OFF, History(), T0) == []


@pytest.mark.parametrize(
    ("type_", "data", "said"),
    [
        (
            "fleet_conflict",
            {"seq": 7, "local_hash": "ab"},
            "holds this node's event 7 with another",
        ),
        ("fleet_conflict", {"seq": 7}, "holds this node's event 7 past its journal's head"),
        ("fleet_gap", {"ledger": "L", "ledger_seq": 4, "shipped_seq": 9}, "events 5-9"),
        ("fleet_name_taken", {"node": "bg-eu1", "detail": "id x"}, "node name bg-eu1 is taken"),
        ("fleet_too_old", {"min_reader_version": 2, "reader_version": 1}, "reader version 2"),
    ],
)
def test_fleet_shipping_problems_alert_under_their_own_rule(
    type_: str, data: Mapping[str, object], said: str
) -> None:
    (hit,) = anomaly.evaluate(ev(type_, data), OFF, History(), T0)
    assert (hit.rule, hit.flag) == (type_, False)
    assert said in hit.detail


def test_a_peer_witness_raises_no_alert() -> None:
    assert anomaly.evaluate(ev("peer_witness", {"peer": "bg-us1"}), OFF, History(), T0) == []


def test_a_refused_reload_and_a_recording_limit_raise_alerts() -> None:
    from proxy.core.anomaly import evaluate, on_session_end

    fired = evaluate(
        ev("config_reload_failed", {"problems": ["a", "b"]}), AlertRules(), History(), 0.0
    )
    assert [(f.rule, f.flag) for f in fired] == [("config_reload_failed", False)]
    assert "2 problem(s)" in fired[0].detail
    assert [f.rule for f in on_session_end("recording_limit")] == ["recording_limit"]
