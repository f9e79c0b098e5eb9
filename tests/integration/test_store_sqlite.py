"""The SQLite audit store on real files: atomic code use, append-only chain, projections,
crash recovery."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from proxy.core import chain
from proxy.core.credentials import Credential
from proxy.recovery import recover_unfinished, truncate_to_last_line
from proxy.store.base import NewEvent, SessionFilter
from proxy.store.sqlite import SQLiteStore

T0 = 1_800_000_000.0


def cred(**kw: object) -> Credential:
    base: dict[str, object] = dict(
        cred_id="AAAAAA",
        person="alice",
        issued_by="root",
        issued_at=T0,
        valid_until=T0 + 86400,
        window=3600.0,
        max_uses=0,
        uses=0,
        targets=("*",),
        max_session=None,
        activated_at=None,
        revoked_at=None,
        revoke_reason=None,
    )
    base.update(kw)
    return Credential(**base)  # type: ignore[arg-type]


def start_event(sid: str, t: float = T0 + 10) -> NewEvent:
    return NewEvent(
        "session_start",
        t,
        sid,
        None,
        {
            "person": "alice",
            "credential_id": "AAAAAA",
            "source": "127.0.0.1",
            "client_version": "SSH-2.0-test",
            "target": "db01",
            "login": "root",
            "justification": "INC-1 \x1b[31m\n\x00 verbatim",
            "deadline": t + 60,
        },
    )


async def test_uses_are_counted_atomically_across_connections(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    stores = [await SQLiteStore.open(db) for _ in range(4)]
    try:
        await stores[0].issue_credential(cred(max_uses=1), "hash", NewEvent("cred_issued", T0))
        results = await asyncio.gather(
            *(
                s.start_session("AAAAAA", "alice", "db01", T0 + 10, start_event(f"s{i}"))
                for i, s in enumerate(stores)
            )
        )
        assert sorted(r.reason for r in results) == ["ok", "spent", "spent", "spent"]
        found = await stores[0].get_credential("AAAAAA")
        assert found is not None
        assert found[0].uses == 1
        assert found[0].activated_at == T0 + 10
        assert len(await stores[0].list_sessions(SessionFilter())) == 1
    finally:
        for s in stores:
            await s.close()


async def test_events_are_append_only_and_chained(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    store = await SQLiteStore.open(db)
    try:
        await store.issue_credential(cred(), "hash", NewEvent("cred_issued", T0))
        decision = await store.start_session("AAAAAA", "alice", "db01", T0 + 10, start_event("s1"))
        assert decision.ok
        await store.append(
            [NewEvent("session_end", T0 + 20, "s1", None, {"reason": "client_exit"})]
        )
    finally:
        await store.close()
    con = sqlite3.connect(db)
    rows = con.execute(
        "SELECT seq, time, type, session_id, channel, data, prev_hash, hash"
        " FROM events ORDER BY seq"
    ).fetchall()
    assert [r[2] for r in rows] == [
        "cred_issued",
        "cred_activated",
        "cred_used",
        "session_start",
        "session_end",
    ]
    prev = chain.GENESIS
    for seq, t, type_, sid, ch, data, prev_hash, digest in rows:
        assert prev_hash == prev
        assert digest == chain.link(prev, seq, t, type_, sid, ch, data)
        prev = digest
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("UPDATE events SET data = '{}' WHERE seq = 4")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        con.execute("DELETE FROM events WHERE seq = 5")
    just = json.loads(rows[3][5])["justification"]
    assert just == "INC-1 \x1b[31m\n\x00 verbatim"
    con.close()
    assert (db.stat().st_mode & 0o777) == 0o600


async def test_projection_and_filters(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "audit.db")
    try:
        await store.issue_credential(cred(), "hash", NewEvent("cred_issued", T0))
        await store.start_session("AAAAAA", "alice", "db01", T0 + 10, start_event("s1", T0 + 10))
        await store.start_session("AAAAAA", "alice", "db01", T0 + 20, start_event("s2", T0 + 20))
        await store.append(
            [
                NewEvent(
                    "channel_start",
                    T0 + 11,
                    "s1",
                    1,
                    {"kind": "exec", "command": "uptime", "pty": False, "recording": "/x/1.cast"},
                ),
                NewEvent(
                    "channel_end",
                    T0 + 12,
                    "s1",
                    1,
                    {"exit_status": 3, "bytes_up": 5, "bytes_down": 7, "recording_sha256": "ab"},
                ),
                NewEvent("session_end", T0 + 13, "s1", None, {"reason": "client_exit"}),
            ]
        )
        s1 = await store.get_session("s1")
        assert s1 is not None
        assert (s1.end_reason, s1.ended_at) == ("client_exit", T0 + 13)
        ch = s1.channels[0]
        assert (ch.kind, ch.command, ch.exit_status, ch.bytes_up, ch.bytes_down) == (
            "exec",
            "uptime",
            3,
            5,
            7,
        )
        assert [s.id for s in await store.list_sessions(SessionFilter(live=True))] == ["s2"]
        assert [s.id for s in await store.list_sessions(SessionFilter(since=T0 + 15))] == ["s2"]
        assert await store.list_sessions(SessionFilter(person="bob")) == []
        assert [s.id for s in await store.unfinished_sessions()] == ["s2"]
    finally:
        await store.close()


async def test_revoke_is_recorded_once(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "audit.db")
    try:
        await store.issue_credential(cred(), "hash", NewEvent("cred_issued", T0))
        revoked = await store.revoke_credential("AAAAAA", "rotated", "root", T0 + 5)
        assert revoked is not None
        assert (revoked.revoked_at, revoked.revoke_reason) == (T0 + 5, "rotated")
        again = await store.revoke_credential("AAAAAA", "twice", "root", T0 + 6)
        assert again is not None
        assert again.revoke_reason == "rotated"
        assert await store.revoke_credential("NOPE00", "x", "root", T0) is None
        decision = await store.start_session("AAAAAA", "alice", "db01", T0 + 10, start_event("s"))
        assert (decision.ok, decision.reason) == (False, "revoked")
    finally:
        await store.close()


def test_truncate_to_last_line(tmp_path: Path) -> None:
    cast = tmp_path / "1.cast"
    cast.write_bytes(b'{"version": 2}\n[0.1, "o", "a"]\n[0.2, "o", "unfini')
    found = truncate_to_last_line(cast)
    assert found is not None
    digest, size = found
    assert cast.read_bytes() == b'{"version": 2}\n[0.1, "o", "a"]\n'
    assert size == len(cast.read_bytes())
    assert len(digest) == 64


async def test_recovery_ends_unfinished_sessions_as_interrupted(tmp_path: Path) -> None:
    cast = tmp_path / "1.cast"
    cast.write_bytes(b'{"version": 2}\n[0.1, "o", "a"]\n[0.2, "o"')
    store = await SQLiteStore.open(tmp_path / "audit.db")
    try:
        await store.issue_credential(cred(), "hash", NewEvent("cred_issued", T0))
        await store.start_session("AAAAAA", "alice", "db01", T0 + 10, start_event("s1"))
        await store.append(
            [
                NewEvent(
                    "channel_start",
                    T0 + 11,
                    "s1",
                    1,
                    {"kind": "shell", "pty": True, "recording": str(cast)},
                )
            ]
        )
        assert await recover_unfinished(store, tmp_path, T0 + 100) == 1
        s1 = await store.get_session("s1")
        assert s1 is not None
        assert s1.end_reason == "interrupted"
        assert s1.channels[0].ended_at == T0 + 100
        assert s1.channels[0].recording_bytes == len(cast.read_bytes())
        assert cast.read_bytes().endswith(b'"a"]\n')
        assert await recover_unfinished(store, tmp_path, T0 + 200) == 0
    finally:
        await store.close()


async def test_a_login_read_never_sees_another_logins_commit_half_done(tmp_path: Path) -> None:
    # The login path reads the row and the code's latest event on the connection that
    # also commits session starts. A read that slipped in between a commit's row update
    # and its event saw the row ahead of its event and refused a rightful login as
    # credential_tampered (seen under load in test_concurrency).
    store = await SQLiteStore.open(tmp_path / "audit.db")
    try:
        await store.issue_credential(cred(), "hash", NewEvent("cred_issued", T0))
        mismatches: list[str] = []
        reads = 0
        done = asyncio.Event()

        async def reader() -> None:
            nonlocal reads
            while not done.is_set():
                found = await store.get_credential("AAAAAA")
                reads += 1
                if found is not None and found.mismatch:
                    mismatches.append(found.mismatch)

        readers = [asyncio.create_task(reader()) for _ in range(4)]
        for i in range(20):
            await store.start_session("AAAAAA", "alice", "db01", T0 + 10 + i, start_event(f"s{i}"))
        done.set()
        await asyncio.gather(*readers)
        assert reads >= 20
        assert mismatches == []
        found = await store.get_credential("AAAAAA")
        assert found is not None
        assert found.cred.uses == 20
        assert found.mismatch is None
    finally:
        await store.close()
