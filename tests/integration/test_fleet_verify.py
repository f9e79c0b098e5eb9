"""``breakglass verify`` across a fleet, on a real PostgreSQL ledger.

Two nodes' journals are real chains with real signed checkpoints and witnesses of each
other (``tests/ledgerdata.py``), written into a freshly migrated ledger. Each tamper is
done as the database superuser, past the ledger's triggers, as an attacker holding the
database would; verify must name the node it happened to.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from proxy.audit.checkpoint import sign
from proxy.audit.verify import check_chain
from proxy.cli import main
from proxy.core import events
from proxy.core.chaincheck import Checkpoint, checkpoint_from_data
from proxy.fleet.scan import NodeChain
from proxy.fleet.verify import FleetVerifyResult, fleet_verify_text, verify_fleet
from tests.ledgerdata import Node, fleet_config, heartbeat, load, open_ledger
from tests.pgserver import free_port


@dataclass
class Fleet:
    dsn: str
    a: Node
    b: Node
    witnessed_a: int  # the last event of a's that b witnessed a checkpoint of

    @property
    def peers(self) -> dict[str, str]:
        return {self.a.name: self.a.pin, self.b.name: self.b.pin}

    async def verify(self) -> FleetVerifyResult:
        async with open_ledger(self.dsn, self.a.name, self.peers) as ledger:
            return await verify_fleet(ledger, self.peers, time.time())

    async def tamper(self, *sql: str) -> None:
        """Run ``sql`` as the superuser with the ledger's triggers off."""
        async with await psycopg.AsyncConnection.connect(self.dsn, autocommit=True) as conn:
            await conn.execute("SET session_replication_role = replica")
            for statement in sql:
                await conn.execute(statement.encode())


async def two_nodes(dsn: str) -> Fleet:
    a, b = Node("bg-a"), Node("bg-b")
    await a.session("a-one", b"a" * 250)
    await a.checkpoint()
    await b.session("b-one", bytes(range(256)) * 2)
    await b.checkpoint()
    await a.witness(b)
    await a.session("a-two", b"second session\r\n" * 20)
    await a.append(events.Review("ops", "looked at a-two"), "a-two")
    await a.checkpoint()
    await b.witness(a)  # b saw a's second checkpoint
    await b.checkpoint()
    witnessed = (await a.rows())[-2].seq  # the event a's last checkpoint signs
    await a.append(events.Review("ops", "fine"))  # an event after the last checkpoint
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await load(conn, [a, b])
    return Fleet(dsn, a, b, witnessed)


@pytest.fixture
async def fleet(ledger_dsn: str) -> Fleet:
    return await two_nodes(ledger_dsn)


def kinds(result: FleetVerifyResult) -> list[tuple[str, str]]:
    return [(p.node, p.problem.kind) for p in result.problems]


async def test_a_clean_two_node_ledger_verifies_clean(fleet: Fleet) -> None:
    result = await fleet.verify()
    assert result.ok, fleet_verify_text(result)
    assert [n.node for n in result.nodes] == ["bg-a", "bg-b"]
    a, b = result.nodes
    assert a.events == len(await fleet.a.rows())
    assert (a.casts, b.casts) == ({"ok": 2}, {"ok": 1})
    assert (a.checkpoints, b.checkpoints) == (2, 2)
    assert a.witnessed == {"bg-b": fleet.witnessed_a}
    assert b.witnessed["bg-a"] > 0
    text = fleet_verify_text(result)
    assert "verify: OK" in text
    assert "node bg-a" in text
    assert "node bg-b" in text


async def test_an_edited_event_is_named_with_its_node(fleet: Fleet) -> None:
    await fleet.tamper(
        "UPDATE events SET data = replace(data, 'alice', 'mallory')"
        " WHERE node = 'bg-a' AND type = 'session_start' AND session_id = 'a-two'"
    )
    result = await fleet.verify()
    assert ("bg-a", "event_changed") in kinds(result)
    assert {node for node, _ in kinds(result)} == {"bg-a"}
    text = fleet_verify_text(result)
    assert "[event_changed] bg-a: event" in text
    assert text.endswith("verify: FAILED")


async def test_a_changed_chunk_is_named_with_its_node(fleet: Fleet) -> None:
    await fleet.tamper(
        "UPDATE cast_chunks SET data = overlay(data placing '\\x58'::bytea from 5)"
        " WHERE node = 'bg-b' AND \"offset\" = 100"
    )
    result = await fleet.verify()
    assert kinds(result) == [("bg-b", "recording_altered")]
    assert result.nodes[1].casts == {"MISMATCH": 1}
    assert "b-one/0" in result.problems[0].problem.message


async def test_a_chunk_made_shorter_breaks_the_cast(fleet: Fleet) -> None:
    await fleet.tamper(
        "UPDATE cast_chunks SET data = substr(data, 1, 10)"
        " WHERE node = 'bg-a' AND session_id = 'a-one' AND \"offset\" = 0"
    )
    result = await fleet.verify()
    assert kinds(result) == [("bg-a", "cast_chunks_broken")]


async def test_a_cut_tail_is_caught_only_by_the_peers_witness(fleet: Fleet) -> None:
    cut_from = fleet.witnessed_a  # the review b saw signed, and all after it
    await fleet.tamper(f"DELETE FROM events WHERE node = 'bg-a' AND seq >= {cut_from}")
    # What is left of bg-a's chain is consistent on its own: only the witness tells.
    async with open_ledger(fleet.dsn, "bg-a", fleet.peers) as ledger:
        alone = await check_chain(NodeChain(ledger, "bg-a"), time.time())
    assert alone.problems == []
    assert alone.last_seq == cut_from - 1
    result = await fleet.verify()
    assert kinds(result) == [("bg-a", "events_truncated")]
    message = result.problems[0].problem.message
    assert f"ends at event {cut_from - 1}" in message
    assert "bg-b witnessed" in message
    assert f"signing event {fleet.witnessed_a}" in message


async def test_a_peer_key_replaced_in_the_ledger_is_named(fleet: Fleet) -> None:
    await fleet.tamper(f"UPDATE nodes SET checkpoint_key = '{Node('x').pin}' WHERE name = 'bg-b'")
    result = await fleet.verify()
    assert kinds(result) == [("bg-b", "peer_key_replaced")]
    assert fleet.b.pin[:24] in result.problems[0].problem.message


async def test_a_checkpoint_signed_by_a_wrong_key_is_named(ledger_dsn: str) -> None:
    a, b = Node("bg-a"), Node("bg-b")
    await a.session("a-one", b"a" * 120)
    await a.checkpoint()
    await b.session("b-one", b"b" * 120)
    b.key, real = Node("x").key, b.key  # a checkpoint signed by a key nobody pinned
    await b.checkpoint()
    b.key = real
    async with await psycopg.AsyncConnection.connect(ledger_dsn) as conn:
        await load(conn, [a, b])
    result = await Fleet(ledger_dsn, a, b, 0).verify()
    assert kinds(result) == [("bg-b", "checkpoint_wrong_key")]


async def test_the_ledger_rewritten_with_a_new_key_is_caught_by_the_pin(ledger_dsn: str) -> None:
    """Whoever holds the database rewrites bg-b wholesale: new history, re-hashed, signed
    by a key of their own, the nodes row updated to match. Only the pin tells."""
    a, b = Node("bg-a"), Node("bg-b")
    await a.session("a-one", b"a" * 120)
    await a.checkpoint()
    b.key = Node("forger").key
    await b.session("b-one", b"b" * 120)
    await b.checkpoint()
    async with await psycopg.AsyncConnection.connect(ledger_dsn) as conn:
        await load(conn, [a, b])
    pinned = Node("bg-b")  # the real bg-b's key, as the operator pinned it
    peers = {"bg-a": a.pin, "bg-b": pinned.pin}
    async with open_ledger(ledger_dsn, "bg-a", peers) as ledger:
        result = await verify_fleet(ledger, peers, time.time())
    assert sorted(kinds(result)) == [
        ("bg-b", "checkpoint_wrong_key"),
        ("bg-b", "peer_key_replaced"),
    ]


async def test_a_forged_checkpoint_a_peer_witnessed_is_named(ledger_dsn: str) -> None:
    a, b = Node("bg-a"), Node("bg-b")
    await a.session("a-one", b"a" * 120)
    await a.checkpoint()
    seq, head = await a.store.head()
    forged = sign(Node("forger").key, seq, head, a.tick())
    await b.append(events.PeerWitness("bg-a", seq, head, forged.time, forged.signature, forged.key))
    await b.checkpoint()
    async with await psycopg.AsyncConnection.connect(ledger_dsn) as conn:
        await load(conn, [a, b])
    result = await Fleet(ledger_dsn, a, b, 0).verify()
    assert kinds(result) == [("bg-a", "witness_bad_signature")]
    assert "bg-b witnessed" in result.problems[0].problem.message


async def test_a_node_nobody_pinned_is_named(ledger_dsn: str) -> None:
    a, stranger = Node("bg-a"), Node("bg-x")
    await a.session("a-one", b"a" * 120)
    await a.checkpoint()
    await stranger.session("x-one", b"x" * 120)
    await stranger.checkpoint()
    async with await psycopg.AsyncConnection.connect(ledger_dsn) as conn:
        await load(conn, [a, stranger])
    peers = {"bg-a": a.pin}
    async with open_ledger(ledger_dsn, "bg-a", peers) as ledger:
        result = await verify_fleet(ledger, peers, time.time())
    assert kinds(result) == [("bg-x", "node_unpinned")]


def test_the_verify_command_checks_the_fleet_and_names_the_node(
    ledger_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = asyncio.run(two_nodes(ledger_dsn))
    cfg = fleet_config(tmp_path, ledger_dsn, "bg-a", fleet.peers)
    assert main(["verify", "-c", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "node bg-a" in out
    assert "node bg-b" in out
    assert out.rstrip().endswith(
        "verify: OK, every node's events, links, checkpoints, witnesses and shipped casts check out"
    )

    asyncio.run(
        fleet.tamper(
            "UPDATE events SET data = replace(data, 'alice', 'mallory')"
            " WHERE node = 'bg-b' AND type = 'session_start'"
        )
    )
    assert main(["verify", "-c", str(cfg), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert [(p["node"], p["kind"]) for p in doc["problems"]] == [("bg-b", "event_changed")]
    # --local checks this node's own journal: here there is none, and it says so.
    assert main(["verify", "-c", str(cfg), "--local"]) == 1
    captured = capsys.readouterr()
    assert "audit.db" in captured.err
    assert "ledger" not in captured.err


def test_verify_with_the_ledger_down_fails_and_names_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    dsn = f"postgresql://breakglass@127.0.0.1:{port}/ledger"
    cfg = fleet_config(tmp_path, dsn, "bg-a", {"bg-a": Node("bg-a").pin})
    assert main(["verify", "-c", str(cfg)]) == 1
    captured = capsys.readouterr()
    assert f"127.0.0.1:{port}" in captured.err
    assert "--local" in captured.err
    assert "verify: FAILED" in captured.out


async def test_a_kept_checkpoint_is_checked_against_the_node_whose_pin_signed_it(
    fleet: Fleet,
) -> None:
    rows = await fleet.a.rows()
    last = next(r for r in reversed(rows) if r.type == events.Checkpoint.TYPE)
    kept = checkpoint_from_data(json.loads(last.data_json))
    assert kept is not None
    stranger = sign(Node("x").key, 1, "0" * 64, 1.0)
    unknown = Checkpoint(1, "0" * 64, 1.0, stranger.signature, stranger.key)
    await fleet.tamper(f"DELETE FROM events WHERE node = 'bg-a' AND seq > {kept.seq - 2}")
    async with open_ledger(fleet.dsn, "bg-a", fleet.peers) as ledger:
        result = await verify_fleet(ledger, fleet.peers, time.time(), external=[kept, unknown])
    assert ("bg-a", "events_truncated") in kinds(result)
    assert ("-", "checkpoint_wrong_key") in kinds(result)
    assert result.external == 2


async def test_a_node_behind_in_shipping_is_a_note_until_it_says_it_shipped_all(
    ledger_dsn: str,
) -> None:
    a = Node("bg-a")
    await a.session("a-one", b"a" * 120)
    await a.checkpoint()
    await a.session("a-two", b"b" * 120)
    total = len(await a.rows())
    async with await psycopg.AsyncConnection.connect(ledger_dsn) as conn:
        await load(conn, [a], status=False)
        # a-two's session_end is in the journal, not in the ledger yet.
        await heartbeat(conn, "bg-a", journal_seq=total, shipped_seq=total - 1)
        await conn.commit()
    fleet = Fleet(ledger_dsn, a, Node("bg-b"), 0)
    await fleet.tamper(f"DELETE FROM events WHERE node = 'bg-a' AND seq = {total}")
    peers = {"bg-a": a.pin}
    async with open_ledger(ledger_dsn, "bg-a", peers) as ledger:
        behind = await verify_fleet(ledger, peers, time.time())
    assert behind.ok, fleet_verify_text(behind)
    assert any("a-two has no end" in note for note in behind.nodes[0].notes)
    assert "1 event(s) in its journal are not in the ledger yet" in "".join(behind.nodes[0].notes)

    async with await psycopg.AsyncConnection.connect(ledger_dsn) as conn:
        await heartbeat(conn, "bg-a", journal_seq=total - 1, shipped_seq=total - 1)
        await conn.commit()
    async with open_ledger(ledger_dsn, "bg-a", peers) as ledger:
        caught_up = await verify_fleet(ledger, peers, time.time())
    assert kinds(caught_up) == [("bg-a", "session_without_end")]


async def test_hostile_names_in_the_ledger_reach_the_report_escaped(fleet: Fleet) -> None:
    evil = "bg-\x1b[2J\u202e"
    await fleet.tamper(
        "INSERT INTO nodes (name, node_id, checkpoint_key) VALUES"
        f" ('{evil}', 'x', 'ed25519 \x1b]52;c;aGk=\x07')"
    )
    result = await fleet.verify()
    assert (evil, "node_unpinned") in kinds(result)
    text = fleet_verify_text(result)
    assert "\x1b" not in text
    assert "\u202e" not in text
    assert "bg-\\x1b[2J" in text
