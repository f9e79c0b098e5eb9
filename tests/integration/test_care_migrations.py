"""Store schema migrations: a store made with the first release's schema is upgraded in
place by SQLiteStore.open, its events still verify, a second open changes nothing, and a
store newer than the code is refused."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

from proxy.core import chain
from proxy.recorder import recording_path
from proxy.store.base import NewEvent
from proxy.store.projection import apply_event
from proxy.store.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.integration.harness import run_cli, write_proxy_config

V0_SCHEMA = Path(__file__).parent / "data" / "store_v0.sql"


def _v0_store(database: Path, recordings: Path) -> None:
    """A store as the first release wrote it: its schema, a hash-chained history with a
    finished session and its recording, and the projection rows."""
    t = 1_700_000_000.0
    sid = "S0000000000000000001"
    cast = recording_path(recordings, sid, 1)
    cast.parent.mkdir(parents=True)
    body = b'{"version": 2, "width": 80, "height": 24}\n[0.1, "o", "hello\\r\\n"]\n'
    cast.write_bytes(body)
    base = {"credential_id": "ABCD1234", "person": "alice"}
    events = [
        NewEvent("cred_issued", t, data={**base, "issued_by": "ops"}),
        NewEvent("cred_activated", t + 10, sid, data={**base, "window_ends": t + 4000}),
        NewEvent("cred_used", t + 10, sid, data={**base, "use": 1}),
        NewEvent(
            "session_start",
            t + 10,
            sid,
            data={
                **base,
                "source": "127.0.0.1",
                "client_version": "SSH-2.0-OpenSSH_9.2",
                "target": "db01",
                "login": "root",
                "justification": "INC-1 the disk is full again",
                "deadline": t + 3610,
            },
        ),
        NewEvent(
            "channel_start", t + 11, sid, 1, {"kind": "shell", "pty": True, "recording": str(cast)}
        ),
        NewEvent(
            "channel_end",
            t + 20,
            sid,
            1,
            {
                "exit_status": 0,
                "recording_sha256": hashlib.sha256(body).hexdigest(),
                "recording_bytes": len(body),
                "bytes_up": 3,
                "bytes_down": 7,
            },
        ),
        NewEvent("session_end", t + 21, sid, data={"reason": "client_closed"}),
    ]
    db = sqlite3.connect(database)
    db.executescript(V0_SCHEMA.read_text())
    prev = chain.GENESIS
    for seq, ev in enumerate(events, 1):
        data = chain.canonical(ev.data)
        digest = chain.link(prev, seq, ev.time, ev.type, ev.session_id, ev.channel, data)
        db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, ev.time, ev.type, ev.session_id, ev.channel, data, prev, digest),
        )
        for sql, params in apply_event(ev):
            db.execute(sql, params)
        prev = digest
    # The code's row as the first release kept it: issued, then activated and used once.
    db.execute(
        "INSERT INTO credentials (id, person, issued_by, issued_at, valid_until, window,"
        " max_uses, uses, targets, max_session, activated_at, revoked_at, revoke_reason, hash)"
        " VALUES ('ABCD1234', 'alice', 'ops', ?, ?, 3990.0, 0, 1, '[\"*\"]', NULL, ?, NULL,"
        " NULL, '$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaGhhc2g')",
        (t, t + 90 * 86400, t + 10),
    )
    db.commit()
    db.close()


def _shape(database: Path) -> tuple[int, list[tuple[str, str]], list[tuple[object, ...]]]:
    db = sqlite3.connect(database)
    try:
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        objects = db.execute("SELECT type, name FROM sqlite_master ORDER BY type, name").fetchall()
        events = db.execute("SELECT * FROM events ORDER BY seq").fetchall()
        return version, objects, events
    finally:
        db.close()


def _open_close(database: Path) -> None:
    async def run() -> None:
        store = await SQLiteStore.open(database)
        await store.close()

    asyncio.run(run())


def test_a_first_release_store_is_upgraded_in_place(tmp_path: Path) -> None:
    config = write_proxy_config(tmp_path, 2222, {})
    database, recordings = tmp_path / "audit.db", tmp_path / "recordings"
    _v0_store(database, recordings)
    version, objects, events = _shape(database)
    assert version == 0
    names = {name for _, name in objects}
    assert "alerts" not in names
    assert "events_type" not in names

    # The auditor's commands read it as it is: read-only, not migrated, nothing written.
    mtime = database.stat().st_mtime_ns
    result = run_cli(config, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 ok" in result.stdout
    assert _shape(database) == (version, objects, events)
    assert database.stat().st_mtime_ns == mtime

    _open_close(database)
    version, objects, after = _shape(database)
    assert version == SCHEMA_VERSION == 3
    names = {name for _, name in objects}
    assert {
        "events_credential",
        "credentials_forward",
        "credentials_no_delete",
        "alerts",
        "alert_deliveries",
        "events_type",
        "sessions_person",
        "sessions_target",
        "events_no_update",
    } <= names
    assert after == events  # the history is untouched

    result = run_cli(config, "verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 ok" in result.stdout  # the old recording still checks out
    sessions = run_cli(config, "sessions", "--json")
    assert sessions.returncode == 0
    assert "S0000000000000000001" in sessions.stdout

    # Opening again (with the new events from verify's open, none) is a no-op.
    before = _shape(database)
    mtime = database.stat().st_mtime_ns
    _open_close(database)
    assert _shape(database) == before
    assert database.stat().st_mtime_ns == mtime


def test_an_empty_file_gets_the_current_schema(tmp_path: Path) -> None:
    database = tmp_path / "new.db"
    _open_close(database)
    assert _shape(database)[0] == SCHEMA_VERSION


def test_a_store_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    config = write_proxy_config(tmp_path, 2222, {})
    database = tmp_path / "audit.db"
    _open_close(database)
    db = sqlite3.connect(database)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    before = _shape(database)
    result = run_cli(config, "verify")
    assert result.returncode == 1
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this breakglass" in result.stderr
    assert "later release" in result.stderr
    assert _shape(database) == before
