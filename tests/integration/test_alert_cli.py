"""``breakglass drill``, ``live``, ``kill`` and ``extend`` through the real CLI, and the
proxy's side of the overrides (``watch_overrides``) against a real store."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proxy.alerts.overrides import handlers, kill_message, watch_overrides
from proxy.store.base import NewEvent, StoredEvent
from proxy.store.sqlite import SQLiteStore
from tests.integration.alertkit import (
    SECRET,
    SyslogListener,
    WebhookReceiver,
    command_hook,
    config_with,
    hook_payloads,
    syslog_json,
    unused_loopback_port,
)
from tests.integration.harness import free_port, read_events, run_cli, write_proxy_config

HOSTILE_REASON = "INC-42: \x1b[2J wiped; next line\nforged"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "hook.secret"
    path.write_bytes(SECRET + b"\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def listeners() -> Iterator[list[WebhookReceiver | SyslogListener]]:
    started: list[WebhookReceiver | SyslogListener] = []
    yield started
    for r in started:
        r.stop()


# --------------------------------------------------------------------------- drill


def test_drill_sends_a_test_alert_through_every_sink(
    tmp_path: Path, secret_file: Path, listeners: list[WebhookReceiver | SyslogListener]
) -> None:
    webhook = WebhookReceiver().start()
    udp, tcp = SyslogListener("udp").start(), SyslogListener("tcp").start()
    listeners.extend([webhook, udp, tcp])
    script, out = command_hook(tmp_path / "hook")
    config = config_with(
        tmp_path / "proxy",
        [
            {"type": "webhook", "url": webhook.url, "secret_file": str(secret_file)},
            {"type": "syslog", "address": udp.address},
            {"type": "syslog", "address": tcp.address},
            {"type": "command", "argv": [str(script)]},
        ],
    )

    result = run_cli(config, "drill", "--json")

    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True
    assert doc["recorded"] is True
    assert [s["ok"] for s in doc["sinks"]] == [True] * 4
    alert_id = doc["alert_id"]
    (hook_doc,) = hook_payloads(out)
    assert hook_doc["alert_id"] == alert_id
    assert hook_doc["rule"] == "drill"
    assert hook_doc["test"] is True
    assert webhook.delivered()[0].alert_id == alert_id
    assert syslog_json(udp.wait_for(alert_id))["rule"] == "drill"
    assert syslog_json(tcp.wait_for(alert_id))["rule"] == "drill"
    database = tmp_path / "proxy" / "audit.db"
    types = [e.type for e in read_events(database)]
    assert types.count("drill") == 1
    assert types.count("alert") == 1
    assert types.count("alert_delivered") == 4


def test_drill_fails_and_names_the_sink_that_did_not_answer(
    tmp_path: Path, listeners: list[WebhookReceiver | SyslogListener]
) -> None:
    udp = SyslogListener("udp").start()
    listeners.append(udp)
    down = f"tcp://127.0.0.1:{unused_loopback_port()}"
    config = config_with(
        tmp_path / "proxy",
        [{"type": "syslog", "address": udp.address}, {"type": "syslog", "address": down}],
    )

    result = run_cli(config, "drill")

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("ok") and udp.address in line for line in lines), result.stdout
    assert any(line.startswith("FAILED") and down in line for line in lines), result.stdout
    assert "1/2 sinks answered" in result.stdout


def test_drill_without_sinks_says_so(tmp_path: Path) -> None:
    config = write_proxy_config(tmp_path, free_port(), {})
    result = run_cli(config, "drill")
    assert result.returncode == 1
    assert "no alert sinks" in result.stderr


# --------------------------------------------------------------------------- overrides


def live_session(database: Path, session_id: str = "0000000000ab") -> str:
    async def add() -> None:
        store = await SQLiteStore.open(database)
        try:
            now = time.time()
            data = {
                "person": "alice",
                "credential_id": "ABC123",
                "source": "127.0.0.1",
                "client_version": "SSH-2.0-test",
                "target": "db01",
                "login": "root",
                "justification": "INC-1 the database is down",
                "deadline": now + 600,
            }
            await store.append([NewEvent("session_start", now, session_id, None, data)])
        finally:
            await store.close()

    asyncio.run(add())
    return session_id


def test_live_lists_sessions_still_running(tmp_path: Path) -> None:
    config = write_proxy_config(tmp_path, free_port(), {})
    sid = live_session(tmp_path / "audit.db")
    doc = json.loads(run_cli(config, "live", "--json").stdout)
    assert [s["id"] for s in doc] == [sid]
    assert 0 < doc[0]["remaining"] <= 600
    text = run_cli(config, "live").stdout
    assert sid in text
    assert "alice" in text


@pytest.mark.parametrize("action", ["kill", "extend"])
def test_an_override_is_an_audit_event_with_operator_reason_and_alert(
    tmp_path: Path, action: str
) -> None:
    config = write_proxy_config(tmp_path, free_port(), {})
    sid = live_session(tmp_path / "audit.db")
    extra = ["15m"] if action == "extend" else []

    result = run_cli(config, action, sid, *extra, "--reason", HOSTILE_REASON, "--wait", "0")

    assert result.returncode == 0, result.stderr
    events = read_events(tmp_path / "audit.db")
    (override,) = [e for e in events if e.type == f"operator_{action}"]
    assert override.data["reason"] == HOSTILE_REASON  # verbatim
    assert override.data["operator"]
    assert override.row["session_id"] == sid
    if action == "extend":
        assert override.data["by"] == 900
    (alert,) = [e for e in events if e.type == "alert"]
    assert alert.data["rule"] == f"operator_{action}"
    assert alert.data["session_id"] == sid
    assert HOSTILE_REASON in alert.data["detail"]
    assert [e.type for e in events if e.type == "flag"] == ["flag"]
    assert "\x1b" not in result.stdout


def test_an_override_nobody_acts_on_is_reported(tmp_path: Path) -> None:
    config = write_proxy_config(tmp_path, free_port(), {})
    sid = live_session(tmp_path / "audit.db")
    result = run_cli(config, "kill", sid, "--reason", "r", "--wait", "0.3")
    assert result.returncode == 1
    assert "is it running" in result.stderr


@pytest.mark.parametrize(
    ("args", "status", "words"),
    [
        (["kill", "nosuchsession", "--reason", "r"], 1, "no session"),
        (["kill", "0000000000ab"], 2, "--reason"),
        (["kill", "0000000000ab", "--reason", "  "], 2, "reason is required"),
        (["extend", "0000000000ab", "0s", "--reason", "r"], 2, "more than zero"),
        (["extend", "0000000000ab", "soon", "--reason", "r"], 2, "extend"),
    ],
)
def test_override_usage_errors(tmp_path: Path, args: list[str], status: int, words: str) -> None:
    config = write_proxy_config(tmp_path, free_port(), {})
    live_session(tmp_path / "audit.db")
    result = run_cli(config, *args)
    assert result.returncode == status, result.stderr
    assert words in result.stderr


def test_an_ended_session_cannot_be_killed(tmp_path: Path) -> None:
    config = write_proxy_config(tmp_path, free_port(), {})
    sid = live_session(tmp_path / "audit.db")

    async def end() -> None:
        store = await SQLiteStore.open(tmp_path / "audit.db")
        try:
            await store.append([NewEvent("session_end", time.time(), sid, None, {"reason": "x"})])
        finally:
            await store.close()

    asyncio.run(end())
    result = run_cli(config, "kill", sid, "--reason", "r")
    assert result.returncode == 1
    assert "already ended" in result.stderr


class FakeSession:
    def __init__(self) -> None:
        self.closed: list[tuple[str, str, str | None]] = []
        self.extended: list[tuple[float, str, str]] = []

    def close(self, reason: str, message: str, detail: str | None = None) -> None:
        self.closed.append((reason, message, detail))

    def extend(self, by: float, operator: str, reason: str) -> None:
        self.extended.append((by, operator, reason))


async def test_watch_overrides_hands_new_operator_events_to_the_sessions(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "audit.db")
    mine, other = FakeSession(), FakeSession()
    sessions: dict[str, Any] = {"S1": mine, "S2": other}
    seen: list[StoredEvent] = []
    two_kills = asyncio.Event()
    on_kill, on_extend = handlers(sessions.get)

    def kill(ev: StoredEvent) -> None:
        seen.append(ev)
        on_kill(ev)
        if len(seen) == 2:
            two_kills.set()

    # An override from before the watch started (an earlier run) is not acted on.
    await store.append(
        [NewEvent("operator_kill", 1.0, "S2", None, {"operator": "o", "reason": "old"})]
    )
    stop = asyncio.Event()
    head = await store.last_seq()  # what the proxy does when it starts watching
    task = asyncio.create_task(
        watch_overrides(store, kill, on_extend, stop, interval=0.05, after_seq=head)
    )
    try:
        await store.append(
            [
                NewEvent(
                    "operator_extend",
                    2.0,
                    "S1",
                    None,
                    {"operator": "root", "reason": "more", "by": 900},
                ),
                NewEvent(
                    "operator_kill", 3.0, "S1", None, {"operator": "root", "reason": "INC \x1b[2J"}
                ),
                NewEvent(
                    "operator_kill", 4.0, "S9", None, {"operator": "root", "reason": "not ours"}
                ),
            ]
        )
        async with asyncio.timeout(10):
            await two_kills.wait()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await store.close()
    assert mine.extended == [(900.0, "root", "more")]
    assert mine.closed == [("killed", kill_message("root", "INC \x1b[2J"), "root: INC \x1b[2J")]
    assert "\x1b" not in mine.closed[0][1]
    assert other.closed == []
    assert [e.session_id for e in seen] == ["S1", "S9"]
