"""Delivery from the outbox to real receivers: retries until a sink that is down, slow or
failing is back; alerts left pending by an earlier run go out when delivery starts; a
sink that is down delays no other. The workers run on a driven clock
(``tests/clock.py``): a retry happens when the test moves time to it, so the retry
schedule is checked exactly and no test waits for real backoff. Only the network (and
a sink's own timeout) takes real time; waits for it poll a condition with a bound."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from proxy.alerts.delivery import Backoff, Deliverer
from proxy.alerts.payload import AlertContext, build
from proxy.alerts.raiser import Alerts
from proxy.alerts.sinks import CommandSink, Sink, SyslogSink, WebhookSink
from proxy.config.model import AlertRules, AlertsConfig, RateRule
from proxy.core import anomaly
from proxy.store.base import NewAlert, NewEvent
from proxy.store.sqlite import SQLiteStore
from tests.clock import ManualClock
from tests.eventdata import fill
from tests.integration.alertkit import (
    SECRET,
    SyslogListener,
    WebhookReceiver,
    command_hook,
    hook_payloads,
    syslog_json,
    unused_loopback_port,
)
from tests.waiting import eventually_async

T = TypeVar("T")
# The default backoff's shape: 2 s, 4 s, 8 s ... capped at a minute. On the driven clock
# the seconds cost nothing.
BACKOFF = Backoff(base=2.0, factor=2.0, cap=60.0)
NOW = 1_700_000_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "audit.db")
    yield s
    await s.close()


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_bytes(SECRET)
    return path


@pytest.fixture
def receivers() -> Iterator[list[WebhookReceiver | SyslogListener]]:
    started: list[WebhookReceiver | SyslogListener] = []
    yield started
    for r in started:
        r.stop()


def new_alert(rule: str = "session_start", session: str = "S1") -> NewAlert:
    return build(
        anomaly.Firing(rule, "detail", flag=False),
        AlertContext(session_id=session, person="alice", target="db01", justification="INC-9"),
        NOW,
        proxy="bastion",
    )


def attempts(db: Path, sink: str) -> list[tuple[int, int, str]]:
    return [(n, ok, detail) for n, ok, detail, _ in timed_attempts(db, sink)]


def timed_attempts(db: Path, sink: str) -> list[tuple[int, int, str, float]]:
    with sqlite3.connect(db) as c:
        return list(
            c.execute(
                "SELECT attempt, ok, detail, time FROM alert_deliveries WHERE sink = ?"
                " ORDER BY attempt",
                (sink,),
            )
        )


class Running:
    """A Deliverer running in the background for one test."""

    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Deliverer:
        self.task = asyncio.create_task(self.deliverer.run(self.stop))
        return self.deliverer

    async def __aexit__(self, *exc: object) -> None:
        self.stop.set()
        assert self.task is not None
        await asyncio.wait_for(self.task, 15)


async def test_a_webhook_that_is_down_gets_the_alert_once_it_is_back(
    store: SQLiteStore,
    tmp_path: Path,
    secret_file: Path,
    receivers: list[WebhookReceiver | SyslogListener],
) -> None:
    port = unused_loopback_port()
    sink = WebhookSink("webhook:test", f"http://127.0.0.1:{port}/hook", secret_file, 2.0)
    alert = new_alert()
    await store.append_with_alerts([], [alert])
    db = tmp_path / "audit.db"

    clock = ManualClock(NOW)
    async with Running(Deliverer(store, [sink], backoff=BACKOFF, poll=1.0, clock=clock)):

        def failed_three_times() -> bool:
            return len(attempts(db, sink.key)) >= 3

        await clock.jump_until(failed_three_times, what="three failed attempts")
        receiver = WebhookReceiver(port=port).start()
        receivers.append(receiver)

        async def delivered() -> bool:
            return await store.alert_state(alert.alert_id) == "delivered"

        await clock.jump_until(delivered, what="the alert to be delivered")

    got = receiver.delivered()
    assert [r.alert_id for r in got] == [alert.alert_id]
    assert got[0].doc() == dict(alert.payload)
    tried = attempts(db, sink.key)
    assert [ok for _, ok, _ in tried] == [0, 0, 0, 1]
    assert [n for n, _, _ in tried] == [1, 2, 3, 4]
    # Each retry waits the backoff after the failures before it: 2 s, then 4, then 8.
    times = [t for *_, t in timed_attempts(db, sink.key)]
    assert times == [NOW, NOW + 2, NOW + 6, NOW + 14]


@pytest.mark.parametrize("trouble", ["fail", "slow"])
async def test_a_failing_or_slow_webhook_is_retried_until_it_answers(
    trouble: str,
    store: SQLiteStore,
    tmp_path: Path,
    secret_file: Path,
    receivers: list[WebhookReceiver | SyslogListener],
) -> None:
    receiver = WebhookReceiver(mode=trouble, delay=2.0).start()
    receivers.append(receiver)
    sink = WebhookSink("webhook:test", receiver.url, secret_file, 0.3)
    alert = new_alert()
    await store.append_with_alerts([], [alert])
    db = tmp_path / "audit.db"

    clock = ManualClock(NOW)
    async with Running(Deliverer(store, [sink], backoff=BACKOFF, poll=1.0, clock=clock)):

        def failed_twice() -> bool:
            return len(attempts(db, sink.key)) >= 2

        await clock.jump_until(failed_twice, what="two failed attempts")
        receiver.mode = "ok"

        async def delivered() -> bool:
            return await store.alert_state(alert.alert_id) == "delivered"

        await clock.jump_until(delivered, what="the alert to be delivered")

    details = [d for _, ok, d in attempts(db, sink.key) if not ok]
    assert len(details) == 2
    assert all(d == ("HTTP 500" if trouble == "fail" else "no answer within 0.3s") for d in details)
    assert receiver.delivered()[-1].alert_id == alert.alert_id
    assert [t for *_, t in timed_attempts(db, sink.key)] == [NOW, NOW + 2, NOW + 6]


async def test_alerts_pending_from_an_earlier_run_go_to_every_sink(
    store: SQLiteStore,
    tmp_path: Path,
    secret_file: Path,
    receivers: list[WebhookReceiver | SyslogListener],
) -> None:
    # As a restart finds them: committed, one with failed attempts by the last run.
    first, second = new_alert(), new_alert("max_sessions_total")
    await store.append_with_alerts([], [first, second])
    webhook = WebhookReceiver().start()
    udp = SyslogListener("udp").start()
    tcp = SyslogListener("tcp").start()
    receivers.extend([webhook, udp, tcp])
    script, out = command_hook(tmp_path / "hook")
    sinks: list[Sink] = [
        WebhookSink("webhook:w", webhook.url, secret_file, 5.0),
        SyslogSink("syslog:udp", udp.address, 5.0),
        SyslogSink("syslog:tcp", tcp.address, 5.0),
        CommandSink("command:hook", [str(script)], 5.0),
    ]
    keys = [s.key for s in sinks]
    await store.record_delivery(first.alert_id, "webhook:w", NOW, False, "HTTP 503", keys)

    clock = ManualClock(NOW)
    async with Running(Deliverer(store, sinks, backoff=BACKOFF, poll=1.0, clock=clock)):

        async def all_delivered() -> bool:
            states = [await store.alert_state(a.alert_id) for a in (first, second)]
            return states == ["delivered", "delivered"]

        await clock.jump_until(all_delivered, what="both alerts at every sink")

    ids = {first.alert_id, second.alert_id}
    assert {r.alert_id for r in webhook.delivered()} == ids
    assert {syslog_json(m)["alert_id"] for m in udp.messages} == ids
    assert {syslog_json(m)["alert_id"] for m in tcp.messages} == ids
    assert {d["alert_id"] for d in hook_payloads(out)} == ids
    assert [ok for _, ok, _ in attempts(tmp_path / "audit.db", "webhook:w")][:2] == [0, 1]
    assert await store.pending_alerts("webhook:w") == []
    # The earlier run's failure at NOW makes the first alert due 2 s later at the
    # webhook; every other attempt was due at once.
    timed = timed_attempts(tmp_path / "audit.db", "webhook:w")
    assert sorted(t for *_, t in timed) == [NOW, NOW, NOW + 2]


async def test_a_sink_that_is_down_delays_no_other(
    store: SQLiteStore,
    tmp_path: Path,
    secret_file: Path,
    receivers: list[WebhookReceiver | SyslogListener],
) -> None:
    webhook = WebhookReceiver().start()
    receivers.append(webhook)
    down = SyslogSink("syslog:down", f"tcp://127.0.0.1:{unused_loopback_port()}", 5.0)
    up = WebhookSink("webhook:up", webhook.url, secret_file, 5.0)
    alerts = [new_alert(session=f"S{i}") for i in range(5)]
    await store.append_with_alerts([], alerts)

    clock = ManualClock(NOW)
    async with Running(Deliverer(store, [down, up], backoff=BACKOFF, poll=1.0, clock=clock)):

        async def all_at_the_webhook() -> bool:
            return len({r.alert_id for r in webhook.delivered()}) == len(alerts)

        await eventually_async(
            all_at_the_webhook, what="every alert at the working sink", within=20
        )
        assert clock.now == NOW  # no time passed: the down sink held nothing up
        # Three failures in a row end the down sink's round; it pauses (2 s), and a
        # new alert does not cut the pause short.
        assert await clock.waiting(2) == NOW + 1  # the working sink's next poll
        assert clock.parked() == [NOW + 1, NOW + 2]

    assert await store.pending_alerts("webhook:up") == []
    assert len(await store.pending_alerts("syslog:down")) == len(alerts)
    tried = attempts(tmp_path / "audit.db", "syslog:down")
    assert [(n, ok) for n, ok, _ in tried] == [(1, 0), (1, 0), (1, 0)]


async def test_a_new_alert_wakes_delivery_without_waiting_for_the_poll(
    store: SQLiteStore, secret_file: Path, receivers: list[WebhookReceiver | SyslogListener]
) -> None:
    webhook = WebhookReceiver().start()
    receivers.append(webhook)
    sink = WebhookSink("webhook:w", webhook.url, secret_file, 5.0)
    clock = ManualClock(NOW)
    deliverer = Deliverer(store, [sink], backoff=BACKOFF, poll=3600.0, clock=clock)
    async with Running(deliverer):
        assert await clock.waiting() == NOW + 3600  # nothing pending: parked for the poll
        alert = new_alert()
        await store.append_with_alerts([], [alert])
        deliverer.wake()

        async def delivered() -> bool:
            return await store.alert_state(alert.alert_id) == "delivered"

        await eventually_async(delivered, what="the woken delivery", within=20)
        assert clock.now == NOW  # the clock never moved: the wake did it


# ----------------------------------------------------------------- Alerts (the raiser)


async def test_a_failed_login_burst_is_committed_and_delivered(
    store: SQLiteStore, secret_file: Path, receivers: list[WebhookReceiver | SyslogListener]
) -> None:
    webhook = WebhookReceiver().start()
    receivers.append(webhook)
    config = AlertsConfig(
        rules=AlertRules(
            failed_logins_per_source=RateRule(count=3, window=600),
            failed_logins_per_person=None,
        )
    )
    clock = ManualClock(NOW)
    alerts = Alerts(
        config,
        store,
        sinks=[WebhookSink("webhook:w", webhook.url, secret_file, 5.0)],
        backoff=BACKOFF,
        poll=1.0,
        clock=clock,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(alerts.run(stop))
    try:
        for i in range(4):
            clock.advance(1 if i else 0)
            data = fill(
                "login_failed", {"reason": "wrong_code", "source": "127.0.0.9", "person": "mallory"}
            )
            await alerts.record(NewEvent("login_failed", clock.now, data=data))
        got = webhook.wait_for(lambda d: d["rule"] == "failed_logins_per_source")
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
    doc = got.doc()
    assert doc["source"] == "127.0.0.9"
    assert doc["person"] == "mallory"
    assert doc["detail"] == "3 failed logins from 127.0.0.9 within 10m"
    rules = [d.doc()["rule"] for d in webhook.delivered()]
    assert rules.count("failed_logins_per_source") == 1  # the 4th is inside the same window


async def test_when_the_store_is_down_the_alert_goes_straight_to_syslog_and_the_sinks(
    store: SQLiteStore,
    tmp_path: Path,
    secret_file: Path,
    receivers: list[WebhookReceiver | SyslogListener],
    caplog: pytest.LogCaptureFixture,
) -> None:
    webhook = WebhookReceiver().start()
    receivers.append(webhook)
    local = tmp_path / "devlog"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as devlog:
        devlog.bind(str(local))
        devlog.settimeout(10)
        alerts = Alerts(
            AlertsConfig(),
            store,
            sinks=[WebhookSink("webhook:w", webhook.url, secret_file, 5.0)],
            syslog_path=str(local),
        )
        ctx = AlertContext(session_id="S9", person="alice")
        alerts.store_failed("disk I/O error", ctx)
        alerts.store_failed("disk I/O error", ctx)  # a repeat within a minute: log only
        message = devlog.recv(65536)
        await alerts.tasks.wait()
    doc = syslog_json(message)
    assert doc["rule"] == "store_write_failed"
    assert doc["session_id"] == "S9"
    assert message.startswith(b"<82>1 ")
    assert [r.doc()["rule"] for r in webhook.delivered()] == ["store_write_failed"]
    assert "ALERT store_write_failed" in caplog.text
    assert "repeat" in caplog.text
