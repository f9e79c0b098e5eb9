"""The one way a test waits for something: poll a condition until it holds, within a bound.

Prefer waiting for an event to sleeping; where there is no event to wait on, poll with
``eventually`` (blocking: a plain test or a thread) or ``await eventually_async`` (the
event loop keeps running, so an in-process proxy can make progress). Both return the
condition's first truthy value and, past ``within`` seconds, fail with a sentence
naming ``what`` never came, instead of hanging.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

T = TypeVar("T")

INTERVAL = 0.05


class _Bound:
    """The deadline both forms share, and the sentence they fail with."""

    def __init__(self, within: float, what: str) -> None:
        self.within = within
        self.what = what
        self.end = time.monotonic() + within

    def check(self) -> None:
        if time.monotonic() >= self.end:
            raise AssertionError(f"timed out after {self.within:g}s waiting for {self.what}")


def eventually(
    condition: Callable[[], T | None], *, within: float, what: str, interval: float = INTERVAL
) -> T:
    """Call ``condition`` every ``interval`` seconds until it returns something truthy."""
    bound = _Bound(within, what)
    while True:
        value = condition()
        if value:
            return value
        bound.check()
        time.sleep(interval)


@overload
async def eventually_async(
    condition: Callable[[], Awaitable[T | None]],
    *,
    within: float,
    what: str,
    interval: float = INTERVAL,
) -> T: ...


@overload
async def eventually_async(
    condition: Callable[[], T | None], *, within: float, what: str, interval: float = INTERVAL
) -> T: ...


async def eventually_async(
    condition: Callable[[], object], *, within: float, what: str, interval: float = INTERVAL
) -> object:
    """As ``eventually``, sleeping on the loop; ``condition`` may be a coroutine function."""
    bound = _Bound(within, what)
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        bound.check()
        await asyncio.sleep(interval)
