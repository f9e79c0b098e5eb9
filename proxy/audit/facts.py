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

from proxy.audit.verify import channel_recording_check
from proxy.core.chaincheck import ALERT_TYPES, FLAG_TYPES, PRUNED
from proxy.store.base import ChannelRow, EventTuple, SessionRow, StoredEvent
from proxy.store.rows import loads

REVIEW_TYPE = "review"
# Operator actions on a running session (breakglass kill / extend, proxy/alerts/overrides).
OVERRIDE_TYPES = frozenset({"operator_kill", "operator_extend", "deadline_changed"})
RESOURCE_TYPES = frozenset({"command", "request_refused"})

# Every type the auditor's views pick out of a session, as store type patterns.
INTERESTING_TYPES = frozenset(
    {*ALERT_TYPES, *FLAG_TYPES, *OVERRIDE_TYPES, *RESOURCE_TYPES, REVIEW_TYPE, PRUNED, "file_*"}
)


def is_resource(type_: str) -> bool:
    return type_ in RESOURCE_TYPES or type_.startswith("file_")


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


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _offset(data: Mapping[str, Any]) -> float | None:
    value = data.get("offset")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


_READS = frozenset({"file_read", "file_list", "file_readlink"})
_WRITES = frozenset(
    {"file_write", "file_remove", "file_rmdir", "file_mkdir", "file_setstat", "file_rename"}
    | {"file_symlink", "file_link"}
)


def file_direction(kind: str, d: Mapping[str, Any]) -> str | None:
    """Which way a file event moved data: ``read``, ``write`` or ``both``; None when it
    says nothing either way (stat, fsync). An SFTP open/close tells by the bytes it
    moved, or else by the flags it was opened with."""
    if kind in _READS:
        return "read"
    if kind in _WRITES:
        return "write"
    if kind not in ("file_open", "file_close", "file_copy"):
        return None
    read, wrote = bool(d.get("bytes_read")), bool(d.get("bytes_written"))
    if not (read or wrote):
        flags = d.get("flags")
        flags = flags if isinstance(flags, list) else []
        read, wrote = "read" in flags, "write" in flags
    if kind == "file_copy":
        read = wrote = True
    return "both" if read and wrote else "read" if read else "write" if wrote else None


def _resource(t: float, channel: int | None, type_: str, d: Mapping[str, Any]) -> Resource | None:
    if type_ == "command":
        # The commonest event of all: text a str and offset a float skip the calls.
        text, offset, status = d.get("text"), d.get("offset"), d.get("status")
        return Resource(
            t,
            channel,
            "command",
            text if type(text) is str else _str(text),
            offset if type(offset) is float else _offset(d),
            None if status is None else _str(status),
        )
    if type_.startswith("file_"):
        text = _str(d.get("path"))
        for key in ("target_path", "to", "new_path"):
            if d.get(key) is not None:
                text += " -> " + _str(d.get(key))
                break
        return Resource(
            t,
            channel,
            type_,
            text,
            _offset(d),
            None if d.get("status") is None else _str(d.get("status")),
            file_direction(type_, d),
        )
    if type_ == "request_refused":
        detail = _str(d.get("detail"))
        text = _str(d.get("request")) + (f" ({detail})" if detail else "")
        return Resource(t, channel, "refused", text, _offset(d), "refused")
    return None


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
            facts.reviews.append(Review(e.time, _str(e.data.get("by")), _str(e.data.get("note"))))
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
            d = loads(data_json)
            facts.reviews.append(Review(t, _str(d.get("by")), _str(d.get("note"))))
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


def event_summary(e: StoredEvent, skip: Sequence[str] = ()) -> dict[str, Any]:
    """An event's data without the fields already shown elsewhere."""
    return {k: v for k, v in sorted(e.data.items()) if k not in skip}
