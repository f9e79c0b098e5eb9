"""Failures in the middle of a session (issue 4, point 6), with the real OpenSSH client,
the real proxy process and a real sshd: the client SIGKILLed while output streams, the
target's sshd killed while output streams. Each must end with a complete audit trail
(a session end with its reason, a channel end with byte counts and the SHA-256 of the
recording file as it is on disk) and the proxy must serve the next login at once.
The third case of the issue, the target unreachable at login, is
tests/integration/test_upstream.py.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import TARGET
from tests.integration.harness import (
    Deployment,
    SshdTarget,
    SshRun,
    events_of,
    new_person,
    sha256_file,
)
from tests.waiting import eventually

pytestmark = pytest.mark.slow

STREAM = "yes | head -c 500M"


def read_some(run: SshRun, at_least: int, timeout: float = 20.0) -> bytes:
    """Read from the client's stdout until ``at_least`` bytes came (bounded)."""
    assert run.process.stdout is not None
    fd = run.process.stdout.fileno()
    received = b""
    deadline = time.monotonic() + timeout
    while len(received) < at_least:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"only {len(received)} bytes of output within {timeout:g}s")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise AssertionError(f"output ended after {len(received)} bytes")
            received += chunk
    return received


def assert_complete_trail(session: dict[str, Any], end_reason: str) -> dict[str, Any]:
    """Ended with ``end_reason``; one channel with bytes and a hash that matches its file."""
    assert session["end_reason"] == end_reason, session
    assert session["ended_at"], session
    channel: dict[str, Any]
    [channel] = session["channels"]
    assert channel["ended_at"], channel
    assert channel["bytes_down"] > 0, channel
    recording = Path(channel["recording"])
    assert channel["recording_sha256"] == sha256_file(recording), channel
    [end] = events_of(session, "channel_end")
    assert end["data"]["recording_sha256"] == channel["recording_sha256"]
    assert end["data"]["bytes_down"] == channel["bytes_down"]
    [session_end] = events_of(session, "session_end")
    assert session_end["data"]["reason"] == end_reason
    return channel


def assert_next_login_works(deployment: Deployment, target: str = TARGET) -> None:
    person = new_person("next")
    code = deployment.code(person)
    result = deployment.ssh(person, target, code, "echo still-serving", timeout=30)
    assert result.returncode == 0, result.describe()
    assert result.stdout == b"still-serving\n"


def test_a_client_killed_mid_output_leaves_a_complete_trail(
    deployment: Deployment, person: str
) -> None:
    code = deployment.code(person)
    run = deployment.ssh_start(person, TARGET, code, STREAM)
    try:
        read_some(run, 256 * 1024)
        run.process.send_signal(signal.SIGKILL)
    finally:
        run.kill()

    session = deployment.wait_for_session(person, timeout=30)

    assert_complete_trail(session, "client_exit")
    assert_next_login_works(deployment)


@pytest.fixture
def doomed_target(tmp_path: Path) -> Iterator[SshdTarget]:
    """An sshd of this test's own, to be killed."""
    sshd = SshdTarget.start(tmp_path / "doomed")
    yield sshd
    sshd.stop()


@pytest.fixture
def doomed_deployment(
    tmp_path: Path, doomed_target: SshdTarget, target: SshdTarget
) -> Iterator[Deployment]:
    running = Deployment.start(
        tmp_path / "proxy",
        {"doomed01": doomed_target.target_entry(), TARGET: target.target_entry()},
        sshd_targets={"doomed01": doomed_target, TARGET: target},
    )
    yield running
    running.stop()


def descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (sshd's per-connection children), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def test_the_targets_sshd_killed_mid_output_leaves_a_complete_trail(
    doomed_deployment: Deployment, doomed_target: SshdTarget, person: str
) -> None:
    deployment = doomed_deployment
    code = deployment.code(person)
    run = deployment.ssh_start(person, "doomed01", code, STREAM)
    try:
        read_some(run, 256 * 1024)
        # The whole target dies: the listening sshd (our child) and every sshd it
        # forked for the session, by pid.
        serving = descendants(doomed_target.process.pid)
        assert serving, "no sshd child serving the session"
        doomed_target.process.kill()
        for pid in serving:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        result = run.wait(timeout=30)
    except BaseException:
        run.kill()
        raise

    assert result.returncode != 0, result.describe()
    session = deployment.wait_for_session(person, timeout=30)
    assert_complete_trail(session, "target_error")
    assert deployment.proxy.alive()
    assert_next_login_works(deployment)
    eventually(
        lambda: doomed_target.process.poll() is not None, within=10, what="the sshd to be gone"
    )
