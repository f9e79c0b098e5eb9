"""A hostile logged-in user's requests, and a probe session that measures what they cost
everyone else.

``Probe`` is a second engineer at a PTY (``cat`` on the target, through the proxy) who
types one key every 50 ms and times each echo: its worst stall is how long the proxy's
event loop (one for every session) was kept from serving it. The attacks are asyncssh
client calls, for the requests OpenSSH's client never sends in bulk (16,000,000
columns, 10,000 window changes, 10,000 environment variables, unknown subsystems).

Benchmarks reuse this module (benchmarks/hostile_user.py), so nothing here depends on
pytest. Loopback only; every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import contextlib
import string
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import asyncssh

from tests.integration.harness import GOOD_JUSTIFICATION
from tests.integration.inproc import ScriptedClient, Step, connect

TARGET = "db01"  # the standard config's sshd target (tests/integration/conftest.py)
KEY_INTERVAL = 0.05  # the probe types a key this often
ECHO_TIMEOUT = 60.0  # a key not echoed within this fails the probe (bounded)


async def log_in(
    port: int, person: str, code: str, target: str = TARGET
) -> asyncssh.SSHClientConnection:
    """A session of ``person`` at ``target``, over the proxy on ``port``."""
    return await connect(
        port, ScriptedClient([Step(f"{person}@{target}", code, GOOD_JUSTIFICATION)])
    )


@dataclass
class Probe:
    """Echo delays of keys typed every KEY_INTERVAL at a PTY, while something else runs."""

    process: asyncssh.SSHClientProcess[bytes]
    delays: list[float] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def worst(self) -> float:
        return max(self.delays, default=0.0)

    def reset(self) -> None:
        self.delays.clear()

    async def type_keys(self) -> None:
        """A key is due every KEY_INTERVAL; its delay runs from when it was due to its
        echo. So a stall counts even when it falls between two keys, and even when the
        probe shares the proxy's event loop (an in-process proxy): a person types on
        while the proxy is stuck, and waits for the echo from when the key was typed."""
        keys = string.ascii_lowercase
        n = 0
        due = time.monotonic()
        while not self._stop.is_set():
            key = keys[n % len(keys)].encode()
            n += 1
            self.process.stdin.write(key)
            async with asyncio.timeout(ECHO_TIMEOUT):
                while (await self.process.stdout.read(1)) != key:
                    pass
            now = time.monotonic()
            self.delays.append(now - due)
            due = max(due + KEY_INTERVAL, now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, due - now))


@contextlib.asynccontextmanager
async def probing(conn: asyncssh.SSHClientConnection) -> AsyncIterator[Probe]:
    """A probe typing on ``conn`` for the duration of the block."""
    process = await conn.create_process("cat", term_type="xterm", encoding=None)
    probe = Probe(process)
    task = asyncio.create_task(probe.type_keys())
    try:
        while not probe.delays:  # the first echo: the channel is up
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        probe.reset()
        yield probe
    finally:
        probe._stop.set()
        await task
        process.stdin.write_eof()
        process.close()


async def typing_at_a_pty(
    conn: asyncssh.SSHClientConnection, size: tuple[int, int] = (80, 24)
) -> asyncssh.SSHClientProcess[bytes]:
    """A PTY ``cat`` with a screenful of lines on it and a key typed and echoed: the
    command extractor's screen exists (a line is being typed) and every row of it holds
    text, ready for window changes."""
    process = await conn.create_process("cat", term_type="xterm", term_size=size, encoding=None)
    process.stdin.write(b"".join(b"line-%d\r" % i for i in range(30)))
    seen = b""
    async with asyncio.timeout(ECHO_TIMEOUT):
        while seen.count(b"line-29") < 2:  # the terminal's echo, then cat's copy
            seen += await process.stdout.read(4096)
    process.stdin.write(b"x")
    async with asyncio.timeout(ECHO_TIMEOUT):
        await process.stdout.readuntil(b"x")
    return process


# --------------------------------------------------------------------------- attacks

Attack = Callable[[asyncssh.SSHClientConnection], Awaitable[object]]


async def huge_columns(conn: asyncssh.SSHClientConnection) -> None:
    """A resize to 16,000,000 columns and back, with a line being typed."""
    process = await typing_at_a_pty(conn)
    process.change_terminal_size(16_000_000, 24)
    process.change_terminal_size(80, 24)
    await _round_trip(process)
    process.close()


async def huge_lines(conn: asyncssh.SSHClientConnection) -> None:
    """A terminal asked with 4,294,967,295 lines from the start, then typed at."""
    process = await typing_at_a_pty(conn, (80, 0xFFFFFFFF))
    await _round_trip(process)
    process.close()


async def resize_flood(conn: asyncssh.SSHClientConnection, count: int = 10_000) -> None:
    """``count`` window changes as fast as the client can send them."""
    process = await typing_at_a_pty(conn)
    for i in range(count):
        process.change_terminal_size(80 + i % 100, 24 + i % 50)
    await _round_trip(process)
    process.close()


async def channel_flood(conn: asyncssh.SSHClientConnection, count: int = 1000) -> int:
    """``count`` session channels opened at once; returns how many were refused."""

    async def one() -> bool:
        try:
            chan, _ = await conn.create_session(asyncssh.SSHClientSession, "true")
        except asyncssh.ChannelOpenError:
            return False
        chan.close()
        return True

    async with asyncio.timeout(120):
        opened = await asyncio.gather(*(one() for _ in range(count)))
    return opened.count(False)


async def channel_churn(conn: asyncssh.SSHClientConnection, count: int = 1000) -> int:
    """``count`` channels opened one after another, each running ``true`` to its end
    before the next opens (never more than one open: under any limit on open channels);
    returns how many were refused."""
    refused = 0
    async with asyncio.timeout(180):
        for _ in range(count):
            try:
                chan, _ = await conn.create_session(asyncssh.SSHClientSession, "true")
            except asyncssh.ChannelOpenError:
                refused += 1
                continue
            await chan.wait_closed()
    return refused


async def env_flood(
    conn: asyncssh.SSHClientConnection, count: int = 10_000, *, locale: bool = False
) -> None:
    """One channel with ``count`` environment variables: none of them allowed, or with
    ``locale``, each a name the proxy passes on (``LC_`` and capitals)."""
    if locale:
        env = {"LC_" + "".join(chr(65 + int(d)) for d in f"{i:05d}"): "C" for i in range(count)}
    else:
        env = {f"HOSTILE_{i:05d}": "x" * 100 for i in range(count)}
    async with asyncio.timeout(60):
        await conn.run("true", env=env, check=False)


async def refused_flood(
    conn: asyncssh.SSHClientConnection, count: int = 1000, at_once: int = 4
) -> None:
    """``count`` channels asking for a subsystem that is refused, each named differently
    and long (4 KiB), ``at_once`` at a time (under the channel limit): every refusal
    costs the proxy a little, none may cost a row each."""

    async def one(i: int) -> None:
        with contextlib.suppress(asyncssh.Error):
            await conn.create_session(asyncssh.SSHClientSession, subsystem=f"x{i}-" + "y" * 4096)

    async with asyncio.timeout(120):
        for start in range(0, count, at_once):
            await asyncio.gather(*(one(i) for i in range(start, min(count, start + at_once))))


async def long_exec(conn: asyncssh.SSHClientConnection, size: int = 200_000) -> None:
    """An exec line of ``size`` bytes (a comment: the shell ignores it)."""
    async with asyncio.timeout(60):
        await conn.run("true #" + "z" * size, check=False)


async def signal_flood(conn: asyncssh.SSHClientConnection, count: int = 10_000) -> None:
    """``count`` signal requests, half of them with a 4 KiB name no target knows."""
    process = await conn.create_process("cat", encoding=None)
    for i in range(count):
        process.send_signal("WINCH" if i % 2 else "Q" * 4096)
    process.stdin.write(b"done\n")
    async with asyncio.timeout(ECHO_TIMEOUT):
        await process.stdout.readuntil(b"done\n")
    process.stdin.write_eof()
    await process.wait(check=False)


async def paste_flood(conn: asyncssh.SSHClientConnection, lines: int = 16_000) -> None:
    """A paste of ``lines`` short lines at a PTY, in one go (OpenSSH sends it in 32 KiB
    packets): every line is an Enter the command extractor could read one by one."""
    process = await typing_at_a_pty(conn)
    process.stdin.write(b"ab\r" * lines)
    await _round_trip(process)
    process.close()


async def _round_trip(process: asyncssh.SSHClientProcess[bytes]) -> None:
    """Everything sent before has been handled by the proxy: a key comes back."""
    process.stdin.write(b"!")
    async with asyncio.timeout(ECHO_TIMEOUT):
        await process.stdout.readuntil(b"!")
