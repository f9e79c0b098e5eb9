"""The alert outbox in the SQLite store: alerts are committed with the event that raised
them (or not at all), chained as ``alert``/``flag`` events, and their delivery attempts
recorded."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.alerts.payload import AlertContext, build
from proxy.core import anomaly
from proxy.core.credentials import Credential
from proxy.core.errors import StoreError
from proxy.store.base import NewAlert, NewEvent
from proxy.store.sqlite import SQLiteStore
from tests.eventdata import fill

NOW = 1_700_000_000.0


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    s = await SQLiteStore.open(tmp_path / "audit.db")
    yield s
    await s.close()


def alert(
    rule: str = "max_sessions_per_person", session: str | None = "S1", flag: bool = True
) -> NewAlert:
    return build(
        anomaly.Firing(rule, "detail text", subject="person:alice", flag=flag),
        AlertContext(session_id=session, person="alice", justification="INC-1 \x1b[31m"),
        NOW,
        proxy="bastion",
    )


def rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as c:
        return list(c.execute(sql))


async def test_alerts_are_chained_after_their_event_with_a_flag(
    store: SQLiteStore, tmp_path: Path
) -> None:
    a = alert()
    await store.append_with_alerts([NewEvent("x", NOW, "S1", None, {})], [a])

    types = [r[0] for r in rows(tmp_path / "audit.db", "SELECT type FROM events ORDER BY seq")]
    assert types == ["x", "alert", "flag"]
    events = await store.session_events("S1")
    assert events[1].data == dict(a.payload)
    assert events[2].data == {"rule": a.rule, "alert_id": a.alert_id, "detail": "detail text"}
    (pending,) = await store.pending_alerts("webhook:one")
    assert pending.alert_id == a.alert_id
    assert pending.attempts == 0
    assert pending.last_attempt is None


async def test_routine_alerts_and_alerts_without_a_session_do_not_flag(
    store: SQLiteStore,
) -> None:
    await store.append_with_alerts(
        [NewEvent("x", NOW, "S1", None, {})],
        [alert("session_start", flag=False), alert("not_allowed", session=None)],
    )
    types = [e.type for e in await store.session_events("S1")]
    assert types == ["x", "alert"]


async def test_the_payload_is_stored_verbatim_and_is_the_same_bytes_every_time(
    store: SQLiteStore,
) -> None:
    a = alert()
    await store.append_with_alerts([], [a])
    first = (await store.pending_alerts("k"))[0].payload_json
    again = (await store.pending_alerts("k"))[0].payload_json
    assert first == again
    assert json.loads(first)["justification"] == "INC-1 \x1b[31m"  # verbatim, JSON-escaped
    assert "\x1b" not in first
    assert '"alert_id":"' + a.alert_id in first


async def test_nothing_is_written_when_the_transaction_fails(
    store: SQLiteStore, tmp_path: Path
) -> None:
    a = alert()
    await store.append_with_alerts([], [a])
    with pytest.raises(StoreError):  # the same alert id twice: the whole tx rolls back
        await store.append_with_alerts([NewEvent("y", NOW, "S1", None, {})], [a])
    types = [r[0] for r in rows(tmp_path / "audit.db", "SELECT type FROM events")]
    assert "y" not in types


async def test_a_session_start_commits_its_alerts_and_a_refused_one_does_not(
    store: SQLiteStore,
) -> None:
    now = time.time()
    cred = Credential(
        cred_id="ABC123",
        person="alice",
        issued_by="root",
        issued_at=now - 10,
        valid_until=now + 3600,
        window=3600,
        max_uses=1,
        uses=0,
        targets=("db01",),
        max_session=None,
        activated_at=None,
        revoked_at=None,
        revoke_reason=None,
    )
    await store.issue_credential(cred, "hash", NewEvent("cred_issued", now, data={}))

    def start(sid: str) -> NewEvent:
        return NewEvent(
            "session_start",
            now,
            sid,
            None,
            {
                "person": "alice",
                "credential_id": "ABC123",
                "source": "127.0.0.1",
                "client_version": "SSH-2.0-x",
                "target": "db01",
                "login": "root",
                "justification": "INC-1 something broke",
                "deadline": now + 60,
            },
        )

    a1 = alert("session_start", session="S1", flag=False)
    ok = await store.start_session("ABC123", "alice", "db01", now, start("S1"), alerts=[a1])
    assert ok.ok
    a2 = alert("session_start", session="S2", flag=False)
    refused = await store.start_session("ABC123", "alice", "db01", now, start("S2"), alerts=[a2])
    assert refused.reason == "spent"
    pending = [p.alert_id for p in await store.pending_alerts("k")]
    assert pending == [a1.alert_id]
    types = [e.type for e in await store.session_events("S1")]
    assert types[-2:] == ["session_start", "alert"]


async def test_deliveries_are_recorded_and_the_alert_is_done_when_every_sink_has_it(
    store: SQLiteStore, tmp_path: Path
) -> None:
    a = alert()
    await store.append_with_alerts([], [a])
    sinks = ["webhook:a", "syslog:b"]
    assert (
        await store.record_delivery(a.alert_id, "webhook:a", NOW + 1, False, "HTTP 500", sinks) == 1
    )
    assert (
        await store.record_delivery(a.alert_id, "webhook:a", NOW + 2, True, "HTTP 204", sinks) == 2
    )
    (p,) = await store.pending_alerts("syslog:b")
    assert p.attempts == 0
    assert await store.pending_alerts("webhook:a") == []
    assert await store.alert_state(a.alert_id) == "pending"

    await store.record_delivery(a.alert_id, "syslog:b", NOW + 3, True, "sent", sinks)

    assert await store.alert_state(a.alert_id) == "delivered"
    assert await store.pending_alerts("syslog:b") == []
    attempts = rows(
        tmp_path / "audit.db",
        "SELECT sink, attempt, ok, detail FROM alert_deliveries ORDER BY time",
    )
    assert attempts == [
        ("webhook:a", 1, 0, "HTTP 500"),
        ("webhook:a", 2, 1, "HTTP 204"),
        ("syslog:b", 1, 1, "sent"),
    ]
    delivered = [e for e in await store.session_events("S1") if e.type == "alert_delivered"]
    assert [e.data["sink"] for e in delivered] == ["webhook:a", "syslog:b"]


async def test_pending_attempts_survive_reopening(tmp_path: Path) -> None:
    s = await SQLiteStore.open(tmp_path / "audit.db")
    a = alert()
    await s.append_with_alerts([], [a])
    await s.record_delivery(a.alert_id, "k", NOW + 5, False, "down", ["k"])
    await s.close()

    s = await SQLiteStore.open(tmp_path / "audit.db")
    try:
        (p,) = await s.pending_alerts("k")
        assert (p.attempts, p.last_attempt) == (1, NOW + 5)
    finally:
        await s.close()


async def test_alert_rows_and_attempts_cannot_be_rewritten(
    store: SQLiteStore, tmp_path: Path
) -> None:
    a = alert()
    await store.append_with_alerts([], [a])
    await store.record_delivery(a.alert_id, "k", NOW, False, "x", ["k"])
    db = tmp_path / "audit.db"
    for sql in (
        "UPDATE alerts SET payload = '{}'",
        "DELETE FROM alerts",
        "UPDATE alert_deliveries SET ok = 1",
        "DELETE FROM alert_deliveries",
    ):
        with pytest.raises(sqlite3.IntegrityError), sqlite3.connect(db) as c:
            c.execute(sql)


async def test_recent_activity_feeds_the_rules(store: SQLiteStore) -> None:
    await store.append_with_alerts(
        [
            NewEvent(
                "login_failed",
                NOW - 5,
                None,
                None,
                fill(
                    "login_failed", {"reason": "wrong_code", "source": "10.0.0.1", "person": "bob"}
                ),
            ),
            NewEvent(
                "login_failed",
                NOW - 999,
                None,
                None,
                fill(
                    "login_failed", {"reason": "wrong_code", "source": "10.0.0.1", "person": "bob"}
                ),
            ),
        ],
        [alert("failed_logins_per_source", session=None)],
    )
    rows_ = await store.recent_activity(NOW - 100)
    assert rows_.failures == ((NOW - 5, "10.0.0.1", "bob", "wrong_code", 1),)
    assert rows_.fired == (("failed_logins_per_source", "person:alice", NOW),)


async def test_events_after_finds_operator_events_by_seq(store: SQLiteStore) -> None:
    await store.append([NewEvent("x", NOW, "S1", None, {})])
    head = await store.last_seq()
    await store.append(
        [
            NewEvent("operator_kill", NOW, "S1", None, {"operator": "root", "reason": "r"}),
            NewEvent("y", NOW, "S1", None, {}),
            NewEvent(
                "operator_extend", NOW, "S1", None, {"operator": "root", "reason": "r", "by": 60}
            ),
        ]
    )
    found = await store.events_after(head, ["operator_kill", "operator_extend"])
    assert [e.type for e in found] == ["operator_kill", "operator_extend"]
    assert await store.events_after(found[-1].seq, ["operator_kill"]) == []
