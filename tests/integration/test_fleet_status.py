"""``breakglass fleet status`` on a real PostgreSQL ledger: every node, what it has not
shipped yet, when it last reached the ledger, and a clock more than 2 s off the ledger's
flagged."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psycopg
import pytest

from proxy.cli import main
from proxy.fleet.status import CLOCK_LIMIT, fleet_status, status_text
from tests.ledgerdata import Node, fleet_config, heartbeat, load, open_ledger
from tests.pgserver import free_port


async def test_status_shows_every_node_its_lag_and_flags_a_clock_offset(ledger_dsn: str) -> None:
    a, b = Node("bg-a"), Node("bg-b")
    await a.session("a-one", b"a" * 300)
    await b.session("b-one", b"b" * 300)
    async with await psycopg.AsyncConnection.connect(ledger_dsn) as conn:
        await load(conn, [a, b], status=False)
        last_a, last_b = len(await a.rows()), len(await b.rows())
        await heartbeat(
            conn,
            "bg-a",
            journal_seq=last_a + 7,
            shipped_seq=last_a,
            unshipped_bytes=4096,
            clock_offset=0.3,
        )
        await heartbeat(
            conn,
            "bg-b",
            journal_seq=last_b,
            shipped_seq=last_b,
            clock_offset=CLOCK_LIMIT + 3,
            ago=90,
            problem="ledger conflict at event 3",
        )
        await conn.commit()
    peers = {"bg-a": a.pin, "bg-b": b.pin, "bg-c": Node("bg-c").pin}
    async with open_ledger(ledger_dsn, "bg-a", peers) as ledger:
        status = await fleet_status(ledger, peers)

    assert [n.node for n in status.nodes] == ["bg-a", "bg-b", "bg-c"]
    na, nb, nc = status.nodes
    assert (na.unshipped_events, na.unshipped_bytes, na.ledger_seq) == (7, 4096, last_a)
    assert na.clock_offset is not None
    assert abs(na.clock_offset - 0.3) < 0.01
    assert na.age is not None
    assert na.age < 30
    assert na.flags == []
    assert nb.unshipped_events == 0
    assert nb.age is not None
    assert 89 < nb.age < 900
    assert nb.flags == ["silent for 1m30s", "clock off by +5.0 s"]
    assert nb.problem == "ledger conflict at event 3"
    assert (nc.claimed, nc.heartbeat, nc.flags) == (False, None, ["never reached the ledger"])

    lines = status_text(status).splitlines()
    row = {line.split()[0]: line for line in lines[2:]}
    assert "7 ev, 4KiB" in row["bg-a"]
    assert "+0.30 s" in row["bg-a"]
    assert "FLAG" not in row["bg-a"]
    assert "FLAG: clock off by +5.0 s" in row["bg-b"]
    assert "ledger conflict" in row["bg-b"]
    assert "FLAG: never reached the ledger" in row["bg-c"]


async def test_status_flags_a_node_whose_shipped_tail_the_ledger_lost(ledger_dsn: str) -> None:
    a = Node("bg-a")
    await a.session("a-one", b"a" * 300)
    async with await psycopg.AsyncConnection.connect(ledger_dsn) as conn:
        await load(conn, [a], status=False)
        last = len(await a.rows())
        await heartbeat(conn, "bg-a", journal_seq=last + 5, shipped_seq=last + 5)
        await conn.commit()
    async with open_ledger(ledger_dsn, "bg-a", {"bg-a": a.pin}) as ledger:
        status = await fleet_status(ledger, {"bg-a": a.pin})
    assert status.nodes[0].flags == [f"ledger lacks events {last + 1}..{last + 5} it shipped"]


def test_the_fleet_status_command(
    ledger_dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = Node("bg-a")

    async def build() -> None:
        await a.session("a-one", b"a" * 300)
        async with await psycopg.AsyncConnection.connect(ledger_dsn) as conn:
            await load(conn, [a])

    asyncio.run(build())
    cfg = fleet_config(tmp_path, ledger_dsn, "bg-a", {"bg-a": a.pin, "bg-b": Node("bg-b").pin})
    assert main(["fleet", "status", "-c", str(cfg)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ledger postgresql://")
    assert lines[2].startswith("bg-a ")
    assert "FLAG" not in lines[2]
    assert lines[3].startswith("bg-b ")
    assert "never reached the ledger" in lines[3]
    assert main(["fleet", "status", "-c", str(cfg), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [(n["node"], n["ledger_seq"]) for n in doc["nodes"]] == [("bg-a", 4), ("bg-b", 0)]


def test_fleet_status_with_the_ledger_down_exits_1_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    dsn = f"postgresql://breakglass@127.0.0.1:{port}/ledger"
    cfg = fleet_config(tmp_path, dsn, "bg-a", {"bg-a": Node("bg-a").pin})
    assert main(["fleet", "status", "-c", str(cfg)]) == 1
    captured = capsys.readouterr()
    assert f"127.0.0.1:{port}" in captured.err
    assert captured.out == ""
