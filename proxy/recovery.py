"""Crash recovery: what the last run left unfinished is closed honestly at start.

A session with no end was interrupted (SIGKILL, power loss). Its casts are cut back to
their last complete line so every player replays them, hashed, and the channel and
session ends are written with reason ``interrupted``. Never invents data: exit statuses
stay unknown.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from proxy.audit.verify import resolve_recording
from proxy.core.events import ChannelEnd, SessionEnd
from proxy.store.base import NewEvent, SessionLog


def truncate_to_last_line(path: Path) -> tuple[str, int] | None:
    """Cut a partial last line; return the file's sha256 and size afterwards (None when
    the file is gone: the channel end then says so by having no hash)."""
    try:
        f = open(path, "r+b")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return None
    with f:
        data = f.read()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            data = data[:keep]
    return hashlib.sha256(data).hexdigest(), len(data)


async def recover_unfinished(store: SessionLog, recordings: Path, now: float) -> int:
    sessions = await store.unfinished_sessions()
    for s in sessions:
        events: list[NewEvent] = []
        for ch in s.channels:
            if ch.ended_at is not None:
                continue
            path = resolve_recording(ch.recording, recordings, s.id, ch.n)
            found = truncate_to_last_line(path) if ch.recording and path is not None else None
            end = ChannelEnd(
                exit_status=None,
                exit_signal=None,
                recovered=True,
                recording_sha256=found[0] if found else None,
                recording_bytes=found[1] if found else None,
            )
            events.append(NewEvent.of(end, now, s.id, ch.n))
        events.append(NewEvent.of(SessionEnd("interrupted", None), now, s.id))
        await store.append(events)
    return len(sessions)
