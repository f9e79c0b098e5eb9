"""Evidence that cannot be rewritten or lost: real SQLite stores, real casts, the real
proxy, the real OpenSSH client and the real ``asciinema`` player.

- an emptied or deleted store fails ``verify`` (exit 1) and no command re-creates it;
- a cast on disk that no event claims is reported;
- a credential row edited by hand (a revocation undone, a swapped argon2 hash) is refused
  at login, raises an alert, and fails ``verify``; the rows only move forward;
- a copy of the store and its recordings verifies on its own (a tampered copy fails while
  the untouched original beside it passes);
- a proxy SIGKILLed 50 ms after a channel opened leaves a cast that plays, and the
  recovery at start-up signs a checkpoint over what it repaired.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path

import pytest
import yaml

from proxy.cli import main
from proxy.core.credentials import CodeHasher, format_code
from proxy.recorder import recording_path
from tests.integration.auditdata import open_trail, write_config
from tests.integration.conftest import TARGET
from tests.integration.harness import (
    Deployment,
    ProxyProcess,
    SshdTarget,
    asciinema_cat,
    free_port,
    issue_code,
    new_person,
    read_events,
    show,
    ssh_start,
    user_at,
    wait_for_session,
    write_proxy_config,
)
from tests.waiting import eventually

REFUSED = 255
SIDE_FILES = ("-wal", "-shm", "-journal")


def run(config: Path, *args: str) -> tuple[int, str, str]:
    """``breakglass -c CONFIG ARGS`` in-process: (status, stdout, stderr)."""
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(["-c", str(config), *args])
    return rc, out.getvalue(), err.getvalue()


def verify_json(config: Path, *extra: str) -> tuple[int, dict[str, object]]:
    rc, out, err = run(config, "verify", "--json", *extra)
    assert out, err
    return rc, json.loads(out)


def problems(doc: dict[str, object]) -> list[tuple[str, str]]:
    raw = doc["problems"]
    assert isinstance(raw, list)
    return [(p["kind"], p["message"]) for p in raw]


def synthetic_trail(tmp: Path) -> tuple[Path, Path, Path, list[str]]:
    """A store with two finished sessions and their casts (config, db, recordings, ids)."""

    async def build() -> tuple[Path, Path, Path, list[str]]:
        trail = await open_trail(tmp)
        ids = []
        for i, person in enumerate(("alice", "bob")):
            built = await trail.session(t=time.time() - 86400 + i * 600, person=person)
            ids.append(built.session_id)
        config = write_config(tmp, trail)
        await trail.store.close()
        return config, trail.root / "audit.db", trail.root, ids

    return asyncio.run(build())


def side_files(db: Path) -> list[Path]:
    return [p for s in SIDE_FILES if (p := Path(str(db) + s)).exists()]


# ------------------------------------------------------------ 1. no blind spot, no re-creation


@pytest.mark.parametrize("damage", ["emptied", "deleted"])
def test_an_emptied_or_deleted_store_fails_and_nothing_is_created(
    tmp_path: Path, damage: str
) -> None:
    config, db, _, ids = synthetic_trail(tmp_path)
    rc, doc = verify_json(config)
    assert rc == 0, problems(doc)
    for suffix in SIDE_FILES:  # a store at rest: its WAL checkpointed away
        Path(str(db) + suffix).unlink(missing_ok=True)
    if damage == "emptied":
        db.write_bytes(b"")  # : > audit.db
    else:
        db.unlink()
    html = tmp_path / "page.html"
    auditor = [
        ("verify",),
        ("verify", "--json"),
        ("sessions",),
        ("show", ids[0]),
        ("replay", ids[0]),
        ("report",),
        ("attempts",),
        ("export", ids[0], "--html", str(html)),
        ("cred", "list"),
        ("live",),
        ("review", ids[0], "--note", "looked at it"),
    ]
    for args in auditor:
        rc, out, err = run(config, *args)
        assert rc == 1, (args, out, err)
        assert str(db) in err, (args, err)
        # Nothing created: no fresh store, no side file, no page.
        if damage == "emptied":
            assert db.stat().st_size == 0, args
        else:
            assert not db.exists(), args
        assert side_files(db) == [], args
        assert not html.exists()
    rc, out, err = run(config, "verify")
    assert "verify: FAILED" in out
    assert "2 recording(s)" in err  # the casts the lost store claimed are pointed at
    # The commands that issue codes may create a store (a first install).
    if damage == "deleted":
        rc, out, err = run(config, "cred", "issue", "zoe", "--json")
        assert rc == 0, err
        assert db.stat().st_size > 0


def test_verify_reports_a_cast_that_no_event_claims(tmp_path: Path) -> None:
    config, _, root, _ = synthetic_trail(tmp_path)
    stray = recording_path(root, "1ZZZZZZZZZZZ", 1)
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b'{"version": 2, "width": 80, "height": 24}\n')
    rc, doc = verify_json(config)
    assert rc == 1
    assert [k for k, _ in problems(doc)] == ["recording_unclaimed"], problems(doc)
    assert str(stray) in problems(doc)[0][1]


# ---------------------------------------------------------------- 2. codes inside the chain


@pytest.fixture
def own_deployment(tmp_path: Path, target: SshdTarget) -> Iterator[Deployment]:
    running = Deployment.start(tmp_path / "proxy", {TARGET: target.target_entry()})
    yield running
    running.stop()


def _edit(db: Path, *sql: tuple[str, tuple[object, ...]]) -> None:
    """What someone holding the file does: drop the guard, change the row."""
    con = sqlite3.connect(db)
    con.execute("DROP TRIGGER credentials_forward")
    for statement, params in sql:
        con.execute(statement, params)
    con.commit()
    con.close()


def _refused_and_reported(d: Deployment, person: str, code: str, cred_id: str, fields: str) -> None:
    """The login with ``code`` is refused as tampered, with an alert, and verify names
    the row's ``fields`` that differ from the chain."""
    result = d.ssh(person, TARGET, code, "echo in")
    assert result.returncode == REFUSED, result.describe()
    assert b"in\n" not in result.stdout
    failures = d.wait_for_login_failures(person)
    assert [f.get("reason") for f in failures] == ["credential_tampered"], failures

    def alerted() -> bool:
        return any(
            e.type == "alert"
            and e.data.get("rule") == "credential_tampered"
            and cred_id in json.dumps(e.data)
            for e in read_events(d.database)
        )

    eventually(alerted, within=10, what="a credential_tampered alert")
    rc, doc = verify_json(d.config)
    assert rc == 1
    expected = (
        "projection_mismatch",
        f"credentials row {cred_id} differs from the log in: {fields}",
    )
    assert expected in problems(doc), problems(doc)


def test_an_undone_revocation_is_refused_at_login_and_fails_verify(
    own_deployment: Deployment,
) -> None:
    d = own_deployment
    person = new_person()
    issued = d.issue(person)
    cred_id = str(issued["id"])
    assert d.cli("cred", "revoke", cred_id, "--reason", "left the team").returncode == 0
    rc, doc = verify_json(d.config)
    assert rc == 0, problems(doc)

    # The guard refuses it as such...
    con = sqlite3.connect(d.database)
    with pytest.raises(sqlite3.IntegrityError, match="only moves forward"):
        con.execute("UPDATE credentials SET revoked_at = NULL WHERE id = ?", (cred_id,))
    with pytest.raises(sqlite3.IntegrityError, match="only moves forward"):
        con.execute("UPDATE credentials SET uses = uses - 1 WHERE id = ?", (cred_id,))
    con.close()
    # ...so it is dropped first.
    _edit(
        d.database,
        (
            "UPDATE credentials SET revoked_at = NULL, revoke_reason = NULL WHERE id = ?",
            (cred_id,),
        ),
    )
    listed = d.cli("cred", "list", "--json")
    assert listed.returncode == 1  # never shown as the active code the row claims
    [doc] = [c for c in json.loads(listed.stdout) if c["id"] == cred_id]
    assert doc["state"] == "credential_tampered", doc
    _refused_and_reported(d, person, str(issued["code"]), cred_id, "revoked_at, revoke_reason")


def test_a_swapped_argon2_hash_is_refused_at_login_and_fails_verify(
    own_deployment: Deployment,
) -> None:
    d = own_deployment
    person = new_person()
    issued = d.issue(person)
    cred_id = str(issued["id"])
    # Whoever can write the file makes the code's id answer to a secret of their own.
    mine = "0123456789ABCDEFGHJKMNPQ"
    forged = CodeHasher(time_cost=1, memory_cost=8, parallelism=1).hash(cred_id, mine)
    _edit(d.database, ("UPDATE credentials SET hash = ? WHERE id = ?", (forged, cred_id)))
    _refused_and_reported(d, person, format_code(cred_id, mine), cred_id, "hash_sha256")


# ---------------------------------------------------------- 3. a copy verifies on its own


def _copy(config: Path, dest: Path) -> Path:
    """Copy a store and its recordings folder elsewhere, with a config pointing there."""
    storage = yaml.safe_load(config.read_text())["storage"]
    dest.mkdir()
    shutil.copy2(storage["database"], dest / "audit.db")
    shutil.copytree(storage["recordings"], dest / "recordings")
    return write_proxy_config(dest, free_port(), {})


def _tamper_copy_and_check(config: Path, tmp: Path, cast: Path) -> None:
    original = cast.read_bytes()
    copy_config = _copy(config, tmp / "copy")
    rc, doc = verify_json(copy_config)
    assert rc == 0, problems(doc)
    root = Path(yaml.safe_load(config.read_text())["storage"]["recordings"])
    copied = tmp / "copy" / "recordings" / cast.relative_to(root)
    copied.write_bytes(copied.read_bytes() + b'[9.9, "o", "forged"]\n')
    rc, doc = verify_json(copy_config)
    assert rc == 1
    found = problems(doc)
    assert [k for k, _ in found] == ["recording_altered"], found
    assert str(copied) in found[0][1]
    # The original, untouched beside it, still verifies and was never looked at.
    assert cast.read_bytes() == original
    rc, doc = verify_json(config)
    assert rc == 0, problems(doc)


def test_a_tampered_copy_is_caught_beside_its_original(
    own_deployment: Deployment, tmp_path: Path
) -> None:
    d = own_deployment
    person = new_person()
    result = d.ssh(person, TARGET, d.code(person), "echo evidence")
    assert result.returncode == 0, result.describe()
    session = d.wait_for_session(person)
    stored = [e.data["recording"] for e in read_events(d.database) if e.type == "channel_start"]
    assert stored
    assert not any(Path(p).is_absolute() for p in stored), stored
    d.stop()  # a copy is taken of a store at rest (or with `breakglass backup`)
    cast = Path(show(d.config, str(session["id"]))["channels"][0]["recording"])
    _tamper_copy_and_check(d.config, tmp_path, cast)


def test_a_tampered_copy_of_a_store_with_absolute_paths_is_caught(tmp_path: Path) -> None:
    """Events written before paths were relative keep their absolute paths (hashed);
    those are resolved under the configured folder, never followed."""
    config, db, _, _ = synthetic_trail(tmp_path / "orig")
    con = sqlite3.connect(db)
    stored = [
        json.loads(r[0])["recording"]
        for r in con.execute("SELECT data FROM events WHERE type = 'channel_start'")
    ]
    con.close()
    assert all(Path(p).is_absolute() for p in stored), stored
    _tamper_copy_and_check(config, tmp_path, Path(stored[0]))


# ------------------------------------------------------------- 4. a crash leaves casts that play


def test_sigkill_50ms_after_a_channel_opens_leaves_a_cast_that_plays(
    tmp_path: Path, target: SshdTarget
) -> None:
    port = free_port()
    config = write_proxy_config(tmp_path, port, {"db01": target.target_entry()})
    proxy = ProxyProcess.start(config)
    code = issue_code(config, "erin")
    client = ssh_start(port, user_at("erin", "db01"), code, "sleep 30")
    try:
        eventually(
            lambda: any(e.type == "channel_start" for e in read_events(proxy.database)),
            within=30,
            what="the channel's start committed",
            interval=0.005,
        )
        time.sleep(0.05)
        proxy.process.send_signal(signal.SIGKILL)
        proxy.process.wait(10)
    finally:
        client.kill()
    session = wait_for_session(config, "erin", ended=False)
    cast = Path(session["channels"][0]["recording"])
    assert cast.stat().st_size > 0, "the cast's header was not on disk"

    restarted = ProxyProcess.start(config)
    try:
        doc = show(config, str(session["id"]))
        assert doc["end_reason"] == "interrupted"
        played = asciinema_cat(cast)
        assert played.returncode == 0, played.stderr
        # The recovery's repair is signed at once: a checkpoint covers its events.
        events = read_events(restarted.database)
        repaired = max(
            int(e.row["seq"])
            for e in events
            if e.type == "session_end" and e.data.get("reason") == "interrupted"
        )
        signed = [int(e.data["seq"]) for e in events if e.type == "checkpoint"]
        assert max(signed, default=0) >= repaired, (signed, repaired)
    finally:
        restarted.stop()
    rc, doc = verify_json(config)
    assert rc == 0, problems(doc)
