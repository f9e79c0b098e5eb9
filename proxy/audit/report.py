"""``breakglass report``: a post-incident report per session and a period summary.

Owns gathering a period's sessions with the events an auditor needs and rendering them
as Markdown (to paste into a post-mortem), JSON (for machines) or CSV (one row per
session, for a spreadsheet). Every untrusted string is escaped for the format it lands
in (``core.markup``).

A year can be 50,000 sessions and a million lines of Markdown, so the report is
written as it is read: the summary first, from SQL aggregates over the period
(``Store.period_summary``) and the recordings hashed up front (their results are part
of the summary), then the sessions a batch at a time (``Store.period_sessions``: three
cursors in session order, never a query per session), each rendered and written before
the next batch is read.
"""

from __future__ import annotations

import csv
import functools
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from proxy.audit.attempts import FAILED_TYPES, AttemptFilter, attempts
from proxy.audit.attempts import summary as attempts_summary
from proxy.audit.facts import INTERESTING_TYPES, SessionFacts, facts_of_rows
from proxy.audit.verify import RecordingChecks, file_checks
from proxy.audit.views import data_pairs, facts_json, rfc3339
from proxy.core import events as catalogue
from proxy.core.chaincheck import ALERT_TYPES, FLAG_TYPES
from proxy.core.markup import csv_cell, md
from proxy.core.text import json_terminal_safe
from proxy.core.units import format_duration
from proxy.store.base import AuditorReads, GroupTotals, PeriodSummary, StoredEvent

# One compact encoder for every batch: the C encoder (json uses the slow Python one when
# indenting), as safe_json(compact=True) makes it; json_terminal_safe follows.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass(repr=False)
class Report:
    """Everything but the sessions: the period, the summary and the alerts and flags.
    The sessions are read (``sessions``) while the report is written."""

    since: float | None
    until: float | None
    generated_at: float
    summary: dict[str, Any] = field(default_factory=dict)
    # Every alert and flag in the period, with or without a session (failed-login
    # bursts have none).
    alerts: list[StoredEvent] = field(default_factory=list)
    flags: list[StoredEvent] = field(default_factory=list)
    # The hash check of every recording of the period's sessions: (session, channel).
    checks: dict[tuple[str, int], str] = field(default_factory=dict)

    def __repr__(self) -> str:
        # Short on purpose: asyncio.run() (3.11) formats the repr of its main task's
        # result while restoring signal handlers.
        return f"Report(since={self.since}, until={self.until})"


async def build_report(
    store: AuditorReads,
    recordings: Path,
    since: float | None,
    until: float | None,
    now: float,
    *,
    check_recordings: bool = True,
    checks: RecordingChecks | None = None,
) -> Report:
    """The report's head: summary, alerts, flags and recording checks (the files
    under ``recordings``, unless ``checks`` checks them elsewhere)."""
    report = Report(since, until, now)
    if check_recordings:
        check = checks or file_checks(recordings)
        report.checks.update(await check(await store.period_recordings(since, until)))
    report.alerts = await store.events_between(ALERT_TYPES, since, until)
    report.flags = await store.events_between(FLAG_TYPES, since, until)
    report.summary = summary_doc(
        await store.period_summary(since, until), report.alerts, report.flags, report.checks
    )
    failed = await store.events_between(FAILED_TYPES, since, until)
    report.summary["failed_attempts"] = attempts_summary(attempts(failed, AttemptFilter()))
    return report


def _rule(e: StoredEvent) -> str:
    alert = e.typed()
    return alert.rule if isinstance(alert, catalogue.Alert) else e.type


async def sessions(store: AuditorReads, report: Report) -> AsyncIterator[list[SessionFacts]]:
    """The period's sessions with their facts, by id, a batch at a time."""
    checks = report.checks
    async for batch in store.period_sessions(report.since, report.until, INTERESTING_TYPES):
        out = []
        for row, events in batch:
            f = facts_of_rows(row, events)
            if checks:
                for c in row.channels:
                    status = checks.get((row.id, c.n))
                    if status is not None:
                        f.recording_checks[c.n] = status
            out.append(f)
        yield out


def _totals(g: GroupTotals) -> dict[str, Any]:
    return {
        "sessions": g.sessions,
        "total_seconds": round(g.total_seconds, 3),
        "longest": round(g.longest, 3),
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summary_doc(
    ps: PeriodSummary,
    alerts: Sequence[StoredEvent],
    flags: Sequence[StoredEvent],
    checks: dict[tuple[str, int], str],
) -> dict[str, Any]:
    alert_rules = Counter(_rule(e) for e in alerts)
    return {
        "sessions": ps.sessions,
        "people": len(ps.by_person),
        "by_person": {k: _totals(v) for k, v in sorted(ps.by_person.items())},
        "by_target": {k: _totals(v) for k, v in sorted(ps.by_target.items())},
        "durations": {
            # round(sum([]), 3) is the int 0: kept, so an empty period reads the same.
            "total": round(ps.total_seconds, 3) if ps.ended else 0,
            "mean": _rounded(ps.mean),
            "median": _rounded(ps.median),
            "longest": _rounded(ps.longest),
        },
        "end_reasons": dict(sorted(ps.end_reasons.items())),
        "alerts": len(alerts),
        "alerts_by_rule": dict(sorted(alert_rules.items())),
        "flags": len(flags),
        "flagged_sessions": ps.flagged,
        "reviewed_sessions": ps.reviewed,
        "recordings": dict(sorted(Counter(checks.values()).items())),
    }


def _duration(f: SessionFacts) -> float | None:
    s = f.session
    return None if s.ended_at is None else s.ended_at - s.started_at


# Durations repeat (whole seconds, mostly under an hour): formatted once each.
_format_seconds = functools.lru_cache(maxsize=16384)(format_duration)


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else _format_seconds(round(seconds))


def _event_line(e: StoredEvent) -> str:
    return md(f"{e.type} {data_pairs(e.data)}")


# -- Markdown ---------------------------------------------------------------------------


def markdown_head(report: Report) -> str:
    """Everything before the first session, up to the "## Sessions" heading."""
    sm = report.summary
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
    out += _failed_markdown(sm.get("failed_attempts") or {})
    out += ["", "## Sessions"]
    return "\n".join(out)


FAILED_ROWS = 20  # per table; `breakglass attempts` lists every one


def _failed_markdown(failed: dict[str, Any]) -> list[str]:
    out = ["", "### Failed login attempts", ""]
    if not failed.get("total"):
        return [*out, "None in this period."]
    out.append(f"{failed['total']} failed attempt(s); `breakglass attempts` lists each.")
    for title, key in (("source", "by_source"), ("person", "by_person"), ("reason", "by_reason")):
        counts: dict[str, int] = failed[key]
        out += ["", f"| {title} | attempts |", "|---|---:|"]
        out += [f"| {md(k)} | {v} |" for k, v in list(counts.items())[:FAILED_ROWS]]
        if len(counts) > FAILED_ROWS:
            rest = sum(list(counts.values())[FAILED_ROWS:])
            out.append(f"| {len(counts) - FAILED_ROWS} more | {rest} |")
    return out


class _Escaped(dict[str, str]):
    """md() of the texts that repeat across sessions (people, targets, logins, sources,
    commands, paths), each escaped once: a year's report escapes a million cells, and a
    dict hit is a fraction of a regex match. Bounded: cleared when full."""

    def __missing__(self, text: str) -> str:
        if len(self) >= 1 << 16:
            self.clear()
        shown = self[text] = md(text)
        return shown


_md = _Escaped()


def session_markdown(f: SessionFacts) -> str:
    """One session's section, without the blank line before it."""
    s = f.session
    cell = _md
    person, login, target = cell[s.person], cell[s.login], cell[s.target]
    checks = f.recording_checks
    channels = "<br>".join(
        f"{s.id}/{c.n} {cell[c.kind]}{' pty' if c.pty else ''}"
        f"{(' ' + cell[c.command]) if c.command else ''}, "
        + (f"signal {md(c.exit_signal)}" if c.exit_signal else f"exit {c.exit_status}")
        + f", {c.bytes_up} B up, {c.bytes_down} B down"
        + f", recording {checks.get(c.n, '-')}"
        + (f" (sha256 {c.recording_sha256})" if c.recording_sha256 else "")
        for c in s.channels
    )
    if f.alerts or f.flags or f.overrides:
        system = "<br>".join(
            f"{label}: {_event_line(e)}"
            for label, items in (
                (catalogue.Alert.TYPE, f.alerts),
                (catalogue.Flag.TYPE, f.flags),
                ("override", f.overrides),
            )
            for e in items
        )
    else:
        system = "none recorded"
    if f.reviews:
        reviews = "<br>".join(f"{rfc3339(r.time)} {md(r.by)}: {md(r.note)}" for r in f.reviews)
    else:
        reviews = "not reviewed"
    end = md(s.end_reason or "live") + (f": {md(s.end_detail)}" if s.end_detail else "")
    ended = rfc3339(s.ended_at) if s.ended_at is not None else "still live"
    text = (
        f"### {s.id}: {person} on {login}@{target}\n"
        "\n"
        "| | |\n"
        "|---|---|\n"
        f"| Who | {person} (code {cell[s.credential_id]}) from {cell[s.source]},"
        f" client {cell[s.client_version]} |\n"
        f"| When | {rfc3339(s.started_at)} to {ended}"
        f" ({_dur(_duration(f))}; deadline {rfc3339(s.deadline)}) |\n"
        f"| Where | {login}@{target} |\n"
        f"| Why | {md(s.justification)} |\n"
        f"| How it ended | {end} |\n"
        f"| Channels | {channels or 'none'} |\n"
        f"| System response | {system} |\n"
        f"| Reviews | {reviews} |"
    )
    lines = [
        f"- {rfc3339(r.time)} {s.id if r.channel is None else f'{s.id}/{r.channel}'}"
        f" {cell[r.kind]}: {cell[r.text]}{f' ({r.direction})' if r.direction else ''}"
        f"{_status(r.status)}"
        for r in f.resources
        if r.text
    ]
    if lines:
        return text + "\n\nResources accessed:\n\n" + "\n".join(lines)
    return text


def _status(status: str | None) -> str:
    return f" \\[{md(status)}\\]" if status else ""


async def write_markdown(store: AuditorReads, report: Report, out: TextIO) -> None:
    out.write(markdown_head(report))
    empty = True
    async for batch in sessions(store, report):
        if batch:
            empty = False
            out.write("".join(["\n\n" + session_markdown(f) for f in batch]))
    out.write("\n\nNo sessions in this period.\n" if empty else "\n")


# -- JSON -------------------------------------------------------------------------------


def json_head(report: Report) -> dict[str, Any]:
    """The report document without its "sessions" (the last key)."""
    return {
        "since": rfc3339(report.since),
        "until": rfc3339(report.until),
        "generated_at": rfc3339(report.generated_at),
        "summary": report.summary,
        "alerts": [
            {"seq": e.seq, "time": rfc3339(e.time), "session": e.session_id, "data": e.data}
            for e in report.alerts
        ],
    }


async def write_json(store: AuditorReads, report: Report, out: TextIO) -> None:
    """One compact JSON document, as safe_json(..., compact=True) writes it: compact
    because the C encoder is several times faster on a month of sessions; machines read
    it, and `jq .` pretty-prints it. Written a batch of sessions at a time."""
    head = _JSON.encode(json_head(report))
    out.write(json_terminal_safe(head[:-1]) + ',"sessions":[')
    sep = ""
    async for batch in sessions(store, report):
        if batch:
            # A list's compact encoding, brackets cut: the elements joined by ",".
            body = _JSON.encode([facts_json(f) for f in batch])[1:-1]
            out.write(sep + json_terminal_safe(body))
            sep = ","
    out.write("]}\n")


# -- CSV --------------------------------------------------------------------------------

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


def csv_row(f: SessionFacts) -> list[Any]:
    """One session's row. Untrusted text is escaped and formula-neutralised; the
    numbers and times the proxy wrote itself are plain."""
    s = f.session
    d = _duration(f)
    return [
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


async def write_csv(store: AuditorReads, report: Report, out: TextIO) -> None:
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    async for batch in sessions(store, report):
        w.writerows(csv_row(f) for f in batch)


def _plain(e: StoredEvent) -> str:
    return f"{e.type} {data_pairs(e.data)}"


def _joined(items: Iterable[str]) -> str:
    return " ; ".join(items)


# -- the command ------------------------------------------------------------------------

WRITERS = {"markdown": write_markdown, "json": write_json, "csv": write_csv}


async def write_report(
    store: AuditorReads,
    recordings: Path,
    since: float | None,
    until: float | None,
    now: float,
    fmt: str,
    out: TextIO,
    *,
    check_recordings: bool = True,
    checks: RecordingChecks | None = None,
) -> None:
    """Read the period from ``store`` and write the report in ``fmt`` to ``out``."""
    report = await build_report(
        store, recordings, since, until, now, check_recordings=check_recordings, checks=checks
    )
    await WRITERS[fmt](store, report, out)


def formats() -> Sequence[str]:
    return tuple(WRITERS)
