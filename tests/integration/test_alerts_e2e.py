"""Alerts and operator overrides through the running proxy and the real OpenSSH client.

Depends on the wiring proposed with issue 7 (service.py starts ``AlertRuntime``;
server.py raises session-start alerts in ``start_session(..., alerts=...)`` and
routes ``login_failed`` through ``Alerts.login_failed``; session.py has
``LiveSession.extend`` and raises end alerts). Receivers are real, on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.alertkit import (
    SECRET,
    SyslogListener,
    WebhookReceiver,
    command_hook,
    hook_payloads,
    syslog_json,
)
from tests.integration.conftest import TARGET, standard_targets
from tests.integration.harness import (
    GOOD_JUSTIFICATION,
    Deployment,
    ProxyProcess,
    SshdTarget,
    new_person,
    read_events,
)
from tests.waiting import eventually


class Sinks:
    def __init__(self, directory: Path) -> None:
        self.webhook = WebhookReceiver().start()
        self.udp = SyslogListener("udp").start()
        self.hook, self.hook_out = command_hook(directory / "hook")
        self.secret = directory / "hook.secret"
        self.secret.write_bytes(SECRET)
        self.secret.chmod(0o600)

    def config(self) -> dict[str, object]:
        return {
            "sinks": [
                {"type": "webhook", "url": self.webhook.url, "secret_file": str(self.secret)},
                {"type": "syslog", "address": self.udp.address},
                {"type": "command", "argv": [str(self.hook)]},
            ],
            "rules": {"max_sessions_per_person": {"count": 1, "window": "1h"}},
        }

    def stop(self) -> None:
        self.webhook.stop()
        self.udp.stop()


@pytest.fixture(scope="module")
def sinks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sinks]:
    s = Sinks(tmp_path_factory.mktemp("sinks"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory,
    target: SshdTarget,
    other_target: SshdTarget,
    sinks: Sinks,
) -> Iterator[Deployment]:
    running = Deployment.start(
        tmp_path_factory.mktemp("proxy"),
        standard_targets(target, other_target),
        sshd_targets={TARGET: target},
        alerts=sinks.config(),
    )
    yield running
    running.stop()


def alert_for(sinks: Sinks, rule: str, **fields: Any) -> dict[str, Any]:
    def match(d: dict[str, Any]) -> bool:
        return d.get("rule") == rule and all(d.get(k) == v for k, v in fields.items())

    return sinks.webhook.wait_for(match).doc()


def test_every_session_start_is_alerted_on_every_sink_before_the_target(
    deployment: Deployment, sinks: Sinks, person: str
) -> None:
    result = deployment.ssh(person, TARGET, deployment.code(person), "echo hi")
    assert result.returncode == 0, result.describe()
    session = deployment.wait_for_session(person)

    doc = alert_for(sinks, "session_start", person=person)
    assert doc["session_id"] == session["id"]
    assert doc["target"] == TARGET
    assert doc["source"] == "127.0.0.1"
    assert doc["justification"] == GOOD_JUSTIFICATION
    assert doc["login"] == session["login"]
    assert doc["proxy"]
    assert syslog_json(sinks.udp.wait_for(doc["alert_id"]))["rule"] == "session_start"
    eventually(
        lambda: any(d["alert_id"] == doc["alert_id"] for d in hook_payloads(sinks.hook_out)),
        within=20,
        what="the command hook to get the alert",
    )
    # Committed with the session start, so before the target was contacted.
    events = [e for e in read_events(deployment.database) if e.row["session_id"] == session["id"]]
    kinds = [e.type for e in events]
    assert kinds.index("alert") < kinds.index("channel_start")


def test_a_second_session_within_the_window_is_flagged(
    deployment: Deployment, sinks: Sinks, person: str
) -> None:
    code = deployment.code(person)
    for _ in range(2):
        assert deployment.ssh(person, TARGET, code, "true").returncode == 0
    second = deployment.wait_for_session(person, count=2)
    doc = alert_for(sinks, "max_sessions_per_person", person=person)
    assert doc["session_id"] == second["id"]
    flags = [e for e in second.get("events") or [] if e.get("type") == "flag"]
    assert flags, second


def test_an_attempt_at_a_target_not_allowed_is_alerted(
    deployment: Deployment, sinks: Sinks, person: str
) -> None:
    code = deployment.code(person, targets="web*")
    result = deployment.ssh(person, TARGET, code, "true")
    assert result.returncode != 0
    doc = alert_for(sinks, "not_allowed", person=person)
    assert doc["detail"] == "refused: target_not_allowed"
    assert doc["justification"] == GOOD_JUSTIFICATION


def test_kill_closes_a_live_session_with_a_message(
    deployment: Deployment, sinks: Sinks, person: str
) -> None:
    run = deployment.ssh_start(person, TARGET, deployment.code(person), "sleep 60")
    try:
        live = deployment.wait_for_session(person, ended=False)
        killed = deployment.cli("kill", live["id"], "--reason", "INC-9 done, closing")
        assert killed.returncode == 0, killed.stderr
        result = run.wait(timeout=30)
    except BaseException:
        run.kill()
        raise
    assert result.returncode != 0
    assert b"INC-9 done, closing" in result.stderr, result.describe()
    session = deployment.wait_for_session(person)
    assert session["end_reason"] == "killed"
    doc = alert_for(sinks, "operator_kill", session_id=live["id"])
    assert "INC-9 done, closing" in doc["detail"]


def test_extend_moves_the_deadline_of_a_live_session(
    deployment: Deployment, sinks: Sinks, person: str
) -> None:
    code = deployment.code(person, max_session="10s")
    run = deployment.ssh_start(person, TARGET, code, "sleep 14; echo survived")
    try:
        live = deployment.wait_for_session(person, ended=False)
        extended = deployment.cli("extend", live["id"], "1m", "--reason", "INC-9 needs time")
        assert extended.returncode == 0, extended.stderr
        result = run.wait(timeout=60)
    except BaseException:
        run.kill()
        raise
    assert result.returncode == 0, result.describe()
    assert b"survived" in result.stdout
    session = deployment.wait_for_session(person)
    assert session["end_reason"] == "client_exit"
    changed = [e for e in session.get("events") or [] if e.get("type") == "deadline_changed"]
    assert changed
    # The engineer is told the new deadline, not only by how much it moved.
    ends = dt.datetime.fromisoformat(session["deadline"]).strftime("%H:%M UTC")
    told = f"breakglass: an operator extended this session by 1m; it now ends at {ends}"
    assert told.encode() in result.stderr, result.describe()
    alert_for(sinks, "operator_extend", session_id=live["id"])


def test_undelivered_alerts_survive_sigkill_and_go_out_after_restart(
    tmp_path: Path, target: SshdTarget, other_target: SshdTarget
) -> None:
    receiver = WebhookReceiver()  # its port is reserved but nothing listens yet: down
    secret = tmp_path / "hook.secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    alerts = {"sinks": [{"type": "webhook", "url": receiver.url, "secret_file": str(secret)}]}
    deployment = Deployment.start(
        tmp_path / "proxy",
        standard_targets(target, other_target),
        sshd_targets={TARGET: target},
        alerts=alerts,
    )
    person = new_person()
    try:
        # The login succeeds although the only sink is down.
        result = deployment.ssh(person, TARGET, deployment.code(person), "echo hi", timeout=30)
        assert result.returncode == 0, result.describe()
        session = deployment.wait_for_session(person)
        eventually(
            lambda: failed_attempts(deployment.database) > 0,
            within=20,
            what="a failed delivery attempt",
        )
        deployment.proxy.process.kill()  # SIGKILL: no clean shutdown
        deployment.proxy.process.wait(timeout=10)
        pending = pending_ids(deployment.database)
        assert pending

        receiver.start()
        deployment.proxy = ProxyProcess.start(deployment.config)
        for alert_id in pending:
            receiver.wait_for(same_id(alert_id), timeout=30)
        doc = next(r.doc() for r in receiver.delivered() if r.doc()["rule"] == "session_start")
        assert doc["session_id"] == session["id"]
        eventually(
            lambda: not pending_ids(deployment.database),
            within=20,
            what="the outbox to be empty",
        )
    finally:
        deployment.stop()
        receiver.stop()


def failed_attempts(database: Path) -> int:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as c:
        (n,) = c.execute("SELECT COUNT(*) FROM alert_deliveries WHERE ok = 0").fetchone()
    return int(n)


def pending_ids(database: Path) -> list[str]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as c:
        return [str(r[0]) for r in c.execute("SELECT alert_id FROM alerts WHERE state = 'pending'")]


def same_id(alert_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda doc: doc.get("alert_id") == alert_id
