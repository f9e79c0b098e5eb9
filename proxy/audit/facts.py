"""What one session's events say, sorted into what an auditor asks for.

Owns the classification shared by ``show``, ``report`` and ``export``: resources
accessed (channel command lines, ``command`` and ``file_*`` events, refused requests),
the system response (alerts, flags, operator overrides), review sign-offs, and each
recording's hash check. Pure apart from ``with_recordings``, which hashes the files.

Event types not known here are still shown by ``show`` in its full event list; an
unknown type is never dropped silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from proxy.audit.verify import RecordingChecks, channel_recording_check
from proxy.core import events
from proxy.core.chaincheck import ALERT_TYPES, FLAG_TYPES, PRUNED
from proxy.store.base import ChannelRow, EventTuple, SessionRow, StoredEvent
from proxy.store.rows import loads

REVIEW_TYPE = events.Review.TYPE
# Operator actions on a running session (breakglass kill / extend, proxy/alerts/overrides).
OVERRIDE_TYPES = frozenset(
    {events.OperatorKill.TYPE, events.OperatorExtend.TYPE, events.DeadlineChanged.TYPE}
)
RESOURCE_TYPES = frozenset({events.Command.TYPE, events.RequestRefused.TYPE, *events.FILE_TYPES})

# Every type the auditor's views pick out of a session.
INTERESTING_TYPES = frozenset(
    {*ALERT_TYPES, *FLAG_TYPES, *OVERRIDE_TYPES, *RESOURCE_TYPES, REVIEW_TYPE, PRUNED}
)


def is_resource(type_: str) -> bool:
    return type_ in RESOURCE_TYPES


class Resource(NamedTuple):
    """One resource accessed. A named tuple, not a dataclass: a year's report makes a
    quarter of a million of them, and a tuple costs a third as much to make."""

    time: float
    channel: int | None
    kind: str  # exec, subsystem, shell, command, file_open ..., refused
    text: str
    offset: float | None = None  # seconds into the channel's recording, when known
    status: str | None = None
    direction: str | None = None  # file events: read, write or both (file_direction)


@dataclass(frozen=True)
class Review:
    time: float
    by: str
    note: str


@dataclass
class SessionFacts:
    session: SessionRow
    resources: list[Resource] = field(default_factory=list)
    alerts: list[StoredEvent] = field(default_factory=list)
    flags: list[StoredEvent] = field(default_factory=list)
    overrides: list[StoredEvent] = field(default_factory=list)
    reviews: list[Review] = field(default_factory=list)
    recording_checks: dict[int, str] = field(default_factory=dict)
    pruned: dict[int, int] = field(default_factory=dict)  # channel -> recording_pruned seq


_READS = frozenset(t.TYPE for t in (events.FileRead, events.FileList, events.FileReadlink))
_WRITES = frozenset(
    t.TYPE
    for t in (
        events.FileWrite,
        events.FileRemove,
        events.FileRmdir,
        events.FileMkdir,
        events.FileSetstat,
        events.FileRename,
        events.FileSymlink,
        events.FileLink,
    )
)
_BY_BYTES = frozenset(t.TYPE for t in (events.FileOpen, events.FileClose, events.FileCopy))


def file_direction(ev: events.FileEvent) -> str | None:
    """Which way a file event moved data: ``read``, ``write`` or ``both``; None when it
    says nothing either way (stat, fsync). An SFTP open/close tells by the bytes it
    moved, or else by the flags it was opened with."""
    kind = ev.TYPE
    if kind in _READS:
        return "read"
    if kind in _WRITES:
        return "write"
    if kind not in _BY_BYTES:
        return None
    read = bool(events.given(ev.bytes_read, 0))
    wrote = bool(events.given(ev.bytes_written, 0))
    if not (read or wrote):
        flags = events.given(ev.flags, [])
        read, wrote = "read" in flags, "write" in flags
    if kind == events.FileCopy.TYPE:
        read = wrote = True
    return "both" if read and wrote else "read" if read else "write" if wrote else None


def _resource(t: float, channel: int | None, type_: str, d: Mapping[str, Any]) -> Resource | None:
    if type_ not in RESOURCE_TYPES:
        return None  # not a resource (an unknown type is shown in the full list only)
    match events.decode(type_, d):
        case events.Command() as ev:
            return Resource(t, channel, ev.TYPE, ev.text or "", float(ev.offset))
        case events.FileEvent() as ev:
            text = ev.path or ""
            target = events.given(ev.target_path, None)
            if target is not None:
                text += " -> " + target
            status = events.given(ev.status, None)
            direction = file_direction(ev)
            return Resource(t, channel, ev.TYPE, text, float(ev.offset), status, direction)
        case events.RequestRefused() as ev:
            text = ev.request + (f" ({ev.detail})" if ev.detail else "")
            return Resource(t, channel, "refused", text, None, "refused")
    return None


def _review(t: float, type_: str, d: Mapping[str, Any]) -> Review:
    ev = events.decode(type_, d)
    assert isinstance(ev, events.Review)
    return Review(t, ev.by, ev.note)


def resource_of(e: StoredEvent) -> Resource | None:
    return _resource(e.time, e.channel, e.type, e.data)


def _channel_resource(c: ChannelRow) -> Resource:
    if c.kind == "exec" or c.kind == "subsystem":
        return Resource(c.started_at, c.n, c.kind, c.command or "", 0.0)
    return Resource(c.started_at, c.n, c.kind, "", 0.0)


def _resource_order(r: Resource) -> tuple[float, int]:
    return (r.time, r.channel or 0)


def session_facts(s: SessionRow, events: Iterable[StoredEvent]) -> SessionFacts:
    facts = SessionFacts(s, [_channel_resource(c) for c in s.channels])
    for e in events:
        if e.type in ALERT_TYPES:
            facts.alerts.append(e)
        elif e.type in FLAG_TYPES:
            facts.flags.append(e)
        elif e.type in OVERRIDE_TYPES:
            facts.overrides.append(e)
        elif e.type == PRUNED and e.channel is not None:
            facts.pruned[e.channel] = e.seq
        elif e.type == REVIEW_TYPE:
            facts.reviews.append(_review(e.time, e.type, e.data))
        else:
            res = resource_of(e)
            if res is not None:
                facts.resources.append(res)
    facts.resources.sort(key=_resource_order)
    return facts


def facts_of_rows(s: SessionRow, rows: Iterable[EventTuple]) -> SessionFacts:
    """``session_facts`` for events as the bulk readers return them (``EventTuple``):
    the same facts, but a StoredEvent is made only for what the facts keep as one
    (alerts, flags, overrides), not for every command and file event of a year."""
    facts = SessionFacts(s, [_channel_resource(c) for c in s.channels])
    resources = facts.resources
    for row in rows:
        seq, t, type_, _sid, channel, data_json, _prev, _hash = row
        if type_ in ALERT_TYPES:
            facts.alerts.append(_stored(row))
        elif type_ in FLAG_TYPES:
            facts.flags.append(_stored(row))
        elif type_ in OVERRIDE_TYPES:
            facts.overrides.append(_stored(row))
        elif type_ == PRUNED and channel is not None:
            facts.pruned[channel] = seq
        elif type_ == REVIEW_TYPE:
            facts.reviews.append(_review(t, type_, loads(data_json)))
        elif is_resource(type_):
            res = _resource(t, channel, type_, loads(data_json))
            if res is not None:
                resources.append(res)
    resources.sort(key=_resource_order)
    return facts


def _stored(r: EventTuple) -> StoredEvent:
    return StoredEvent(int(r[0]), float(r[1]), r[2], r[3], r[4], loads(r[5]), r[6], r[7])


def with_recordings(facts: SessionFacts, root: Path) -> SessionFacts:
    """Fill ``recording_checks`` by hashing each channel's recording."""
    for c in facts.session.channels:
        if c.recording is None and c.recording_sha256 is None:
            continue
        facts.recording_checks[c.n] = channel_recording_check(c, root, facts.pruned.get(c.n))
    return facts


async def with_checks(facts: SessionFacts, checks: RecordingChecks) -> SessionFacts:
    """Fill ``recording_checks`` with ``checks`` (``with_recordings`` checks files)."""
    channels = [
        (c, facts.pruned.get(c.n))
        for c in facts.session.channels
        if c.recording is not None or c.recording_sha256 is not None
    ]
    found = await checks(channels)
    for c, _ in channels:
        facts.recording_checks[c.n] = found[(c.session_id, c.n)]
    return facts


def event_summary(e: StoredEvent, skip: Sequence[str] = ()) -> dict[str, Any]:
    """An event's data without the fields already shown elsewhere."""
    return {k: v for k, v in sorted(e.data.items()) if k not in skip}
