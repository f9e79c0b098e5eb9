"""Writing failed logins without letting strangers fill the disk or the memory.

Owns the path from "a login failed" to the audit store: each failure is offered to
``proxy.core.failsummary``; the ones it keeps single are written (with the alerts they
raise) by a bounded number of tasks, the rest are counted into per-network summaries
written when their minute ends. Two more limits decide when there is no room for a
single event, and the failure is summarised instead:

- at most ``MAX_IN_FLIGHT`` failure writes are queued (bounded memory: a flood never
  piles up events waiting for the store);
- below ``storage.min_free + storage.failure_reserve`` free bytes, the space left is
  kept for real sessions: failures are only counted in memory, an alert says so once,
  and the count is written as one summary when space is back (or at stop). A session
  is refused only at ``min_free``, so failure logging gives way first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from proxy.alerts.raiser import Alerts
from proxy.core import events
from proxy.core.failsummary import Attempt, FailureSummariser
from proxy.store.base import NewEvent
from proxy.tasks import TaskOwner

log = logging.getLogger("breakglass")

# Single failure events being written at once; past this, failures are summarised.
MAX_IN_FLIGHT = 32
# How often due summaries are written and the reserve is looked at again.
FLUSH_INTERVAL = 1.0
# statvfs at most this often on the login path.
FREE_SPACE_CACHE = 1.0


class FailureLog:
    def __init__(
        self,
        alerts: Callable[[], Alerts],
        tasks: TaskOwner,
        free_space: Callable[[], int],
        floor: Callable[[], int],
        summariser: FailureSummariser | None = None,
    ) -> None:
        self._alerts = alerts
        self._tasks = tasks
        self._free_space = free_space
        self._floor = floor  # min_free + failure_reserve, read at each check (reloads)
        self.summariser = summariser or FailureSummariser()
        self.in_flight = 0
        self.written = 0  # single failure events handed to the store
        self._free = (0.0, 0)
        self._degraded = False

    # -- the login path -----------------------------------------------------------------

    def failed(
        self,
        event: events.LoginFailed | events.LoginAborted,
        attempt: Attempt,
        *,
        verified: bool,
    ) -> bool:
        """Record one failed (or aborted) login; True if it is written as its own event."""
        room = self.in_flight < MAX_IN_FLIGHT and self._has_room(attempt.time)
        if not self.summariser.offer(attempt, verified=verified, room=room):
            return False
        self.in_flight += 1
        self.written += 1
        self._tasks.spawn(self._write(NewEvent.of(event, attempt.time)), f"audit {event.TYPE}")
        return True

    async def _write(self, event: NewEvent) -> None:
        try:
            await self._alerts().record(event)
        finally:
            self.in_flight -= 1

    def _has_room(self, now: float) -> bool:
        checked, free = self._free
        if now - checked >= FREE_SPACE_CACHE or now < checked:
            free = self._free_space()
            self._free = (now, free)
        room = free >= self._floor()
        if not room and not self._degraded:
            self._degraded = True
            self._tasks.spawn(self._say_held(free), "failure logging held")
        return room

    async def _say_held(self, free: int) -> None:
        log.error(
            "disk inside the reserve kept for sessions (%d MiB free): failed logins are "
            "now counted in memory and written as one summary when there is room",
            free >> 20,
        )
        held = events.LoginFailuresHeld(free_bytes=free, floor_bytes=self._floor())
        await self._alerts().record(NewEvent.of(held, time.time()))

    # -- the background side ------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Write each summary when its minute ends, until ``stop``."""
        while not stop.is_set():
            await self.flush(time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_INTERVAL)

    async def flush(self, now: float) -> None:
        if self._degraded:
            self._free = (0.0, 0)  # look again now
            if self._has_room(now):
                self._degraded = False
                log.warning("disk space back above the reserve: failed logins written again")
        if self._degraded:
            self.summariser.hold(now)
            return
        held = self.summariser.release()
        for data in [held] if held is not None else []:
            await self._write_summary(data, now)
        for data in self.summariser.due(now):
            await self._write_summary(data, now)

    async def close(self) -> None:
        """The proxy is stopping: whatever is counted is written now (best effort)."""
        for data in self.summariser.drain():
            await self._write_summary(data, time.time())

    async def _write_summary(self, data: dict[str, Any], now: float) -> None:
        summary = events.decode(events.LoginFailuresSummarised.TYPE, data)
        assert isinstance(summary, events.LoginFailuresSummarised)
        log.warning(
            "failed logins summarised: network=%s count=%s (event %s)",
            summary.network,
            summary.count,
            summary.TYPE,
        )
        await self._alerts().record(NewEvent.of(summary, now))
