"""proxy.clock's real clock and tests.clock's driven one keep the same promise: ``wait``
returns when its time is up or one of its events is set, at once if one already is."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from proxy.clock import SYSTEM
from tests.clock import ManualClock

T0 = 1_800_000_000.0


async def test_the_system_clock_returns_on_an_event_or_at_once() -> None:
    stop, wake = asyncio.Event(), asyncio.Event()
    waiting = asyncio.create_task(SYSTEM.wait(3600, stop, wake))
    await asyncio.sleep(0)
    assert not waiting.done()
    wake.set()
    await asyncio.wait_for(waiting, 5)
    await asyncio.wait_for(SYSTEM.wait(3600, wake), 5)  # already set
    await asyncio.wait_for(SYSTEM.wait(0), 5)
    assert abs(SYSTEM.time() - time.time()) < 5


async def test_the_manual_clock_wakes_only_when_moved_past_the_wait() -> None:
    clock = ManualClock(T0)
    done = asyncio.Event()

    async def sleeper() -> None:
        await clock.wait(10)
        done.set()

    task = asyncio.create_task(sleeper())
    assert await clock.waiting() == T0 + 10
    clock.advance(9.5)
    await asyncio.sleep(0)
    assert not done.is_set()
    assert clock.parked() == [T0 + 10]
    clock.advance(0.5)
    await asyncio.wait_for(task, 5)
    assert (clock.time(), clock.parked(), clock.waits) == (T0 + 10, [], [10])


async def test_the_manual_clock_is_cut_short_by_an_event_and_jumps_to_the_next() -> None:
    clock, stop = ManualClock(T0), asyncio.Event()
    short = asyncio.create_task(clock.wait(5))
    long = asyncio.create_task(clock.wait(50, stop))
    assert await clock.waiting(2) == T0 + 5
    assert await clock.jump() == T0 + 5
    await asyncio.wait_for(short, 5)
    stop.set()
    await asyncio.wait_for(long, 5)
    assert clock.now == T0 + 5  # the event, not the clock, ended the long wait
    await asyncio.wait_for(clock.wait(50, stop), 5)  # set already: at once


async def test_waiting_and_jump_until_fail_with_a_sentence() -> None:
    clock = ManualClock(T0)
    with pytest.raises(AssertionError, match="waiting for 1 task"):
        await clock.waiting(within=0.1)

    async def poller() -> None:
        while True:
            await clock.wait(1)

    task = asyncio.create_task(poller())
    with pytest.raises(AssertionError, match=r"^never did not come within 3 jumps"):
        await clock.jump_until(lambda: False, what="never", jumps=3, within=5)
    assert clock.now == T0 + 3
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
