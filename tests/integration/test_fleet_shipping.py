"""Each node ships its journal to the PostgreSQL ledger: real nodes (``breakglass serve``),
a real PostgreSQL, the real OpenSSH client.

The ledger holds each node's events byte for byte as its chain stores them, and the casts
of live channels while they run; the ledger down, hung or restored from an older dump
never touches a login, and shipping catches up (or alerts) by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from proxy.audit.checkpoint import key_path
from proxy.core.chain import GENESIS
from proxy.fleet import schema
from tests.integration.conftest import TARGET, standard_targets
from tests.integration.fleetkit import (
    Fleet,
    Row,
    data_of,
    fleet_section,
    ledger_cast,
    ledger_rows,
    local_rows,
    make_key,
    query,
    start_fleet,
    status,
)
from tests.integration.harness import (
    Deployment,
    ProxyProcess,
    SshdTarget,
    new_person,
    read_events,
)
from tests.pgserver import HangRelay, PgServer
from tests.waiting import eventually

LOGIN_BOUND = 20.0  # a login takes ~1-2 s here, on a loaded machine: 10x and more
# A stop waits on the ledger for at most about 5x fleet.timeout (the round under way,
# then one last bounded round): 2 s here.
STOP_BOUND = 30.0
# What a node SIGKILLed may not have shipped yet: the bounds (about 1 s of events,
# 5 s of cast data), with room for a loaded machine on the events' side.
EVENT_LAG = 2.0
CAST_LAG = 5.0


Start = Callable[..., Fleet]


@pytest.fixture
def start(
    tmp_path: Path, ledger_dsn: str, target: SshdTarget, other_target: SshdTarget
) -> Iterator[Start]:
    """Starts nodes on the test's ledger: ``start("bg-a", "bg-b", ship_interval=0.5)``;
    each is stopped at the end of the test."""
    started: list[Fleet] = []

    def start(*names: str, **options: Any) -> Fleet:
        fleet = start_fleet(
            tmp_path,
            list(names or ["bg-a"]),
            ledger_dsn,
            standard_targets(target, other_target),
            {TARGET: target},
            **options,
        )
        started.append(fleet)
        return fleet

    yield start
    for fleet in started:
        fleet.stop()


def shipped_all(fleet: Fleet, name: str) -> bool:
    """The ledger holds exactly the node's chain."""
    node = fleet.nodes[name]
    return ledger_rows(fleet.dsn, name) == local_rows(node.database)


def login(node: Deployment, command: str = "echo up") -> float:
    """A whole session on ``node``; how long it took."""
    person = new_person()
    code = node.code(person)
    began = time.monotonic()
    result = node.ssh(person, TARGET, code, command)
    took = time.monotonic() - began
    assert result.returncode == 0, result.describe()
    assert b"up" in result.stdout, result.describe()
    return took


def alerted(node: Deployment, rule: str) -> list[dict[str, Any]]:
    """The node's alerts of ``rule``, from its own store (the outbox path)."""
    return [
        e.data
        for e in read_events(node.database)
        if e.type == "alert" and e.data.get("rule") == rule
    ]


def wait_shipped(fleet: Fleet, name: str = "bg-a", within: float = 20) -> None:
    eventually(partial(shipped_all, fleet, name), within=within, what=f"{name}'s whole chain")


def local_id(session: dict[str, Any]) -> str:
    """The session's id in its node's journal (with a fleet, commands say NODE/SESSION)."""
    return str(session["id"]).rsplit("/", 1)[-1]


def session_event(dsn: str, session_id: str, type_: str) -> Row | None:
    rows = ledger_rows(dsn, "bg-a")
    return next((r for r in rows if r[3] == session_id and r[2] == type_), None)


def node_role(pg: PgServer, dsn: str) -> str:
    """The DSN of a role with exactly the nodes' rights (``fleet migrate --grant``)."""
    pg.create_role("bg_node")
    database = dsn.rsplit("/", 1)[1]

    async def grant() -> None:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await schema.grant(conn, "bg_node")

    asyncio.run(grant())
    return pg.dsn(database, "bg_node")


def test_a_session_reaches_the_ledger_with_its_cast_while_live(
    start: Start, pg_server: PgServer, ledger_dsn: str
) -> None:
    # The nodes log in as the role `fleet migrate --grant` makes: what they do, it allows.
    fleet = start("bg-a", "bg-b", ship_to=node_role(pg_server, ledger_dsn))
    a = fleet.nodes["bg-a"]
    person = new_person()
    marker = f"MARK-{person}"
    run = a.ssh_start(person, TARGET, a.code(person), f"echo {marker}; cat")
    sid = local_id(a.wait_for_session(person, ended=False))

    def cast_in_ledger() -> bytes | None:
        cast = ledger_cast(fleet.dsn, "bg-a", sid, 1)
        return cast if marker.encode() in cast else None

    eventually(cast_in_ledger, within=20, what="the live channel's output in the ledger")
    assert run.process.poll() is None, "the session ended before its cast was in the ledger"
    assert session_event(fleet.dsn, sid, "session_start") is not None
    assert session_event(fleet.dsn, sid, "session_end") is None

    assert run.wait(stdin=b"", timeout=30).returncode == 0
    done = a.wait_for_session(person)
    wait_shipped(fleet)
    [channel] = done["channels"]
    local_cast = (a.recordings / channel["recording"]).read_bytes()
    in_ledger = eventually(
        lambda: (c := ledger_cast(fleet.dsn, "bg-a", sid, 1)) == local_cast and c,
        within=20,
        what="the whole cast in the ledger",
    )
    assert hashlib.sha256(in_ledger).hexdigest() == channel["recording_sha256"]
    # Node b shipped its own chain, under its own name; each heartbeat says how far.
    wait_shipped(fleet, "bg-b")
    shipped = len(local_rows(a.database))
    beat = eventually(
        lambda: (s := status(fleet.dsn, "bg-a")) and s["shipped_seq"] >= shipped and s,
        within=20,
        what="bg-a's heartbeat",
    )
    assert beat["problem"] is None


def test_logins_do_not_wait_on_a_stopped_ledger_and_shipping_catches_up(
    start: Start, pg_server: PgServer
) -> None:
    fleet = start("bg-a", "bg-b")
    for name in fleet.nodes:
        wait_shipped(fleet, name)
    pg_server.stop()
    try:
        took = [login(node) for node in fleet.nodes.values() for _ in range(2)]
        assert max(took) < LOGIN_BOUND, took
        a = fleet.nodes["bg-a"]
        eventually(
            lambda: "the ledger is unreachable" in a.proxy.log(),
            within=20,
            what="bg-a saying the ledger is unreachable",
        )
    finally:
        pg_server.start()
    for name in fleet.nodes:
        wait_shipped(fleet, name, within=40)
    assert "reachable again" in fleet.nodes["bg-a"].proxy.log()


def test_a_hung_ledger_does_not_delay_logins_nor_a_stop_or_a_start(
    start: Start, ledger_dsn: str, pg_server: PgServer
) -> None:
    with HangRelay(pg_server.port) as relay:
        via = ledger_dsn.replace(f":{pg_server.port}/", f":{relay.port}/")
        fleet = start(ship_to=via)
        a = fleet.nodes["bg-a"]
        wait_shipped(fleet)
        relay.hang()
        took = [login(a) for _ in range(3)]
        assert max(took) < LOGIN_BOUND, took
        assert not shipped_all(fleet, "bg-a")  # the ledger really was out of reach
        began = time.monotonic()
        assert a.stop() == 0
        stopping = time.monotonic() - began
        assert stopping < STOP_BOUND, stopping
        a.proxy = ProxyProcess.start(a.config)
        took.append(login(a))
        assert max(took) < LOGIN_BOUND, took
        relay.resume()
        wait_shipped(fleet, within=40)


def test_a_node_killed_mid_session_loses_at_most_seconds_and_ends_it_interrupted(
    start: Start,
) -> None:
    fleet = start(ship_interval=0.5)  # the default
    a = fleet.nodes["bg-a"]
    person = new_person()
    # Output every 50 ms (bounded: 60 s at most), and events from other sessions.
    loop = "i=0; while [ $i -lt 1200 ]; do echo line-$i; i=$((i+1)); sleep 0.05; done"
    run = a.ssh_start(person, TARGET, a.code(person), loop)
    sid = local_id(a.wait_for_session(person, ended=False))
    eventually(
        lambda: b"line-40" in ledger_cast(fleet.dsn, "bg-a", sid, 1),
        within=30,
        what="the live cast in the ledger",
    )
    for _ in range(2):
        login(a)
    a.proxy.process.kill()
    killed_at = time.time()
    a.proxy.process.wait(timeout=10)
    run.kill()

    local, shipped = local_rows(a.database), ledger_rows(fleet.dsn, "bg-a")
    assert shipped == local[: len(shipped)]
    missing = local[len(shipped) :]
    assert all(r[1] > killed_at - EVENT_LAG for r in missing), (killed_at, missing)
    path = a.recordings / sid[:4] / sid / "1.cast"
    on_disk, in_ledger = path.read_bytes(), ledger_cast(fleet.dsn, "bg-a", sid, 1)
    assert on_disk.startswith(in_ledger)
    began = json.loads(on_disk.split(b"\n", 1)[0])["timestamp"]
    rest = [json.loads(line) for line in on_disk[len(in_ledger) :].splitlines()[:1]]
    # The first line the ledger lacks was written less than CAST_LAG before the kill
    # (the header's start is whole seconds, rounded down: this errs on the strict side).
    assert all(began + line[0] > killed_at - CAST_LAG for line in rest), (killed_at, rest)

    a.proxy = ProxyProcess.start(a.config)
    end = eventually(
        lambda: session_event(fleet.dsn, sid, "session_end"),
        within=30,
        what="the interrupted end in the ledger",
    )
    assert data_of(end)["reason"] == "interrupted"
    wait_shipped(fleet)
    channel_end = session_event(fleet.dsn, sid, "channel_end")
    assert channel_end is not None

    def recovered() -> bytes | None:
        cast = ledger_cast(fleet.dsn, "bg-a", sid, 1)
        return cast if cast == path.read_bytes() else None

    whole = eventually(recovered, within=20, what="the recovered cast in the ledger")
    assert hashlib.sha256(whole).hexdigest() == data_of(channel_end)["recording_sha256"]


def test_a_ledger_restored_from_an_older_dump_gets_the_gap_again_with_an_alert(
    start: Start, ledger_dsn: str, pg_server: PgServer
) -> None:
    fleet = start()
    a = fleet.nodes["bg-a"]
    login(a)
    wait_shipped(fleet)
    database = ledger_dsn.rsplit("/", 1)[1]
    dump = pg_server.dump(database)
    before = len(ledger_rows(fleet.dsn, "bg-a"))
    login(a, "echo up; echo after-the-dump")
    wait_shipped(fleet)
    after = len(ledger_rows(fleet.dsn, "bg-a"))
    pg_server.restore(database, dump)
    [gap] = eventually(lambda: alerted(a, "fleet_gap"), within=30, what="a fleet_gap alert")
    assert f"-{after}: shipping them again" in gap["detail"]
    wait_shipped(fleet, within=30)
    rows = ledger_rows(fleet.dsn, "bg-a")
    [event] = [data_of(r) for r in rows if r[2] == "fleet_gap"]
    # The dump held `before` events (a restore may hold fewer: the tail is shipped again).
    assert event["ledger_seq"] <= before
    assert event["shipped_seq"] == after
    ends = [r for r in rows if r[2] == "channel_end"]
    assert len(ends) == 2
    for r in ends:
        cast = ledger_cast(fleet.dsn, "bg-a", str(r[3]), int(r[4] or 0))
        assert hashlib.sha256(cast).hexdigest() == data_of(r)["recording_sha256"]


@pytest.mark.parametrize("same_key", [True, False], ids=["cloned-key", "own-key"])
def test_a_second_node_with_the_same_name_does_not_ship_and_alerts(
    same_key: bool,
    start: Start,
    tmp_path: Path,
    ledger_dsn: str,
    target: SshdTarget,
    other_target: SshdTarget,
) -> None:
    fleet = start()
    first = fleet.nodes["bg-a"]
    wait_shipped(fleet)
    peers = {"bg-a": make_key(tmp_path / "bg-a")}
    (tmp_path / "clone" / "recordings").mkdir(mode=0o700, parents=True)
    if same_key:  # a copy of the first node's disk, all but its node id
        key = key_path(tmp_path / "bg-a" / "recordings")
        shutil.copy2(key, key_path(tmp_path / "clone" / "recordings"))
    clone = Deployment.start(
        tmp_path / "clone",
        standard_targets(target, other_target),
        sshd_targets={TARGET: target},
        fleet=fleet_section("bg-a", ledger_dsn, peers),
    )
    try:
        [alert] = eventually(
            lambda: alerted(clone, "fleet_name_taken"), within=20, what="the clone's alert"
        )
        assert "bg-a is taken" in alert["detail"]
        login(clone)  # it serves locally all the same
        login(first)
        wait_shipped(fleet)
        # An absence has no event to wait for: several of the clone's 0.2 s rounds pass.
        time.sleep(1)
        assert shipped_all(fleet, "bg-a")
        first_id = (first.recordings / "fleet-node-id").read_text().strip()
        assert (status(fleet.dsn, "bg-a") or {}).get("node_id") == first_id
    finally:
        clone.stop()


def test_a_conflicting_event_in_the_ledger_stops_shipping_with_an_alert(
    start: Start, ledger_dsn: str
) -> None:
    forged = "f" * 64
    query(
        ledger_dsn,
        "INSERT INTO events (node, seq, time, type, session_id, channel, data, prev_hash, hash)"
        " VALUES ('bg-a', 1, 0, 'proxy_started', NULL, NULL, '{\"pid\":1}', %s, %s)",
        (GENESIS, forged),
    )
    fleet = start()
    a = fleet.nodes["bg-a"]
    [alert] = eventually(lambda: alerted(a, "fleet_conflict"), within=20, what="the alert")
    assert "event 1 " in alert["detail"]
    login(a)
    head = len(local_rows(a.database))
    # Its heartbeat goes on: once it has seen the login's events, rounds have passed.
    eventually(
        lambda: (status(fleet.dsn, "bg-a") or {}).get("journal_seq", 0) >= head,
        within=20,
        what="a heartbeat after the login",
    )
    assert [r[7] for r in ledger_rows(fleet.dsn, "bg-a")] == [forged]
    assert "conflict" in (status(fleet.dsn, "bg-a") or {}).get("problem", "")
    [event] = [e.data for e in read_events(a.database) if e.type == "fleet_conflict"]
    assert (event["seq"], event["ledger_hash"]) == (1, forged)


def test_a_node_too_old_for_the_ledger_serves_and_alerts(start: Start, ledger_dsn: str) -> None:
    query(ledger_dsn, "UPDATE ledger_meta SET value = '99' WHERE key = 'min_reader_version'")
    fleet = start()
    a = fleet.nodes["bg-a"]
    [alert] = eventually(lambda: alerted(a, "fleet_too_old"), within=20, what="the alert")
    assert "reader version 99" in alert["detail"]
    login(a)
    assert ledger_rows(fleet.dsn, "bg-a") == []


def test_each_node_witnesses_its_peers_latest_checkpoint(start: Start) -> None:
    fleet = start("bg-a", "bg-b")
    login(fleet.nodes["bg-b"])  # a session end writes a checkpoint

    def checkpoint_of_b() -> dict[str, Any] | None:
        found = [data_of(r) for r in ledger_rows(fleet.dsn, "bg-b") if r[2] == "checkpoint"]
        return found[-1] if found else None

    checkpoint = eventually(checkpoint_of_b, within=20, what="bg-b's checkpoint in the ledger")

    def witnessed() -> list[dict[str, Any]]:
        a = fleet.nodes["bg-a"]
        return [
            e.data
            for e in read_events(a.database)
            if e.type == "peer_witness" and e.data["seq"] == checkpoint["seq"]
        ]

    [witness] = eventually(witnessed, within=20, what="bg-a's witness of bg-b's checkpoint")
    assert witness == {"peer": "bg-b", **checkpoint}
