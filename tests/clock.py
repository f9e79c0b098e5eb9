"""A clock the test moves: ``ManualClock`` is a ``proxy.clock.Clock`` whose time stands
still until the test advances it, so a background task's retries, polls and daily runs
happen when the test says, not after real seconds.

``await clock.waiting()`` returns once tasks are parked in ``clock.wait`` (bounded in
real time, like ``tests/waiting.py``); ``clock.advance(s)`` moves time and wakes every
task whose wait is over; ``await clock.jump()`` does both, to the next wake-up, and
``jump_until`` jumps until a condition holds (bounded in jumps). Only the schedule is
driven: I/O (a socket, a thread) still takes the real time it takes.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class _Sleeper:
    due: float
    woken: asyncio.Future[None]
    until: tuple[asyncio.Event, ...] = field(default=())

    def parked(self) -> bool:
        """Still waiting on the clock (not woken by it, nor by one of its events)."""
        return not self.woken.done() and not any(e.is_set() for e in self.until)


class ManualClock:
    def __init__(self, start: float) -> None:
        self.now = start
        self._sleepers: list[_Sleeper] = []
        self._changed = asyncio.Event()
        self.waits: list[float] = []  # every wait asked for, in seconds, in order

    def time(self) -> float:
        return self.now

    async def wait(self, seconds: float, *until: asyncio.Event) -> None:
        if any(e.is_set() for e in until):
            return
        self.waits.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        sleeper = _Sleeper(self.now + seconds, asyncio.get_running_loop().create_future(), until)
        self._sleepers.append(sleeper)
        self._changed.set()
        waiters: list[asyncio.Future[Any]] = [sleeper.woken]
        waiters += [asyncio.ensure_future(e.wait()) for e in until]
        try:
            await asyncio.wait(waiters, return_when="FIRST_COMPLETED")
        finally:
            self._sleepers.remove(sleeper)
            for w in waiters:
                w.cancel()
            for w in waiters[1:]:
                with contextlib.suppress(asyncio.CancelledError):
                    await w

    def parked(self) -> list[float]:
        """When each task parked on the clock is due, earliest first."""
        return sorted(s.due for s in self._sleepers if s.parked())

    async def waiting(self, count: int = 1, *, within: float = 10.0) -> float:
        """Once ``count`` tasks are parked on the clock, the earliest one's due time.
        Fails after ``within`` real seconds."""
        end = time.monotonic() + within
        while len(self.parked()) < count:
            self._changed.clear()
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out after {within:g}s waiting for {count} task(s) to wait on"
                    f" the clock ({len(self.parked())} do)"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return self.parked()[0]

    def advance(self, seconds: float) -> None:
        """Move time on by ``seconds`` and wake every task whose wait is over."""
        self.now += seconds
        for s in self._sleepers:
            if s.due <= self.now and not s.woken.done():
                s.woken.set_result(None)

    async def jump(self, count: int = 1, *, within: float = 10.0) -> float:
        """Once ``count`` tasks are parked, move time to the earliest wake-up; the new time."""
        due = await self.waiting(count, within=within)
        self.advance(max(0.0, due - self.now))
        return self.now

    async def jump_until(
        self,
        condition: Callable[[], Awaitable[object] | object],
        *,
        what: str,
        jumps: int = 200,
        within: float = 10.0,
    ) -> None:
        """Jump from wake-up to wake-up until ``condition`` holds: at most ``jumps``
        jumps, each waiting at most ``within`` real seconds for a task to park."""
        for _ in range(jumps):
            value = condition()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return
            await self.jump(within=within)
        raise AssertionError(f"{what} did not come within {jumps} jumps of the clock")
