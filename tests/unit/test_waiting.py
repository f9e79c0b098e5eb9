"""tests.waiting: the one polling helper returns the first truthy value or fails naming
what never came, within its bound (generous deadlines: 10x)."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.waiting import eventually, eventually_async


def test_eventually_returns_the_first_truthy_value() -> None:
    calls: list[int] = []

    def third() -> int | None:
        calls.append(1)
        return len(calls) if len(calls) >= 3 else None

    assert eventually(third, within=5, what="the third call", interval=0.001) == 3
    assert len(calls) == 3


def test_eventually_fails_with_a_sentence_after_its_bound() -> None:
    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"^timed out after 0.2s waiting for nothing$"):
        eventually(lambda: None, within=0.2, what="nothing", interval=0.01)
    assert 0.2 <= time.monotonic() - started < 2.0


def test_eventually_async_takes_a_plain_or_a_coroutine_condition() -> None:
    async def run() -> tuple[str, int]:
        box: list[int] = []

        async def filled() -> int | None:
            box.append(1)
            return len(box) if len(box) >= 2 else None

        plain = await eventually_async(lambda: "yes", within=5, what="a value")
        awaited = await eventually_async(filled, within=5, what="two calls", interval=0.001)
        with pytest.raises(AssertionError, match="waiting for never"):
            await eventually_async(lambda: 0, within=0.1, what="never", interval=0.01)
        return plain, awaited

    assert asyncio.run(run()) == ("yes", 2)
