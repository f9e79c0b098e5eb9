"""How events derive the session and channel rows.

Pure: one event in, SQL statements out. The store runs them in the same transaction
that appends the event, so the rows never disagree with the log, and a rebuild from the
log (for ``verify`` or a migration) replays exactly these statements. The events are
read through the catalogue (``proxy.core.events``): a projected event whose data does not
match its definition fails here, with the catalogue's message.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from proxy.core import events
from proxy.store.base import NewEvent

Statement = tuple[str, tuple[Any, ...]]


def apply_event(ev: NewEvent) -> Iterator[Statement]:
    if ev.type not in events.SESSION_ROW_TYPES:
        return
    match ev.typed():
        case events.SessionStart() as d:
            yield (
                "INSERT INTO sessions (id, person, credential_id, source, client_version,"
                " target, login, justification, started_at, deadline)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ev.session_id,
                    d.person,
                    d.credential_id,
                    d.source,
                    d.client_version,
                    d.target,
                    d.login,
                    d.justification,
                    ev.time,
                    d.deadline,
                ),
            )
        case events.SessionEnd() as d:
            yield (
                "UPDATE sessions SET ended_at = ?, end_reason = ?, end_detail = ?"
                " WHERE id = ? AND ended_at IS NULL",
                (ev.time, d.reason, events.given(d.detail, None), ev.session_id),
            )
        case events.DeadlineChanged() as d:
            yield ("UPDATE sessions SET deadline = ? WHERE id = ?", (d.deadline, ev.session_id))
        case events.ChannelStart() as d:
            yield (
                "INSERT INTO channels (session_id, n, kind, command, pty, term, started_at,"
                " recording) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    ev.session_id,
                    ev.channel,
                    d.kind,
                    events.given(d.command, None),
                    1 if d.pty else 0,
                    events.given(d.term, None),
                    ev.time,
                    d.recording,
                ),
            )
        case events.ChannelEnd() as d:
            yield (
                "UPDATE channels SET ended_at = ?, exit_status = ?, exit_signal = ?,"
                " recording_sha256 = ?, recording_bytes = ?, bytes_up = ?, bytes_down = ?"
                " WHERE session_id = ? AND n = ?",
                (
                    ev.time,
                    d.exit_status,
                    events.given(d.exit_signal, None),
                    d.recording_sha256,
                    d.recording_bytes,
                    d.bytes_up or 0,
                    d.bytes_down or 0,
                    ev.session_id,
                    ev.channel,
                ),
            )
