"""Bulk transfers timed from the client's side: exec download, upload, sftp, PTY output.

Each measurement times only the data phase (login excluded, it has its own metric): a
download from its first byte to EOF, an upload from the moment the remote end is ready
to the client's exit, an sftp transfer from the command to the next prompt's answer. The
proxy's CPU is sampled over the same phase. Every wait has a deadline.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.rig import cpu_seconds

READ_CHUNK = 1 << 20


class BenchError(RuntimeError):
    """A measurement that could not be made (a client failed or timed out)."""


@dataclass(frozen=True)
class Sample:
    seconds: float
    nbytes: int
    proxy_cpu: float | None  # proxy CPU seconds over the data phase, proxy path only

    @property
    def mb_per_s(self) -> float:
        return self.nbytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(10)


def _cpu(pid: int | None) -> float | None:
    return None if pid is None else cpu_seconds(pid)


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def read_stream(
    argv: Sequence[str],
    env: dict[str, str],
    *,
    pid: int | None,
    timeout: float,
    tty: bool,
    typed: bytes | None = None,
    start: bytes | None = None,
) -> Sample:
    """Run a client whose remote command writes a stream; time first byte -> EOF.

    ``typed`` is written to the client's stdin first (a command line for an interactive
    shell); with ``start``, timing and counting begin after that marker in the output,
    so a shell's start-up and prompt are not part of the data phase."""
    process = subprocess.Popen(
        argv,
        env=env,
        # A PTY session keeps its stdin open: EOF would end it early on some paths.
        stdin=subprocess.PIPE if tty else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    fd = process.stdout.fileno()
    deadline = time.monotonic() + timeout
    first: float | None = None
    cpu0: float | None = None
    first_len = 0
    total = 0
    try:
        if typed is not None:
            assert process.stdin is not None
            process.stdin.write(typed)
            process.stdin.flush()
        if start is not None:
            seen = _wait_for(fd, start, deadline)
            first, cpu0 = time.monotonic(), _cpu(pid)
            total = len(seen) - seen.index(start) - len(start)
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f"timed out after {timeout:g}s: {' '.join(argv)}")
                if not sel.select(min(left, 1.0)):
                    continue
                chunk = os.read(fd, READ_CHUNK)
                if not chunk:
                    break
                if first is None:
                    first = time.monotonic()
                    cpu0 = _cpu(pid)
                    first_len = len(chunk)
                total += len(chunk)
        end = time.monotonic()
        if process.stdin is not None:
            process.stdin.close()
        status = process.wait(max(1.0, deadline - time.monotonic()))
        cpu1 = _cpu(pid)
    except BaseException:
        _stop(process)
        raise
    stderr = process.stderr.read() if process.stderr else b""
    if status != 0 or first is None:
        raise BenchError(f"exit {status}, {total} bytes: {' '.join(argv)}\n{stderr!r}")
    return Sample(end - first, total - first_len, _delta(cpu1, cpu0))


def _wait_for(fd: int, marker: bytes, deadline: float) -> bytes:
    seen = b""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while marker not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"no {marker!r} before the deadline; saw {seen[-200:]!r}")
            if sel.select(min(left, 1.0)):
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise BenchError(f"EOF before {marker!r}; saw {seen[-200:]!r}")
                seen += chunk
    return seen


def upload(
    argv: Sequence[str], env: dict[str, str], size: int, *, pid: int | None, timeout: float
) -> Sample:
    """``size`` zero bytes into the remote ``cat > /dev/null``, fed by ``head`` (no
    Python in the data path); timed from the remote end's READY to the client's exit."""
    process = subprocess.Popen(
        argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    try:
        _wait_for(process.stdout.fileno(), b"READY", deadline)
        start = time.monotonic()
        cpu0 = _cpu(pid)
        feeder = subprocess.Popen(
            ["head", "-c", str(size), "/dev/zero"], stdin=subprocess.DEVNULL, stdout=process.stdin
        )
        process.stdin.close()
        try:
            feeder.wait(max(1.0, deadline - time.monotonic()))
        finally:
            _stop(feeder)
        status = process.wait(max(1.0, deadline - time.monotonic()))
        end = time.monotonic()
        cpu1 = _cpu(pid)
    except BaseException:
        _stop(process)
        raise
    if status != 0:
        stderr = process.stderr.read() if process.stderr else b""
        raise BenchError(f"upload exit {status}: {stderr!r}")
    return Sample(end - start, size, _delta(cpu1, cpu0))


def sftp(
    argv: Sequence[str],
    env: dict[str, str],
    command: str,
    size: int,
    *,
    pid: int | None,
    timeout: float,
) -> Sample:
    """One sftp ``get``/``put`` fed on stdin (``-b`` would disable the prompts),
    timed from sending it to the answer of the ``pwd`` queued behind it."""
    process = subprocess.Popen(
        argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdin is not None
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    fd = process.stdout.fileno()
    try:
        process.stdin.write(b"pwd\n")
        process.stdin.flush()
        _wait_for(fd, b"Remote working directory", deadline)
        start = time.monotonic()
        cpu0 = _cpu(pid)
        process.stdin.write(f"{command}\npwd\n".encode())
        process.stdin.flush()
        _wait_for(fd, b"Remote working directory", deadline)
        end = time.monotonic()
        cpu1 = _cpu(pid)
        process.stdin.close()
        status = process.wait(max(1.0, deadline - time.monotonic()))
    except BaseException:
        _stop(process)
        raise
    if status != 0:
        stderr = process.stderr.read() if process.stderr else b""
        raise BenchError(f"sftp exit {status}: {stderr!r}")
    return Sample(end - start, size, _delta(cpu1, cpu0))


def timed_run(argv: Sequence[str], env: dict[str, str], *, timeout: float) -> float:
    """Wall time of a whole client run (login included), e.g. ``ssh HOST true``."""
    start = time.monotonic()
    result = subprocess.run(
        argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, check=False
    )
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise BenchError(f"exit {result.returncode}: {' '.join(argv)}\n{result.stderr!r}")
    return elapsed


def rig_timeout(size: int) -> float:
    """A generous bound for moving ``size`` bytes: 5 MB/s plus a minute."""
    return 60.0 + size / 5e6
