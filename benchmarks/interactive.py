"""Interactive sessions driven by real OpenSSH clients over pipes: echo and idle memory.

Every session is ``ssh -tt HOST 'stty raw -echo; printf READY; exec cat'``: a PTY whose
``cat`` sends each byte straight back. Both paths use the same client (OpenSSH), the same
command and the same pacing. Sessions are opened at most ``OPENING`` at a time and
``OPEN_RATE`` per second, which keeps unauthenticated connections under sshd's default
MaxStartups (10) on the direct path and under the proxy's per-address connection rate
on the other, and paces both the same way.

Keystrokes are open-loop: each session types one byte every ``period`` seconds whether
or not the last one came back (a typist does not wait for the echo), so a saturated path
shows as late or missing echoes instead of slowing the typing down.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from benchmarks.rig import busy_seconds, cpu_seconds
from benchmarks.transfer import BenchError

ECHO_COMMAND = "stty raw -echo; printf READY; exec cat"
KEY = b"\x01"  # never in the proxy's notices; raw mode passes it through unchanged
OPENING = 8
# The proxy refuses more than 120 new connections per 10 s from one address (a flood
# guard, proxy/service.py); opening sessions at most this fast stays under it. Both
# paths are paced the same way.
OPEN_RATE = 10.0  # per second
OPEN_TIMEOUT = 60.0
GRACE = 3.0  # how long a level waits for the last echoes after typing stops

Process = asyncio.subprocess.Process


@dataclass
class EchoLevel:
    sessions: int
    sent: int = 0
    echoed: int = 0
    rtts: list[float] = field(default_factory=list)  # seconds
    # Over the typing phase: the whole machine's non-idle cores, and the CPU seconds of
    # the process ``echo_level`` was given (the proxy), if any.
    busy_cores: float = 0.0
    cpu_seconds: float | None = None

    @property
    def cpu_per_echo_us(self) -> float | None:
        if self.cpu_seconds is None or not self.echoed:
            return None
        return self.cpu_seconds / self.echoed * 1e6

    @property
    def rate(self) -> float:
        return self.echoed / self.sent if self.sent else 0.0

    def percentile(self, q: float) -> float:
        """The q-th percentile in ms (nearest rank); missing echoes count as infinite."""
        if not self.sent:
            return float("nan")
        ranked = sorted(self.rtts)
        index = min(self.sent - 1, max(0, round(q / 100 * self.sent + 0.5) - 1))
        return ranked[index] * 1000 if index < len(ranked) else float("inf")


class Pacer:
    """Hands out start times at most ``rate`` per second."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0

    async def wait(self) -> None:
        now = time.monotonic()
        at = max(now, self._next)
        self._next = at + self._interval
        await asyncio.sleep(at - now)


async def open_session(
    argv: Sequence[str], env: dict[str, str], gate: asyncio.Semaphore, pacer: Pacer
) -> Process:
    async with gate:
        await pacer.wait()
        process = await asyncio.create_subprocess_exec(
            *argv,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert process.stdout is not None
        seen = b""
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                while b"READY" not in seen:
                    chunk = await process.stdout.read(4096)
                    if not chunk:
                        raise BenchError(f"session ended before READY: {seen[-200:]!r}")
                    seen += chunk
        except BaseException:
            await close_session(process)
            raise
        return process


async def close_session(process: Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
    try:
        async with asyncio.timeout(10):
            await process.wait()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()


async def open_sessions(argv: Sequence[str], env: dict[str, str], count: int) -> list[Process]:
    gate, pacer = asyncio.Semaphore(OPENING), Pacer(OPEN_RATE)
    results = await asyncio.gather(
        *(open_session(argv, env, gate, pacer) for _ in range(count)), return_exceptions=True
    )
    opened = [r for r in results if isinstance(r, Process)]
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        await close_all(opened)
        raise BenchError(f"{len(failed)} of {count} sessions failed to open: {failed[0]!r}")
    return opened


async def close_all(processes: Sequence[Process]) -> None:
    await asyncio.gather(*(close_session(p) for p in processes))


async def _type(
    process: Process, level: EchoLevel, start: float, stop: float, period: float
) -> None:
    assert process.stdin is not None
    assert process.stdout is not None
    stdout = process.stdout
    pending: deque[float] = deque()
    still_typing = True
    drained = asyncio.Event()

    async def read() -> None:
        while chunk := await stdout.read(4096):
            now = time.monotonic()
            for _ in range(chunk.count(KEY)):
                if pending:
                    level.rtts.append(now - pending.popleft())
                    level.echoed += 1
            if not still_typing and not pending:
                drained.set()

    reader = asyncio.create_task(read())
    try:
        due = start + random.random() * period
        while due < stop:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            pending.append(time.monotonic())
            process.stdin.write(KEY)
            level.sent += 1
            due += period
        still_typing = False
        await process.stdin.drain()
        if pending:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(GRACE):
                    await drained.wait()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def echo_level(
    argv: Sequence[str],
    env: dict[str, str],
    sessions: int,
    seconds: float,
    period: float,
    pid: int | None = None,
) -> EchoLevel:
    processes = await open_sessions(argv, env, sessions)
    level = EchoLevel(sessions)
    try:
        start = time.monotonic() + 0.5
        await asyncio.sleep(0.5)
        busy0, cpu0 = busy_seconds(), None if pid is None else cpu_seconds(pid)
        await asyncio.gather(*(_type(p, level, start, start + seconds, period) for p in processes))
        level.busy_cores = (busy_seconds() - busy0) / (time.monotonic() - start)
        if pid is not None and cpu0 is not None:
            level.cpu_seconds = cpu_seconds(pid) - cpu0
    finally:
        await close_all(processes)
    return level


@dataclass(frozen=True)
class Memory:
    sessions: int
    before_kib: int
    after_kib: int

    @property
    def per_session_kib(self) -> float:
        return (self.after_kib - self.before_kib) / self.sessions


async def idle_memory(
    argv: Sequence[str], env: dict[str, str], sessions: int, measure: Callable[[], int]
) -> Memory:
    """``measure()`` (KiB) before and with ``sessions`` idle sessions open."""
    await asyncio.sleep(1.0)  # let sessions of an earlier metric finish closing
    before = measure()
    processes = await open_sessions(argv, env, sessions)
    try:
        await asyncio.sleep(2.0)  # let the sessions' start-up work finish
        after = measure()
    finally:
        await close_all(processes)
    return Memory(sessions, before, after)
