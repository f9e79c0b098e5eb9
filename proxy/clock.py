"""Time for the proxy's background tasks: what time it is, and waiting for it to pass.

The tasks that wait (alert delivery's retries and polls, the event forwarders, the
override watch, the daily retention run) take a ``Clock`` instead of calling
``time.time`` and asyncio's timeouts themselves, so a test drives their time
(``tests/clock.py``) instead of sleeping through it. ``SYSTEM`` is the real clock.
Waits that bound I/O (a sink's timeout, a login's deadline) stay on the event loop's
own clock: they are about the network, not about the schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch (what events and attempts are stamped with)."""

    async def wait(self, seconds: float, *until: asyncio.Event) -> None:
        """Return once ``seconds`` have passed or any of ``until`` is set (at once when
        one is set already)."""


class SystemClock:
    """The wall clock, and the event loop's timers."""

    def time(self) -> float:
        return time.time()

    async def wait(self, seconds: float, *until: asyncio.Event) -> None:
        if any(e.is_set() for e in until):
            return
        if not until:
            await asyncio.sleep(max(0.0, seconds))
            return
        waiters = [asyncio.ensure_future(e.wait()) for e in until]
        try:
            await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when="FIRST_COMPLETED")
        finally:
            for w in waiters:
                w.cancel()
            for w in waiters:
                with contextlib.suppress(asyncio.CancelledError):
                    await w


SYSTEM = SystemClock()
