"""The in-memory store's rows: how events project them, and what the auditor reads of
them (the report's period reads and ``verify``'s check of the projections).

Pure: plain dicts and the event log in, rows and aggregates out; no I/O. Each function
answers as the SQLite store's SQL does (``proxy/store/auditreads.py``,
``projection.py``, ``sqlite.py``), and the contract tests
(``tests/integration/test_store_contract.py``) hold both to the same answers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import replace

from proxy.core import events
from proxy.core.chaincheck import FLAG_TYPES, PRUNED, ChainRow
from proxy.core.credentials import Credential
from proxy.core.credstate import CRED_EVENTS, CredentialReplay
from proxy.core.errors import StoreError
from proxy.store.base import (
    ChannelRow,
    EventTuple,
    GroupTotals,
    NewEvent,
    PeriodSummary,
    SessionRow,
)

Sessions = dict[str, SessionRow]
Channels = dict[tuple[str, int], ChannelRow]


def project(sessions: Sessions, channels: Channels, ev: NewEvent) -> None:
    """Change the rows ``ev`` changes, as ``proxy.store.projection`` changes SQLite's."""
    if ev.type not in events.SESSION_ROW_TYPES:
        return
    sid = ev.session_id
    match ev.typed():
        case events.SessionStart() as d:
            if sid is None or sid in sessions:
                raise StoreError(f"audit store write failed: session {sid!r} exists")
            sessions[sid] = SessionRow(
                sid,
                d.person,
                d.credential_id,
                d.source,
                d.client_version,
                d.target,
                d.login,
                d.justification,
                float(ev.time),
                float(d.deadline),
                None,
                None,
                None,
            )
        case events.SessionEnd() as d:
            row = sessions.get(sid or "")
            if row is not None and row.ended_at is None:
                end = replace(row, ended_at=float(ev.time), end_reason=d.reason)
                sessions[row.id] = replace(end, end_detail=events.given(d.detail, None))
        case events.DeadlineChanged() as d:
            if (row := sessions.get(sid or "")) is not None:
                sessions[row.id] = replace(row, deadline=float(d.deadline))
        case events.ChannelStart() as d:
            key = (sid or "", ev.channel if ev.channel is not None else -1)
            if sid is None or ev.channel is None or key in channels:
                raise StoreError(f"audit store write failed: channel {key!r} exists")
            channels[key] = ChannelRow(
                sid,
                ev.channel,
                d.kind,
                events.given(d.command, None),
                bool(d.pty),
                events.given(d.term, None),
                float(ev.time),
                None,
                None,
                None,
                d.recording,
                None,
                None,
                0,
                0,
            )
        case events.ChannelEnd() as d:
            key = (sid or "", ev.channel if ev.channel is not None else -1)
            if (ch := channels.get(key)) is not None:
                channels[key] = replace(
                    ch,
                    ended_at=float(ev.time),
                    exit_status=d.exit_status,
                    exit_signal=events.given(d.exit_signal, None),
                    recording_sha256=d.recording_sha256,
                    recording_bytes=d.recording_bytes,
                    bytes_up=d.bytes_up or 0,
                    bytes_down=d.bytes_down or 0,
                )


# -- the report's period reads ----------------------------------------------------------


def in_period(
    sessions: Mapping[str, SessionRow], since: float | None, until: float | None
) -> list[SessionRow]:
    """The sessions started in [since, until), by id."""
    return [
        s
        for _, s in sorted(sessions.items())
        if (since is None or s.started_at >= since) and (until is None or s.started_at < until)
    ]


def channels_of(
    channels: Mapping[tuple[str, int], ChannelRow], ids: Collection[str]
) -> dict[str, list[ChannelRow]]:
    """Each of these sessions' channels, by channel number."""
    out: dict[str, list[ChannelRow]] = {}
    for key in sorted(k for k in channels if k[0] in ids):
        out.setdefault(key[0], []).append(channels[key])
    return out


def period_batches(
    sessions: Mapping[str, SessionRow],
    channels: Mapping[tuple[str, int], ChannelRow],
    log: Sequence[ChainRow],
    since: float | None,
    until: float | None,
    types: Collection[str],
    batch: int,
) -> Iterator[list[tuple[SessionRow, list[EventTuple]]]]:
    """``ReportReads.period_sessions`` over these rows, ``batch`` sessions at a time."""
    period = in_period(sessions, since, until)
    ids = {s.id for s in period}
    chans = channels_of(channels, ids)
    evs: dict[str, list[EventTuple]] = {}
    for e in log:
        if e.session_id in ids and of_type(e.type, types):
            evs.setdefault(e.session_id, []).append(
                (e.seq, e.time, e.type, e.session_id, e.channel, e.data_json, e.prev_hash, e.hash)
            )
    step = max(int(batch), 1)
    for i in range(0, len(period), step):
        yield [
            (replace(s, channels=tuple(chans.get(s.id, ()))), evs.get(s.id, []))
            for s in period[i : i + step]
        ]


def _totals(durations: Sequence[float | None]) -> GroupTotals:
    ended = [d for d in durations if d is not None]
    # The longest starts at 0.0 and never goes below it, as SQLite's max(max(d), 0.0).
    return GroupTotals(len(durations), math.fsum(ended), max([*ended, 0.0]))


def summary(
    sessions: Mapping[str, SessionRow],
    log: Sequence[ChainRow],
    since: float | None,
    until: float | None,
) -> PeriodSummary:
    """``ReportReads.period_summary`` over these rows."""
    period = in_period(sessions, since, until)
    ids = {s.id for s in period}
    duration = {s.id: None if s.ended_at is None else s.ended_at - s.started_at for s in period}

    def groups(key: str) -> dict[str, GroupTotals]:
        by: dict[str, list[float | None]] = {}
        for s in period:
            by.setdefault(getattr(s, key), []).append(duration[s.id])
        return {k: _totals(v) for k, v in sorted(by.items())}

    ended = sorted(d for d in duration.values() if d is not None)
    median: float | None = None
    if ended:
        mid = (len(ended) - 1) // 2
        median = ended[mid] if len(ended) % 2 else (ended[mid] + ended[mid + 1]) / 2
    reasons: dict[str, int] = {}
    for s in period:
        reason = s.end_reason or "live"
        reasons[reason] = reasons.get(reason, 0) + 1

    def sessions_with(types: Collection[str]) -> int:
        return len({e.session_id for e in log if e.type in types and e.session_id in ids})

    total = math.fsum(ended)
    return PeriodSummary(
        sessions=len(period),
        by_person=groups("person"),
        by_target=groups("target"),
        ended=len(ended),
        total_seconds=total,
        mean=total / len(ended) if ended else None,
        median=median,
        longest=ended[-1] if ended else None,
        end_reasons=dict(sorted(reasons.items())),
        flagged=sessions_with(FLAG_TYPES),
        reviewed=sessions_with({events.Review.TYPE}),
    )


def recordings(
    sessions: Mapping[str, SessionRow],
    channels: Mapping[tuple[str, int], ChannelRow],
    log: Sequence[ChainRow],
    since: float | None,
    until: float | None,
) -> list[tuple[ChannelRow, int | None]]:
    """``ReportReads.period_recordings`` over these rows."""
    ids = {s.id for s in in_period(sessions, since, until)}
    pruned: dict[tuple[str, int], int] = {}
    for e in log:
        if e.type == PRUNED and e.session_id in ids and e.channel is not None:
            pruned[(e.session_id, e.channel)] = e.seq  # the log is in seq order
    return [
        (c, pruned.get((c.session_id, c.n)))
        for chans in channels_of(channels, ids).values()
        for c in chans
        if c.recording is not None or c.recording_sha256 is not None
    ]


# -- verify's check of the projections ----------------------------------------------------


def row_differences(
    sessions: Mapping[str, SessionRow],
    channels: Mapping[tuple[str, int], ChannelRow],
    creds: Mapping[str, tuple[Credential, str]],
    log: Sequence[ChainRow],
    limit: int = 50,
) -> list[str]:
    """Rebuild the rows from ``log`` with ``project`` and say where the stored rows
    differ, in the words (and the order) of the SQLite store's check."""
    out: list[str] = []
    fresh_sessions: Sessions = {}
    fresh_channels: Channels = {}
    for e in log:
        try:
            ev = NewEvent(e.type, e.time, e.session_id, e.channel, json.loads(e.data_json))
            project(fresh_sessions, fresh_channels, ev)
        except (ValueError, KeyError, TypeError, StoreError) as exc:
            out.append(f"event {e.seq} ({e.type}) cannot be replayed: {exc!r}")
    out += _table_differences(
        "sessions",
        {k: _no_channels(r) for k, r in fresh_sessions.items()},
        {k: _no_channels(r) for k, r in sessions.items()},
        limit,
    )
    out += _table_differences(
        "channels",
        {f"{s}/{n}": r for (s, n), r in fresh_channels.items()},
        {f"{s}/{n}": r for (s, n), r in channels.items()},
        limit,
    )
    replay = CredentialReplay()
    for e in log:
        if e.type in CRED_EVENTS:
            try:
                replay.feed(e.seq, e.type, e.time, json.loads(e.data_json))
            except ValueError as exc:
                replay.problems.append(f"event {e.seq} ({e.type}) cannot be read: {exc!r}")
    return out + replay.compare([creds[k] for k in sorted(creds)])


def _no_channels(row: SessionRow) -> SessionRow:
    return replace(row, channels=())


def _table_differences(
    table: str,
    fresh: Mapping[str, SessionRow | ChannelRow],
    stored: Mapping[str, SessionRow | ChannelRow],
    limit: int,
) -> list[str]:
    out = []
    idents = sorted(k for k in fresh.keys() | stored.keys() if fresh.get(k) != stored.get(k))
    for ident in idents[:limit]:
        a, b = fresh.get(ident), stored.get(ident)
        if b is None:
            out.append(f"{table} row {ident} is missing, though the log has it")
        elif a is None:
            out.append(f"{table} row {ident} has no events in the log behind it")
        else:
            diff = [
                f.name for f in dataclasses.fields(a) if getattr(a, f.name) != getattr(b, f.name)
            ]
            out.append(f"{table} row {ident} differs from the log in: {', '.join(diff)}")
    return out


# -- globs, as SQLite's GLOB -------------------------------------------------------------


def glob(pattern: str, text: object) -> bool:
    """SQLite's GLOB: ``*``, ``?``, ``[...]`` (``[^...]`` negated), case-sensitive, the
    whole text; anything but a string never matches (as SQL's NULL does not)."""
    return isinstance(text, str) and re.fullmatch(_glob_regex(pattern), text, re.S) is not None


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("^")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def of_type(type_: str, types: Collection[str]) -> bool:
    """``type_`` is one of ``types``, a type with ``*`` being a glob (as ``type_clause``)."""
    return any(glob(t, type_) if "*" in t else t == type_ for t in types)
