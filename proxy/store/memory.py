"""An in-memory audit store, for unit tests: the same semantics as the SQLite store
behind the Protocols it implements, with none of its I/O.

Implements the whole ``Store`` (``proxy.store.base``): every consumer's Protocol,
the auditor's reads (``ReportReads``) and ``verify``'s ``projection_differences``. It
is honest, not a mock: events are bounded (``bound_data``) and hash-chained
(``proxy.core.chain``) exactly as SQLite stores them, the session, channel and
credential rows are projected from the same events (``proxy/store/memoryrows.py``), a
login re-checks the code's rules and the row against its latest chained event inside
the transaction, and a transaction that fails leaves nothing behind. The contract tests
(``tests/integration/test_store_contract.py``) run the same checks against both stores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

from proxy.core import chain, events
from proxy.core.anomaly import SUMMARY_EVENT, summary_failures
from proxy.core.chaincheck import FLAG_TYPES, ChainRow
from proxy.core.credentials import Credential, UseDecision
from proxy.core.credstate import (
    CRED_EVENTS,
    event_credential_id,
    row_mismatch,
)
from proxy.core.errors import StoreError
from proxy.core.limits import bound_data
from proxy.store.base import (
    ActivityRows,
    ChannelRow,
    CredentialRead,
    EventTuple,
    NewAlert,
    NewEvent,
    PendingAlert,
    PeriodSummary,
    SessionFilter,
    SessionRow,
    StoredEvent,
    take_use,
    with_state,
)
from proxy.store.memoryrows import (
    glob,
    of_type,
    period_batches,
    project,
    recordings,
    row_differences,
    summary,
)

_FILE_TYPES = frozenset(events.FILE_TYPES)


class MemoryStore:
    """The audit store in a few dicts (see the module docstring)."""

    def __init__(self) -> None:
        self._events: list[ChainRow] = []
        self._sessions: dict[str, SessionRow] = {}
        self._channels: dict[tuple[str, int], ChannelRow] = {}
        self._creds: dict[str, tuple[Credential, str]] = {}
        # The outbox: alert_id -> (the alert, "pending" or "delivered"), and the
        # delivery attempts as (alert_id, sink, attempt, time, ok).
        self._alerts: dict[str, tuple[NewAlert, str]] = {}
        self._deliveries: list[tuple[str, str, int, float, bool]] = []
        self._cursors: dict[str, int] = {}
        # One transaction at a time, as SQLite's write lock gives: a login's check and
        # commit of a use are one step, whoever else is logging in.
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        return None

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """All or nothing: on any error the rows and the log are put back as they were."""
        saved = (len(self._events), dict(self._sessions), dict(self._channels))
        saved_creds, saved_alerts = dict(self._creds), dict(self._alerts)
        saved_deliveries = len(self._deliveries)
        try:
            yield
        except BaseException:
            del self._events[saved[0] :]
            self._sessions, self._channels = saved[1], saved[2]
            self._creds, self._alerts = saved_creds, saved_alerts
            del self._deliveries[saved_deliveries:]
            raise

    # -- the event log ----------------------------------------------------------------

    def _append_in_tx(self, new: Sequence[NewEvent]) -> None:
        seq, prev = self._head()
        for ev in new:
            seq += 1
            data, data_json = bound_data(ev.data)
            if data is not ev.data:
                ev = dataclasses.replace(ev, data=data)
            digest = chain.link(prev, seq, ev.time, ev.type, ev.session_id, ev.channel, data_json)
            self._events.append(
                ChainRow(
                    seq, float(ev.time), ev.type, ev.session_id, ev.channel, data_json, prev, digest
                )
            )
            project(self._sessions, self._channels, ev)
            prev = digest

    def _alerts_in_tx(self, alerts: Sequence[NewAlert]) -> None:
        """Each alert's outbox entry, its ``alert`` event and, for a flagging one, its
        ``flag`` event."""
        written: list[NewEvent] = []
        for a in alerts:
            if a.alert_id in self._alerts:
                raise StoreError(f"audit store write failed: alert {a.alert_id} exists")
            self._alerts[a.alert_id] = (a, "pending")
            alert = events.decode(events.Alert.TYPE, a.payload)
            assert isinstance(alert, events.Alert)
            written.append(NewEvent.of(alert, a.time, a.session_id))
            if a.flag and a.session_id is not None:
                flag = events.Flag(a.rule, a.alert_id, alert.detail)
                written.append(NewEvent.of(flag, a.time, a.session_id))
        self._append_in_tx(written)

    async def append(self, events: Sequence[NewEvent]) -> None:
        async with self._lock:
            with self._tx():
                self._append_in_tx(events)

    async def append_with_alerts(
        self, events: Sequence[NewEvent], alerts: Sequence[NewAlert]
    ) -> None:
        async with self._lock:
            with self._tx():
                self._append_in_tx(events)
                self._alerts_in_tx(alerts)

    # -- the alert outbox ----------------------------------------------------------------

    async def pending_alerts(self, sink: str, limit: int = 100) -> list[PendingAlert]:
        out = []
        for a, state in sorted(self._alerts.values(), key=lambda p: (p[0].time, p[0].alert_id)):
            tries = [d for d in self._deliveries if d[0] == a.alert_id and d[1] == sink]
            if state != "pending" or any(d[4] for d in tries):
                continue
            last = max((d[3] for d in tries), default=None)
            payload = chain.canonical(a.payload)
            out.append(
                PendingAlert(
                    a.alert_id, float(a.time), a.rule, a.session_id, payload, len(tries), last
                )
            )
        return out[: max(int(limit), 0)]

    async def record_delivery(
        self,
        alert_id: str,
        sink: str,
        time: float,
        ok: bool,
        detail: str,
        sinks: Sequence[str],
    ) -> int:
        async with self._lock:
            with self._tx():
                tries = [d for d in self._deliveries if d[0] == alert_id and d[1] == sink]
                attempt = max((d[2] for d in tries), default=0) + 1
                self._deliveries.append((alert_id, sink, attempt, float(time), ok))
                if not ok:
                    return attempt
                found = self._alerts.get(alert_id)
                session_id = found[0].session_id if found else None
                delivered = events.AlertDelivered(alert_id, sink, attempt)
                self._append_in_tx([NewEvent.of(delivered, time, session_id)])
                took = {d[1] for d in self._deliveries if d[0] == alert_id and d[4]}
                if found is not None and set(sinks) <= took:
                    self._alerts[alert_id] = (found[0], "delivered")
                return attempt

    async def recent_activity(self, since: float) -> ActivityRows:
        starts = tuple(
            (s.started_at, s.person) for s in self._sessions.values() if s.started_at > since
        )
        failures: list[tuple[float, str, str | None, str, int]] = []
        recent = [(e.type, json.loads(e.data_json), e.time) for e in self._events if e.time > since]
        for type_, data, t in recent:
            if type_ == events.LoginFailed.TYPE:
                person = data.get("person")
                row = (t, str(data.get("source") or ""), str(person) if person else None)
                failures.append((*row, str(data.get("reason") or ""), 1))
        # Summarised failures count attempt by attempt (each row weighs its count).
        for type_, data, _ in recent:
            if type_ == SUMMARY_EVENT:
                attempts = {"attempts": data.get("attempts") or []}
                for f in summary_failures(attempts, float(data["last"])):
                    failures.append((f.time, f.source, f.person, f.reason, f.count))
        fired: dict[tuple[str, str], float] = {}
        for a, _ in self._alerts.values():
            if a.subject is not None and a.time > since:
                key = (a.rule, a.subject)
                fired[key] = max(fired.get(key, a.time), float(a.time))
        return ActivityRows(
            starts, tuple(failures), tuple((r, s, t) for (r, s), t in sorted(fired.items()))
        )

    # -- operator overrides and the event feed -------------------------------------------

    async def events_after(
        self, after_seq: int, types: Sequence[str], limit: int = 100
    ) -> list[StoredEvent]:
        wanted = set(types)
        found = (e for e in self._events[max(after_seq, 0) :] if e.type in wanted)
        return [_stored(e) for e, _ in zip(found, range(max(int(limit), 0)), strict=False)]

    async def last_seq(self) -> int:
        return self._head()[0]

    async def event_page(
        self,
        after_seq: int,
        limit: int,
        since: float | None = None,
        until: float | None = None,
    ) -> list[ChainRow]:
        found = (
            e
            for e in self._events[max(after_seq, 0) :]
            if (since is None or e.time >= since) and (until is None or e.time < until)
        )
        return [e for e, _ in zip(found, range(max(int(limit), 0)), strict=False)]

    async def feed_cursor(self, name: str) -> int:
        return self._cursors.get(name, 0)

    async def save_feed_cursor(self, name: str, seq: int, now: float) -> None:
        self._cursors[name] = int(seq)

    # -- credentials --------------------------------------------------------------------

    async def issue_credential(self, cred: Credential, code_hash: str, event: NewEvent) -> None:
        async with self._lock:
            with self._tx():
                if cred.cred_id in self._creds:
                    raise StoreError(f"audit store write failed: code {cred.cred_id} exists")
                self._creds[cred.cred_id] = (cred, code_hash)
                self._append_in_tx([with_state(event, cred, code_hash)])

    def _read_credential(self, cred_id: str) -> CredentialRead | None:
        found = self._creds.get(cred_id)
        if found is None:
            return None
        cred, code_hash = found
        latest = next(
            (
                e
                for e in reversed(self._events)
                if e.type in CRED_EVENTS
                and event_credential_id(e.type, json.loads(e.data_json)) == cred_id
            ),
            None,
        )
        if latest is None:
            return CredentialRead(cred, code_hash, row_mismatch(cred, code_hash, None))
        data = json.loads(latest.data_json)
        facts = (latest.type, latest.time, data if isinstance(data, dict) else {})
        return CredentialRead(cred, code_hash, row_mismatch(cred, code_hash, facts))

    async def get_credential(self, cred_id: str) -> CredentialRead | None:
        return self._read_credential(cred_id)

    async def list_credentials(self) -> list[Credential]:
        return sorted((c for c, _ in self._creds.values()), key=lambda c: c.issued_at)

    async def revoke_credential(
        self, cred_id: str, reason: str, actor: str, now: float
    ) -> Credential | None:
        async with self._lock:
            with self._tx():
                found = self._read_credential(cred_id)
                if found is None:
                    return None
                if found.cred.revoked_at is not None:
                    return found.cred
                cred = replace(found.cred, revoked_at=now, revoke_reason=reason)
                self._creds[cred_id] = (cred, found.hash)
                revoked = events.CredRevoked(cred_id, cred.person, actor, reason)
                self._append_in_tx([with_state(NewEvent.of(revoked, now), cred, found.hash)])
                return cred

    async def start_session(
        self,
        cred_id: str,
        person: str,
        target: str,
        now: float,
        start: NewEvent,
        alerts: Sequence[NewAlert] = (),
    ) -> UseDecision:
        async with self._lock:
            with self._tx():
                found = self._read_credential(cred_id)
                use = take_use(found, person, target, now, start)
                if use.cred is None or found is None:
                    return use.decision
                self._creds[cred_id] = (use.cred, found.hash)
                self._append_in_tx(use.events)
                self._alerts_in_tx(alerts)
                return use.decision

    # -- sessions -----------------------------------------------------------------------

    def _row(self, row: SessionRow, channels: bool = True) -> SessionRow:
        if not channels:
            return row
        chans = sorted((c for c in self._channels.values() if c.session_id == row.id), key=_n)
        return replace(row, channels=tuple(chans))

    async def list_sessions(self, flt: SessionFilter, *, channels: bool = True) -> list[SessionRow]:
        # An event search is bounded by the period's start, as SQLite's is.
        evs = [e for e in self._events if flt.since is None or e.time >= flt.since]
        flagged = {e.session_id for e in evs if e.type in FLAG_TYPES and e.session_id}
        out = []
        for sid in sorted(self._sessions):
            s = self._sessions[sid]
            if (flt.person is not None and s.person != flt.person) or (
                flt.target is not None and s.target != flt.target
            ):
                continue
            if (flt.since is not None and s.started_at < flt.since) or (
                flt.until is not None and s.started_at >= flt.until
            ):
                continue
            if flt.end_reason is not None and s.end_reason != flt.end_reason:
                continue
            if flt.live is not None and (s.ended_at is None) != flt.live:
                continue
            if flt.flagged is not None and (sid in flagged) != flt.flagged:
                continue
            if flt.command is not None and not self._ran(sid, flt.command, evs):
                continue
            if flt.path is not None and not any(
                e.session_id == sid
                and e.type in _FILE_TYPES
                and glob(flt.path, json.loads(e.data_json).get("path"))
                for e in evs
            ):
                continue
            out.append(self._row(s, channels))
            if flt.limit and len(out) == flt.limit:
                break
        return out

    def _ran(self, sid: str, pattern: str, evs: Sequence[ChainRow]) -> bool:
        """A channel's command line or a ``command`` event's text matches ``pattern``."""
        if any(c.session_id == sid and glob(pattern, c.command) for c in self._channels.values()):
            return True
        return any(
            e.session_id == sid
            and e.type == events.Command.TYPE
            and glob(pattern, json.loads(e.data_json).get("text"))
            for e in evs
        )

    async def get_session(self, session_id: str) -> SessionRow | None:
        row = self._sessions.get(session_id)
        return self._row(row) if row is not None else None

    async def session_events(self, session_id: str) -> list[StoredEvent]:
        return [_stored(e) for e in self._events if e.session_id == session_id]

    async def unfinished_sessions(self) -> list[SessionRow]:
        return [self._row(s) for _, s in sorted(self._sessions.items()) if s.ended_at is None]

    async def events_for_sessions(
        self, session_ids: Sequence[str], types: Collection[str] | None = None
    ) -> list[StoredEvent]:
        wanted = set(session_ids)
        return [
            _stored(e)
            for e in self._events
            if e.session_id in wanted and (types is None or of_type(e.type, types))
        ]

    async def events_between(
        self, types: Collection[str], since: float | None, until: float | None
    ) -> list[StoredEvent]:
        return [
            _stored(e)
            for e in self._events
            if of_type(e.type, types)
            and (since is None or e.time >= since)
            and (until is None or e.time < until)
        ]

    # -- the auditor's period reads and verify's check ------------------------------------

    async def period_sessions(
        self,
        since: float | None,
        until: float | None,
        types: Collection[str],
        batch: int = 1000,
    ) -> AsyncIterator[list[tuple[SessionRow, list[EventTuple]]]]:
        # One snapshot for the whole read, as SQLite's cursors give: a session written
        # while the caller works through the batches is in none of them.
        sessions, channels = dict(self._sessions), dict(self._channels)
        log = self._events[:]
        for rows in period_batches(sessions, channels, log, since, until, types, batch):
            yield rows

    async def period_summary(self, since: float | None, until: float | None) -> PeriodSummary:
        return summary(self._sessions, self._events, since, until)

    async def period_recordings(
        self, since: float | None, until: float | None
    ) -> list[tuple[ChannelRow, int | None]]:
        return recordings(self._sessions, self._channels, self._events, since, until)

    async def projection_differences(self) -> list[str]:
        return row_differences(self._sessions, self._channels, self._creds, self._events)

    # -- the chain ----------------------------------------------------------------------

    def _head(self) -> tuple[int, str]:
        last = self._events[-1] if self._events else None
        return (last.seq, last.hash) if last else (0, chain.GENESIS)

    async def head(self) -> tuple[int, str]:
        return self._head()

    async def chain_rows(self, after_seq: int, limit: int) -> list[ChainRow]:
        # seq n is at index n - 1: the log has no gaps.
        start = max(after_seq, 0)
        return self._events[start : start + max(limit, 0)]


def _n(c: ChannelRow) -> int:
    return c.n


def _stored(e: ChainRow) -> StoredEvent:
    data = json.loads(e.data_json)
    return StoredEvent(e.seq, e.time, e.type, e.session_id, e.channel, data, e.prev_hash, e.hash)
