"""``breakglass backup`` and ``breakglass prune``: an online backup taken while the proxy
writes restores to a store that passes integrity_check and verify; the retention policy
deletes old casts and verify still passes (they are "pruned", not missing)."""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.store.base import NewEvent
from proxy.store.sqlite import SQLiteStore
from tests.integration.harness import (
    Deployment,
    cli_json,
    file_mode,
    new_person,
    read_events,
    run_cli,
    write_proxy_config,
)

pytestmark = pytest.mark.slow


class Writer(threading.Thread):
    """Appends chained events to the live store as fast as it can, like a busy proxy."""

    def __init__(self, database: Path) -> None:
        super().__init__(daemon=True)
        self.database = database
        self.stop = threading.Event()
        self.written = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        async def loop() -> None:
            store = await SQLiteStore.open(self.database)
            try:
                while not self.stop.is_set():
                    batch = [
                        NewEvent("care_test_noise", time.time(), data={"n": i, "pad": "x" * 512})
                        for i in range(50)
                    ]
                    await store.append(batch)
                    self.written += len(batch)
            finally:
                await store.close()

        try:
            asyncio.run(loop())
        except BaseException as exc:  # reported by the test
            self.error = exc


def _integrity(path: Path) -> str:
    db = sqlite3.connect(path)
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def test_backup_during_writes_restores_and_verifies(
    tmp_path: Path, private_deployment: Deployment
) -> None:
    d = private_deployment
    person = new_person()
    done = d.ssh(person, "db01", d.code(person), "seq 1 3000")
    assert done.returncode == 0, done.describe()
    d.wait_for_session(person)

    # Some bulk first, so the copy takes long enough for writes to interleave.
    async def bulk() -> None:
        store = await SQLiteStore.open(d.database)
        try:
            for _ in range(40):
                await store.append(
                    [NewEvent("care_test_bulk", time.time(), data={"pad": "y" * 2048})] * 500
                )
        finally:
            await store.close()

    asyncio.run(bulk())

    writer = Writer(d.database)
    writer.start()
    live_person = new_person()
    live = d.ssh_start(live_person, "db01", d.code(live_person), "sleep 20; echo late")
    try:
        d.wait_for_session(live_person, ended=False)
        before = writer.written
        backup = tmp_path / "backups" / "bg.db"
        backup.parent.mkdir()
        result = d.cli("backup", str(backup), "--json")
        during = writer.written - before
    finally:
        writer.stop.set()
        writer.join(30)
        live.kill()
    assert writer.error is None, writer.error
    assert result.returncode == 0, result.stderr
    assert during > 0  # the proxy's store was being written while the backup ran
    facts: dict[str, Any] = yaml.safe_load(result.stdout)
    tar_path = Path(facts["recordings"])
    assert tar_path == backup.with_name("bg.db.recordings.tar")
    assert file_mode(backup) == 0o600
    assert file_mode(tar_path) == 0o600
    assert _integrity(backup) == "ok"
    assert facts["last_seq"] > 0
    assert facts["recorded"] is True
    # Never over an existing file.
    again = d.cli("backup", str(backup))
    assert again.returncode == 1
    assert "already exists" in again.stderr
    # The backup itself is in the chain, with who took it.
    assert any(e.type == "backup" for e in read_events(d.database))

    # Restore elsewhere; hide the originals so nothing is read from them.
    d.stop()
    original = d.recordings
    original.rename(original.with_name("recordings.moved"))
    restored = tmp_path / "restored"
    config = write_proxy_config(restored, 2222, {})
    shutil.copyfile(backup, restored / "audit.db")
    with tarfile.open(tar_path) as tar:
        tar.extractall(restored / "recordings", filter="data")
    verified = run_cli(config, "verify")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "ok" in verified.stdout
    sessions = cli_json(config, "sessions")
    assert any(s["person"] == person for s in sessions)


def _set_retention(config: Path, value: str) -> None:
    document = yaml.safe_load(config.read_text())
    document["storage"]["retention"] = value
    config.write_text(yaml.safe_dump(document, sort_keys=False))


def test_prune_deletes_old_casts_and_verify_still_passes(
    private_deployment: Deployment,
) -> None:
    d = private_deployment
    old = new_person()
    for _ in range(2):
        run = d.ssh(old, "db01", d.code(old), "echo old-session")
        assert run.returncode == 0, run.describe()
    d.wait_for_session(old, count=2)
    live_person = new_person()
    live = d.ssh_start(live_person, "db01", d.code(live_person), "sleep 15")
    try:
        d.wait_for_session(live_person, ended=False)

        nothing = d.cli("prune")
        assert nothing.returncode == 0
        assert "kept forever" in nothing.stdout

        # A retention shorter than the time it takes to start the command: every
        # session that has ended is past it, with no wait for the wall clock (the daily
        # task's schedule is tested on a driven clock, tests/unit/test_retention_loop.py).
        _set_retention(d.config, "10ms")
        casts = sorted(d.recordings.rglob("*.cast"))
        dry = cli_json(d.config, "prune", "--dry-run")
        assert {i["outcome"] for i in dry["items"]} == {"would prune"}
        assert sorted(d.recordings.rglob("*.cast")) == casts
        assert not [e for e in read_events(d.database) if e.type == "recording_pruned"]

        pruned = cli_json(d.config, "prune")
        items = [i for i in pruned["items"] if i["outcome"] == "pruned"]
        assert len(items) >= 2
        live_id = d.sessions(live_person)[0]["id"]
        assert all(i["session"] != live_id for i in items)  # a live session's cast stays
        for i in items:
            assert not Path(i["path"]).exists()
        events = [e for e in read_events(d.database) if e.type == "recording_pruned"]
        assert len(events) == len(items)
        for e in events:
            assert e.data["by"]
            assert e.data["sha256"]
            assert e.data["retention"] == 0.01

        verified = d.cli("verify", "--json")
        assert verified.returncode == 0, verified.stdout
        doc = yaml.safe_load(verified.stdout)
        assert doc["recordings"].get("pruned", 0) == len(items)
        assert "missing" not in doc["recordings"]
        shown = d.show(items[0]["session"])
        assert {c["recording_check"] for c in shown["channels"]} == {"pruned"}
        replayed = d.cli("replay", items[0]["session"])
        assert replayed.returncode == 1
        assert "was pruned by retention (0.01s) on " in replayed.stderr, replayed.stderr
        assert "missing" not in replayed.stderr

        # Idempotent: nothing left to do.
        again = cli_json(d.config, "prune")
        assert [i for i in again["items"] if i["session"] != live_id] == []

        # A cast that no longer matches its hash is evidence: kept, exit 1.
        other = new_person()
        run = d.ssh(other, "db01", d.code(other), "echo tampered-later")
        assert run.returncode == 0
        session = d.wait_for_session(other)
        cast = Path(session["channels"][0]["recording"])
        cast.write_bytes(cast.read_bytes() + b'[9.9, "o", "forged"]\n')
        kept = d.cli("prune")
        assert kept.returncode == 1
        assert "do not match" in kept.stderr
        assert cast.exists()
    finally:
        live.kill()
