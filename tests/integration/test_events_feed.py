"""``breakglass events`` and the ``events: all`` syslog sink, on real SQLite stores, the
real CLI, a running proxy and real syslog listeners on 127.0.0.1.

A reader that resumes with the last cursor it saw (``--after``, ``--cursor-file``) gets
every event exactly once, even while events are being written and after being killed
mid-stream; ``--follow`` shows a live session's events within a second; the syslog
forwarder sends every event once, resumes from its cursor after a restart, and a sink
that is down does not grow the alert outbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.alerts.delivery import Backoff
from proxy.alerts.forward import EventForwarder
from proxy.alerts.sinks import SyslogSink
from proxy.core import chain
from proxy.store.base import NewEvent
from proxy.store.sqlite import SQLiteStore
from tests.clock import ManualClock
from tests.integration.alertkit import SyslogListener, syslog_json, unused_loopback_port
from tests.integration.conftest import TARGET, standard_targets
from tests.integration.harness import (
    REPO_ROOT,
    Deployment,
    SshdTarget,
    cli_argv,
    free_port,
    run_cli,
    write_proxy_config,
)
from tests.waiting import eventually, eventually_async

NOW = 1_800_000_000.0
BACKOFF = Backoff(base=2.0, factor=2.0, cap=60.0)
HOSTILE = "INC-1 \r\nforged line\x1b[2J\x1b]52;c;AAAA\x07 \u202e"
FIELDS = {
    "cursor": str,
    "seq": int,
    "time": str,
    "ts": float,
    "type": str,
    "data": dict,
    "prev_hash": str,
    "hash": str,
}


def config_at(directory: Path, alerts: dict[str, Any] | None = None) -> Path:
    return write_proxy_config(directory, free_port(), {}, alerts=alerts)


def database_of(config: Path) -> Path:
    return config.parent / "audit.db"


async def append_events(database: Path, count: int, *, start: int = 0) -> None:
    store = await SQLiteStore.open(database)
    try:
        for i in range(start, start + count):
            data = {"i": i, "justification": HOSTILE}
            await store.append([NewEvent("test_event", time.time(), f"S{i % 7}", i % 3, data)])
    finally:
        await store.close()


def json_lines(text: str) -> list[dict[str, Any]]:
    """Complete lines only: a reader killed mid-line leaves a partial last one."""
    complete = text[: text.rfind("\n") + 1]
    return [json.loads(line) for line in complete.splitlines()]


def check_line_shapes(lines: list[dict[str, Any]], raw: str) -> None:
    assert raw.isascii()
    for doc in lines:
        for key, kind in FIELDS.items():
            assert isinstance(doc[key], kind), (key, doc)
        assert doc["cursor"] == str(doc["seq"])
        assert doc["session"] is None or isinstance(doc["session"], str)
        assert doc["channel"] is None or isinstance(doc["channel"], int)
        assert doc["time"].endswith("Z")
        # The line carries what recomputes the chain: nothing lost in the rendering.
        data_json = chain.canonical(doc["data"])
        digest = chain.link(
            doc["prev_hash"],
            doc["seq"],
            doc["ts"],
            doc["type"],
            doc["session"],
            doc["channel"],
            data_json,
        )
        assert digest == doc["hash"]


def test_events_prints_the_whole_log_and_resumes_after_a_cursor(tmp_path: Path) -> None:
    config = config_at(tmp_path)
    asyncio.run(append_events(database_of(config), 40))

    full = run_cli(config, "events", "--json")
    assert full.returncode == 0, full.stderr
    lines = json_lines(full.stdout)
    assert [d["seq"] for d in lines] == list(range(1, 41))
    assert len(full.stdout.splitlines()) == 40  # one line per event, CR/LF/ESC escaped
    check_line_shapes(lines, full.stdout)
    assert lines[5]["data"]["justification"] == HOSTILE
    assert lines[5]["session"] == "S5"
    assert lines[5]["channel"] == 2

    cursor = lines[16]["cursor"]
    rest = json_lines(run_cli(config, "events", "--json", "--after", cursor).stdout)
    assert [d["seq"] for d in rest] == list(range(18, 41))
    assert [d for d in lines if d["seq"] <= 17] + rest == lines

    # The human form: one line per event, nothing a terminal would act on.
    text = run_cli(config, "events").stdout
    assert len(text.splitlines()) == 40
    assert "\x1b" not in text
    assert "\\u001b[2J" in text
    assert "\u202e" not in text
    assert " S5/2 " in text

    bad = run_cli(config, "events", "--after", "bg-eu1:4")
    assert bad.returncode == 2
    assert "fleet cursor" in bad.stderr
    assert run_cli(config, "events", "--follow", "--until", "1d").returncode == 2


def test_since_and_until_select_by_time(tmp_path: Path) -> None:
    config = config_at(tmp_path)

    async def write() -> None:
        store = await SQLiteStore.open(database_of(config))
        try:
            for i, t in enumerate((1_000.0, 2_000.0, 3_000.0, 4_000.0)):
                await store.append([NewEvent("old_event", t, None, None, {"i": i})])
        finally:
            await store.close()

    asyncio.run(write())
    got = run_cli(
        config,
        "events",
        "--json",
        "--since",
        "1970-01-01T00:33:20Z",  # 2000
        "--until",
        "1970-01-01T01:06:40Z",  # 4000
    )
    assert [d["data"]["i"] for d in json_lines(got.stdout)] == [1, 2]


class Follower:
    """``breakglass events --json --follow`` as a subprocess; each line stamped with
    the time it arrived."""

    def __init__(self, config: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            cli_argv(config, "events", "--json", "--follow", *args),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.raw = b""
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        pending = b""
        while chunk := os.read(fd, 65536):
            now = time.time()
            with self._lock:
                self.raw += chunk
            pending += chunk
            *complete, pending = pending.split(b"\n")
            with self._lock:
                self.arrivals += [(now, json.loads(line)) for line in complete]

    def docs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [d for _, d in self.arrivals]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout=15)
        self._reader.join(timeout=15)
        return code


def test_follow_then_resume_with_the_last_cursor_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    """Events keep being written while a follower is killed (SIGKILL, mid-stream) and
    another resumes after the last complete line it printed."""
    config = config_at(tmp_path)
    database = database_of(config)
    asyncio.run(append_events(database, 20))
    total = 20 + 6 * 50
    done = threading.Event()

    def writer() -> None:
        for batch in range(6):
            asyncio.run(append_events(database, 50, start=20 + batch * 50))
            time.sleep(0.15)
        done.set()

    first = Follower(config)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    eventually(lambda: len(first.docs()) >= 100, within=30, what="100 events followed")
    first.stop(signal.SIGKILL)
    seen = first.docs()
    cursor = seen[-1]["cursor"]

    second = Follower(config, "--after", cursor)
    thread.join(timeout=60)
    assert done.is_set()
    eventually(lambda: len(second.docs()) >= total - len(seen), within=30, what="the rest followed")
    assert second.stop() == 0  # SIGTERM ends it cleanly, between pages
    seqs = [d["seq"] for d in seen + second.docs()]
    assert seqs == list(range(1, total + 1))


def test_the_cursor_file_carries_a_reader_across_restarts(tmp_path: Path) -> None:
    config = config_at(tmp_path)
    database = database_of(config)
    keep = tmp_path / "shipper.cursor"
    asyncio.run(append_events(database, 10))
    first = run_cli(config, "events", "--json", "--cursor-file", str(keep))
    assert [d["seq"] for d in json_lines(first.stdout)] == list(range(1, 11))
    assert keep.read_text() == "10\n"
    assert keep.stat().st_mode & 0o777 == 0o600
    asyncio.run(append_events(database, 5, start=10))
    second = run_cli(config, "events", "--json", "--cursor-file", str(keep))
    assert [d["seq"] for d in json_lines(second.stdout)] == list(range(11, 16))
    assert keep.read_text() == "15\n"


# ------------------------------------------------------------- the syslog forwarder


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "audit.db")
    yield s
    await s.close()


@pytest.fixture
def tcp_listener() -> Iterator[SyslogListener]:
    listener = SyslogListener("tcp").start()
    yield listener
    listener.stop()


def seqs_of(listener: SyslogListener) -> list[int]:
    """The seqs received, sorted: each page goes over its own connection, and the test
    listener serves connections on threads, so pages may be appended out of order; a
    seq lost or repeated still shows."""
    return sorted(int(syslog_json(m)["seq"]) for m in listener.messages)


async def run_forwarder(
    store: SQLiteStore, sink: SyslogSink, clock: ManualClock
) -> tuple[asyncio.Event, Any, EventForwarder]:
    """The forwarder on a driven clock: it polls, and retries a sink that is down, when
    the test moves time (``tests/clock.py``)."""
    stop = asyncio.Event()
    forwarder = EventForwarder(store, sink, poll=1.0, page=25, backoff=BACKOFF, clock=clock)
    return stop, asyncio.create_task(forwarder.run(stop)), forwarder


async def test_every_event_reaches_syslog_once_and_a_restart_resumes_from_the_cursor(
    store: SQLiteStore, tcp_listener: SyslogListener, tmp_path: Path
) -> None:
    for i in range(60):
        await store.append([NewEvent("test_event", time.time(), "S1", 1, {"j": HOSTILE, "i": i})])
    sink = SyslogSink("syslog:events", tcp_listener.address, 5.0)
    clock = ManualClock(NOW)
    stop, task, _ = await run_forwarder(store, sink, clock)
    await eventually_async(
        lambda: len(tcp_listener.messages) >= 60, what="60 events on syslog", within=30
    )
    assert await clock.waiting() == NOW + 1  # all sent, pages back to back: now it polls
    stop.set()
    await task
    assert await store.feed_cursor("syslog:events") == 60

    message = next(m for m in tcp_listener.messages if syslog_json(m)["seq"] == 1)
    text = message.decode("ascii")  # ASCII, one line
    assert "\n" not in text
    assert text.startswith("<86>1 ")  # authpriv.info
    assert " breakglass " in text
    assert " test_event - {" in text  # MSGID is the event type
    doc = syslog_json(message)
    assert doc["data"]["j"] == HOSTILE
    assert doc["cursor"] == "1"

    # Restarted (a new store connection, as after a proxy restart): only what is new.
    for i in range(60, 75):
        await store.append([NewEvent("test_event", time.time(), None, None, {"i": i})])
    again = await SQLiteStore.open(tmp_path / "audit.db")
    try:
        stop, task, _ = await run_forwarder(again, sink, clock)
        await eventually_async(
            lambda: len(tcp_listener.messages) >= 75, what="the 15 new events", within=30
        )
        # Two more polls with nothing new: a wrongly repeated page would go out in them.
        for _ in range(2):
            await clock.jump()
        await clock.waiting()
        stop.set()
        await task
    finally:
        await again.close()
    assert seqs_of(tcp_listener) == list(range(1, 76))


async def test_a_syslog_sink_that_is_down_never_grows_the_outbox(store: SQLiteStore) -> None:
    port = unused_loopback_port()
    sink = SyslogSink("syslog:down", f"tcp://127.0.0.1:{port}", 2.0)
    clock = ManualClock(NOW)
    stop, task, forwarder = await run_forwarder(store, sink, clock)
    try:
        # A flood of failed logins while the SIEM's syslog is unreachable.
        for i in range(300):
            data = {"reason": "wrong_code", "source": "192.0.2.9", "person": f"p{i}"}
            await store.append([NewEvent("login_failed", time.time(), None, None, data)])
        # Three polls: each finds the flood and fails to send it, and backs off longer.
        await clock.jump_until(lambda: forwarder.failures >= 3, what="three failed sends")
        assert clock.waits[-3:] == [BACKOFF.delay(1), BACKOFF.delay(2), BACKOFF.delay(3)]
        async with store._db.execute("SELECT COUNT(*) FROM alerts") as cur:
            row = await cur.fetchone()
        assert row is not None
        assert int(row[0]) == 0
        assert await store.feed_cursor("syslog:down") == 0
        listener = SyslogListener("tcp", port=port).start()
        try:
            await clock.jump_until(lambda: len(listener.messages) >= 300, what="the flood, once up")
            assert seqs_of(listener) == list(range(1, 301))
            assert listener.messages[0].startswith(b"<85>1 ")  # authpriv.notice
        finally:
            listener.stop()
    finally:
        stop.set()
        await task


# ------------------------------------------------------- a running proxy, a real login


@pytest.fixture(scope="module")
def syslog_all() -> Iterator[SyslogListener]:
    listener = SyslogListener("tcp").start()
    yield listener
    listener.stop()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    target: SshdTarget,
    other_target: SshdTarget,
    syslog_all: SyslogListener,
) -> Iterator[Deployment]:
    running = Deployment.start(
        tmp_path_factory.mktemp("proxy"),
        standard_targets(target, other_target),
        sshd_targets={TARGET: target},
        alerts={"sinks": [{"type": "syslog", "address": syslog_all.address, "events": "all"}]},
    )
    yield running
    running.stop()


def test_follow_shows_a_live_sessions_events_within_a_second(
    deployment: Deployment, syslog_all: SyslogListener, person: str
) -> None:
    head = json_lines(deployment.cli("events", "--json").stdout)
    follower = Follower(deployment.config, "--after", head[-1]["cursor"] if head else "0")
    try:
        result = deployment.ssh(person, TARGET, deployment.code(person), "echo hi")
        assert result.returncode == 0, result.describe()
        session = deployment.wait_for_session(person)

        def ended() -> bool:
            return any(
                d["type"] == "session_end" and d["session"] == session["id"]
                for d in follower.docs()
            )

        eventually(ended, within=20, what="the session's end, followed")
    finally:
        follower.stop()
    mine = [(t, d) for t, d in follower.arrivals if d["session"] == session["id"]]
    kinds = [d["type"] for _, d in mine]
    assert kinds.index("session_start") < kinds.index("channel_start")
    assert kinds[-1] == "session_end"
    lags = [arrived - d["ts"] for arrived, d in mine]
    # Polled every 0.2 s: each event is printed within a second of its time.
    assert max(lags) < 1.0, lags
    seqs = [d["seq"] for d in follower.docs()]
    assert seqs == sorted(set(seqs))

    # The running proxy forwards the same events, alerts included, to syslog.
    start_seq = next(d["seq"] for _, d in mine if d["type"] == "session_start")
    message = syslog_all.wait_for(f'"seq":{start_seq},')
    assert syslog_json(message)["type"] == "session_start"

    def alert_line() -> bytes | None:
        for m in syslog_all.messages:
            doc = syslog_json(m)
            if doc["type"] == "alert" and doc["session"] == session["id"]:
                return m
        return None

    alert = eventually(alert_line, within=20, what="the session_start alert event on syslog")
    assert alert.startswith(b"<84>1 ")  # authpriv.warning, like the alert itself
    assert syslog_json(alert)["data"]["rule"] == "session_start"
