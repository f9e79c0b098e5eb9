"""The alert outbox of the SQLite store: alerts, their delivery attempts, and the reads
the alert rules and the operator overrides need.

Owns the ``alerts`` and ``alert_deliveries`` tables. An alert row is written in the same
transaction as the events that raised it, together with an ``alert`` event (its payload,
so the chain vouches for what was sent) and, for an alert that flags a session, a
``flag`` event: flags are events, and "flagged" is derived by querying them (no column
on the sessions row, so nothing to migrate and nothing a rebuild from the log could
disagree with). A successful delivery appends ``alert_delivered`` to the chain; failed
attempts are only rows here (a sink down for a day would otherwise flood the chain).

Mixed into ``SQLiteStore``; never decides which alerts fire (proxy.core.anomaly does)
and never sends anything (proxy.alerts does).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager

import aiosqlite

from proxy.core import chain, events
from proxy.core.anomaly import SUMMARY_EVENT, summary_failures
from proxy.core.errors import StoreError
from proxy.store.base import ActivityRows, NewAlert, NewEvent, PendingAlert, StoredEvent

ALERTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id   TEXT PRIMARY KEY,
    created    REAL NOT NULL,
    rule       TEXT NOT NULL,
    subject    TEXT,
    session_id TEXT,
    payload    TEXT NOT NULL,
    state      TEXT NOT NULL DEFAULT 'pending'  -- pending | delivered
);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts(state, created);
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts(rule, subject, created);
CREATE TRIGGER IF NOT EXISTS alerts_fixed BEFORE UPDATE OF
    alert_id, created, rule, subject, session_id, payload ON alerts
    BEGIN SELECT RAISE(ABORT, 'an alert is fixed once raised'); END;
CREATE TRIGGER IF NOT EXISTS alerts_no_delete BEFORE DELETE ON alerts
    BEGIN SELECT RAISE(ABORT, 'alerts are kept'); END;

CREATE TABLE IF NOT EXISTS alert_deliveries (
    alert_id TEXT NOT NULL,
    sink     TEXT NOT NULL,
    attempt  INTEGER NOT NULL,
    time     REAL NOT NULL,
    ok       INTEGER NOT NULL,
    detail   TEXT,
    PRIMARY KEY (alert_id, sink, attempt)
);
CREATE TRIGGER IF NOT EXISTS alert_deliveries_no_update BEFORE UPDATE ON alert_deliveries
    BEGIN SELECT RAISE(ABORT, 'delivery attempts are append-only'); END;
CREATE TRIGGER IF NOT EXISTS alert_deliveries_no_delete BEFORE DELETE ON alert_deliveries
    BEGIN SELECT RAISE(ABORT, 'delivery attempts are append-only'); END;

-- Recent failed logins for the rules; operator events for the override watcher.
CREATE INDEX IF NOT EXISTS events_type ON events(type, time);
"""

MAX_DETAIL = 500


class AlertOutbox:
    """Outbox methods of SQLiteStore (which provides ``_db``, ``_tx`` and
    ``_append_in_tx``)."""

    # Declared, not stubbed: SQLiteStore defines them, and the mixin is never used alone.
    _db: aiosqlite.Connection
    _tx: Callable[[], AbstractAsyncContextManager[aiosqlite.Connection]]
    _append_in_tx: Callable[[aiosqlite.Connection, Sequence[NewEvent]], Awaitable[None]]

    async def _alerts_in_tx(self, db: aiosqlite.Connection, alerts: Sequence[NewAlert]) -> None:
        written: list[NewEvent] = []
        for a in alerts:
            payload = chain.canonical(a.payload)
            await db.execute(
                "INSERT INTO alerts (alert_id, created, rule, subject, session_id, payload)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (a.alert_id, a.time, a.rule, a.subject, a.session_id, payload),
            )
            alert = events.decode(events.Alert.TYPE, a.payload)
            assert isinstance(alert, events.Alert)
            written.append(NewEvent.of(alert, a.time, a.session_id))
            if a.flag and a.session_id is not None:
                flag = events.Flag(a.rule, a.alert_id, alert.detail)
                written.append(NewEvent.of(flag, a.time, a.session_id))
        if written:
            await self._append_in_tx(db, written)

    async def append_with_alerts(
        self, events: Sequence[NewEvent], alerts: Sequence[NewAlert]
    ) -> None:
        async with self._tx() as db:
            await self._append_in_tx(db, events)
            await self._alerts_in_tx(db, alerts)

    async def pending_alerts(self, sink: str, limit: int = 100) -> list[PendingAlert]:
        try:
            async with self._db.execute(
                "SELECT a.alert_id, a.created, a.rule, a.session_id, a.payload,"
                " (SELECT COUNT(*) FROM alert_deliveries d"
                "   WHERE d.alert_id = a.alert_id AND d.sink = ?),"
                " (SELECT MAX(time) FROM alert_deliveries d"
                "   WHERE d.alert_id = a.alert_id AND d.sink = ?)"
                " FROM alerts a WHERE a.state = 'pending' AND NOT EXISTS"
                " (SELECT 1 FROM alert_deliveries d"
                "   WHERE d.alert_id = a.alert_id AND d.sink = ? AND d.ok = 1)"
                " ORDER BY a.created, a.alert_id LIMIT ?",
                (sink, sink, sink, int(limit)),
            ) as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"audit store read failed: {exc}") from exc
        return [
            PendingAlert(
                alert_id=str(r[0]),
                created=float(r[1]),
                rule=str(r[2]),
                session_id=r[3],
                payload_json=str(r[4]),
                attempts=int(r[5]),
                last_attempt=None if r[6] is None else float(r[6]),
            )
            for r in rows
        ]

    async def record_delivery(
        self,
        alert_id: str,
        sink: str,
        time: float,
        ok: bool,
        detail: str,
        sinks: Sequence[str],
    ) -> int:
        async with self._tx() as db:
            async with db.execute(
                "SELECT COALESCE(MAX(attempt), 0) + 1 FROM alert_deliveries"
                " WHERE alert_id = ? AND sink = ?",
                (alert_id, sink),
            ) as cur:
                row = await cur.fetchone()
            attempt = int(row[0]) if row else 1
            await db.execute(
                "INSERT INTO alert_deliveries (alert_id, sink, attempt, time, ok, detail)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (alert_id, sink, attempt, time, 1 if ok else 0, detail[:MAX_DETAIL]),
            )
            if not ok:
                return attempt
            async with db.execute(
                "SELECT session_id FROM alerts WHERE alert_id = ?", (alert_id,)
            ) as cur:
                found = await cur.fetchone()
            session_id = found[0] if found else None
            await self._append_in_tx(
                db,
                [NewEvent.of(events.AlertDelivered(alert_id, sink, attempt), time, session_id)],
            )
            wanted = sorted(set(sinks))
            marks = ",".join("?" for _ in wanted)
            async with db.execute(
                "SELECT COUNT(DISTINCT sink) FROM alert_deliveries"
                f" WHERE alert_id = ? AND ok = 1 AND sink IN ({marks})",
                (alert_id, *wanted),
            ) as cur:
                done = await cur.fetchone()
            if done is not None and int(done[0]) >= len(wanted):
                await db.execute(
                    "UPDATE alerts SET state = 'delivered' WHERE alert_id = ?", (alert_id,)
                )
            return attempt

    async def alert_state(self, alert_id: str) -> str | None:
        async with self._db.execute(
            "SELECT state FROM alerts WHERE alert_id = ?", (alert_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else str(row[0])

    async def recent_activity(self, since: float) -> ActivityRows:
        try:
            async with self._db.execute(
                "SELECT started_at, person FROM sessions WHERE started_at > ?", (since,)
            ) as cur:
                starts = tuple((float(r[0]), str(r[1])) for r in await cur.fetchall())
            # json_extract, not json.loads in Python: a failure may carry a 2 KiB
            # justification, and this runs at every failed login.
            async with self._db.execute(
                "SELECT time, json_extract(data, '$.source'), json_extract(data, '$.person'),"
                " json_extract(data, '$.reason') FROM events"
                " WHERE type = ? AND time > ?",
                (events.LoginFailed.TYPE, since),
            ) as cur:
                failures = [
                    (
                        float(t),
                        str(source or ""),
                        str(person) if person else None,
                        str(reason or ""),
                        1,
                    )
                    for t, source, person, reason in await cur.fetchall()
                ]
            # Summarised failures count attempt by attempt (each row weighs its count).
            async with self._db.execute(
                "SELECT json_extract(data, '$.last'), json_extract(data, '$.attempts') FROM events"
                " WHERE type = ? AND time > ?",
                (SUMMARY_EVENT, since),
            ) as cur:
                for last, attempts in await cur.fetchall():
                    for f in summary_failures(
                        {"attempts": json.loads(attempts or "[]")}, float(last)
                    ):
                        failures.append((f.time, f.source, f.person, f.reason, f.count))
            async with self._db.execute(
                "SELECT rule, subject, MAX(created) FROM alerts"
                " WHERE subject IS NOT NULL AND created > ? GROUP BY rule, subject",
                (since,),
            ) as cur:
                fired = tuple((str(r[0]), str(r[1]), float(r[2])) for r in await cur.fetchall())
        except (sqlite3.Error, ValueError) as exc:
            raise StoreError(f"audit store read failed: {exc}") from exc
        return ActivityRows(starts, tuple(failures), fired)

    async def events_after(
        self, after_seq: int, types: Sequence[str], limit: int = 100
    ) -> list[StoredEvent]:
        marks = ",".join("?" for _ in types)
        try:
            async with self._db.execute(
                "SELECT seq, time, type, session_id, channel, data, prev_hash, hash FROM events"
                f" WHERE seq > ? AND type IN ({marks}) ORDER BY seq LIMIT ?",
                (after_seq, *types, int(limit)),
            ) as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"audit store read failed: {exc}") from exc
        return [
            StoredEvent(int(r[0]), float(r[1]), r[2], r[3], r[4], json.loads(r[5]), r[6], r[7])
            for r in rows
        ]

    async def last_seq(self) -> int:
        try:
            async with self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM events") as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"audit store read failed: {exc}") from exc
        return int(row[0]) if row else 0
