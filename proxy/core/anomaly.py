"""Alert rules: which rules fire for one audit event, given recent history.

Owns the decision "does this event raise an alert, and why" (the README's "Alerts"). The
rules are data (``AlertRules`` from the config) plus a fixed set that always applies:

- ``session_start``: every break-glass session (routine: it does not flag the session);
- ``max_sessions_per_person`` / ``max_sessions_total``: more than ``count`` session starts
  within ``window`` (the config names a maximum, so the one *over* it fires, and every
  further one while the window holds more than ``count``: each such session is flagged);
- ``failed_logins_per_source`` / ``failed_logins_per_person``: ``count`` failed logins
  within ``window`` fire, then at most once per ``window`` per source (or person) while
  the burst lasts, so a long brute force gives a steady reminder and not one alert per
  guess. Justification re-prompts and the proxy's own failures are not guesses and do
  not count;
- ``quiet_hours``: a session started outside the configured from-to hours;
- ``not_allowed``: an attempt at a target, login or source that is not allowed, or with a
  code issued to someone else;
- ``unusable_code``: a revoked, expired, burnt or spent code whose secret was right;
- ``time_limit`` / ``idle_timeout``: a session closed by its deadline or for silence;
- ``audit_write_failed``: a session closed because its audit trail or recording could not
  be written, or a login refused because the store or the disk could not take it;
- ``at_capacity``: a proven engineer refused because the proxy is at its session limit,
  or (``login_slots_full``) connections cut or refused because every unauthenticated
  slot was taken: at most once per ``CAPACITY_QUIET``;
- summaries of failed logins (``login_failures_summarised``) count towards the rate
  rules attempt by attempt, exactly as the single ``login_failed`` events would;
- ``operator_kill`` / ``operator_extend``: an operator's override;
- ``disk_space``: the disk holding the audit trail crossed into low or critical;
- ``fleet_conflict`` / ``fleet_gap`` / ``fleet_name_taken`` / ``fleet_too_old``: the
  node's shipping to the fleet's ledger stopped on a conflicting event, found a lost
  tail (and ships it again), found its name taken, or found the ledger too new for it;
- ``ledger_unreachable``: a login spent a code without the fleet's ledger answering
  (``fleet.unreachable: serve``): the session is flagged;
- ``code_overspent``: such a use, reconciled later, went past the code's rules
  fleet-wide (more uses than allowed, or after a revocation);
- ``extraction_failed``: the command extractor or a file-transfer parser gave up on a
  channel (its transcript keeps recording, but the index of what was done has a gap:
  breaking a parser must not be a quiet way to dodge the audit);
- ``drill``: a test alert.

Pure: events and history in, ``Firing`` values out. Time is passed in as ``now`` (unix
seconds); never reads a clock, a file or the database. Counting windows are half-open,
``(now - window, now]``, and the event being judged counts as one.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from proxy.core import events
from proxy.core.credstate import MISMATCH as CREDENTIAL_TAMPERED
from proxy.core.ids import ALPHABET
from proxy.core.settings import AlertRules, QuietHours, RateRule

__all__ = [
    "DISALLOWED_REASONS",
    "UNUSABLE_CODE_REASONS",
    "Failure",
    "Firing",
    "History",
    "alert_id",
    "counts_as_guess",
    "evaluate",
    "horizon",
    "in_hours",
    "on_login_failure",
    "on_operator",
    "on_session_end",
    "on_session_start",
]

LEDGER_UNREACHABLE = "ledger_unreachable"
CODE_OVERSPENT = "code_overspent"
# login_failed reasons that are attempts at something not allowed.
DISALLOWED_REASONS = frozenset(
    {"unknown_target", "target_not_allowed", "login_not_allowed", "source_not_allowed"}
    | {"wrong_person"}  # a right secret typed by someone the code was not issued to
)
# login_failed reasons that are a code no longer usable (its secret was right).
UNUSABLE_CODE_REASONS = frozenset({"revoked", "expired", "burnt", "spent"})
# login_failed reasons that are not a guess: a justification re-prompt, the proxy's fault.
_NOT_A_GUESS = frozenset(
    {
        "justification_too_short",
        "justification_too_long",
        "justification_pattern",
        "store_unavailable",
        "internal_error",
        "disk_full",
        "too_many_sessions",
        events.LoginAborted.TYPE,  # cut during login (a timeout, a protocol error): in summaries
    }
)
# login_failed reasons that are the proxy refusing a proven engineer for its own state.
REFUSED_BY_PROXY = {
    "store_unavailable": "audit_write_failed",
    "disk_full": "audit_write_failed",
    "too_many_sessions": "at_capacity",
}
END_RULES = {
    "time_limit": "time_limit",
    "idle": "idle_timeout",
    "store_error": "audit_write_failed",
    "recording_error": "audit_write_failed",
    events.RecordingLimit.TYPE: events.RecordingLimit.TYPE,
    # A session that opened no channel and asked only for forwarding (ProxyJump, -W, -L,
    # -D): its session_start alert went out at login, this one says nothing ran.
    "forwarding_only": "forwarding_only",
}
# Rules named after the event that raises them.
SESSION_START = events.SessionStart.TYPE
DRILL = events.Drill.TYPE
CONFIG_RELOAD_FAILED = events.ConfigReloadFailed.TYPE
OPERATOR_RULES = {t: t for t in (events.OperatorKill.TYPE, events.OperatorExtend.TYPE)}
EXTRACTION_FAILURES = {
    events.CommandExtractionError.TYPE: "commands",
    events.SftpParseError.TYPE: "SFTP file operations",
    events.SftpTrackingLost.TYPE: "some SFTP file operations",
    events.ScpParseError.TYPE: "scp file operations",
}
SUMMARY_EVENT = events.LoginFailuresSummarised.TYPE
SLOTS_FULL_EVENT = events.LoginSlotsFull.TYPE
HELD_EVENT = events.LoginFailuresHeld.TYPE
# login_slots_full raises at_capacity at most once in this many seconds: a flood that
# lasts an hour is one page, and the events say how it went on.
CAPACITY_QUIET = 600.0


def counts_as_guess(reason: str) -> bool:
    """Does a login failure with this reason count towards a failed-login burst?"""
    return reason not in _NOT_A_GUESS


@dataclass(frozen=True)
class Firing:
    """One rule that fired. ``subject`` names what a rate rule counted ("source:ADDR",
    "person:NAME"), so a repeat can be suppressed; ``flag`` raises a flag on the session."""

    rule: str
    detail: str
    subject: str | None = None
    flag: bool = True


@dataclass(frozen=True)
class Failure:
    time: float
    source: str
    person: str | None
    reason: str
    count: int = 1  # a row of a summary stands for this many attempts


@dataclass(frozen=True)
class History:
    """What happened recently (the event being judged is not in it).

    ``session_starts``: (time, person) of earlier session starts; ``failures``: earlier
    failed logins; ``last_fired``: (rule, subject) -> time that rule last fired for it.
    Older entries than ``horizon(rules)`` may be left out; newer ones than ``now`` are
    ignored (a clock that stepped back must not count the future).
    """

    session_starts: Sequence[tuple[float, str]] = ()
    failures: Sequence[Failure] = ()
    last_fired: Mapping[tuple[str, str], float] = field(default_factory=dict)


def horizon(rules: AlertRules) -> float:
    """How far back history must reach for these rules (seconds)."""
    windows = [
        r.window
        for r in (
            rules.max_sessions_per_person,
            rules.max_sessions_total,
            rules.failed_logins_per_source,
            rules.failed_logins_per_person,
        )
        if r is not None
    ]
    return max(windows, default=0.0)


def _within(t: float, now: float, window: float) -> bool:
    return now - window < t <= now


def _rate_detail(n: int, what: str, window: float) -> str:
    return f"{n} {what} within {_span(window)}"


def _span(seconds: float) -> str:
    s = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def in_hours(now: float, hours: QuietHours) -> bool:
    """Is ``now`` inside the from-to hours (local time in ``hours.tz``)? ``from`` is
    inclusive, ``to`` exclusive; from > to spans midnight (e.g. 22:00-06:00)."""
    local = dt.datetime.fromtimestamp(now, zoneinfo.ZoneInfo(hours.tz))
    minute = local.hour * 60 + local.minute
    start, end = _minutes(hours.start), _minutes(hours.end)
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def _minutes(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


def on_session_start(
    rules: AlertRules, history: History, *, person: str, now: float, credential_id: str = ""
) -> list[Firing]:
    code = f" with code {credential_id}" if credential_id else ""
    fired = [Firing(SESSION_START, f"break-glass session started by {person}{code}", flag=False)]
    per_person = rules.max_sessions_per_person
    if per_person is not None:
        n = 1 + sum(
            1
            for t, p in history.session_starts
            if p == person and _within(t, now, per_person.window)
        )
        if n > per_person.count:
            fired.append(
                Firing(
                    "max_sessions_per_person",
                    _rate_detail(n, f"sessions by {person}", per_person.window)
                    + f" (more than {per_person.count})",
                    subject=f"person:{person}",
                )
            )
    total = rules.max_sessions_total
    if total is not None:
        n = 1 + sum(1 for t, _ in history.session_starts if _within(t, now, total.window))
        if n > total.count:
            fired.append(
                Firing(
                    "max_sessions_total",
                    _rate_detail(n, "sessions in all", total.window)
                    + f" (more than {total.count})",
                    subject="all",
                )
            )
    hours = rules.quiet_hours
    if hours is not None and not in_hours(now, hours):
        local = dt.datetime.fromtimestamp(now, zoneinfo.ZoneInfo(hours.tz))
        fired.append(
            Firing(
                "quiet_hours",
                f"session started at {local:%H:%M} {hours.tz}, outside {hours.start}-{hours.end}",
            )
        )
    return fired


def _burst(
    rule_name: str,
    rule: RateRule | None,
    subject: str,
    n: int,
    what: str,
    history: History,
    now: float,
) -> Firing | None:
    if rule is None or n < rule.count:
        return None
    last = history.last_fired.get((rule_name, subject))
    if last is not None and _within(last, now, rule.window):
        return None  # already said during this window; the burst goes on
    return Firing(rule_name, _rate_detail(n, what, rule.window), subject=subject, flag=False)


def on_login_failure(
    rules: AlertRules,
    history: History,
    *,
    reason: str,
    source: str,
    person: str | None,
    now: float,
    credential_id: str | None = None,
) -> list[Firing]:
    fired: list[Firing] = []
    if reason in REFUSED_BY_PROXY:
        fired.append(
            Firing(REFUSED_BY_PROXY[reason], f"a proven engineer was refused: {reason}", flag=False)
        )
    if reason in DISALLOWED_REASONS:
        fired.append(Firing("not_allowed", f"refused: {reason}", flag=False))
    if reason == CREDENTIAL_TAMPERED:
        code = f"code {credential_id}" if credential_id else "a code"
        fired.append(
            Firing(
                CREDENTIAL_TAMPERED,
                f"{code} was refused: its stored state disagrees with the audit chain"
                " (run breakglass verify)",
                flag=False,
            )
        )
    if reason in UNUSABLE_CODE_REASONS:
        code = f"code {credential_id}" if credential_id else "a code"
        fired.append(Firing("unusable_code", f"{code} was used but is {reason}", flag=False))
    if not counts_as_guess(reason):
        return fired
    return fired + _bursts(rules, history, {source: 1}, {person: 1} if person else {}, now)


def _bursts(
    rules: AlertRules,
    history: History,
    sources: Mapping[str, int],
    persons: Mapping[str, int],
    now: float,
) -> list[Firing]:
    """The failed-login rate rules, for ``sources`` and ``persons`` that just failed this
    many times more (guesses only)."""
    counted = [f for f in history.failures if counts_as_guess(f.reason)]
    fired: list[Firing] = []
    for rule_name, rule, more_by, key, what in (
        ("failed_logins_per_source", rules.failed_logins_per_source, sources, "source", "from"),
        ("failed_logins_per_person", rules.failed_logins_per_person, persons, "person", "for"),
    ):
        if rule is None:
            continue
        for subject, more in sorted(more_by.items()):
            n = more + sum(
                f.count
                for f in counted
                if getattr(f, key) == subject and _within(f.time, now, rule.window)
            )
            hit = _burst(
                rule_name,
                rule,
                f"{key}:{subject}",
                n,
                f"failed logins {what} {subject}",
                history,
                now,
            )
            if hit:
                fired.append(hit)
    return fired


def summary_failures(data: Mapping[str, Any], time: float) -> list[Failure]:
    """The itemised attempts of a ``login_failures_summarised`` event, as failures at
    ``time`` (its last attempt), each weighing its count."""
    out: list[Failure] = []
    for row in data.get("attempts") or ():
        try:
            source, person, reason, count = row
            out.append(
                Failure(time, str(source), str(person) if person else None, str(reason), int(count))
            )
        except (TypeError, ValueError):
            continue  # a malformed row counts as nothing rather than breaking the rules
    return out


def on_failure_summary(
    rules: AlertRules, history: History, summary: events.LoginFailuresSummarised, now: float
) -> list[Firing]:
    """A summary of failed logins: the rate rules as if each attempt came one by one,
    and ``not_allowed`` once for the attempts at something not allowed."""
    fired: list[Firing] = []
    failures = summary_failures(summary.data(), now)
    refused = sum(f.count for f in failures if f.reason in DISALLOWED_REASONS)
    if refused:
        network = summary.network
        fired.append(
            Firing("not_allowed", f"refused: {refused} attempt(s) from {network}", flag=False)
        )
    sources: dict[str, int] = {}
    persons: dict[str, int] = {}
    for f in failures:
        if counts_as_guess(f.reason):
            sources[f.source] = sources.get(f.source, 0) + f.count
            if f.person:
                persons[f.person] = persons.get(f.person, 0) + f.count
    return fired + _bursts(rules, history, sources, persons, now)


def on_slots_full(full: events.LoginSlotsFull, history: History, now: float) -> list[Firing]:
    last = history.last_fired.get(("at_capacity", "unauthenticated"))
    if last is not None and _within(last, now, CAPACITY_QUIET):
        return []
    detail = (
        "unauthenticated login slots at their limit: "
        f"{full.dropped} connection(s) cut to make room, "
        f"{full.refused} refused over their source's share"
    )
    return [Firing("at_capacity", detail, subject="unauthenticated", flag=False)]


def on_session_end(reason: str, detail: str | None = None) -> list[Firing]:
    rule = END_RULES.get(reason)
    if rule is None:
        return []
    text = {
        "time_limit": "session closed at its time limit",
        "idle_timeout": "session closed after its idle timeout",
        "audit_write_failed": "session closed: its audit trail or recording could not be written",
        "recording_limit": "session closed: its recordings reached their size limit",
        "forwarding_only": "session ended without opening a channel: it asked only for "
        "forwarding (ProxyJump, -W, -L or -D), which was refused",
    }[rule]
    return [Firing(rule, f"{text}: {detail}" if detail else text)]


def on_operator(type_: str, operator: str, reason: str, extra: str = "") -> list[Firing]:
    rule = OPERATOR_RULES.get(type_)
    if rule is None:
        return []
    verb = "killed" if rule == events.OperatorKill.TYPE else "extended"
    return [Firing(rule, f"session {verb}{extra} by {operator}: {reason}")]


def on_fleet(
    event: events.FleetConflict | events.FleetGap | events.FleetNameTaken | events.FleetTooOld,
) -> list[Firing]:
    """A shipping problem with the fleet's ledger: the node keeps serving locally."""
    match event:
        case events.FleetConflict():
            held = "with another hash" if event.local_hash else "past its journal's head"
            text = (
                f"the ledger {event.ledger} holds this node's event {event.seq} {held}:"
                " shipping stopped (run breakglass verify)"
            )
        case events.FleetGap():
            text = (
                f"the ledger {event.ledger} lost this node's events"
                f" {event.ledger_seq + 1}-{event.shipped_seq}: shipping them again"
            )
        case events.FleetNameTaken():
            text = (
                f"node name {event.node} is taken in the ledger {event.ledger}"
                f" ({event.detail}): this node serves locally and does not ship"
            )
        case events.FleetTooOld():
            text = (
                f"the ledger {event.ledger} needs reader version {event.min_reader_version},"
                f" this node reads {event.reader_version}: it serves locally and does not"
                " ship (upgrade it)"
            )
    return [Firing(event.TYPE, text, flag=False)]


def evaluate(event: events.Event, rules: AlertRules, history: History, now: float) -> list[Firing]:
    """The rules that fire for one audit event."""
    match event:
        case events.SessionStart():
            fired = on_session_start(
                rules, history, person=event.person, now=now, credential_id=event.credential_id
            )
            if event.ledger_unreachable:
                fired.append(
                    Firing(
                        LEDGER_UNREACHABLE,
                        f"code {event.credential_id} was accepted on this node's copy: the"
                        " fleet's ledger did not answer, so the use is not yet counted"
                        " fleet-wide (it is reconciled when the ledger answers)",
                    )
                )
            return fired
        case events.CredUseSettled(over=str() as over):
            return [
                Firing(
                    CODE_OVERSPENT,
                    f"code {event.credential_id} {over} (use {event.use_id},"
                    f" {event.uses} of {event.max_uses or 'unlimited'} uses in the ledger)",
                )
            ]
        case events.LoginFailed():
            return on_login_failure(
                rules,
                history,
                reason=event.reason,
                source=event.source,
                person=event.person or None,
                now=now,
                credential_id=event.credential_id or None,
            )
        case events.LoginFailuresSummarised():
            return on_failure_summary(rules, history, event, now)
        case events.LoginSlotsFull():
            return on_slots_full(event, history, now)
        case events.LoginFailuresHeld():
            text = (
                f"disk inside the reserve kept for sessions ({event.free_bytes >> 20} MiB"
                " free): failed logins are only counted in memory until there is room"
            )
            return [Firing("disk_space", text, flag=False)]
        case events.SessionEnd():
            return on_session_end(event.reason, events.given(event.detail, None) or None)
        case events.OperatorKill() | events.OperatorExtend():
            return on_operator(event.TYPE, event.operator, event.reason)
        case (
            events.CommandExtractionError()
            | events.SftpParseError()
            | events.SftpTrackingLost()
            | events.ScpParseError()
        ):
            what = EXTRACTION_FAILURES[event.TYPE]
            text = f"{what} can no longer be read on a channel; its recording continues"
            detail = event.detail
            return [Firing("extraction_failed", f"{text}: {detail}" if detail else text)]
        case events.Drill():
            return [Firing(DRILL, "test alert (breakglass drill)", flag=False)]
        case events.ConfigReloadFailed():
            n = len(event.problems)
            text = f"config reload refused ({n} problem(s)); the old config stays in force"
            return [Firing(CONFIG_RELOAD_FAILED, text, flag=False)]
        case events.DiskSpaceLow() | events.DiskSpaceCritical():
            level = events.DISK_SPACE_ALERTS[event.TYPE]
            mib = f": {event.free_bytes >> 20} MiB free"
            text = f"disk space {level} for the audit trail{mib}"
            return [Firing("disk_space", text, flag=False)]
        case (
            events.FleetConflict()
            | events.FleetGap()
            | events.FleetNameTaken()
            | events.FleetTooOld()
        ):
            return on_fleet(event)
    return []


def alert_id(now: float, random_bytes: bytes) -> str:
    """A stable, time-sortable alert id: ``A`` + 9 time characters + 8 random ones
    (Crockford base32, like session ids). ``random_bytes``: at least 5 from a CSPRNG."""
    if len(random_bytes) < 5:
        raise ValueError("alert_id needs at least 5 random bytes")
    millis = int(now * 1000)
    rand = int.from_bytes(random_bytes[:5], "big")
    return "A" + _b32(millis, 9) + _b32(rand, 8)


def _b32(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))
