"""Shipping this node's journal to the fleet's ledger, in the background.

Owns the loop that copies the local chain (events in order, then the casts of recorded
channels while they are live) to the ledger, the local cursor (``feed_cursors`` row
``fleet-ledger``: the last seq this node knows the ledger holds), the heartbeat row in
``node_status`` and the witness events of the peers' checkpoints.

Every round first reads the ledger's last ``(seq, hash)`` of this node and compares it
with the journal:

- the same hash, at the cursor: ship what follows (``INSERT ... ON CONFLICT DO NOTHING``;
  the ledger's trigger refuses a row that does not link to its predecessor);
- another hash at that seq, or a seq past the journal's head: a CONFLICT. Shipping stops
  for good in this run (it never overwrites, never skips) and ``fleet_conflict`` alerts;
- the same hash, before the cursor: the ledger LOST A TAIL (a restore, an asynchronous
  failover). ``fleet_gap`` alerts and the tail is shipped again from there.

Nothing here is on a login's or a session's path: they never wait on the ledger, and
the ledger being down, slow or hung only pauses this task (every call is bounded by the
ledger). Alerts go through the node's own outbox, in its local store. A node whose name
is held by another node, or that is too old for the ledger, keeps serving and does not
ship.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.metadata
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import psycopg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proxy.audit.checkpoint import key_line
from proxy.clock import SYSTEM, Clock
from proxy.config.model import FleetConfig
from proxy.core import events
from proxy.core.chain import GENESIS
from proxy.core.chaincheck import ChainRow
from proxy.core.errors import StoreError
from proxy.core.text import escape
from proxy.fleet import identity, schema
from proxy.fleet.casts import ROUND_BYTES, CastShipper
from proxy.fleet.ledger import Ledger, LedgerUnreachable
from proxy.fleet.witness import Witness
from proxy.store.base import ChainReads, EventLog, FeedStore, NewEvent
from proxy.tasks import TaskOwner

log = logging.getLogger("breakglass")

CURSOR = "fleet-ledger"  # this node's feed cursor: the last seq the ledger holds
BATCH = 500  # events per INSERT transaction
HEARTBEAT_INTERVAL = 1.0

Record = Callable[[NewEvent], Awaitable[None]]


class ShipperStore(FeedStore, ChainReads, EventLog, Protocol):
    """What shipping reads and writes locally: the chain, its cursor, witness events."""


def _version() -> str:
    try:
        return importlib.metadata.version("breakglass")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class Shipper:
    def __init__(
        self,
        fleet: FleetConfig,
        ledger: Ledger,
        store: ShipperStore,
        *,
        recordings: Path,
        node_id: str,
        key: str,
        alert: Record,
        clock: Clock = SYSTEM,
    ) -> None:
        self.fleet = fleet
        self.node = fleet.node
        self.ledger = ledger
        self.store = store
        self.node_id = node_id
        self.key = key
        self.alert = alert
        self.clock = clock
        self.casts = CastShipper(self.node, recordings)
        self.witness = Witness(self.node, fleet.peers)
        self.connected = False  # claimed, and the casts to ship read from the ledger
        self.halted = False  # a conflict: nothing more is shipped in this run
        self.problem: str | None = None  # why it does not ship (node_status.problem)
        self.cursor: int | None = None
        self.cursor_hash = GENESIS
        self.version = _version()
        self._schema = False  # the ledger's tables exist (a heartbeat can be written)
        self._alerted: set[tuple[str, str]] = set()
        self._next_heartbeat = 0.0
        self._next_witness = clock.time() + fleet.witness_interval
        self._down_since: float | None = None
        self._failure: str | None = None  # the failure last logged, while it repeats
        self._stop = asyncio.Event()
        self._tasks = TaskOwner("fleet")

    # -- life ---------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks.spawn(self.run(self._stop), "shipping")

    async def close(self) -> None:
        """Stop the loop, ship once more (what shutdown wrote: its stop, its checkpoint),
        bounded, and close the ledger."""
        self._stop.set()
        try:
            await asyncio.wait_for(self._tasks.wait(), self.fleet.timeout)
        except TimeoutError:  # a round still waiting on a slow ledger: not at shutdown
            await self._tasks.cancel_all()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.fleet.timeout * 4):
                await self._guarded_round()
        await self.ledger.close()

    async def run(self, stop: asyncio.Event) -> None:
        await self.ledger.open()
        while not stop.is_set():
            more = await self._guarded_round()
            if not more:
                await self.clock.wait(self.fleet.ship_interval, stop)

    async def _guarded_round(self) -> bool:
        try:
            more = await self.round()
        except LedgerUnreachable as exc:
            self.connected = False
            if self._down_since is None:
                self._down_since = self.clock.time()
                log.warning(
                    "fleet: shipping paused, the ledger is unreachable (logins do not wait"
                    " on it): %s",
                    exc,
                )
        except StoreError as exc:
            self._failing(f"the local journal cannot be read: {exc}")
        except Exception as exc:  # a bug here must not end shipping, nor the proxy
            self.connected = False
            if self._failing(f"a shipping round failed: {exc!r}"):
                log.exception("fleet: the failure")
        else:
            self._failure = None
            return more
        return False

    def _failing(self, what: str) -> bool:
        """Log a round's failure once while it repeats (rounds come every ship_interval)."""
        if what == self._failure:
            return False
        self._failure = what
        log.error("fleet: shipping paused, %s; retrying", what)
        return True

    async def round(self) -> bool:
        """One round: (re)connect, events, casts, heartbeat, witness. True when more is
        waiting to be shipped at once."""
        if self.cursor is None:
            self.cursor = await self.store.feed_cursor(CURSOR)
            self.cursor_hash = await self._local_hash(self.cursor) or ""
        if not self.connected:
            await self._connect()
        more = False
        if self.connected and not self.halted:
            more = await self._ship_events()
        if self.connected and not self.halted:
            more = await self._ship_casts() or more
        await self._heartbeat()
        if self.connected:
            await self._witness()
        if self._down_since is not None:
            log.warning(
                "fleet: the ledger is reachable again after %.0f s; shipping from seq %d",
                self.clock.time() - self._down_since,
                self.cursor + 1,
            )
            self._down_since = None
        return more

    # -- connecting ---------------------------------------------------------------------

    async def _connect(self) -> None:
        problem, event = await self.ledger.run(self._check_and_claim, what="claim the node name")
        if problem is not None:
            await self._trouble(problem, event)
            return
        self.connected = True
        if not self.halted:
            self.problem = None

    async def _check_and_claim(
        self, conn: psycopg.AsyncConnection[Any]
    ) -> tuple[str | None, events.Event | None]:
        problem = await schema.schema_problem(conn)
        self._schema = problem != schema.NOT_MIGRATED
        if problem == schema.TOO_OLD:
            versions = await schema.ledger_versions(conn)
            needed = versions[1] if versions else 0
            ledger = self.ledger.describe()
            return problem, events.FleetTooOld(ledger, needed, schema.READER_VERSION)
        if problem is not None:
            return problem, None
        pinned = identity.check_pin(self.node, self.key, self.fleet.peers.get(self.node))
        if not pinned.ok:
            return f"name taken: {pinned.detail}", self._taken(pinned.detail)
        claim = await identity.claim(conn, self.node, self.node_id, self.key)
        if not claim.ok:
            return f"name taken: {claim.detail}", self._taken(claim.detail)
        await self.casts.load(conn)
        return None, None

    def _taken(self, detail: str | None) -> events.FleetNameTaken:
        return events.FleetNameTaken(self.ledger.describe(), self.node, self.node_id, detail or "")

    async def _trouble(self, problem: str, event: events.Event | None) -> None:
        """This node does not ship, for ``problem``: said once per run in the log and,
        with ``event``, as an alert (through the local outbox, never the ledger)."""
        self.problem = problem
        said = (event.TYPE if event else "", problem)
        if said in self._alerted:
            return
        self._alerted.add(said)
        log.error("fleet: %s; this node serves locally and does not ship", escape(problem))
        if event is not None:
            await self.alert(NewEvent.of(event, self.clock.time()))

    # -- events -------------------------------------------------------------------------

    async def _local_hash(self, seq: int) -> str | None:
        if seq == 0:
            return GENESIS
        rows = await self.store.chain_rows(seq - 1, 1)
        return rows[0].hash if rows and rows[0].seq == seq else None

    async def _ship_events(self) -> bool:
        assert self.cursor is not None
        rows = await self.store.chain_rows(self.cursor, BATCH)

        async def ship(conn: psycopg.AsyncConnection[Any]) -> tuple[int, str] | None:
            return await self._insert(conn, rows)

        head = await self.ledger.run(ship, what="ship events")
        if head is not None:
            await self._reconcile(*head)
            return not self.halted and self.connected
        if rows:
            self.cursor, self.cursor_hash = rows[-1].seq, rows[-1].hash
            await self.store.save_feed_cursor(CURSOR, self.cursor, self.clock.time())
            self.casts.note(rows)
        return len(rows) == BATCH

    async def _insert(
        self, conn: psycopg.AsyncConnection[Any], rows: Sequence[ChainRow]
    ) -> tuple[int, str] | None:
        """Insert ``rows`` when the ledger's last event of this node is the cursor's; else
        insert nothing and return that event's (seq, hash)."""
        cur = await conn.execute(
            "SELECT seq, hash FROM events WHERE node = %s ORDER BY seq DESC LIMIT 1",
            (self.node,),
        )
        row = await cur.fetchone()
        head = (int(row[0]), str(row[1])) if row else (0, GENESIS)
        if head != (self.cursor, self.cursor_hash):
            return head
        if rows:
            async with conn.cursor() as many:
                await many.executemany(
                    "INSERT INTO events (node, seq, time, type, session_id, channel, data,"
                    " prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (node, seq) DO NOTHING",
                    [(self.node, *dataclasses.astuple(r)) for r in rows],
                )
        return None

    async def _reconcile(self, seq: int, ledger_hash: str) -> None:
        """The ledger's last event of this node is not the cursor's: a conflict, a lost
        tail, or events this node shipped before a crash kept it from saving its cursor."""
        assert self.cursor is not None
        head, _ = await self.store.head()
        local = await self._local_hash(seq) if seq <= head else None
        if local != ledger_hash:
            await self._conflict(seq, local or "", ledger_hash)
            return
        if seq < self.cursor:
            gap = events.FleetGap(self.ledger.describe(), seq, self.cursor)
            log.error(
                "fleet: the ledger lost this node's events %d-%d; shipping them again",
                seq + 1,
                self.cursor,
            )
            await self.alert(NewEvent.of(gap, self.clock.time()))
            self.connected = False  # the casts it lost too are read again from the ledger
        self.cursor, self.cursor_hash = seq, ledger_hash
        await self.store.save_feed_cursor(CURSOR, seq, self.clock.time())

    async def _conflict(self, seq: int, local: str, ledger_hash: str) -> None:
        self.halted = True
        held = "with another hash" if local else "past this node's journal"
        await self._trouble(
            f"conflict: the ledger holds event {seq} of this node {held}",
            events.FleetConflict(self.ledger.describe(), seq, local, ledger_hash),
        )

    # -- casts, heartbeat, witness ------------------------------------------------------

    async def _ship_casts(self) -> bool:
        if self.casts.asking:
            await self.ledger.run(self.casts.ask_offsets, what="read cast offsets")
        chunks = await asyncio.to_thread(self.casts.read)
        if not chunks:
            return False

        async def ship(conn: psycopg.AsyncConnection[Any]) -> None:
            await self.casts.insert(conn, chunks)

        await self.ledger.run(ship, what="ship cast chunks")
        self.casts.shipped(chunks)
        return sum(len(c.data) for c in chunks) >= ROUND_BYTES

    async def _heartbeat(self) -> None:
        now = self.clock.time()
        if now < self._next_heartbeat or not self._schema:
            return
        self._next_heartbeat = now + HEARTBEAT_INTERVAL
        journal_seq, _ = await self.store.head()
        values = (
            self.node,
            self.node_id,
            self.clock.time(),
            journal_seq,
            self.cursor or 0,
            self.casts.unshipped_bytes,
            self.version,
            self.problem,
        )

        async def beat(conn: psycopg.AsyncConnection[Any]) -> None:
            # A node that does not hold its name never overwrites the status of the one
            # that does.
            await conn.execute(
                "INSERT INTO node_status AS s (name, node_id, heartbeat_at, node_time,"
                " journal_seq, shipped_seq, unshipped_bytes, version, problem)"
                " VALUES (%s, %s, now(), %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (name) DO UPDATE SET node_id = EXCLUDED.node_id,"
                " heartbeat_at = EXCLUDED.heartbeat_at, node_time = EXCLUDED.node_time,"
                " journal_seq = EXCLUDED.journal_seq, shipped_seq = EXCLUDED.shipped_seq,"
                " unshipped_bytes = EXCLUDED.unshipped_bytes, version = EXCLUDED.version,"
                " problem = EXCLUDED.problem"
                " WHERE s.node_id = EXCLUDED.node_id OR s.node_id IS DISTINCT FROM"
                " (SELECT node_id FROM nodes WHERE name = EXCLUDED.name)",
                values,
            )

        await self.ledger.run(beat, what="heartbeat")

    async def _witness(self) -> None:
        now = self.clock.time()
        if now < self._next_witness or not self.witness.peers:
            return
        self._next_witness = now + self.fleet.witness_interval
        for witness in await self.ledger.run(self.witness.latest, what="read peer checkpoints"):
            await self.store.append([NewEvent.of(witness, self.clock.time())])
            self.witness.witnessed(witness)


def start(
    fleet: FleetConfig,
    store: ShipperStore,
    recordings: Path,
    checkpoint_key: Ed25519PrivateKey,
    alert: Record,
) -> Shipper:
    """The running node's shipper, started (``serve`` calls it only with ``fleet:``)."""
    node_id = identity.load_or_create_node_id(identity.node_id_path(recordings))
    shipper = Shipper(
        fleet,
        Ledger(fleet),
        store,
        recordings=recordings,
        node_id=node_id,
        key=key_line(checkpoint_key.public_key()),
        alert=alert,
    )
    shipper.start()
    return shipper
