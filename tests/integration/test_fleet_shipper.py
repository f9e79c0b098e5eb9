"""The shipper round by round, in-process: a real SQLite journal, a real PostgreSQL
ledger, and the node's alerts collected where its outbox would take them.

The cases a live node rarely shows on demand: a backlog larger than a batch, a crash
between a batch's commit and the cursor's save, a ledger that holds more of this node
than its journal does.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proxy.audit.checkpoint import key_line
from proxy.config.model import FleetConfig
from proxy.core import events
from proxy.fleet.ledger import Ledger
from proxy.fleet.shipper import BATCH, CURSOR, Shipper
from proxy.store.base import NewEvent, Store
from proxy.store.factory import CREATE, open_store_at
from tests.integration.fleetkit import ledger_rows, local_rows


def shipper_for(
    store: Store, dsn: str, tmp_path: Path, key: str, raised: list[NewEvent]
) -> Shipper:
    fleet = FleetConfig("bg-a", dsn, None, {"bg-a": key}, timeout=5.0)

    async def alert(event: NewEvent) -> None:
        raised.append(event)

    return Shipper(
        fleet,
        Ledger(fleet),
        store,
        recordings=tmp_path,
        node_id="ab" * 16,
        key=key,
        alert=alert,
    )


async def ship_all(shipper: Shipper, rounds: int = 20) -> None:
    """Rounds until nothing more waits (bounded)."""
    for _ in range(rounds):
        if not await shipper.round():
            return
    raise AssertionError(f"still shipping after {rounds} rounds")


async def started(store: Store, count: int) -> None:
    now = time.time()
    for i in range(0, count, 100):
        await store.append(
            [NewEvent.of(events.ProxyStarted(n), now) for n in range(i, min(count, i + 100))]
        )


@pytest.fixture
def key() -> str:
    return key_line(Ed25519PrivateKey.generate().public_key())


async def test_a_backlog_ships_in_batches_and_a_lost_cursor_save_is_no_alarm(
    tmp_path: Path, ledger_dsn: str, key: str
) -> None:
    store = await open_store_at(tmp_path / "audit.db", CREATE)
    raised: list[NewEvent] = []
    try:
        await started(store, 2 * BATCH + 7)
        first = shipper_for(store, ledger_dsn, tmp_path, key, raised)
        await ship_all(first)
        await first.ledger.close()
        assert ledger_rows(ledger_dsn, "bg-a") == local_rows(tmp_path / "audit.db")
        assert await store.feed_cursor(CURSOR) == 2 * BATCH + 7
        # A crash between a batch's commit in the ledger and the cursor's save:
        await store.save_feed_cursor(CURSOR, BATCH, time.time())
        await started(store, 3)
        again = shipper_for(store, ledger_dsn, tmp_path, key, raised)
        await ship_all(again)
        await again.ledger.close()
        assert ledger_rows(ledger_dsn, "bg-a") == local_rows(tmp_path / "audit.db")
        assert raised == []
    finally:
        await store.close()


async def test_a_ledger_holding_more_of_this_node_than_its_journal_is_a_conflict(
    tmp_path: Path, ledger_dsn: str, key: str
) -> None:
    old = await open_store_at(tmp_path / "old.db", CREATE)
    new = await open_store_at(tmp_path / "new.db", CREATE)  # a journal lost and begun again
    raised: list[NewEvent] = []
    try:
        await started(old, 5)
        before = shipper_for(old, ledger_dsn, tmp_path, key, raised)
        await ship_all(before)
        await before.ledger.close()
        await started(new, 2)
        after = shipper_for(new, ledger_dsn, tmp_path, key, raised)
        await ship_all(after)
        await after.ledger.close()
        [alert] = raised
        conflict = alert.typed()
        assert isinstance(conflict, events.FleetConflict)
        assert (conflict.seq, conflict.local_hash) == (5, "")
        assert after.halted
        assert after.problem is not None
        assert "past this node's journal" in after.problem
        assert len(ledger_rows(ledger_dsn, "bg-a")) == 5  # nothing of the new journal
    finally:
        await old.close()
        await new.close()
