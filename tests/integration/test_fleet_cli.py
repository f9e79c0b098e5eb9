"""The auditor's commands with a ``fleet:`` section, end to end: two nodes' journals
(real SQLite stores and casts) are in a real PostgreSQL ledger, and the real
``breakglass`` command, configured as node B, lists, shows, replays (with the real
``asciinema`` player), exports and reports both nodes' sessions; ``events`` feeds every
node's events with the fleet's cursor; ``--local`` reads only B's own journal; an
unreachable ledger fails the command with its name, and nothing local is shown in its
place."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.auditdata import Chan, open_trail, write_config
from tests.integration.harness import free_port
from tests.integration.ledgerkit import ship_cast, ship_chain

BREAKGLASS = str(Path(sys.executable).parent / "breakglass")
KEY_A = "ed25519 " + "1a" * 32
KEY_B = "ed25519 " + "2b" * 32


@dataclass
class Fleet:
    config: Path  # node B's, with the fleet
    dsn: str
    a_session: str  # bare ids
    b_session: str
    tmp: Path


def fleet_config(base: Path, dsn: str, out: Path) -> Path:
    out.write_text(
        base.read_text()
        + "fleet:\n"
        + "  node: bg-us1\n"
        + f"  postgres: {dsn}\n"
        + f'  peers: {{bg-eu1: "{KEY_A}", bg-us1: "{KEY_B}"}}\n'
        + "  timeout: 5\n"
    )
    return out


def build(tmp: Path, dsn: str) -> Fleet:
    async def run() -> Fleet:
        ids = []
        configs = []
        for node, person, text in (("bg-eu1", "alice", b"disk 97% full"), ("bg-us1", "bob", b"ok")):
            folder = tmp / node
            trail = await open_trail(folder)
            chan = Chan(events=((0.1, "o", b"$ df -h\r\n"), (0.2, "o", text + b"\r\n")))
            built = await trail.session(t=time.time() - 600, person=person, channels=[chan])
            await ship_chain(dsn, node, trail.store)
            for n, cast in enumerate(built.casts, start=1):
                data = cast.read_bytes()
                # B has not shipped the end of its cast yet.
                shipped = data if node == "bg-eu1" else data[:-10]
                await ship_cast(dsn, node, built.session_id, n, shipped, chunk=50)
            configs.append(write_config(folder, trail))
            ids.append(built.session_id)
            await trail.store.close()
        cfg = fleet_config(configs[1], dsn, tmp / "bg-us1" / "fleet.yaml")
        return Fleet(cfg, dsn, ids[0], ids[1], tmp)

    return asyncio.run(run())


def bg(fleet: Fleet, *args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    tmpdir = fleet.tmp / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    return subprocess.run(
        [BREAKGLASS, "-c", str(config or fleet.config), *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "TMPDIR": str(tmpdir)},
        timeout=60,
        check=False,
    )


@pytest.fixture
def fleet(tmp_path: Path, ledger_dsn: str) -> Fleet:
    return build(tmp_path, ledger_dsn)


def test_the_auditor_on_node_b_sees_both_nodes(fleet: Fleet) -> None:
    a, b = f"bg-eu1/{fleet.a_session}", f"bg-us1/{fleet.b_session}"
    listed = bg(fleet, "sessions", "--json")
    assert listed.returncode == 0, listed.stderr
    docs = json.loads(listed.stdout)
    assert sorted((d["id"], d["person"]) for d in docs) == sorted([(a, "alice"), (b, "bob")])
    table = bg(fleet, "sessions")
    assert a in table.stdout
    assert b in table.stdout

    for name in (a, fleet.a_session):  # NODE/SESSION, or bare: one node has it
        shown = bg(fleet, "show", name, "--json")
        assert shown.returncode == 0, shown.stderr
        doc = json.loads(shown.stdout)
        assert (doc["id"], doc["person"]) == (a, "alice")
        assert [c["recording_check"] for c in doc["channels"]] == ["ok"]

    shown = bg(fleet, "show", b, "--json")
    assert [c["recording_check"] for c in json.loads(shown.stdout)["channels"]] == ["incomplete"]

    report = bg(fleet, "report", "--since", "1d", "--format", "json")
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout)["summary"]
    assert summary["sessions"] == 2
    assert summary["recordings"] == {"incomplete": 1, "ok": 1}
    assert sorted(summary["by_person"]) == ["alice", "bob"]

    attempts = bg(fleet, "attempts", "--json")
    assert attempts.returncode == 0, attempts.stderr


def test_a_session_of_node_a_replays_and_exports_from_node_b(fleet: Fleet) -> None:
    a = f"bg-eu1/{fleet.a_session}"
    played = bg(fleet, "replay", a, "--speed", "50", "--idle-limit", "0.01")
    assert played.returncode == 0, played.stderr
    assert "disk 97% full" in played.stdout  # played by the real asciinema
    assert "recording hash: ok" in played.stderr
    one = bg(fleet, "replay", f"{a}/1", "--speed", "50", "--idle-limit", "0.01")
    assert one.returncode == 0, one.stderr
    assert bg(fleet, "replay", f"{a}/7").returncode == 1
    page = fleet.tmp / "a.html"
    exported = bg(fleet, "export", a, "--html", str(page))
    assert exported.returncode == 0, exported.stderr
    html = page.read_text()
    assert "disk 97% full" in html
    assert "alice" in html
    assert ": OK. The session" in html  # the chain and the cast checked, from the ledger
    # Nothing the ledger's casts were written into is left behind.
    assert list((fleet.tmp / "tmpdir").iterdir()) == []


def test_events_feed_every_node_with_the_fleet_cursor(fleet: Fleet) -> None:
    fed = bg(fleet, "events", "--json")
    assert fed.returncode == 0, fed.stderr
    lines = [json.loads(line) for line in fed.stdout.splitlines()]
    per_node = {n: [d["seq"] for d in lines if d["node"] == n] for n in ("bg-eu1", "bg-us1")}
    assert per_node["bg-eu1"] == list(range(1, len(per_node["bg-eu1"]) + 1))
    assert per_node["bg-us1"] == list(range(1, len(per_node["bg-us1"]) + 1))
    assert len(per_node["bg-eu1"]) >= 5
    last = lines[-1]["cursor"]
    assert last == f"bg-eu1:{per_node['bg-eu1'][-1]},bg-us1:{per_node['bg-us1'][-1]}"
    middle = lines[4]["cursor"]
    rest = bg(fleet, "events", "--json", "--after", middle)
    assert [json.loads(x)["hash"] for x in rest.stdout.splitlines()] == [
        d["hash"] for d in lines[5:]
    ]
    refused = bg(fleet, "events", "--after", "12")
    assert refused.returncode == 2
    assert "NODE:SEQ" in refused.stderr


def test_local_reads_only_this_node_s_journal(fleet: Fleet) -> None:
    listed = bg(fleet, "sessions", "--json", "--local")
    assert listed.returncode == 0, listed.stderr
    assert [d["id"] for d in json.loads(listed.stdout)] == [fleet.b_session]
    assert bg(fleet, "show", fleet.a_session, "--local").returncode == 1
    report = bg(fleet, "report", "--since", "1d", "--format", "json", "--local")
    assert json.loads(report.stdout)["summary"]["sessions"] == 1
    shown = bg(fleet, "show", fleet.b_session, "--json", "--local")
    assert [c["recording_check"] for c in json.loads(shown.stdout)["channels"]] == ["ok"]
    fed = bg(fleet, "events", "--json", "--local")
    assert {json.loads(x)["cursor"].isdigit() for x in fed.stdout.splitlines()} == {True}


def test_an_unreachable_ledger_fails_each_command_and_names_it(fleet: Fleet) -> None:
    port = free_port()
    down = fleet_config(
        fleet.config.with_name("proxy.yaml"),
        f"postgresql://breakglass@127.0.0.1:{port}/ledger",
        fleet.tmp / "down.yaml",
    )
    for args in (
        ["sessions"],
        ["show", fleet.a_session],
        ["replay", fleet.a_session],
        ["export", fleet.a_session, "--html", str(fleet.tmp / "x.html")],
        ["report"],
        ["attempts"],
        ["events"],
    ):
        started = time.monotonic()
        failed = bg(fleet, *args, config=down)
        assert failed.returncode == 1, (args, failed.stderr)
        assert f"127.0.0.1:{port}" in failed.stderr, args
        assert "--local" in failed.stderr, args
        assert fleet.b_session not in failed.stdout, args  # no local data in its place
        assert time.monotonic() - started < 30, args
    assert not (fleet.tmp / "x.html").exists()
    local = bg(fleet, "sessions", "--json", "--local", config=down)
    assert local.returncode == 0, local.stderr
    assert [d["id"] for d in json.loads(local.stdout)] == [fleet.b_session]
