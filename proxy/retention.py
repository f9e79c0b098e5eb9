"""The retention policy: delete old recordings while the audit chain keeps vouching.

Owns ``prune_recordings`` (used by ``breakglass prune`` and by the proxy's daily task)
and that task. A cast is pruned when its session ended longer ago than
``storage.retention``: first a ``recording_pruned`` event is appended (session, channel,
path, the sha256 and size the chain recorded, the retention, and who pruned it; the
event's time is when), then the file is deleted. Events are never touched, so the chain
keeps the hash, and ``verify`` reports the channel as ``pruned`` instead of missing.

A crash between the two steps leaves an event and a file: the next run deletes the file
without a second event. A cast that no longer matches the chain's hash is kept (it is
evidence of tampering, for ``verify`` to report), and so is every live session's cast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from proxy.audit.verify import file_digest, locate_recording
from proxy.clock import SYSTEM, Clock
from proxy.config.model import StorageConfig
from proxy.core.chaincheck import PRUNED
from proxy.core.errors import StoreError
from proxy.core.events import RecordingPruned
from proxy.store.base import NewEvent, SessionFilter, SessionLog

log = logging.getLogger("breakglass")

DAY = 86400.0
FIRST_RUN_DELAY = 300.0  # after a start, let recovery and the first logins go first

# What happened to one cast.
PRUNED_NOW = "pruned"
WOULD_PRUNE = "would prune"
FINISHED = "removed (pruned earlier)"  # a run that crashed between event and unlink
KEPT_ALTERED = "kept: does not match the chain's hash"


@dataclass(frozen=True)
class PruneItem:
    session_id: str
    channel: int
    path: str
    sha256: str | None
    size: int | None
    ended_at: float
    outcome: str


async def prune_recordings(
    store: SessionLog,
    recordings: Path,
    retention: float,
    now: float,
    by: str,
    *,
    dry_run: bool = False,
) -> list[PruneItem]:
    """Prune every cast of the sessions that ended before ``now - retention``."""
    cutoff = now - retention
    done = {
        (e.session_id, e.channel)
        for e in await store.events_between({PRUNED}, None, None)
        if e.session_id is not None
    }
    # A session that ended before the cutoff started before it too.
    sessions = await store.list_sessions(SessionFilter(live=False, until=cutoff))
    out: list[PruneItem] = []
    for s in sessions:
        if s.ended_at is None or s.ended_at >= cutoff:
            continue
        for c in s.channels:
            if c.ended_at is None or (c.recording is None and c.recording_sha256 is None):
                continue
            path, shown = locate_recording(c.recording, recordings, s.id, c.n)
            if path is None:
                continue  # gone already (pruned, or missing: verify reports that)
            found = await asyncio.to_thread(file_digest, path)
            sha, size = found if found is not None else (None, None)

            ended = float(s.ended_at)

            if (s.id, c.n) in done:
                if not dry_run:
                    _remove(path, recordings)
                out.append(
                    PruneItem(
                        s.id, c.n, shown, sha, size, ended, WOULD_PRUNE if dry_run else FINISHED
                    )
                )
                continue
            if (
                found is None
                or sha != c.recording_sha256
                or (c.recording_bytes is not None and size != c.recording_bytes)
            ):
                out.append(PruneItem(s.id, c.n, shown, sha, size, ended, KEPT_ALTERED))
                continue
            if dry_run:
                out.append(PruneItem(s.id, c.n, shown, sha, size, ended, WOULD_PRUNE))
                continue
            await store.append(
                [
                    NewEvent.of(
                        RecordingPruned(
                            path=shown,
                            sha256=c.recording_sha256,
                            bytes=size,
                            session_ended_at=s.ended_at,
                            retention=retention,
                            by=by,
                        ),
                        now,
                        s.id,
                        c.n,
                    )
                ]
            )
            _remove(path, recordings)
            out.append(PruneItem(s.id, c.n, shown, sha, size, ended, PRUNED_NOW))
    return out


def _remove(path: Path, root: Path) -> None:
    """Delete the cast, then its session's folders up to ``root`` if they are empty."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    parent = path.parent
    root = root.resolve()
    while parent.resolve() != root and root in parent.resolve().parents:
        try:
            parent.rmdir()
        except OSError:
            break
        parent = parent.parent


async def retention_loop(
    store: SessionLog,
    storage: Callable[[], StorageConfig],
    stop: asyncio.Event,
    interval: float = DAY,
    first: float = FIRST_RUN_DELAY,
    clock: Clock = SYSTEM,
) -> None:
    """The proxy's daily prune (``storage`` is read each time: a reload may change it)."""
    delay = first
    while not stop.is_set():
        await clock.wait(delay, stop)
        if stop.is_set():
            return
        delay = interval
        config = storage()
        if config.retention is None:
            continue
        try:
            items = await prune_recordings(
                store,
                config.recordings,
                config.retention,
                clock.time(),
                f"retention policy (proxy pid {os.getpid()})",
            )
        except (StoreError, OSError) as exc:
            log.error("retention: pruning failed, will retry in a day: %s", exc)
            continue
        pruned = sum(1 for i in items if i.outcome == PRUNED_NOW)
        kept = sum(1 for i in items if i.outcome == KEPT_ALTERED)
        if pruned or kept:
            log.info("retention: pruned %d recording(s); kept %d altered one(s)", pruned, kept)
        if kept:
            log.error("retention: %d recording(s) do not match the chain: run verify", kept)
