"""Login slots and argon2 turns: what a connection that has not logged in may hold.

Owns the adapter side of two fair shares (the decisions are ``proxy.core.slots`` and
``proxy.core.fairqueue``): a connection takes an unauthenticated slot when it arrives
and gives it back when it logs in or leaves; when the slots are full the heaviest
source's oldest connection is cut to make room. argon2 checks run one at a time, in
turn between sources. When slots are full, drops and refusals are counted per minute
and written as one ``login_slots_full`` event (the ``at_capacity`` alert it raises is
rate-limited by the alert rules), never one event per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import Any

from proxy.alerts.raiser import Alerts
from proxy.core import events
from proxy.core.failsummary import MINUTE, network_of
from proxy.core.fairqueue import FairQueue
from proxy.core.slots import SlotTable
from proxy.store.base import NewEvent
from proxy.tasks import TaskOwner

log = logging.getLogger("breakglass")

TOP_NETWORKS = 20

_Check = tuple["asyncio.Future[bool]", Callable[[], bool]]


class _Full:
    """Drops and refusals within one minute, while the slots were full."""

    def __init__(self, minute: float, now: float) -> None:
        self.minute = minute
        self.first = self.last = now
        self.dropped = 0
        self.refused = 0
        self.networks: Counter[str] = Counter()

    def data(self, total: int, per_source: int) -> dict[str, Any]:
        top = sorted(self.networks.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_NETWORKS]
        return {
            "minute": self.minute,
            "first": self.first,
            "last": self.last,
            "dropped": self.dropped,
            "refused": self.refused,
            "networks": [[n, c] for n, c in top],
            "max_unauthenticated": total,
            "max_unauthenticated_per_source": per_source,
        }


class LoginSlots:
    def __init__(
        self,
        alerts: Callable[[], Alerts],
        tasks: TaskOwner,
        executor: Executor,
        total: int,
        per_source: int,
    ) -> None:
        self._alerts = alerts
        self._tasks = tasks
        self._executor = executor
        self.table = SlotTable(total, per_source)
        self._checks: FairQueue[_Check] = FairQueue()
        self._worker: asyncio.Task[None] | None = None
        self._full: _Full | None = None
        self.dropped = 0  # connections cut to make room, since start

    # -- slots ---------------------------------------------------------------------------

    def admit(self, source: str, conn: Hashable, now: float) -> tuple[bool, Hashable | None]:
        """(admitted, the connection to cut to make room for it)."""
        admission = self.table.admit(source, conn, now)
        if admission.evict is not None or not admission.ok:
            self._count_full(source, now, dropped=admission.evict is not None)
        if admission.evict is not None:
            self.dropped += 1
        return admission.ok, admission.evict

    def release(self, conn: Hashable) -> None:
        self.table.release(conn)

    def _count_full(self, source: str, now: float, *, dropped: bool) -> None:
        minute = now - now % MINUTE
        if self._full is None or self._full.minute != minute:
            self._flush_full()
            self._full = _Full(minute, now)
        full = self._full
        full.last = now
        if dropped:
            full.dropped += 1
        else:
            full.refused += 1
        network = network_of(source)
        if network in full.networks or len(full.networks) < 4 * TOP_NETWORKS:
            full.networks[network] += 1

    def _flush_full(self, now: float | None = None) -> None:
        full = self._full
        if full is None or (now is not None and full.minute + MINUTE > now):
            return
        self._full = None
        data = full.data(self.table.total, self.table.per_source)
        log.warning(
            "login slots full: %d connection(s) cut to make room, %d refused",
            full.dropped,
            full.refused,
        )
        event = NewEvent.of(events.decode(events.LoginSlotsFull.TYPE, data), time.time())
        self._tasks.spawn(self._alerts().record(event), f"audit {event.type}")

    async def run(self, stop: asyncio.Event) -> None:
        """Write each minute's ``login_slots_full`` once the minute is over."""
        while not stop.is_set():
            self._flush_full(time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        self._flush_full()

    # -- argon2 ----------------------------------------------------------------------------

    async def check(self, source: str, run: Callable[[], bool]) -> bool:
        """``run()`` (one argon2 check) on the executor, in turn between sources."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._checks.push(source, (future, run))
        if self._worker is None or self._worker.done():
            self._worker = self._tasks.spawn(self._run_checks(), "argon2 turns")
        return await future

    async def _run_checks(self) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] | None = None
        try:
            while (item := self._checks.pop()) is not None:
                future, run = item
                if future.done():
                    continue  # the client left or started over: nobody waits for it
                try:
                    result = await loop.run_in_executor(self._executor, run)
                except Exception as exc:
                    if not future.done():
                        future.set_exception(exc)
                    continue
                if not future.done():
                    future.set_result(result)
        finally:
            # Cancelled (the proxy is stopping): nobody may wait forever for a turn.
            if future is not None:
                future.cancel()
            while (item := self._checks.pop()) is not None:
                item[0].cancel()
