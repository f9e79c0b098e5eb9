"""Spending codes in a real PostgreSQL ledger from nodes' real SQLite journals: the race
for the last use, a lost reply, the ledger down (served, then reconciled; over-spent
alerts), pending uses settled after a crash, the ledger's clock, revocations published
by another node, and a row that disagrees with the node's copy.

The nodes here are ``FleetCodes`` over their own store in this process (what ``serve``
runs), so a test can stop a node exactly between two steps.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from proxy.config.model import FleetConfig
from proxy.core import anomaly, events
from proxy.core.credentials import Credential
from proxy.core.fleetuse import SpendOutcome
from proxy.core.settings import AlertRules
from proxy.fleet.codes import FleetCodes
from proxy.fleet.ledger import LedgerUnreachable
from proxy.store.base import NewEvent
from proxy.store.sqlite import SQLiteStore
from tests.pgserver import HangRelay

PERSON = "alice"
KEY = "ed25519 " + "0" * 64
_ids = (f"C{n:05d}" for n in itertools.count())


def config(dsn: str, node: str, timeout: float = 2.0) -> FleetConfig:
    return FleetConfig(node=node, postgres=dsn, peers={node: KEY}, timeout=timeout)


def new_code(**changes: Any) -> Credential:
    now = time.time()
    base: dict[str, Any] = {
        "cred_id": next(_ids),
        "person": PERSON,
        "issued_by": "test",
        "issued_at": now,
        "valid_until": now + 3600,
        "window": 3600.0,
        "max_uses": 1,
        "uses": 0,
        "targets": ("*",),
        "max_session": None,
        "activated_at": None,
        "revoked_at": None,
        "revoke_reason": None,
    }
    return Credential(**{**base, **changes})


@dataclass
class Node:
    codes: FleetCodes
    store: SQLiteStore
    recorded: list[NewEvent] = field(default_factory=list)

    async def issue(self, cred: Credential) -> None:
        issued = events.CredIssued(PERSON, id=cred.cred_id, by="test")
        await self.store.issue_credential(cred, "argon2-" + cred.cred_id, NewEvent.of(issued, 1.0))

    async def spend(self, cred: Credential, use_id: str, now: float | None = None) -> SpendOutcome:
        found = await self.store.get_credential(cred.cred_id)
        assert found is not None
        outcome = await self.codes.spend(
            found.cred, found.hash, "db01", "S-" + use_id, use_id, now or time.time()
        )
        self.codes.finished(use_id)
        return outcome

    async def start(self, cred: Credential, use_id: str, *, flagged: bool) -> None:
        """What the login commits after the spend: the session start with its use_id."""
        start = events.SessionStart(
            PERSON, cred.cred_id, "127.0.0.1", "ssh", "db01", "root", "ticket 1 test", 0.0
        )
        data = {**start.data(), "use_id": use_id}
        if flagged:
            data["ledger_unreachable"] = True
        await self.store.append([NewEvent("session_start", time.time(), "S-" + use_id, None, data)])

    def settled(self) -> list[events.CredUseSettled]:
        out = []
        for ev in self.recorded:
            typed = ev.typed()
            if isinstance(typed, events.CredUseSettled):
                out.append(typed)
        return out


@asynccontextmanager
async def node(tmp_path: Path, dsn: str, name: str, bound: float = 2.0) -> AsyncIterator[Node]:
    store = await SQLiteStore.open(tmp_path / f"{name}.db")
    recorded: list[NewEvent] = []

    async def record(event: NewEvent) -> None:
        await store.append([event])
        recorded.append(event)

    codes = FleetCodes(config(dsn, name, bound), store, record)
    try:
        yield Node(codes, store, recorded)
    finally:
        await codes.close()
        await store.close()


def ledger(dsn: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return list(cur.fetchall()) if cur.description is not None else []


def uses_of(dsn: str, cred: Credential) -> int:
    return int(
        ledger(dsn, "SELECT count(*) FROM cred_uses WHERE credential_id = %s", (cred.cred_id,))[0][
            0
        ]
    )


def port_of(dsn: str) -> int:
    return int(psycopg.conninfo.conninfo_to_dict(dsn)["port"] or 5432)


def through(relay: HangRelay, dsn: str) -> str:
    """``dsn`` by way of ``relay``."""
    return psycopg.conninfo.make_conninfo(dsn, host="127.0.0.1", port=str(relay.port))


def run(coro_fn: Callable[[], Any]) -> None:
    asyncio.run(coro_fn())


# ------------------------------------------------------------------------ the race


def test_two_nodes_race_for_the_last_use_and_exactly_one_wins_each_round(
    tmp_path: Path, ledger_dsn: str
) -> None:
    async def main() -> None:
        async with node(tmp_path, ledger_dsn, "bg-a") as a, node(tmp_path, ledger_dsn, "bg-b") as b:
            codes = []
            for n in range(20):
                cred = new_code()
                codes.append(cred)
                await a.issue(cred)
                await b.issue(cred)
                got = await asyncio.gather(a.spend(cred, f"a{n}"), b.spend(cred, f"b{n}"))
                kinds = sorted(o.kind for o in got)
                assert kinds == ["refused", "spent"], (n, got)
                assert [o.reason for o in got if o.kind == "refused"] == ["spent"]
            for cred in codes:
                assert uses_of(ledger_dsn, cred) == 1
            assert ledger(ledger_dsn, "SELECT count(*) FROM cred_uses")[0][0] == 20

    run(main)


# --------------------------------------------------------------- a reply lost, a crash


def test_a_spend_whose_reply_is_lost_is_counted_once(tmp_path: Path, ledger_dsn: str) -> None:
    with HangRelay(port_of(ledger_dsn)) as relay:
        relayed = through(relay, ledger_dsn)

        async def main() -> None:
            async with node(tmp_path, relayed, "bg-a", bound=1.0) as a:
                warm, cred = new_code(), new_code()
                await a.issue(warm)
                await a.issue(cred)
                assert (await a.spend(warm, "warm")).kind == "spent"  # a connection is idle
                relay.drop_replies()
                outcome = await a.spend(cred, "lost")
                assert outcome.kind == "unreachable", outcome
                relay.resume()
                # Served on the node's copy (fleet.unreachable: serve), flagged.
                await a.start(cred, "lost", flagged=True)
                await a.codes.round()
                (settled,) = [s for s in a.settled() if s.use_id == "lost"]
                assert (settled.spent, settled.offline, settled.uses, settled.over) == (
                    True,
                    True,
                    1,
                    None,
                )

        run(main)
    rows = ledger(ledger_dsn, "SELECT offline FROM cred_uses WHERE use_id = 'lost'")
    assert rows == [(False,)], "committed by the spend itself, before its reply was lost"


def test_pending_uses_left_by_a_crash_are_settled_by_the_ledger(
    tmp_path: Path, ledger_dsn: str
) -> None:
    with HangRelay(port_of(ledger_dsn)) as relay:
        relayed = through(relay, ledger_dsn)

        async def crashed() -> None:
            async with node(tmp_path, relayed, "bg-a", bound=0.5) as a:
                spent, lost = new_code(), new_code()
                await a.issue(spent)
                await a.issue(lost)
                assert (await a.spend(spent, "u-spent")).kind == "spent"
                relay.hang()
                assert (await a.spend(lost, "u-never")).kind == "unreachable"
                # ... and the node dies before either session start is committed.

        run(crashed)
    # The relay is gone with the request it held: the ledger never saw it.

    async def restarted() -> None:
        async with node(tmp_path, ledger_dsn, "bg-a") as a:
            await a.codes.round()
            got = {s.use_id: s.spent for s in a.settled()}
            assert got == {"u-spent": True, "u-never": False}
            await a.codes.round()  # settled once: the cursor moved past them
            assert len(a.settled()) == 2

    run(restarted)


# ---------------------------------------------------------------- the ledger is down


def test_uses_served_without_the_ledger_are_reconciled_and_an_overspent_code_alerts(
    tmp_path: Path, ledger_dsn: str
) -> None:
    with HangRelay(port_of(ledger_dsn)) as relay:
        relayed = through(relay, ledger_dsn)

        async def main() -> None:
            async with (
                node(tmp_path, relayed, "bg-a", bound=0.5) as a,
                node(tmp_path, ledger_dsn, "bg-b") as b,
            ):
                cred = new_code(max_uses=1)
                await a.issue(cred)
                await b.issue(cred)
                relay.hang()  # a is cut off from the ledger
                assert (await a.spend(cred, "on-a")).kind == "unreachable"
                await a.start(cred, "on-a", flagged=True)
                assert (await b.spend(cred, "on-b")).kind == "spent"
                with pytest.raises(LedgerUnreachable):  # still cut off: nothing settled
                    await a.codes.round()
                assert a.settled() == []
                relay.resume()
                await a.codes.round()
                (settled,) = a.settled()
                assert (settled.use_id, settled.offline, settled.uses) == ("on-a", True, 2)
                assert settled.over is not None
                assert "more than its 1" in settled.over
                fired = anomaly.evaluate(settled, AlertRules(), anomaly.History(), time.time())
                assert [f.rule for f in fired] == ["code_overspent"]

        run(main)
    assert ledger(ledger_dsn, "SELECT use_id, offline FROM cred_uses ORDER BY use_id") == [
        ("on-a", True),
        ("on-b", False),
    ]


# ----------------------------------------------------------- the ledger decides rules


def test_the_ledgers_clock_decides_a_codes_window_not_the_nodes(
    tmp_path: Path, ledger_dsn: str
) -> None:
    async def main() -> None:
        async with node(tmp_path, ledger_dsn, "bg-a") as a:
            skew = -600.0  # this node's clock is 10 minutes behind
            expired = new_code(valid_until=time.time() - 5, max_uses=0)
            await a.issue(expired)
            outcome = await a.spend(expired, "late", now=time.time() + skew)
            assert (outcome.kind, outcome.reason) == ("refused", "expired")

            burnt = new_code(window=60.0, max_uses=0)
            await a.issue(burnt)
            assert (await a.spend(burnt, "first")).kind == "spent"
            # Its first use was two minutes ago by the ledger's clock.
            # (Moving it back takes the superuser turning the forward-only rule off.)
            trigger = "fleet_credentials_forward"
            ledger(ledger_dsn, f"ALTER TABLE fleet_credentials DISABLE TRIGGER {trigger}")
            ledger(
                ledger_dsn,
                "UPDATE fleet_credentials SET activated_at = now() - interval '120 seconds'"
                " WHERE id = %s",
                (burnt.cred_id,),
            )
            ledger(ledger_dsn, f"ALTER TABLE fleet_credentials ENABLE TRIGGER {trigger}")
            outcome = await a.spend(burnt, "again", now=time.time() + skew)
            assert (outcome.kind, outcome.reason) == ("refused", "burnt")

    run(main)


def test_a_revocation_published_by_one_node_refuses_the_code_on_another(
    tmp_path: Path, ledger_dsn: str
) -> None:
    async def main() -> None:
        async with node(tmp_path, ledger_dsn, "bg-a") as a, node(tmp_path, ledger_dsn, "bg-b") as b:
            cred = new_code(max_uses=0)
            await a.issue(cred)
            await a.codes.round()  # published by its origin
            await b.issue(cred)
            assert (await a.spend(cred, "before")).kind == "spent"
            await b.store.revoke_credential(cred.cred_id, "lost laptop", "bob", time.time())
            await b.codes.round()
            outcome = await a.spend(cred, "after")
            assert (outcome.kind, outcome.reason) == ("refused", "revoked")
            row = ledger(
                ledger_dsn,
                "SELECT origin_node, revoked_by, revoke_reason, code_hash FROM fleet_credentials",
            )
            assert row == [("bg-a", "bg-b", "lost laptop", "argon2-" + cred.cred_id)]

    run(main)


def test_a_ledger_row_that_differs_from_the_nodes_copy_is_not_trusted(
    tmp_path: Path, ledger_dsn: str
) -> None:
    async def main() -> None:
        async with node(tmp_path, ledger_dsn, "bg-a") as a:
            cred = new_code(max_uses=1)
            await a.issue(cred)
            # Someone with database access wrote the code's row first, with no limit.
            ledger(
                ledger_dsn,
                "INSERT INTO fleet_credentials (id, origin_node, origin_seq, person, targets,"
                " max_uses, valid_until, window_seconds, issued_at, code_hash)"
                " VALUES (%s, 'bg-a', 1, %s, '[\"*\"]', 0, %s, %s, %s, %s)",
                (
                    cred.cred_id,
                    PERSON,
                    cred.valid_until,
                    cred.window,
                    cred.issued_at,
                    "argon2-" + cred.cred_id,
                ),
            )
            outcome = await a.spend(cred, "u1")
            assert outcome.kind == "unreachable"
            assert "differs from its origin" in outcome.detail
            assert uses_of(ledger_dsn, cred) == 0

    run(main)


def test_ledger_codes_only_move_forward_and_uses_are_append_only(ledger_dsn: str) -> None:
    ledger(
        ledger_dsn,
        "INSERT INTO fleet_credentials (id, origin_node, origin_seq, person, targets, max_uses,"
        " valid_until, window_seconds, issued_at, code_hash, revoked_at)"
        " VALUES ('X00001', 'bg-a', 1, 'alice', '[]', 1, 0, 0, 0, 'h', 5)",
    )
    ledger(
        ledger_dsn,
        "INSERT INTO cred_uses (use_id, credential_id, node, person, target, node_time)"
        " VALUES ('u', 'X00001', 'bg-a', 'alice', 'db01', 0)",
    )
    for sql in (
        "UPDATE fleet_credentials SET revoked_at = NULL",
        "UPDATE fleet_credentials SET max_uses = 0",
        "DELETE FROM fleet_credentials",
        "UPDATE cred_uses SET credential_id = 'Y'",
        "DELETE FROM cred_uses",
        "TRUNCATE cred_uses",
    ):
        with pytest.raises(psycopg.errors.RaiseException):
            ledger(ledger_dsn, sql)
    assert ledger(ledger_dsn, "SELECT count(*) FROM cred_uses") == [(1,)]
