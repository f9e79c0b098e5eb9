"""The auditor's views of sessions: JSON documents and human tables.

Owns presentation only: RFC 3339 UTC times, and escaping of every untrusted string
(justification, username, command) before it reaches a terminal. JSON carries the text
verbatim (JSON escapes control characters itself).
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Sequence
from typing import Any

from proxy.audit.facts import Resource, SessionFacts
from proxy.core.text import escape
from proxy.core.units import format_duration
from proxy.store.base import ChannelRow, SessionRow, StoredEvent


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    stamp = dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


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


@functools.lru_cache(maxsize=4096)
def _cell(text: str | None, width: int) -> str:
    # Cached: people, targets and end reasons repeat across thousands of rows.
    shown = escape(text or "-")
    return shown if len(shown) <= width else shown[: width - 1] + "…"


_short_duration = functools.lru_cache(maxsize=8192)(format_duration)


def sessions_table(rows: Sequence[SessionRow]) -> str:
    header = (
        f"{'SESSION':12}  {'STARTED (UTC)':19}  {'DURATION':>8}  {'PERSON':12}  "
        f"{'TARGET':16}  {'END':14}  JUSTIFICATION"
    )
    lines = [header]
    for s in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(s.started_at))
        duration = (
            "live" if s.ended_at is None else _short_duration(round(s.ended_at - s.started_at))
        )
        lines.append(
            f"{s.id:12}  {started:19}  {duration:>8}  {_cell(s.person, 12):12}  "
            f"{_cell(s.login + '@' + s.target, 16):16}  {_cell(s.end_reason or 'live', 14):14}  "
            f"{_cell(s.justification, 60)}"
        )
    if not rows:
        lines.append("(no sessions)")
    return "\n".join(lines)


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
    }


def show_json(facts: SessionFacts, events: Sequence[StoredEvent]) -> dict[str, Any]:
    """``session_json`` plus what the auditor's side adds: recording checks, resources
    accessed, the system response and reviews."""
    s = facts.session
    doc = session_json(s, events)
    for ch in doc["channels"]:
        n = int(str(ch["id"]).rsplit("/", 1)[1])
        ch["recording_check"] = facts.recording_checks.get(n)
    doc["resources"] = [resource_json(s, r) for r in facts.resources]
    doc["alerts"] = [_event_ref(s, e) for e in facts.alerts]
    doc["flags"] = [_event_ref(s, e) for e in facts.flags]
    doc["overrides"] = [_event_ref(s, e) for e in facts.overrides]
    doc["reviews"] = [{"time": rfc3339(r.time), "by": r.by, "note": r.note} for r in facts.reviews]
    return doc


def _data_text(data: dict[str, Any], skip: Sequence[str] = ()) -> str:
    return " ".join(f"{k}={escape(str(v))}" for k, v in sorted(data.items()) if k not in skip)


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
        out.append(f"  {rfc3339(r.time)}  {chan}{at}  {escape(r.kind)}{text}{status}")
    if not facts.resources:
        out.append("  (none)")
    out += ["", "System response"]
    for label, items in (
        ("alert", facts.alerts),
        ("flag", facts.flags),
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
