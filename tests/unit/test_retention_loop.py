"""The proxy's daily prune (``proxy.retention.retention_loop``) on a driven clock and the
in-memory store: the first run waits for the start to settle, then one a day; each run
reads the storage settings afresh (a reload applies the next day); a failing run is
retried the next day; ``stop`` ends the wait at once. No test here sleeps."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxy.config.model import StorageConfig
from proxy.core import events
from proxy.core.errors import StoreError
from proxy.retention import DAY, FIRST_RUN_DELAY, retention_loop
from proxy.store.base import NewEvent, StoredEvent
from proxy.store.memory import MemoryStore
from tests.clock import ManualClock

T0 = 1_800_000_000.0
KEEP = 60.0  # storage.retention in these tests


class Store(MemoryStore):
    """The in-memory store, whose reads can be made to fail ``failures`` times."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = 0

    async def events_between(
        self, types: Collection[str], since: float | None, until: float | None
    ) -> list[StoredEvent]:
        if self.failures:
            self.failures -= 1
            raise StoreError("audit store read failed: disk I/O error")
        return await super().events_between(types, since, until)


async def ended_session(store: MemoryStore, root: Path, sid: str, start: float, end: float) -> Path:
    """A session with one recorded channel, ended at ``end``; its cast's path."""
    cast = root / sid / "0.cast"
    cast.parent.mkdir(parents=True, exist_ok=True)
    cast.write_bytes(b'{"version": 2}\n[0.1, "o", "' + sid.encode() + b'"]\n')
    body = cast.read_bytes()
    begin = events.SessionStart("alice", "AAAAAA", "127.0.0.1", "SSH", "db01", "root", "x", end)
    opened = events.ChannelStart("session", True, f"{sid}/0.cast")
    closed = events.ChannelEnd(
        0, recording_sha256=hashlib.sha256(body).hexdigest(), recording_bytes=len(body)
    )
    await store.append(
        [
            NewEvent.of(begin, start, sid),
            NewEvent.of(opened, start, sid, 0),
            NewEvent.of(closed, end, sid, 0),
            NewEvent.of(events.SessionEnd("client_closed"), end, sid),
        ]
    )
    return cast


@dataclass
class Loop:
    """``retention_loop`` running on ``clock`` until the test ends."""

    store: Store
    root: Path
    clock: ManualClock
    retention: float | None = KEEP
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def storage(self) -> StorageConfig:
        return StorageConfig(
            database=self.root / "audit.db", recordings=self.root, retention=self.retention
        )

    async def pruned(self) -> list[tuple[str | None, float, float]]:
        found = await self.store.events_between({"recording_pruned"}, None, None)
        return [(e.session_id, e.time, e.data["retention"]) for e in found]


@pytest.fixture
async def loop(tmp_path: Path) -> AsyncIterator[Loop]:
    running = Loop(Store(), tmp_path, ManualClock(T0))
    task = asyncio.create_task(
        retention_loop(running.store, running.storage, running.stop, clock=running.clock)
    )
    try:
        yield running
    finally:
        running.stop.set()
        await asyncio.wait_for(task, 5)


async def test_the_first_run_waits_for_the_start_then_one_runs_a_day(loop: Loop) -> None:
    old = await ended_session(loop.store, loop.root, "s1", T0 - 600, T0 - 500)
    recent = await ended_session(loop.store, loop.root, "s2", T0 - 100, T0 + 250)
    assert await loop.clock.waiting() == T0 + FIRST_RUN_DELAY
    assert await loop.pruned() == []

    # The first run, 5 minutes after the start: s1 ended long enough ago, s2 did not.
    loop.clock.advance(FIRST_RUN_DELAY)
    assert await loop.clock.waiting() == T0 + FIRST_RUN_DELAY + DAY
    assert await loop.pruned() == [("s1", T0 + FIRST_RUN_DELAY, KEEP)]
    assert not old.exists()
    assert not old.parent.exists()  # the session's folder goes with its last cast
    assert recent.exists()

    # Nothing happens in between: a wait that ends early does not prune.
    loop.clock.advance(DAY - 1)
    assert await loop.clock.waiting() == T0 + FIRST_RUN_DELAY + DAY
    assert recent.exists()

    loop.clock.advance(1)
    assert await loop.clock.waiting() == T0 + FIRST_RUN_DELAY + 2 * DAY
    assert [p[:2] for p in await loop.pruned()] == [
        ("s1", T0 + FIRST_RUN_DELAY),
        ("s2", T0 + FIRST_RUN_DELAY + DAY),
    ]
    assert not recent.exists()
    assert loop.clock.waits == [FIRST_RUN_DELAY, DAY, DAY]


async def test_each_run_reads_the_settings_a_reload_may_have_changed(loop: Loop) -> None:
    cast = await ended_session(loop.store, loop.root, "s1", T0 - 600, T0 - 500)
    loop.retention = None  # kept forever
    await loop.clock.jump()
    assert await loop.clock.waiting() == T0 + FIRST_RUN_DELAY + DAY
    assert await loop.pruned() == []
    assert cast.exists()
    loop.retention = 2 * DAY  # a reload sets a retention: s1 is not old enough yet
    await loop.clock.jump()
    await loop.clock.waiting()
    assert cast.exists()
    loop.retention = KEEP
    when = await loop.clock.jump()
    await loop.clock.waiting()
    assert await loop.pruned() == [("s1", when, KEEP)]
    assert not cast.exists()


async def test_a_failed_run_is_logged_and_retried_the_next_day(
    loop: Loop, caplog: pytest.LogCaptureFixture
) -> None:
    cast = await ended_session(loop.store, loop.root, "s1", T0 - 600, T0 - 500)
    loop.store.failures = 1
    with caplog.at_level(logging.ERROR, logger="breakglass"):
        await loop.clock.jump()
        assert await loop.clock.waiting() == T0 + FIRST_RUN_DELAY + DAY
    assert "retention: pruning failed, will retry in a day: audit store read failed" in (
        caplog.text
    )
    assert cast.exists()
    when = await loop.clock.jump()
    await loop.clock.waiting()
    assert await loop.pruned() == [("s1", when, KEEP)]


async def test_stop_ends_the_wait_at_once(tmp_path: Path) -> None:
    clock, stop = ManualClock(T0), asyncio.Event()
    store = Store()
    task = asyncio.create_task(
        retention_loop(store, lambda: Loop(store, tmp_path, clock).storage(), stop, clock=clock)
    )
    await clock.waiting()
    stop.set()
    await asyncio.wait_for(task, 5)  # the clock never moved
    assert clock.now == T0
    assert await store.events_between({"recording_pruned"}, None, None) == []
