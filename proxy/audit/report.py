"""``breakglass report``: a post-incident report per session and a period summary.

Owns gathering a period's sessions with the events an auditor needs (one query per
kind, never one per session) and rendering them as Markdown (to paste into a
post-mortem), JSON (for machines) or CSV (one row per session, for a spreadsheet).
Every untrusted string is escaped for the format it lands in (``core.markup``).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from proxy.audit.facts import (
    INTERESTING_TYPES,
    SessionFacts,
    session_facts,
    with_recordings,
)
from proxy.audit.views import rfc3339, show_json
from proxy.core.chaincheck import ALERT_TYPES, FLAG_TYPES
from proxy.core.markup import csv_cell, md
from proxy.core.text import safe_json
from proxy.core.units import format_duration
from proxy.store.base import SessionFilter, Store, StoredEvent


@dataclass(repr=False)
class Report:
    since: float | None
    until: float | None
    generated_at: float
    sessions: list[SessionFacts] = field(default_factory=list)
    # Every alert and flag in the period, with or without a session (failed-login
    # bursts have none).
    alerts: list[StoredEvent] = field(default_factory=list)
    flags: list[StoredEvent] = field(default_factory=list)

    def __repr__(self) -> str:
        # Short on purpose: asyncio.run() (3.11) formats the repr of its main task's
        # result while restoring signal handlers; a full repr of thousands of sessions
        # cost a third of the report's time.
        return f"Report({len(self.sessions)} sessions, since={self.since}, until={self.until})"


async def build_report(
    store: Store,
    recordings: Path,
    since: float | None,
    until: float | None,
    now: float,
    *,
    check_recordings: bool = True,
) -> Report:
    rows = await store.list_sessions(SessionFilter(since=since, until=until))
    ids = [r.id for r in rows]
    by_session: dict[str, list[StoredEvent]] = defaultdict(list)
    for e in await store.events_for_sessions(ids, INTERESTING_TYPES):
        if e.session_id is not None:
            by_session[e.session_id].append(e)
    report = Report(since, until, now)
    for r in rows:
        facts = session_facts(r, by_session.get(r.id, ()))
        if check_recordings:
            with_recordings(facts, recordings)
        report.sessions.append(facts)
    report.alerts = await store.events_between(ALERT_TYPES, since, until)
    report.flags = await store.events_between(FLAG_TYPES, since, until)
    return report


def _duration(f: SessionFacts) -> float | None:
    s = f.session
    return None if s.ended_at is None else s.ended_at - s.started_at


def summary(report: Report) -> dict[str, Any]:
    people: dict[str, dict[str, Any]] = {}
    targets: dict[str, dict[str, Any]] = {}
    durations: list[float] = []
    for f in report.sessions:
        s = f.session
        d = _duration(f)
        if d is not None:
            durations.append(d)
        for table, key in ((people, s.person), (targets, s.target)):
            entry = table.setdefault(key, {"sessions": 0, "total_seconds": 0.0, "longest": 0.0})
            entry["sessions"] += 1
            if d is not None:
                entry["total_seconds"] = round(entry["total_seconds"] + d, 3)
                entry["longest"] = round(max(entry["longest"], d), 3)
    reasons = Counter(f.session.end_reason or "live" for f in report.sessions)
    checks = Counter(v for f in report.sessions for v in f.recording_checks.values())
    alert_rules = Counter(
        str(e.data.get("rule") or e.data.get("kind") or e.type) for e in report.alerts
    )
    return {
        "sessions": len(report.sessions),
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
        "alerts": len(report.alerts),
        "alerts_by_rule": dict(sorted(alert_rules.items())),
        "flags": len(report.flags),
        "flagged_sessions": sum(1 for f in report.sessions if f.flags),
        "reviewed_sessions": sum(1 for f in report.sessions if f.reviews),
        "recordings": dict(sorted(checks.items())),
    }


def report_json(report: Report) -> dict[str, Any]:
    return {
        "since": rfc3339(report.since),
        "until": rfc3339(report.until),
        "generated_at": rfc3339(report.generated_at),
        "summary": summary(report),
        "alerts": [
            {"seq": e.seq, "time": rfc3339(e.time), "session": e.session_id, "data": e.data}
            for e in report.alerts
        ],
        "sessions": [_session_doc(f) for f in report.sessions],
    }


def _session_doc(f: SessionFacts) -> dict[str, Any]:
    doc = show_json(f, [])
    del doc["events"]  # the report carries the auditor's selection, not the full log
    return doc


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(round(seconds))


def _event_line(e: StoredEvent) -> str:
    parts = [f"{k}={v}" for k, v in sorted(e.data.items())]
    return md(f"{e.type} " + " ".join(parts))


def report_markdown(report: Report) -> str:
    sm = summary(report)
    period = f"{rfc3339(report.since) or 'the beginning'} to {rfc3339(report.until) or 'now'}"
    out = [
        f"# Break-glass report: {period}",
        "",
        f"Generated {rfc3339(report.generated_at)}. {sm['sessions']} session(s) by"
        f" {sm['people']} person(s); {sm['alerts']} alert(s), {sm['flags']} flag(s);"
        f" {sm['reviewed_sessions']} of {sm['sessions']} session(s) reviewed.",
        "",
        "## Summary",
        "",
        "### Uses by person",
        "",
        "| person | sessions | total time | longest |",
        "|---|---:|---:|---:|",
    ]
    for person, e in sm["by_person"].items():
        out.append(
            f"| {md(person)} | {e['sessions']} | {_dur(e['total_seconds'])} |"
            f" {_dur(e['longest'])} |"
        )
    out += ["", "### Uses by target", "", "| target | sessions | total time | longest |"]
    out.append("|---|---:|---:|---:|")
    for target, e in sm["by_target"].items():
        out.append(
            f"| {md(target)} | {e['sessions']} | {_dur(e['total_seconds'])} |"
            f" {_dur(e['longest'])} |"
        )
    d = sm["durations"]
    out += [
        "",
        "### Durations",
        "",
        f"Total {_dur(d['total'])}, mean {_dur(d['mean'])}, median {_dur(d['median'])},"
        f" longest {_dur(d['longest'])}.",
        "",
        "### End reasons",
        "",
        "| end reason | sessions |",
        "|---|---:|",
    ]
    out += [f"| {md(k)} | {v} |" for k, v in sm["end_reasons"].items()]
    out += ["", "### Alerts and flags", ""]
    if report.alerts or report.flags:
        out += ["| time | session | event |", "|---|---|---|"]
        for e in sorted([*report.alerts, *report.flags], key=lambda e: e.seq):
            out.append(f"| {rfc3339(e.time)} | {md(e.session_id) or '-'} | {_event_line(e)} |")
    else:
        out.append("None in this period.")
    if sm["recordings"]:
        checks = ", ".join(f"{v} {md(k)}" for k, v in sm["recordings"].items())
        out += ["", f"Recordings checked against their hashes: {checks}."]
    out += ["", "## Sessions"]
    for f in report.sessions:
        out += ["", *_session_markdown(f)]
    if not report.sessions:
        out += ["", "No sessions in this period."]
    return "\n".join(out) + "\n"


def _session_markdown(f: SessionFacts) -> list[str]:
    s = f.session
    who = (
        f"{md(s.person)} (code {md(s.credential_id)}) from {md(s.source)},"
        f" client {md(s.client_version)}"
    )
    when = (
        f"{rfc3339(s.started_at)} to {rfc3339(s.ended_at) or 'still live'}"
        f" ({_dur(_duration(f))}; deadline {rfc3339(s.deadline)})"
    )
    end = md(s.end_reason or "live") + (f": {md(s.end_detail)}" if s.end_detail else "")
    channels = "<br>".join(
        f"{s.id}/{c.n} {md(c.kind)}{' pty' if c.pty else ''}"
        f"{(' ' + md(c.command)) if c.command else ''}, "
        + (f"signal {md(c.exit_signal)}" if c.exit_signal else f"exit {c.exit_status}")
        + f", {c.bytes_up} B up, {c.bytes_down} B down"
        + f", recording {f.recording_checks.get(c.n, '-')}"
        + (f" (sha256 {c.recording_sha256})" if c.recording_sha256 else "")
        for c in s.channels
    )
    system = "<br>".join(
        f"{label}: {_event_line(e)}"
        for label, items in (("alert", f.alerts), ("flag", f.flags), ("override", f.overrides))
        for e in items
    )
    reviews = "<br>".join(f"{rfc3339(r.time)} {md(r.by)}: {md(r.note)}" for r in f.reviews)
    lines = [
        f"### {s.id}: {md(s.person)} on {md(s.login)}@{md(s.target)}",
        "",
        "| | |",
        "|---|---|",
        f"| Who | {who} |",
        f"| When | {when} |",
        f"| Where | {md(s.login)}@{md(s.target)} |",
        f"| Why | {md(s.justification)} |",
        f"| How it ended | {end} |",
        f"| Channels | {channels or 'none'} |",
        f"| System response | {system or 'none recorded'} |",
        f"| Reviews | {reviews or 'not reviewed'} |",
    ]
    resources = [r for r in f.resources if r.text]
    if resources:
        lines += ["", "Resources accessed:", ""]
        for r in resources:
            chan = f"{s.id}/{r.channel}" if r.channel is not None else s.id
            status = f" \\[{md(r.status)}\\]" if r.status else ""
            lines.append(f"- {rfc3339(r.time)} {chan} {md(r.kind)}: {md(r.text)}{status}")
    return lines


CSV_COLUMNS = (
    "session",
    "person",
    "credential_id",
    "source",
    "client_version",
    "target",
    "login",
    "justification",
    "started_at",
    "ended_at",
    "duration_seconds",
    "end_reason",
    "end_detail",
    "channels",
    "resources",
    "alerts",
    "flags",
    "overrides",
    "reviews",
    "recordings",
)


def report_csv(report: Report) -> str:
    """One row per session. Untrusted text is escaped and formula-neutralised; the
    numbers and times the proxy wrote itself are plain."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for f in report.sessions:
        s = f.session
        d = _duration(f)
        w.writerow(
            [
                s.id,
                csv_cell(s.person),
                csv_cell(s.credential_id),
                csv_cell(s.source),
                csv_cell(s.client_version),
                csv_cell(s.target),
                csv_cell(s.login),
                csv_cell(s.justification),
                rfc3339(s.started_at),
                rfc3339(s.ended_at) or "",
                "" if d is None else f"{d:.3f}",
                csv_cell(s.end_reason or "live"),
                csv_cell(s.end_detail),
                len(s.channels),
                csv_cell(_joined(f"{r.kind}: {r.text}" for r in f.resources if r.text)),
                csv_cell(_joined(_plain(e) for e in f.alerts)),
                csv_cell(_joined(_plain(e) for e in f.flags)),
                csv_cell(_joined(_plain(e) for e in f.overrides)),
                csv_cell(_joined(f"{rfc3339(r.time)} {r.by}: {r.note}" for r in f.reviews)),
                csv_cell(_joined(f"{n}: {v}" for n, v in sorted(f.recording_checks.items()))),
            ]
        )
    return buf.getvalue()


def _plain(e: StoredEvent) -> str:
    return f"{e.type} " + " ".join(f"{k}={v}" for k, v in sorted(e.data.items()))


def _joined(items: Any) -> str:
    return " ; ".join(items)


def render(report: Report, fmt: str) -> str:
    if fmt == "json":
        # Compact: the C encoder (json skips it when indenting) is several times faster
        # on a month of sessions; machines read it, and `jq .` pretty-prints it.
        return safe_json(report_json(report), compact=True) + "\n"
    if fmt == "csv":
        return report_csv(report)
    return report_markdown(report)


def formats() -> Sequence[str]:
    return ("markdown", "json", "csv")
