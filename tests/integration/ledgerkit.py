"""Putting a node's journal into a test ledger without the shipper: its chain rows
(exactly as the node stored and hashed them) into ``events``, its casts into
``cast_chunks``, as the shipper does. The ledger's own triggers check every link, so a
row that would not link is refused here as it would be from a node.

Also builds chains from scratch (``ChainBuilder``: events linked with
``proxy.core.chain``) for tests that want a node without a store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import replace
from typing import Any

import psycopg

from proxy.core import chain
from proxy.core.chaincheck import ChainRow
from proxy.core.credentials import Credential, UseDecision
from proxy.fleet.ledger import Ledger
from proxy.fleet.reads import LedgerReads, split_id
from proxy.store.base import (
    ChainReads,
    ChannelRow,
    CredentialRead,
    EventTuple,
    NewAlert,
    NewEvent,
    PeriodSummary,
    SessionFilter,
    SessionRow,
    Store,
    StoredEvent,
)

CHUNK = 256 * 1024


async def ship_rows(dsn: str, node: str, rows: Sequence[ChainRow]) -> None:
    """Insert ``rows`` as ``node``'s events (in one transaction)."""
    if not rows:
        return
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.cursor() as cur:
        await cur.executemany(
            "INSERT INTO events (node, seq, time, type, session_id, channel, data, prev_hash,"
            " hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    node,
                    r.seq,
                    r.time,
                    r.type,
                    r.session_id,
                    r.channel,
                    r.data_json,
                    r.prev_hash,
                    r.hash,
                )
                for r in rows
            ],
        )


async def ship_chain(dsn: str, node: str, store: ChainReads, after: int = 0) -> int:
    """Copy ``store``'s chain after seq ``after`` into the ledger as ``node``'s events;
    returns the last seq shipped."""
    while rows := await store.chain_rows(after, 5000):
        await ship_rows(dsn, node, rows)
        after = rows[-1].seq
    return after


async def ship_cast(
    dsn: str, node: str, session_id: str, channel: int, data: bytes, chunk: int = CHUNK
) -> None:
    """A cast's bytes as ``cast_chunks`` rows, offset 0 first."""
    async with await psycopg.AsyncConnection.connect(dsn) as conn, conn.cursor() as cur:
        await cur.executemany(
            'INSERT INTO cast_chunks (node, session_id, channel, "offset", data)'
            " VALUES (%s, %s, %s, %s, %s)",
            [
                (node, session_id, channel, i, data[i : i + chunk])
                for i in range(0, max(len(data), 1), chunk)
            ],
        )


class ChainBuilder:
    """One node's chain built in memory, linked as a store links it."""

    def __init__(self) -> None:
        self.rows: list[ChainRow] = []

    @property
    def head(self) -> str:
        return self.rows[-1].hash if self.rows else chain.GENESIS

    def add(self, ev: NewEvent) -> ChainRow:
        return self.add_raw(ev.type, ev.time, ev.session_id, ev.channel, ev.data)

    def add_raw(
        self,
        type_: str,
        time: float,
        session_id: str | None = None,
        channel: int | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> ChainRow:
        seq = len(self.rows) + 1
        data_json = chain.canonical(data or {})
        digest = chain.link(self.head, seq, time, type_, session_id, channel, data_json)
        row = ChainRow(seq, time, type_, session_id, channel, data_json, self.head, digest)
        self.rows.append(row)
        return row


async def open_ledger(dsn: str, node: str = "auditor", bound: float = 10.0) -> Ledger:
    """A ``Ledger`` on ``dsn`` as an auditor's command opens it (opened; close it)."""
    from proxy.config.model import FleetConfig

    ledger = Ledger(
        FleetConfig(node=node, postgres=dsn, password_file=None, peers={}, timeout=bound)
    )
    await ledger.open()
    return ledger


class LedgerMirror:
    """A node's SQLite store whose every write is copied into the ledger as node
    ``node``'s events (as the shipper would), and whose reads come from ``LedgerReads``:
    the read contract run against the ledger. Ids come back from the ledger as
    ``NODE/SESSION``; checked to name this node, they are handed to the contract bare,
    which also hands them in bare (the ledger resolves a bare id one node has)."""

    def __init__(self, local: Store, ledger: Ledger, dsn: str, node: str) -> None:
        self.local = local
        self.ledger = ledger
        self.reads = LedgerReads(ledger)
        self.dsn = dsn
        self.node = node
        self._shipped = 0

    async def _ship(self) -> None:
        self._shipped = await ship_chain(self.dsn, self.node, self.local, self._shipped)

    def _bare(self, qualified: str) -> str:
        node, local = split_id(qualified)
        assert node == self.node, f"{qualified!r} does not name node {self.node}"
        return local

    def _session(self, s: SessionRow) -> SessionRow:
        channels = tuple(replace(c, session_id=self._bare(c.session_id)) for c in s.channels)
        return replace(s, id=self._bare(s.id), channels=channels)

    def _event(self, e: StoredEvent) -> StoredEvent:
        return e if e.session_id is None else replace(e, session_id=self._bare(e.session_id))

    def _tuple(self, t: EventTuple) -> EventTuple:
        return t if t[3] is None else (*t[:3], self._bare(t[3]), *t[4:])

    # -- writes: the node's store, then shipped ---------------------------------------

    async def append(self, events: Sequence[NewEvent]) -> None:
        try:
            await self.local.append(events)
        finally:
            await self._ship()

    async def append_with_alerts(
        self, events: Sequence[NewEvent], alerts: Sequence[NewAlert]
    ) -> None:
        try:
            await self.local.append_with_alerts(events, alerts)
        finally:
            await self._ship()

    async def issue_credential(self, cred: Credential, code_hash: str, event: NewEvent) -> None:
        try:
            await self.local.issue_credential(cred, code_hash, event)
        finally:
            await self._ship()

    async def start_session(
        self,
        cred_id: str,
        person: str,
        target: str,
        now: float,
        start: NewEvent,
        alerts: Sequence[NewAlert] = (),
    ) -> UseDecision:
        try:
            return await self.local.start_session(cred_id, person, target, now, start, alerts)
        finally:
            await self._ship()

    async def revoke_credential(
        self, cred_id: str, reason: str, actor: str, now: float
    ) -> Credential | None:
        try:
            return await self.local.revoke_credential(cred_id, reason, actor, now)
        finally:
            await self._ship()

    # -- reads: the ledger ----------------------------------------------------------------

    async def head(self) -> tuple[int, str]:
        return await self.reads.chain(self.node).head()

    async def chain_rows(self, after_seq: int, limit: int) -> list[ChainRow]:
        return await self.reads.chain(self.node).chain_rows(after_seq, limit)

    async def event_page(
        self, after_seq: int, limit: int, since: float | None = None, until: float | None = None
    ) -> list[ChainRow]:
        return await self.reads.chain(self.node).event_page(after_seq, limit, since, until)

    async def list_sessions(self, flt: SessionFilter, *, channels: bool = True) -> list[SessionRow]:
        return [self._session(s) for s in await self.reads.list_sessions(flt, channels=channels)]

    async def get_session(self, session_id: str) -> SessionRow | None:
        found = await self.reads.get_session(session_id)
        return None if found is None else self._session(found)

    async def session_events(self, session_id: str) -> list[StoredEvent]:
        return [self._event(e) for e in await self.reads.session_events(session_id)]

    async def unfinished_sessions(self) -> list[SessionRow]:
        return [self._session(s) for s in await self.reads.unfinished_sessions()]

    async def events_for_sessions(
        self, session_ids: Sequence[str], types: Collection[str] | None = None
    ) -> list[StoredEvent]:
        return [self._event(e) for e in await self.reads.events_for_sessions(session_ids, types)]

    async def events_between(
        self, types: Collection[str], since: float | None, until: float | None
    ) -> list[StoredEvent]:
        return [self._event(e) for e in await self.reads.events_between(types, since, until)]

    async def period_sessions(
        self,
        since: float | None,
        until: float | None,
        types: Collection[str],
        batch: int = 1000,
    ) -> AsyncIterator[list[tuple[SessionRow, list[EventTuple]]]]:
        async for page in self.reads.period_sessions(since, until, types, batch):
            yield [(self._session(s), [self._tuple(t) for t in evs]) for s, evs in page]

    async def period_summary(self, since: float | None, until: float | None) -> PeriodSummary:
        return await self.reads.period_summary(since, until)

    async def period_recordings(
        self, since: float | None, until: float | None
    ) -> list[tuple[ChannelRow, int | None]]:
        return [
            (replace(c, session_id=self._bare(c.session_id)), pruned)
            for c, pruned in await self.reads.period_recordings(since, until)
        ]

    async def get_credential(self, cred_id: str) -> CredentialRead | None:
        found = await self.reads.get_credential(cred_id)
        if found is None:
            return None
        return found._replace(cred=replace(found.cred, cred_id=self._bare(found.cred.cred_id)))

    async def list_credentials(self) -> list[Credential]:
        return [
            replace(c, cred_id=self._bare(c.cred_id)) for c in await self.reads.list_credentials()
        ]

    async def close(self) -> None:
        try:
            await self.local.close()
        finally:
            await self.ledger.close()
