"""``breakglass verify`` on real SQLite files and real casts: an untouched trail verifies,
and every way of tampering with the database or the files is caught and located."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from proxy.audit.checkpoint import (
    checkpoint_document,
    checkpoint_loop,
    key_path,
    load_or_generate,
    public_hex,
    write_checkpoint,
)
from proxy.cli import main
from proxy.core import chain
from tests.integration.auditdata import Chan, Trail, open_trail, write_config

NOW = time.time()
PAST = NOW - 3 * 86400  # sessions that are long over


@dataclass
class Setup:
    tmp: Path
    cfg: Path
    db: Path
    root: Path
    sessions: list[str]
    casts: list[Path]
    checkpoint_at: int  # seq of the first checkpoint event itself


def build(tmp: Path, after: Callable[[Trail], object] | None = None) -> Setup:
    async def run() -> Setup:
        trail = await open_trail(tmp)
        key = load_or_generate(key_path(trail.root))
        sessions, casts = [], []
        for i, person in enumerate(("alice", "bob", "carol")):
            built = await trail.session(
                t=PAST + i * 600,
                person=person,
                channels=[Chan(), Chan(kind="shell", command=None, pty=True)],
            )
            sessions.append(built.session_id)
            casts += built.casts
        await write_checkpoint(trail.store, key, PAST + 3000)
        first_cp, _ = await trail.store.head()
        built = await trail.session(t=PAST + 4000, person="dave")
        sessions.append(built.session_id)
        casts += built.casts
        await write_checkpoint(trail.store, key, PAST + 5000)
        if after is not None:
            await after(trail)  # type: ignore[misc]
        cfg = write_config(tmp, trail)
        await trail.store.close()
        return Setup(tmp, cfg, trail.root / "audit.db", trail.root, sessions, casts, first_cp)

    return asyncio.run(run())


def verify(s: Setup, *extra: str) -> tuple[int, dict[str, object]]:
    from contextlib import redirect_stdout
    from io import StringIO

    out = StringIO()
    with redirect_stdout(out):
        rc = main(["-c", str(s.cfg), "verify", "--json", *extra])
    return rc, json.loads(out.getvalue())


def problems(doc: dict[str, object]) -> list[tuple[str, str]]:
    raw = doc["problems"]
    assert isinstance(raw, list)
    return [(p["kind"], p["message"]) for p in raw]


def tamper(db: Path, *sql: str) -> None:
    """What someone with the file does: drop the triggers, change rows."""
    con = sqlite3.connect(db)
    for trigger in (
        "events_no_update",
        "events_no_delete",
        "credentials_forward",
        "credentials_no_delete",
    ):
        con.execute(f"DROP TRIGGER {trigger}")
    for statement in sql:
        con.execute(statement)
    con.commit()
    con.close()


def rehash_from(db: Path, seq: int) -> None:
    """An attacker who knows the hash rule recomputes every hash from ``seq`` on."""
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER IF EXISTS events_no_update")
    prev = con.execute("SELECT hash FROM events WHERE seq = ?", (seq - 1,)).fetchone()
    prev_hash = prev[0] if prev else chain.GENESIS
    rows = con.execute(
        "SELECT seq, time, type, session_id, channel, data FROM events WHERE seq >= ? ORDER BY seq",
        (seq,),
    ).fetchall()
    for r in rows:
        digest = chain.link(prev_hash, *r)
        con.execute(
            "UPDATE events SET prev_hash = ?, hash = ? WHERE seq = ?", (prev_hash, digest, r[0])
        )
        prev_hash = digest
    con.commit()
    con.close()


def seq_of(db: Path, where: str) -> int:
    con = sqlite3.connect(db)
    row = con.execute(f"SELECT seq FROM events WHERE {where} ORDER BY seq LIMIT 1").fetchone()
    con.close()
    assert row is not None
    return int(row[0])


def test_untouched_trail_verifies(tmp_path: Path) -> None:
    s = build(tmp_path)
    rc, doc = verify(s)
    assert problems(doc) == []
    assert rc == 0
    assert doc["ok"] is True
    assert doc["recordings"] == {"ok": 7}
    assert doc["checkpoints"] == 2
    assert doc["sessions"] == 4
    # The human form and the real console script agree.
    run = subprocess.run(
        [str(Path(sys.executable).parent / "breakglass"), "-c", str(s.cfg), "verify"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "verify: OK" in run.stdout


def test_edited_event_is_found_at_its_seq(tmp_path: Path) -> None:
    s = build(tmp_path)
    seq = seq_of(s.db, f"type = 'session_start' AND session_id = '{s.sessions[1]}'")
    tamper(
        s.db,
        f"UPDATE events SET data = replace(data, 'disk full', 'routine check') WHERE seq = {seq}",
    )
    rc, doc = verify(s)
    assert rc == 1
    found = problems(doc)
    assert (
        "event_changed",
        f"event {seq} changed: its contents no longer match its hash"
        f" (type session_start, session {s.sessions[1]})",
    ) in found
    # The sessions table still says "disk full": the rebuilt projection disagrees too.
    assert any(k == "projection_mismatch" and "justification" in m for k, m in found)


def test_edited_projection_row_is_found(tmp_path: Path) -> None:
    s = build(tmp_path)
    con = sqlite3.connect(s.db)
    con.execute(
        "UPDATE sessions SET justification = 'nothing to see' WHERE id = ?", (s.sessions[0],)
    )
    con.commit()
    con.close()
    rc, doc = verify(s)
    assert rc == 1
    assert problems(doc) == [
        (
            "projection_mismatch",
            f"sessions row {s.sessions[0]} differs from the log in: justification",
        )
    ]


def test_deleted_event_is_named(tmp_path: Path) -> None:
    s = build(tmp_path)
    seq = seq_of(s.db, f"type = 'channel_start' AND session_id = '{s.sessions[2]}'")
    tamper(s.db, f"DELETE FROM events WHERE seq = {seq}")
    rc, doc = verify(s)
    assert rc == 1
    assert any(
        k == "events_missing" and m.startswith(f"event {seq} is missing") for k, m in problems(doc)
    )


def test_deleted_range_of_events_is_named(tmp_path: Path) -> None:
    s = build(tmp_path)
    tamper(s.db, "DELETE FROM events WHERE seq BETWEEN 10 AND 14")
    rc, doc = verify(s)
    assert rc == 1
    assert any(m.startswith("events 10..14 are missing") for _, m in problems(doc))


def test_reordered_events_are_found(tmp_path: Path) -> None:
    s = build(tmp_path)
    tamper(
        s.db,
        "UPDATE events SET seq = -1 WHERE seq = 8",
        "UPDATE events SET seq = 8 WHERE seq = 9",
        "UPDATE events SET seq = 9 WHERE seq = -1",
    )
    rc, doc = verify(s)
    assert rc == 1
    kinds = problems(doc)
    assert any(k == "event_moved" and "events 8..9" in m for k, m in kinds), kinds


def test_rewrite_with_recomputed_hashes_is_caught_by_the_checkpoint(tmp_path: Path) -> None:
    s = build(tmp_path)
    seq = seq_of(s.db, f"type = 'session_start' AND session_id = '{s.sessions[0]}'")
    tamper(s.db, f"UPDATE events SET data = replace(data, 'alice', 'mallory') WHERE seq = {seq}")
    rehash_from(s.db, seq)
    rc, doc = verify(s)
    assert rc == 1
    found = problems(doc)
    assert any(
        k == "checkpoint_head_mismatch"
        and f"checkpoint at event {s.checkpoint_at}" in m
        and "was rewritten" in m
        for k, m in found
    ), found
    assert not any(k in ("event_changed", "chain_broken") for k, _ in found)


def test_truncated_tail_after_a_checkpoint_needs_the_copy_kept_off_the_box(
    tmp_path: Path,
) -> None:
    s = build(tmp_path)
    con = sqlite3.connect(s.db)
    (last_cp,) = con.execute(
        "SELECT data FROM events WHERE type = 'checkpoint' ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    con.close()
    kept = tmp_path / "kept-checkpoint.json"
    kept.write_text(json.dumps(checkpoint_document(json.loads(last_cp))))
    last_seq = json.loads(last_cp)["seq"] + 1
    cut = s.checkpoint_at  # keep the first checkpoint, drop everything after it
    # A careful attacker removes the rows the projections hold too.
    tamper(
        s.db,
        f"DELETE FROM events WHERE seq > {cut}",
        f"DELETE FROM channels WHERE session_id = '{s.sessions[3]}'",
        f"DELETE FROM sessions WHERE id = '{s.sessions[3]}'",
        "DELETE FROM credentials WHERE id NOT IN (SELECT json_extract(data, '$.credential_id')"
        " FROM events WHERE type = 'cred_issued')",
    )
    (s.root / s.sessions[3][:4] / s.sessions[3] / "1.cast").unlink()
    rc, doc = verify(s)
    # Everything left is consistent: this is why checkpoints must leave the box.
    assert rc == 0, problems(doc)
    rc, doc = verify(s, "--checkpoint", str(kept))
    assert rc == 1
    assert problems(doc) == [
        (
            "events_truncated",
            f"events {cut + 1}..{last_seq - 1} are missing: the chain ends at event {cut}, but"
            f" a checkpoint signed at {_utc(json.loads(last_cp)['time'])} covers up to event"
            f" {last_seq - 1} (the tail was cut off)",
        )
    ]


def _utc(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def test_altered_cast_is_found(tmp_path: Path) -> None:
    s = build(tmp_path)
    cast = s.casts[2]
    data = cast.read_bytes()
    cast.write_bytes(data.replace(b"hello", b"HELLO"))
    rc, doc = verify(s)
    assert rc == 1
    found = problems(doc)
    assert len(found) == 1
    kind, message = found[0]
    assert kind == "recording_altered"
    assert message.startswith(f"recording {cast} (channel {s.sessions[1]}/1) was altered")
    assert f"it has {len(data)} bytes" in message


def test_truncated_cast_is_found(tmp_path: Path) -> None:
    s = build(tmp_path)
    cast = s.casts[0]
    data = cast.read_bytes()
    cast.write_bytes(data[: data.rfind(b"\n", 0, len(data) - 1) + 1])
    rc, doc = verify(s)
    assert rc == 1
    assert [k for k, _ in problems(doc)] == ["recording_altered"]


def test_deleted_cast_is_found(tmp_path: Path) -> None:
    s = build(tmp_path)
    s.casts[4].unlink()
    rc, doc = verify(s)
    assert rc == 1
    kind, message = problems(doc)[0]
    assert kind == "recording_missing"
    assert message.startswith(f"recording {s.casts[4]} (channel {s.sessions[2]}/1) is missing")


def test_moved_recordings_folder_is_still_found(tmp_path: Path) -> None:
    """An auditor copies the DB and the recordings elsewhere: the casts are looked up
    under the configured folder when the stored absolute path is gone."""
    s = build(tmp_path / "box")
    moved = tmp_path / "copy"
    (tmp_path / "box").rename(moved)
    cfg = moved / "proxy.yaml"
    cfg.write_text(
        "listen: {host: 127.0.0.1, port: 2222, host_key: recordings/k}\n"
        "storage: {database: recordings/audit.db, recordings: recordings}\n"
        "targets: {}\n"
    )
    s.cfg = cfg
    rc, doc = verify(s)
    assert problems(doc) == []
    assert rc == 0


def test_bad_checkpoint_signature_is_found(tmp_path: Path) -> None:
    s = build(tmp_path)
    con = sqlite3.connect(s.db)
    seq, data = con.execute(
        "SELECT seq, data FROM events WHERE type = 'checkpoint' ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    con.close()
    doc = json.loads(data)
    doc["signature"] = ("00" if doc["signature"][:2] != "00" else "11") + doc["signature"][2:]
    tamper(s.db, f"UPDATE events SET data = '{chain.canonical(doc)}' WHERE seq = {seq}")
    rehash_from(s.db, seq)  # the chain itself stays consistent
    rc, out = verify(s)
    assert rc == 1
    found = problems(out)
    assert [k for k, _ in found] == ["checkpoint_bad_signature"]
    assert found[0][1].startswith(f"checkpoint at event {seq}: the signature does not verify")


def test_checkpoints_against_the_auditors_key(tmp_path: Path) -> None:
    s = build(tmp_path)
    pub = public_hex(load_or_generate(key_path(s.root)).public_key())
    rc, doc = verify(s, "--key", pub)
    assert rc == 0, problems(doc)
    other = load_or_generate(tmp_path / "other.key").public_key()
    rc, doc = verify(s, "--key", public_hex(other))
    assert rc == 1
    assert {k for k, _ in problems(doc)} == {"checkpoint_wrong_key"}
    # The key file replaced on the box (to re-sign forged checkpoints) is caught by the
    # auditor's copy in the same way; without any key, verify says it cannot check.
    key_path(s.root).unlink()
    rc, doc = verify(s)
    assert rc == 1
    assert [k for k, _ in problems(doc)] == ["checkpoint_key_missing"]
    rc, doc = verify(s, "--key", pub)
    assert rc == 0


def test_session_without_an_end(tmp_path: Path) -> None:
    async def unfinished(trail: Trail) -> None:
        await trail.session(t=PAST + 6000, person="erin", end_reason=None)  # crashed, long ago
        await trail.session(t=time.time(), person="frank", end_reason=None)  # live now

    s = build(tmp_path, unfinished)
    rc, doc = verify(s)
    assert rc == 1
    found = problems(doc)
    assert len(found) == 1
    assert found[0][0] == "session_without_end"
    assert "it is not live" in found[0][1]
    live = doc["live_sessions"]
    assert isinstance(live, list)
    assert len(live) == 1


def test_checkpoint_writer_skips_when_nothing_changed_and_loop_stops(tmp_path: Path) -> None:
    async def run() -> None:
        trail = await open_trail(tmp_path)
        key = load_or_generate(key_path(trail.root))
        assert (key_path(trail.root).stat().st_mode & 0o777) == 0o600
        await write_checkpoint(trail.store, key, 1.0)  # empty log: nothing to sign
        assert await trail.store.head() == (0, chain.GENESIS)
        await trail.session(t=PAST)
        await write_checkpoint(trail.store, key, 2.0)
        seq, _ = await trail.store.head()
        await write_checkpoint(trail.store, key, 3.0)
        assert (await trail.store.head())[0] == seq  # head is a checkpoint: skipped
        stop = asyncio.Event()
        await trail.session(t=PAST + 100)
        task = asyncio.create_task(checkpoint_loop(trail.store, key, 0.01, stop))
        for _ in range(500):
            rows = await trail.store.chain_rows((await trail.store.head())[0] - 1, 1)
            if rows and rows[0].type == "checkpoint":
                break
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.wait_for(task, 5)
        last = (await trail.store.chain_rows((await trail.store.head())[0] - 1, 1))[0]
        assert last.type == "checkpoint"
        await trail.store.close()

    asyncio.run(run())


def test_checkpoint_key_command_and_a_too_open_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    s = build(tmp_path)
    assert main(["-c", str(s.cfg), "checkpoint-key", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    key = load_or_generate(key_path(s.root))
    assert doc["public_key"] == public_hex(key.public_key())
    assert doc["fingerprint"].startswith("SHA256:")
    key_path(s.root).chmod(0o644)
    assert main(["-c", str(s.cfg), "checkpoint-key"]) == 1
    assert "readable by others" in capsys.readouterr().err
