"""Codes across a fleet: spending a use in the ledger, publishing this node's codes to
it, and settling every use the node recorded as pending.

Owns the node's side of ``fleet_credentials`` and ``cred_uses`` (proxy/fleet/schema.py):

- ``spend``: a login that passed every local check records ``cred_use_pending`` in the
  local journal, then spends the use with ONE statement (``ledger_spend``: it locks the
  code's row, re-checks revoked / expired / burnt / spent against the ledger's clock and
  inserts the use keyed by its ``use_id``). One statement is one round trip, committed by
  the server even when its reply is lost; a retry with the same use_id is not counted
  again. The calls go through a ledger handle of their own (``SPEND_POOL`` connections
  serving spending only), bounded by ``fleet.timeout`` including the wait for a
  connection, so a busy background round never delays a login;
- the background round (every ``fleet.ship_interval``): publishes this node's
  ``cred_issued`` (with the argon2 hash, which no event carries) and ``cred_revoked``
  events to ``fleet_credentials`` (state only moves forward there), and settles every
  pending use that no unflagged session start settled: a use the node served while the
  ledger did not answer is recorded (``offline``) and checked against the code's rules
  fleet-wide (over-spent, or used after a revocation: ``cred_use_settled`` with ``over``,
  which alerts); a pending use without a session (a crash, a refusal, a lost reply) is
  settled by asking the ledger whether its use_id is there.

Never on the login path for a wrong code: ``spend`` is only called after argon2 and every
local rule said yes. Never raises LedgerUnreachable to a login: it becomes an outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb

from proxy.config.model import FleetConfig
from proxy.core import events
from proxy.core.credentials import Credential
from proxy.core.credstate import event_credential_id
from proxy.core.errors import StoreError
from proxy.core.fleetuse import SpendOutcome
from proxy.fleet.ledger import Conn, Ledger, LedgerUnreachable
from proxy.store.base import NewEvent, Store, StoredEvent

__all__ = ["CURSOR", "SPEND_POOL", "FleetCodes", "code_facts"]

log = logging.getLogger("breakglass")

SPEND_POOL = 2  # connections that serve spending only
CURSOR = "fleet-codes"  # the local feed cursor: every pending use at or before it is settled
_PAGE = 500
_SCANNED = (
    events.CredIssued.TYPE,
    events.CredRevoked.TYPE,
    events.CredUsePending.TYPE,
    events.SessionStart.TYPE,
    events.CredUseSettled.TYPE,
)

# The code's row from a node's verified copy, when the ledger has none yet.
_INSERT_CODE = """
INSERT INTO fleet_credentials (id, origin_node, origin_seq, person, targets, max_uses,
    valid_until, window_seconds, max_session, issued_at, code_hash)
VALUES (%(id)s, %(origin_node)s, %(origin_seq)s, %(person)s, %(targets)s, %(max_uses)s,
    %(valid_until)s, %(window_seconds)s, %(max_session)s, %(issued_at)s, %(code_hash)s)
ON CONFLICT (id) DO NOTHING
"""


def code_facts(cred: Credential, code_hash: str, origin: tuple[str, int]) -> dict[str, Any]:
    """What the ledger keeps of a code (``fleet_credentials``' columns)."""
    return {
        "id": cred.cred_id,
        "origin_node": origin[0],
        "origin_seq": origin[1],
        "person": cred.person,
        "targets": json.dumps(list(cred.targets)),
        "max_uses": cred.max_uses,
        "valid_until": cred.valid_until,
        "window_seconds": cred.window,
        "max_session": cred.max_session,
        "issued_at": cred.issued_at,
        "code_hash": code_hash,
    }


@dataclass
class _Pending:
    seq: int
    credential_id: str
    use_id: str
    person: str
    target: str
    session_id: str | None
    time: float
    started: bool = False  # a session start with this use_id
    flagged: bool = False  # ... that the node served without the ledger


class FleetCodes:
    """The node's codes in the fleet's ledger (one per running node)."""

    def __init__(
        self,
        config: FleetConfig,
        store: Store,
        record: Callable[[NewEvent], Awaitable[None]],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.node = config.node
        self.store = store
        self._record = record
        self._clock = clock
        self.spending = Ledger(config, pool_size=SPEND_POOL)
        self.background = Ledger(config, pool_size=1)
        self.in_flight: set[str] = set()  # use_ids whose login has not committed yet
        self._origins: dict[str, tuple[str, int]] = {}
        self._pending: dict[str, _Pending] = {}
        self._position = 0  # the last local seq scanned
        self._started = False

    async def close(self) -> None:
        await self.spending.close()
        await self.background.close()

    # -- the login path ---------------------------------------------------------------

    async def spend(
        self,
        cred: Credential,
        code_hash: str,
        target: str,
        session_id: str,
        use_id: str,
        now: float,
    ) -> SpendOutcome:
        """Record the pending use, then spend it in the ledger. StoreError when the
        pending use cannot be recorded (nothing was asked of the ledger then). The
        caller calls ``finished(use_id)`` once its session start is committed or not."""
        self.in_flight.add(use_id)
        pending = events.CredUsePending(cred.cred_id, use_id, cred.person, target)
        await self.store.append([NewEvent.of(pending, now, session_id)])
        facts = code_facts(cred, code_hash, await self._origin(cred.cred_id))

        async def call(conn: Conn) -> str:
            cur = await conn.execute(
                "SELECT ledger_spend(%s, %s, %s, %s, %s, %s)",
                (use_id, self.node, target, session_id, now, Jsonb(facts)),
            )
            row = await cur.fetchone()
            return str(row[0]) if row else ""

        try:
            answer = await self.spending.run(call, what="spending a code", transaction=False)
        except LedgerUnreachable as exc:
            log.warning("code %s: %s", cred.cred_id, exc)
            return SpendOutcome("unreachable", detail=str(exc))
        outcome = SpendOutcome.of_answer(answer)
        if outcome.kind == "unreachable":
            log.critical("code %s: %s", cred.cred_id, outcome.detail)
        return outcome

    def finished(self, use_id: str) -> None:
        self.in_flight.discard(use_id)

    async def _origin(self, cred_id: str) -> tuple[str, int]:
        """The node and seq of the event that issued ``cred_id`` (from this node's chain)."""
        found = self._origins.get(cred_id)
        if found is None:
            # Issued (by the CLI) since the last round: look its event up once.
            types = [events.CredIssued.TYPE]
            for ev in await self.store.events_between(types, None, None):
                self._note_origin(ev)
            found = self._origins.get(cred_id, (self.node, 0))
        return found

    def _note_origin(self, ev: StoredEvent) -> None:
        cred_id = event_credential_id(ev.type, ev.data)
        if cred_id is not None and ev.type == events.CredIssued.TYPE:
            self._origins.setdefault(cred_id, (self.node, ev.seq))

    # -- the background round ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until ``stop``; a round the ledger does not answer is tried again."""
        while not stop.is_set():
            with contextlib.suppress(LedgerUnreachable, StoreError):
                await self.round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.config.ship_interval)

    async def round(self) -> None:
        """Scan the local chain's new events, publish this node's code changes, settle
        the pending uses. LedgerUnreachable / StoreError: the next round goes on."""
        if not self._started:
            self._position = await self.store.feed_cursor(CURSOR)
            for ev in await self.store.events_between([events.CredIssued.TYPE], None, None):
                self._note_origin(ev)
            self._started = True
        busy = set(self.in_flight)  # taken before the scan: see _settle
        changes: list[StoredEvent] = []
        while True:
            page = await self.store.events_after(self._position, _SCANNED, _PAGE)
            for ev in page:
                self._scan(ev, changes)
                self._position = ev.seq
            if len(page) < _PAGE:
                break
        if changes:
            await self._publish(changes)
        await self._settle(busy)
        unsettled = [p.seq for p in self._pending.values()]
        cursor = min(unsettled) - 1 if unsettled else self._position
        await self.store.save_feed_cursor(CURSOR, cursor, self._clock())

    def _scan(self, ev: StoredEvent, changes: list[StoredEvent]) -> None:
        data = ev.data
        if ev.type == events.CredIssued.TYPE:
            self._note_origin(ev)
            changes.append(ev)
        elif ev.type == events.CredRevoked.TYPE:
            changes.append(ev)
        elif ev.type == events.CredUsePending.TYPE:
            p = events.decode(ev.type, data)
            assert isinstance(p, events.CredUsePending)
            self._pending[p.use_id] = _Pending(
                ev.seq, p.credential_id, p.use_id, p.person, p.target, ev.session_id, ev.time
            )
        elif ev.type == events.SessionStart.TYPE:
            use_id = data.get("use_id")
            found = self._pending.get(use_id) if isinstance(use_id, str) else None
            if found is not None:
                found.started = True
                found.flagged = bool(data.get("ledger_unreachable"))
                if not found.flagged:
                    del self._pending[found.use_id]  # spent in the ledger before it started
        elif ev.type == events.CredUseSettled.TYPE:
            use_id = data.get("use_id")
            if isinstance(use_id, str):
                self._pending.pop(use_id, None)

    # -- publishing -------------------------------------------------------------------

    async def _publish(self, changes: Iterable[StoredEvent]) -> None:
        """This node's issued and revoked codes into ``fleet_credentials``: idempotent,
        and only forward (a revoked code stays revoked, whoever revoked it first)."""
        rows: list[tuple[StoredEvent, dict[str, Any]]] = []
        for ev in changes:
            cred_id = event_credential_id(ev.type, ev.data)
            found = await self.store.get_credential(cred_id) if cred_id else None
            if found is None:
                continue
            origin = await self._origin(found.cred.cred_id)
            rows.append((ev, code_facts(found.cred, found.hash, origin)))

        async def call(conn: Conn) -> None:
            for ev, facts in rows:
                await conn.execute(_INSERT_CODE, facts)
                if ev.type == events.CredRevoked.TYPE:
                    await conn.execute(
                        "UPDATE fleet_credentials SET revoked_at = %s, revoke_reason = %s,"
                        " revoked_by = %s WHERE id = %s AND revoked_at IS NULL",
                        (ev.time, ev.data.get("reason"), self.node, facts["id"]),
                    )

        if rows:
            await self.background.run(call, what="publishing codes")

    # -- settling ---------------------------------------------------------------------

    async def _settle(self, busy: set[str]) -> None:
        """Settle every pending use whose login is over. ``busy`` was taken before the
        scan: a login not in it had committed (or given up) before the scan began, so
        the scan holds its session start if it has one."""
        for p in sorted(self._pending.values(), key=lambda p: p.seq):
            if p.use_id in busy:
                continue
            if p.flagged:
                settled = await self._reconcile(p)
            else:
                settled = await self._ask(p)
            await self._record(NewEvent.of(settled, self._clock(), p.session_id))
            self._pending.pop(p.use_id, None)

    async def _ask(self, p: _Pending) -> events.CredUseSettled:
        """No session started on this use: is it in the ledger (a lost reply, a crash
        after the spend) or not (refused, or never reached it)?"""

        async def call(conn: Conn) -> tuple[bool, int | None, int | None]:
            cur = await conn.execute(
                "SELECT (SELECT count(*) FROM cred_uses WHERE use_id = %s) > 0,"
                " (SELECT count(*) FROM cred_uses WHERE credential_id = %s),"
                " (SELECT max_uses FROM fleet_credentials WHERE id = %s)",
                (p.use_id, p.credential_id, p.credential_id),
            )
            row = await cur.fetchone()
            assert row is not None
            return bool(row[0]), int(row[1]), None if row[2] is None else int(row[2])

        spent, uses, max_uses = await self.background.run(call, what="settling a pending use")
        log.info(
            "pending use %s of code %s settled: %s",
            p.use_id,
            p.credential_id,
            "spent in the ledger" if spent else "not spent",
        )
        return events.CredUseSettled(p.credential_id, p.use_id, spent, False, uses, max_uses)

    async def _reconcile(self, p: _Pending) -> events.CredUseSettled:
        """A use served while the ledger did not answer: record it (once, by use_id: it
        may have been spent already, its reply lost) and check the code fleet-wide."""
        found = await self.store.get_credential(p.credential_id)
        facts = (
            code_facts(found.cred, found.hash, await self._origin(p.credential_id))
            if found is not None
            else None
        )

        async def call(conn: Conn) -> tuple[int, int | None, float | None]:
            if facts is not None:
                await conn.execute(_INSERT_CODE, facts)
            await conn.execute(
                "INSERT INTO cred_uses (use_id, credential_id, node, person, target,"
                " session_id, node_time, offline) VALUES (%s, %s, %s, %s, %s, %s, %s, true)"
                " ON CONFLICT (use_id) DO NOTHING",
                (p.use_id, p.credential_id, self.node, p.person, p.target, p.session_id, p.time),
            )
            cur = await conn.execute(
                "SELECT (SELECT count(*) FROM cred_uses WHERE credential_id = %s),"
                " c.max_uses, c.revoked_at FROM (SELECT %s::text AS id) k"
                " LEFT JOIN fleet_credentials c ON c.id = k.id",
                (p.credential_id, p.credential_id),
            )
            row = await cur.fetchone()
            assert row is not None
            return (
                int(row[0]),
                None if row[1] is None else int(row[1]),
                None if row[2] is None else float(row[2]),
            )

        uses, max_uses, revoked_at = await self.background.run(call, what="reconciling a use")
        over = None
        if max_uses and uses > max_uses:
            over = f"was used {uses} times across the fleet, more than its {max_uses}"
        elif revoked_at is not None and revoked_at <= p.time:
            over = "was used after it was revoked (on a node cut off from the ledger)"
        if over:
            log.critical("code %s %s (use %s)", p.credential_id, over, p.use_id)
        return events.CredUseSettled(p.credential_id, p.use_id, True, True, uses, max_uses, over)
