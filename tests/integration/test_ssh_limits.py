"""The session's clock and the recording's size limit, as the engineer meets them: warnings
before the deadline on every live channel (terminal for PTY, stderr otherwise), closure of
a silent session but not of a chatty one, and a 200 MB download past
recording.max_channel_bytes that arrives whole while its cast stays small."""

from __future__ import annotations

import hashlib
import re
import subprocess
import threading
from collections.abc import Iterator

import pytest

from tests.integration.conftest import _LOG_START, TARGET
from tests.integration.harness import (
    Deployment,
    Reason,
    SshdTarget,
    asciinema_cat,
    cast_events,
    cast_text,
    events_of,
    new_person,
)
from tests.integration.sshtools import ControlMaster, channel_cast, finish, start_deployment

# Commands that outlive every limit below: only the proxy can end them early.
BOUND = 25.0
WARNING = re.compile(r"^.*\b(ends in|remaining|left)\b.*$", re.IGNORECASE | re.MULTILINE)
TIME_LIMIT = re.compile(r"time.?limit", re.IGNORECASE)
IDLE = re.compile(r"idle|inactiv", re.IGNORECASE)
CAP = 1024 * 1024
DOWNLOAD = 200_000_000


@pytest.fixture(scope="module")
def warn_deployment(
    tmp_path_factory: pytest.TempPathFactory, target: SshdTarget, other_target: SshdTarget
) -> Iterator[Deployment]:
    running = start_deployment(
        tmp_path_factory.mktemp("warn-proxy"),
        target,
        other_target,
        policy={"max_session": "8s", "warn_before": ["5s", "2s"]},
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def idle_deployment(
    tmp_path_factory: pytest.TempPathFactory, target: SshdTarget, other_target: SshdTarget
) -> Iterator[Deployment]:
    running = start_deployment(
        tmp_path_factory.mktemp("idle-proxy"), target, other_target, policy={"idle_timeout": "3s"}
    )
    yield running
    running.stop()


@pytest.fixture(scope="module")
def capped_deployment(
    tmp_path_factory: pytest.TempPathFactory, target: SshdTarget, other_target: SshdTarget
) -> Iterator[Deployment]:
    running = start_deployment(
        tmp_path_factory.mktemp("capped-proxy"),
        target,
        other_target,
        recording={"max_channel_bytes": "1MiB"},
    )
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def _attach_proxy_log(request: pytest.FixtureRequest) -> None:
    """As conftest does for ``deployment``: a failing test's report gets the proxy's log."""
    for name in ("warn_deployment", "idle_deployment", "capped_deployment"):
        if name in request.fixturenames:
            running = request.getfixturevalue(name)
            assert isinstance(running, Deployment)
            request.node.stash[_LOG_START] = (running, running.proxy.log_size())


@pytest.mark.slow
def test_every_live_channel_is_warned_before_the_deadline(
    warn_deployment: Deployment, person: str
) -> None:
    deployment = warn_deployment
    # One session (ControlMaster), two channels: a PTY one and a plain exec one.
    master = ControlMaster(deployment, person, deployment.code(person))
    try:
        # Opened at once: the first warning comes 3 s after login.
        pty = master.start("sleep 30; echo not-reached", tty=True)
        plain = master.start("sleep 30; echo not-reached")
        pty_status, pty_out, _ = finish(pty, timeout=BOUND)
        plain_status, plain_out, plain_err = finish(plain, timeout=BOUND)
        master.run.wait(timeout=BOUND)
    finally:
        master.close()

    terminal = pty_out.decode(errors="replace")
    stderr = plain_err.decode(errors="replace")
    assert len(WARNING.findall(terminal)) == 2, terminal
    assert TIME_LIMIT.search(terminal), terminal
    assert b"not-reached" not in pty_out
    assert pty_status != 0
    assert len(WARNING.findall(stderr)) == 2, stderr
    assert TIME_LIMIT.search(stderr), stderr
    assert plain_out == b"", plain_out  # warnings go to stderr, never into the data
    assert plain_status != 0
    session = deployment.wait_for_session(person)
    assert len(deployment.sessions(person)) == 1
    assert session["end_reason"] == Reason.TIME_LIMIT
    assert len(events_of(session, "session_warning")) == 2, session["events"]
    assert len(session["channels"]) == 2
    pty_channel = next(c for c in session["channels"] if c["pty"])
    assert len(WARNING.findall(cast_text(channel_cast(deployment, pty_channel), "o"))) == 2


@pytest.mark.slow
def test_a_silent_session_is_closed_and_a_chatty_one_is_not(
    idle_deployment: Deployment,
) -> None:
    deployment = idle_deployment
    silent_person, chatty_person = new_person("silent"), new_person("chatty")
    silent_code = deployment.code(silent_person)
    chatty_code = deployment.code(chatty_person)

    silent = deployment.ssh_start(silent_person, TARGET, silent_code, "sleep 30; echo not-reached")
    chatty = deployment.ssh_start(
        chatty_person, TARGET, chatty_code, "for i in $(seq 8); do echo $i; sleep 1; done"
    )
    try:
        silent_result = silent.wait(timeout=BOUND)
        chatty_result = chatty.wait(timeout=BOUND)
    except BaseException:
        for run in (silent, chatty):
            if run.process.poll() is None:
                run.kill()
        raise

    assert silent_result.returncode != 0, silent_result.describe()
    assert silent_result.stdout == b"", silent_result.describe()
    assert IDLE.search(silent_result.stderr.decode(errors="replace")), silent_result.describe()
    assert deployment.wait_for_session(silent_person)["end_reason"] == "idle"

    assert chatty_result.returncode == 0, chatty_result.describe()
    assert chatty_result.stdout == b"".join(b"%d\n" % i for i in range(1, 9))
    chatty_session = deployment.wait_for_session(chatty_person)
    assert chatty_session["end_reason"] == Reason.CLIENT_EXIT
    assert chatty_session["channels"][0]["exit_status"] == 0


def consume_zeros(process: subprocess.Popen[bytes], timeout: float) -> int:
    """Read stdout to EOF without keeping it; return the byte count, having checked every
    byte is NUL (so any stretch of it has a known SHA-256). Kills the process if it takes
    longer than ``timeout``."""
    assert process.stdout is not None
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    total = 0
    try:
        while chunk := process.stdout.read(1 << 20):
            assert not chunk.strip(b"\0"), f"non-NUL bytes near offset {total}"
            total += len(chunk)
    finally:
        watchdog.cancel()
    return total


def sha256_of_zeros(count: int) -> str:
    digest, block = hashlib.sha256(), bytes(1 << 20)
    for _ in range(count // len(block)):
        digest.update(block)
    digest.update(bytes(count % len(block)))
    return digest.hexdigest()


@pytest.mark.slow
def test_a_download_past_the_cap_arrives_whole_and_the_cast_stays_small(
    capped_deployment: Deployment, person: str
) -> None:
    deployment = capped_deployment
    code = deployment.code(person)
    command = f"head -c {DOWNLOAD} /dev/zero"

    run = deployment.ssh_start(person, TARGET, code, command)
    try:
        total = consume_zeros(run.process, timeout=120)
    except BaseException:
        run.kill()
        raise
    result = run.wait(timeout=30)

    assert result.returncode == 0, result.describe()
    assert total == DOWNLOAD
    session = deployment.wait_for_session(person, timeout=30)
    [channel] = session["channels"]
    assert channel["bytes_down"] == DOWNLOAD
    assert channel["exit_status"] == 0
    cast = channel_cast(deployment, channel)
    played = asciinema_cat(cast, timeout=60)
    assert played.returncode == 0, played.stderr[-2000:]
    # The cast holds the stream's first bytes (NULs, one character each), then stops.
    _, events = cast_events(cast)
    recorded = sum(len(str(e[2]).encode()) for e in events if e[1] in "oi")
    assert 0 < recorded <= CAP, recorded
    assert set(cast_text(cast, "oi")) == {"\0"}
    omitted = DOWNLOAD - recorded
    markers = [str(e[2]) for e in events if e[1] == "m"]
    assert any(str(omitted) in m for m in markers), markers  # the cast says so
    [end] = events_of(session, "channel_end")
    assert end["data"]["omitted_bytes"] == omitted, end
    assert end["data"]["omitted_sha256"] == sha256_of_zeros(omitted), end
    # Small means about the cap, whatever the bytes were: escaping must not multiply it.
    assert cast.stat().st_size < 2 * CAP, f"cast is {cast.stat().st_size} bytes"
