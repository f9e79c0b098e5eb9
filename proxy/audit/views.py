"""The auditor's views of sessions: JSON documents and human tables.

Owns presentation only: RFC 3339 UTC times, and escaping of every untrusted string
(justification, username, command) before it reaches a terminal. JSON carries the text
verbatim (JSON escapes control characters itself).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TextIO

from proxy.audit.facts import Resource, SessionFacts
from proxy.core import events as catalogue
from proxy.core.text import escape, json_terminal_safe
from proxy.core.units import format_duration
from proxy.store.base import ChannelRow, SessionRow, StoredEvent


def rfc3339(t: float | None) -> str | None:
    """``2026-01-31T12:00:00.123Z``: exactly what datetime.fromtimestamp(t, UTC)
    .isoformat(timespec="milliseconds") gives, at a fraction of its cost (a year's
    report formats a million of these)."""
    if t is None:
        return None
    if 0.0 <= t < _FAST_UNTIL:  # False for NaN: datetime raises for it below
        # datetime's own rounding: the fraction to the nearest microsecond, ties to
        # even (as round() does), carrying into the second; then milliseconds cut.
        frac, whole = math.modf(t)
        micros = round(frac * 1e6)
        seconds = int(whole)
        if micros >= 1_000_000:
            seconds += 1
            micros -= 1_000_000
        minute, second = divmod(seconds, 60)
        prefix = _MINUTES.get(minute) or _minute_prefix(minute)
        return f"{prefix}{second:02d}.{micros // 1000:03d}Z"
    stamp = dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


# Up to a day before datetime's last year ends, so a rounded-up second stays in range.
_FAST_UNTIL = 253402214400.0  # 9999-12-31T00:00:00Z
# "YYYY-MM-DDTHH:MM:" per minute since the epoch: the events of one session share
# minutes. Bounded, so a long-running process cannot grow it without end.
_MINUTES: dict[int, str] = {}
_MINUTES_MAX = 1 << 16


def _minute_prefix(minute: int) -> str:
    if len(_MINUTES) >= _MINUTES_MAX:
        _MINUTES.clear()
    prefix = _MINUTES[minute] = time.strftime("%Y-%m-%dT%H:%M:", time.gmtime(minute * 60))
    return prefix


# Event data fields that hold a Unix time (the deadline of a session_start or an
# extension, a retention run's cut-off...): shown as RFC 3339 to people, kept as numbers
# in JSON.
_TIME_KEYS = frozenset({"deadline", "until", "since", "time", "timestamp", "mtime", "atime"})
_TIME_SUFFIXES = ("_at", "_until", "_ends", "_deadline")


def data_value(key: str, value: Any) -> str:
    """One event data value as a person reads it: times in RFC 3339."""
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (key in _TIME_KEYS or key.endswith(_TIME_SUFFIXES))
    ):
        return rfc3339(float(value)) or str(value)
    return str(value)


def data_pairs(data: dict[str, Any], skip: Sequence[str] = ()) -> str:
    """``key=value`` pairs of event data, sorted, times in RFC 3339 (not escaped: each
    caller escapes for where the text lands)."""
    return " ".join(f"{k}={data_value(k, v)}" for k, v in sorted(data.items()) if k not in skip)


def channel_json(c: ChannelRow) -> dict[str, Any]:
    return {
        "id": f"{c.session_id}/{c.n}",
        "kind": c.kind,
        "command": c.command,
        "pty": c.pty,
        "term": c.term,
        "started_at": rfc3339(c.started_at),
        "ended_at": rfc3339(c.ended_at),
        "exit_status": c.exit_status,
        "exit_signal": c.exit_signal,
        "recording": c.recording,
        "recording_sha256": c.recording_sha256,
        "recording_bytes": c.recording_bytes,
        "bytes_up": c.bytes_up,
        "bytes_down": c.bytes_down,
    }


def session_json(s: SessionRow, events: Sequence[StoredEvent] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": s.id,
        "person": s.person,
        "credential_id": s.credential_id,
        "source": s.source,
        "client_version": s.client_version,
        "target": s.target,
        "login": s.login,
        "justification": s.justification,
        "started_at": rfc3339(s.started_at),
        "ended_at": rfc3339(s.ended_at),
        "duration": None if s.ended_at is None else round(s.ended_at - s.started_at, 3),
        "deadline": rfc3339(s.deadline),
        "end_reason": s.end_reason,
        "end_detail": s.end_detail,
        "channels": [channel_json(c) for c in s.channels],
    }
    if events is not None:
        doc["events"] = [
            {
                "seq": e.seq,
                "time": rfc3339(e.time),
                "type": e.type,
                "channel": None if e.channel is None else f"{s.id}/{e.channel}",
                "data": e.data,
            }
            for e in events
        ]
    return doc


def _duration(s: SessionRow) -> str:
    assert s.ended_at is not None
    return format_duration(round(s.ended_at - s.started_at))


def _clip(text: str | None, width: int) -> str:
    shown = escape(text or "-")
    return shown if len(shown) <= width else shown[: width - 1] + "…"


TABLE_HEADER = (
    f"{'SESSION':12}  {'STARTED (UTC)':19}  {'DURATION':>8}  {'PERSON':12}  "
    f"{'TARGET':16}  {'END':14}  JUSTIFICATION"
)


class _Cells(dict[Any, str]):
    """Padded, escaped cells of one column, each made once: people, targets, end
    reasons and durations repeat across thousands of rows (a justification rarely
    does, so it is not kept)."""

    def __init__(self, make: Callable[[Any], str]) -> None:
        super().__init__()
        self._make = make

    def __missing__(self, key: Any) -> str:
        cell = self[key] = self._make(key)
        return cell


def sessions_table_lines(rows: Iterable[SessionRow], id_width: int = 12) -> Iterator[str]:
    """The human table, one line at a time (a listing of every session is 100,000
    lines: printed as they come, not built into one string). ``id_width``: the widest
    id (a fleet's are ``NODE/SESSION``)."""
    yield TABLE_HEADER if id_width <= 12 else f"{'SESSION':{id_width}}" + TABLE_HEADER[12:]
    people = _Cells(lambda p: f"{_clip(p, 12):12}")
    places = _Cells(lambda where: f"{_clip(where, 16):16}")
    ends = _Cells(lambda reason: f"{_clip(reason or 'live', 14):14}")
    durations = _Cells(lambda seconds: f"{format_duration(seconds):>8}")
    strftime, gmtime = time.strftime, time.gmtime
    empty = True
    for s in rows:
        empty = False
        duration = (
            f"{'live':>8}" if s.ended_at is None else durations[round(s.ended_at - s.started_at)]
        )
        started = strftime("%Y-%m-%d %H:%M:%S", gmtime(s.started_at))
        yield (
            f"{s.id:{id_width}}  {started:19}  {duration}  {people[s.person]}  "
            f"{places[s.login + '@' + s.target]}  {ends[s.end_reason]}  "
            f"{_clip(s.justification, 60)}"
        )
    if empty:
        yield "(no sessions)"


def sessions_table(rows: Sequence[SessionRow]) -> str:
    return "\n".join(sessions_table_lines(rows))


def write_lines(out: TextIO, lines: Iterable[str], batch: int = 4096) -> None:
    """Write ``lines``, each followed by a newline, a few thousand per write() call."""
    chunk: list[str] = []
    for line in lines:
        chunk.append(line)
        if len(chunk) >= batch:
            chunk.append("")
            out.write("\n".join(chunk))
            chunk.clear()
    if chunk:
        chunk.append("")
        out.write("\n".join(chunk))


# Compact, one object per call: the C encoder (json.dumps uses the slow Python one when
# indenting); ensure_ascii off as in safe_json, whose terminal escaping follows.
_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def write_json_lines_array(out: TextIO, docs: Iterable[object], batch: int = 1024) -> None:
    """One JSON array with one compact element per line: the same document ``safe_json``
    makes, terminal-safe too, but written as it is built. Used for the long listings,
    where indenting would take seconds and a line per element still reads well."""
    out.write("[")
    sep = "\n"
    chunk: list[str] = []
    for doc in docs:
        chunk.append(_COMPACT_JSON.encode(doc))
        if len(chunk) >= batch:
            out.write(sep + json_terminal_safe(",\n".join(chunk)))
            sep = ",\n"
            chunk.clear()
    if chunk:
        out.write(sep + json_terminal_safe(",\n".join(chunk)))
        sep = ",\n"
    out.write("\n]\n" if sep != "\n" else "]\n")


# -- show: the full record of one session -------------------------------------------


def _event_ref(s: SessionRow, e: StoredEvent) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "time": rfc3339(e.time),
        "type": e.type,
        "channel": None if e.channel is None else f"{s.id}/{e.channel}",
        "data": e.data,
    }


def resource_json(s: SessionRow, r: Resource) -> dict[str, Any]:
    return {
        "time": rfc3339(r.time),
        "channel": None if r.channel is None else f"{s.id}/{r.channel}",
        "kind": r.kind,
        "text": r.text,
        "offset": r.offset,
        "status": r.status,
        "direction": r.direction,
    }


def show_json(facts: SessionFacts, events: Sequence[StoredEvent]) -> dict[str, Any]:
    """``session_json`` plus what the auditor's side adds: recording checks, resources
    accessed, the system response and reviews."""
    return facts_json(facts, events)


def facts_json(facts: SessionFacts, events: Sequence[StoredEvent] | None = None) -> dict[str, Any]:
    """``show_json``; without ``events`` (the report's per-session document) the doc has
    no "events" key at all."""
    s = facts.session
    doc = session_json(s, events)
    checks = facts.recording_checks
    for c, ch in zip(s.channels, doc["channels"], strict=True):
        ch["recording_check"] = checks.get(c.n)
    doc["resources"] = [resource_json(s, r) for r in facts.resources]
    doc["alerts"] = [_event_ref(s, e) for e in facts.alerts]
    doc["flags"] = [_event_ref(s, e) for e in facts.flags]
    doc["overrides"] = [_event_ref(s, e) for e in facts.overrides]
    doc["reviews"] = [{"time": rfc3339(r.time), "by": r.by, "note": r.note} for r in facts.reviews]
    return doc


def _data_text(data: dict[str, Any], skip: Sequence[str] = ()) -> str:
    return " ".join(
        f"{k}={escape(data_value(k, v))}" for k, v in sorted(data.items()) if k not in skip
    )


def show_text(facts: SessionFacts, events: Sequence[StoredEvent]) -> str:
    s = facts.session
    duration = "-" if s.ended_at is None else _duration(s)
    end_detail = f" - {escape(s.end_detail)}" if s.end_detail else ""
    out = [
        f"Session        {s.id}",
        f"Person         {escape(s.person)} (code {escape(s.credential_id)})",
        f"Source         {escape(s.source)}  client {escape(s.client_version)}",
        f"Target         {escape(s.login)}@{escape(s.target)}",
        f"Justification  {escape(s.justification)}",
        f"Started        {rfc3339(s.started_at)}",
        f"Deadline       {rfc3339(s.deadline)}",
        f"Ended          {rfc3339(s.ended_at) or 'live'}  ({duration})",
        f"End reason     {escape(s.end_reason or '-')}{end_detail}",
        "",
        "Channels",
    ]
    for c in s.channels:
        what = c.command if c.command is not None else c.kind
        status = (c.exit_signal and f"signal {escape(c.exit_signal)}") or f"exit {c.exit_status}"
        out.append(
            f"  {s.id}/{c.n}  {escape(c.kind):9} {'pty' if c.pty else 'no-pty':6} {status:10} "
            f"up {c.bytes_up}B down {c.bytes_down}B  {escape(what)}"
        )
        check = facts.recording_checks.get(c.n)
        out.append(
            f"      recording {escape(c.recording or '-')}  sha256 {c.recording_sha256 or '-'}"
            f"  {check or '-'}"
        )
    if not s.channels:
        out.append("  (none)")
    out += ["", "Resources accessed"]
    for r in facts.resources:
        chan = f"{s.id}/{r.channel}" if r.channel is not None else s.id
        at = "" if r.offset is None else f" @{r.offset:.1f}s"
        status = f" [{escape(r.status)}]" if r.status else ""
        text = f"  {escape(r.text)}" if r.text else ""
        way = f" ({r.direction})" if r.direction else ""
        out.append(f"  {rfc3339(r.time)}  {chan}{at}  {escape(r.kind)}{text}{way}{status}")
    if not facts.resources:
        out.append("  (none)")
    out += ["", "System response"]
    for label, items in (
        (catalogue.Alert.TYPE, facts.alerts),
        (catalogue.Flag.TYPE, facts.flags),
        ("override", facts.overrides),
    ):
        for e in items:
            out.append(f"  {rfc3339(e.time)}  {label:8}  {escape(e.type)}  {_data_text(e.data)}")
    if not (facts.alerts or facts.flags or facts.overrides):
        out.append("  (no alerts, flags or overrides recorded)")
    out += ["", "Reviews"]
    for rv in facts.reviews:
        out.append(f"  {rfc3339(rv.time)}  {escape(rv.by)}: {escape(rv.note)}")
    if not facts.reviews:
        out.append("  (not reviewed)")
    out += ["", "Events"]
    for e in events:
        chan = f" {s.id}/{e.channel}" if e.channel is not None else ""
        detail = _data_text(e.data, ("justification",))
        out.append(f"  {e.seq:>6}  {rfc3339(e.time)}  {escape(e.type)}{chan}  {detail}")
    return "\n".join(out)
