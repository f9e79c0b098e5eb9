"""How events derive the session and channel rows.

Pure: one event in, SQL statements out. The store runs them in the same transaction
that appends the event, so the rows never disagree with the log, and a rebuild from the
log (for ``verify`` or a migration) replays exactly these statements.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from proxy.store.base import NewEvent

Statement = tuple[str, tuple[Any, ...]]


def apply_event(ev: NewEvent) -> Iterator[Statement]:
    d = ev.data
    if ev.type == "session_start":
        yield (
            "INSERT INTO sessions (id, person, credential_id, source, client_version, target,"
            " login, justification, started_at, deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ev.session_id,
                d["person"],
                d["credential_id"],
                d["source"],
                d["client_version"],
                d["target"],
                d["login"],
                d["justification"],
                ev.time,
                d["deadline"],
            ),
        )
    elif ev.type == "session_end":
        yield (
            "UPDATE sessions SET ended_at = ?, end_reason = ?, end_detail = ?"
            " WHERE id = ? AND ended_at IS NULL",
            (ev.time, d["reason"], d.get("detail"), ev.session_id),
        )
    elif ev.type == "deadline_changed":
        yield ("UPDATE sessions SET deadline = ? WHERE id = ?", (d["deadline"], ev.session_id))
    elif ev.type == "channel_start":
        yield (
            "INSERT INTO channels (session_id, n, kind, command, pty, term, started_at, recording)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ev.session_id,
                ev.channel,
                d["kind"],
                d.get("command"),
                1 if d.get("pty") else 0,
                d.get("term"),
                ev.time,
                d.get("recording"),
            ),
        )
    elif ev.type == "channel_end":
        yield (
            "UPDATE channels SET ended_at = ?, exit_status = ?, exit_signal = ?,"
            " recording_sha256 = ?, recording_bytes = ?, bytes_up = ?, bytes_down = ?"
            " WHERE session_id = ? AND n = ?",
            (
                ev.time,
                d.get("exit_status"),
                d.get("exit_signal"),
                d.get("recording_sha256"),
                d.get("recording_bytes"),
                d.get("bytes_up", 0),
                d.get("bytes_down", 0),
                ev.session_id,
                ev.channel,
            ),
        )
