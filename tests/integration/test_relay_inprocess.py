"""The relay and the recorder between two asyncssh peers in the test's own loop: the
proxy in process (``inproc.py``), a target whose channels run a Python handler
(``asynctarget.py``) and an asyncssh client. A real ``sshd`` adds nothing here, and the
handler controls the target's side exactly: it writes as fast as the proxy lets it, or
stops reading, or writes many small chunks at once.

- Flow control, both ways: a reader that stops reading stops the writer at the other
  end within a few windows' worth, instead of the proxy buffering the difference.
- Coalescing: what one socket read brings from the target goes on to the engineer in
  a few writes, and into the cast in a few events, byte for byte.
- Casts: what an exec channel and a PTY shell leave (stdout, stderr, stdin, size,
  resizes, exit), hashed in the trail and played by the real ``asciinema``.

The end-to-end suites run the same relay against the real OpenSSH client and ``sshd``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from proxy.store.base import SessionRow
from tests.integration.asynctarget import AsyncTarget, async_target
from tests.integration.harness import (
    GOOD_JUSTIFICATION,
    asciinema_cat,
    cast_events,
    cast_text,
    new_person,
    sha256_file,
)
from tests.integration.inproc import InProcessProxy, Step, close, in_process_proxy, login
from tests.waiting import eventually_async

TARGET = "box"
MiB = 1 << 20
CHUNK = 64 * 1024
TOTAL = 24 * MiB  # what the writer would send if nothing held it back
# What may be in flight when the reader stops: the SSH windows of both legs and the
# buffers between them (about 5 MiB here). Without flow control the writer sends it all.
IN_FLIGHT = TOTAL // 2


@dataclass
class Rig:
    proxy: InProcessProxy
    target: AsyncTarget
    person: str = field(default_factory=new_person)

    async def connect(self) -> asyncssh.SSHClientConnection:
        code = await self.proxy.quick_code(self.person)
        _, conn = await login(
            self.proxy.port, [Step(f"{self.person}@{TARGET}", code, GOOD_JUSTIFICATION)]
        )
        assert not isinstance(conn, Exception), conn
        return conn

    async def ended_session(self) -> SessionRow:
        """The person's session, once its end and its channels' ends are written."""

        async def ended() -> SessionRow | None:
            rows = [s for s in await self.proxy.sessions() if s.person == self.person]
            done = rows and rows[0].ended_at is not None
            return rows[0] if done and all(c.ended_at for c in rows[0].channels) else None

        return await eventually_async(ended, what="the session's end", within=20)

    def cast(self, row: SessionRow, n: int = 0) -> Path:
        recording = row.channels[n].recording
        assert recording is not None
        path = Path(recording)
        return path if path.is_absolute() else self.proxy.recordings / path


CAP = 1 * MiB  # recording.max_channel_bytes of the ``capped`` rig


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **options: Any) -> AsyncIterator[Rig]:
    async with (
        async_target(tmp_path / "target") as target,
        in_process_proxy(tmp_path / "proxy", {TARGET: target.target_entry()}, **options) as p,
    ):
        yield Rig(p, target)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with running(tmp_path) as r:
        yield r


@pytest.fixture
async def capped(tmp_path: Path) -> AsyncIterator[Rig]:
    async with running(tmp_path, recording={"max_channel_bytes": "1MiB"}) as r:
        yield r


def block(i: int) -> bytes:
    """The i-th chunk a writer sends: its number repeated, so order is checked too."""
    return (b"%08d" % i) * (CHUNK // 8)


@dataclass
class Writer:
    """How far a writer got, and whether it is waiting for the other end to drain."""

    written: int = 0
    waiting: bool = False

    async def write_all(self, stream: asyncssh.SSHWriter[bytes]) -> None:
        for i in range(TOTAL // CHUNK):
            stream.write(block(i))
            self.written += CHUNK
            self.waiting = True
            await stream.drain()
            self.waiting = False

    async def held(self) -> int:
        """Once the writer has been held at the same point for two polls (the reader
        stopped), how much it wrote."""
        seen: list[int] = []

        def stopped() -> bool:
            if self.written >= TOTAL and not self.waiting:
                raise AssertionError(f"all {TOTAL} bytes went through: nothing held them")
            seen.append(self.written if self.waiting else -1)
            return len(seen) >= 2 and seen[-1] == seen[-2] != -1

        await eventually_async(stopped, what="the writer held back", within=30, interval=0.2)
        return self.written


async def test_an_engineer_who_stops_reading_stops_the_target(rig: Rig) -> None:
    target = Writer()

    async def blast(process: asyncssh.SSHServerProcess[bytes]) -> None:
        await target.write_all(process.stdout)
        process.exit(0)

    rig.target.handler = blast
    conn = await rig.connect()
    try:
        process = await conn.create_process("blast", encoding=None)
        assert await target.held() <= IN_FLIGHT  # the engineer reads nothing yet
        received = await process.stdout.readexactly(TOTAL)
        assert received == b"".join(block(i) for i in range(TOTAL // CHUNK))
        assert (await process.wait()).exit_status == 0
    finally:
        await close(conn)
    row = await rig.ended_session()
    assert (row.channels[0].bytes_down, row.channels[0].exit_status) == (TOTAL, 0)


async def test_a_target_that_stops_reading_stops_the_engineer(rig: Rig) -> None:
    reading = asyncio.Event()

    async def slow_reader(process: asyncssh.SSHServerProcess[bytes]) -> None:
        await reading.wait()
        data = await process.stdin.read()
        process.stdout.write(b"%d %s\n" % (len(data), hashlib.sha256(data).hexdigest().encode()))
        process.exit(0)

    rig.target.handler = slow_reader
    engineer = Writer()
    conn = await rig.connect()
    try:
        process = await conn.create_process("slow", encoding=None)
        sending = asyncio.create_task(engineer.write_all(process.stdin))
        assert await engineer.held() <= IN_FLIGHT  # the target reads nothing yet
        reading.set()
        await asyncio.wait_for(sending, 60)
        process.stdin.write_eof()
        sent = b"".join(block(i) for i in range(TOTAL // CHUNK))
        answer = await asyncio.wait_for(process.stdout.read(), 60)
        assert answer == b"%d %s\n" % (TOTAL, hashlib.sha256(sent).hexdigest().encode())
    finally:
        await close(conn)
    row = await rig.ended_session()
    assert row.channels[0].bytes_up == TOTAL


class Counting(asyncssh.SSHClientSession[bytes]):
    """Counts the data messages the engineer's client receives."""

    def __init__(self) -> None:
        self.messages = 0
        self.data = bytearray()
        self.closed = asyncio.Event()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.messages += 1
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()


async def test_small_writes_of_one_read_go_on_in_a_few_messages(rig: Rig) -> None:
    lines = [b"line %d of a burst\r\n" % n for n in range(2000)]

    async def burst(process: asyncssh.SSHServerProcess[bytes]) -> None:
        for line in lines:  # one message each, back to back: many per socket read
            process.stdout.write(line)
        await process.stdout.drain()
        process.exit(0)

    rig.target.handler = burst
    conn = await rig.connect()
    session = Counting()
    try:
        chan, _ = await conn.create_session(lambda: session, "burst", encoding=None)
        await asyncio.wait_for(session.closed.wait(), 30)
        assert chan.get_exit_status() == 0
    finally:
        await close(conn)
    assert bytes(session.data) == b"".join(lines)
    assert session.messages <= len(lines) // 10
    row = await rig.ended_session()
    cast = rig.cast(row)
    _, events = cast_events(cast)
    outputs = [e for e in events if e[1] == "o"]
    assert "".join(str(e[2]) for e in outputs) == b"".join(lines).decode()
    assert len(outputs) <= len(lines) // 10


async def test_an_exec_channels_cast_keeps_stdout_stderr_stdin_and_the_exit(rig: Rig) -> None:
    async def command(process: asyncssh.SSHServerProcess[bytes]) -> None:
        given = await process.stdin.read()
        process.stdout.write(b"out-456 " + given.upper())
        process.stderr.write(b"err-789\n")
        process.exit(3)

    rig.target.handler = command
    conn = await rig.connect()
    try:
        result = await conn.run("tool --flag", input=b"stdin-payload-31\n", encoding=None)
    finally:
        await close(conn)
    assert (result.exit_status, result.stdout, result.stderr) == (
        3,
        b"out-456 STDIN-PAYLOAD-31\n",
        b"err-789\n",
    )
    row = await rig.ended_session()
    (channel,) = row.channels
    assert (channel.kind, channel.command, channel.pty, channel.exit_status) == (
        "exec",
        "tool --flag",
        False,
        3,
    )
    assert (channel.bytes_up, channel.bytes_down) == (17, 25 + 8)
    cast = rig.cast(row)
    assert (channel.recording_sha256, channel.recording_bytes) == (
        sha256_file(cast),
        cast.stat().st_size,
    )
    _, events = cast_events(cast)
    # The command line as a marker, stdin, stdout and stderr (one batch or two), exit.
    assert [(e[1], e[2]) for e in events if e[1] != "o"] == [
        ("m", "tool --flag"),
        ("i", "stdin-payload-31\n"),
        ("x", "3"),
    ]
    assert cast_text(cast, "o") == "out-456 STDIN-PAYLOAD-31\nerr-789\n"
    played = await asyncio.to_thread(asciinema_cat, cast)
    assert played.returncode == 0, played.stderr
    assert b"out-456" in played.stdout
    assert b"err-789" in played.stdout


async def test_a_pty_shells_cast_keeps_its_size_and_resizes_not_its_keystrokes(
    rig: Rig,
) -> None:
    async def shell(process: asyncssh.SSHServerProcess[bytes]) -> None:
        width, height, _, _ = process.get_terminal_size()
        process.stdout.write(b"size %dx%d\r\n$ " % (width, height))
        typed = await process.stdin.readuntil(b"\r")
        process.stdout.write(b"\r\nok " + typed.strip() + b"\r\n$ ")
        await process.stdin.readuntil(b"\r")  # typed without echo, as at a password prompt
        try:
            await process.stdin.read(1)  # asyncssh raises here once the size changes
        except asyncssh.TerminalSizeChanged as change:
            process.stdout.write(b"\r\nnow %dx%d\r\n" % (change.width, change.height))
        process.exit(0)

    rig.target.handler = shell
    conn = await rig.connect()
    try:
        process = await conn.create_process(
            "", term_type="xterm", term_size=(100, 30), encoding=None
        )
        assert await process.stdout.readuntil(b"$ ") == b"size 100x30\r\n$ "
        process.stdin.write(b"echo hi\r")
        await process.stdout.readuntil(b"$ ")
        process.stdin.write(b"hunter2-not-echoed\r")
        process.change_terminal_size(120, 40)
        tail = await asyncio.wait_for(process.stdout.read(), 30)
        assert b"now 120x40" in tail
        assert (await process.wait()).exit_status == 0
    finally:
        await close(conn)
    row = await rig.ended_session()
    cast = rig.cast(row)
    header, events = cast_events(cast)
    assert (header["width"], header["height"]) == (100, 30)
    assert [e[2] for e in events if e[1] == "r"] == ["120x40"]
    assert [e[1] for e in events if e[1] != "o"][-1] == "x"
    markers = [e[2] for e in events if e[1] == "m"]
    assert markers
    assert set(markers) == {"(input not echoed: redacted)"}
    recorded = cast.read_text()
    assert "ok echo hi" in recorded
    assert "hunter2" not in recorded  # keystrokes at a PTY only with recording.input
    played = await asyncio.to_thread(asciinema_cat, cast)
    assert played.returncode == 0, played.stderr


async def test_past_the_cap_the_engineer_gets_it_all_and_the_cast_stays_small(
    capped: Rig,
) -> None:
    # Every byte value, control characters included: escaped in the cast's JSON, they
    # must not make it grow past about the cap.
    pattern = bytes(range(256)) * (CHUNK // 256)
    total = 8 * MiB

    async def download(process: asyncssh.SSHServerProcess[bytes]) -> None:
        for _ in range(total // CHUNK):
            process.stdout.write(pattern)
            await process.stdout.drain()
        process.exit(0)

    capped.target.handler = download
    conn = await capped.connect()
    try:
        process = await conn.create_process("download", encoding=None)
        received = await asyncio.wait_for(process.stdout.readexactly(total), 60)
        assert received == pattern * (total // CHUNK)
        assert (await process.wait()).exit_status == 0
    finally:
        await close(conn)
    row = await capped.ended_session()
    cast = capped.cast(row)
    assert row.channels[0].bytes_down == total
    assert cast.stat().st_size < 2 * CAP
    _, events = cast_events(cast)
    (end,) = capped.proxy.events("channel_end")
    omitted = end.data["omitted_bytes"]
    assert 0 < total - omitted <= CAP  # the cast kept the stream's first bytes ...
    assert cast_text(cast, "o").startswith(bytes(range(32)).decode())
    # ... and the trail the size and hash of exactly the rest.
    assert end.data["omitted_sha256"] == hashlib.sha256(received[total - omitted :]).hexdigest()
    assert any(str(omitted) in str(e[2]) for e in events if e[1] == "m")  # the cast says so
    played = await asyncio.to_thread(asciinema_cat, cast)
    assert played.returncode == 0, played.stderr[-2000:]
