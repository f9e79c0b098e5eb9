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
from proxy.store.base import NewEvent, Store


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


async def recover_unfinished(store: Store, recordings: Path, now: float) -> int:
    sessions = await store.unfinished_sessions()
    for s in sessions:
        events: list[NewEvent] = []
        for ch in s.channels:
            if ch.ended_at is not None:
                continue
            data: dict[str, object] = {"exit_status": None, "exit_signal": None}
            data["recovered"] = True
            path = resolve_recording(ch.recording, recordings, s.id, ch.n)
            if ch.recording and path is not None:
                found = truncate_to_last_line(path)
                if found is not None:
                    data.update(recording_sha256=found[0], recording_bytes=found[1])
            events.append(NewEvent("channel_end", now, s.id, ch.n, data))
        events.append(
            NewEvent("session_end", now, s.id, None, {"reason": "interrupted", "detail": None})
        )
        await store.append(events)
    return len(sessions)
