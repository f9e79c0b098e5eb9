"""Rows of the SQLite store turned into the records of ``store.base``, shared by the
store's modules: the column lists, the converters, the type filter and a fast JSON
decoder for event data.

Pure: no I/O. The converters are on the hot path of every listing and report (100,000
sessions, a quarter of a million events), so they stay plain.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from proxy.store.base import ChannelRow, SessionRow, StoredEvent

SESSION_COLS = (
    "id, person, credential_id, source, client_version, target, login, justification, "
    "started_at, deadline, ended_at, end_reason, end_detail"
)
CHANNEL_COLS = (
    "session_id, n, kind, command, pty, term, started_at, ended_at, exit_status, "
    "exit_signal, recording, recording_sha256, recording_bytes, bytes_up, bytes_down"
)
EVENT_COLS = "seq, time, type, session_id, channel, data, prev_hash, hash"

# SQLite caps the number of bound parameters (32766 by default): lists of ids go in
# chunks of this many.
CHUNK = 900

# The C scanner behind json.loads, called directly: json.loads spends more time in its
# Python wrapper than in parsing the small objects events carry.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def loads(text: str) -> Any:
    """``json.loads(text)``, faster for the store's own canonical JSON (no whitespace
    around it). Anything the scanner does not take whole goes to json.loads, which
    decides and raises exactly as before."""
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError):
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


def type_clause(types: Collection[str] | None) -> tuple[str, list[str]]:
    """`` AND (type IN (...) OR type GLOB ...)``: a type with ``*`` is a glob."""
    if types is None:
        return "", []
    exact = sorted(t for t in types if "*" not in t)
    globs = sorted(t for t in types if "*" in t)
    parts = []
    if exact:
        parts.append(f"type IN ({','.join('?' for _ in exact)})")
    parts += ["type GLOB ?" for _ in globs]
    if not parts:
        return " AND 0", []
    return f" AND ({' OR '.join(parts)})", [*exact, *globs]


def range_clauses(
    column: str, since: float | None, until: float | None
) -> tuple[list[str], list[Any]]:
    """The conditions (and their parameters) for since <= ``column`` < until."""
    clauses: list[str] = []
    params: list[Any] = []
    if since is not None:
        clauses.append(f"{column} >= ?")
        params.append(since)
    if until is not None:
        clauses.append(f"{column} < ?")
        params.append(until)
    return clauses, params


def period_clause(since: float | None, until: float | None) -> tuple[str, list[Any]]:
    """``WHERE`` for the sessions started in [since, until) (empty for all time)."""
    clauses, params = range_clauses("started_at", since, until)
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


T = TypeVar("T")


def _maker(cls: type[T]) -> Callable[[Sequence[Any]], T]:
    """A fast constructor for a frozen dataclass: ``make(values)`` equals
    ``cls(*values)``. A frozen dataclass's __init__ sets each field through
    object.__setattr__, which costs more than the whole row took to read; filling the
    instance's __dict__ does the same in half the time. Only for plain frozen
    dataclasses (no __post_init__, no slots, no defaults computed): checked here."""
    if (
        not dataclasses.is_dataclass(cls)
        or hasattr(cls, "__post_init__")
        or hasattr(cls, "__slots__")
    ):
        raise TypeError(f"{cls.__name__} is not a plain dataclass")
    names = tuple(f.name for f in dataclasses.fields(cls))
    new = object.__new__

    def make(values: Sequence[Any]) -> T:
        obj = new(cls)
        obj.__dict__.update(zip(names, values, strict=True))
        return obj

    return make


_channel = _maker(ChannelRow)
_session = _maker(SessionRow)


def channel_row(r: Sequence[Any]) -> ChannelRow:
    # Column order is CHANNEL_COLS, the dataclass's field order.
    return _channel(
        (
            r[0],
            int(r[1]),
            r[2],
            r[3],
            bool(r[4]),
            r[5],
            float(r[6]),
            r[7],
            r[8],
            r[9],
            r[10],
            r[11],
            r[12],
            int(r[13]),
            int(r[14]),
        )
    )


def session_row(r: Sequence[Any], channels: Sequence[ChannelRow]) -> SessionRow:
    # Column order is SESSION_COLS, the dataclass's field order, then the channels.
    return _session(
        (
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            float(r[8]),
            float(r[9]),
            r[10],
            r[11],
            r[12],
            tuple(channels),
        )
    )


def stored_event(r: Sequence[Any]) -> StoredEvent:
    """A row of ``EVENT_COLS`` as a StoredEvent (data decoded)."""
    return StoredEvent(int(r[0]), float(r[1]), r[2], r[3], r[4], loads(r[5]), r[6], r[7])
