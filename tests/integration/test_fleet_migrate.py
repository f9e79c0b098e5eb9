"""``breakglass fleet migrate`` as an operator runs it, against a real PostgreSQL; and the
ledger's password coming from ``fleet.password_file``, never from the DSN."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from proxy.config.model import FleetConfig
from proxy.fleet import schema
from proxy.fleet.ledger import Ledger, LedgerUnreachable
from tests.integration.harness import run_cli
from tests.pgserver import PgServer

PEER = "ed25519 " + "ab" * 32


def _config(folder: Path, dsn: str, *, password_file: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["fleet:", "  node: bg-a", f"  postgres: {dsn}", f'  peers: {{bg-a: "{PEER}"}}']
    if password_file is not None:
        lines.append(f"  password_file: {password_file}")
    path = folder / "proxy.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


async def _versions(dsn: str) -> tuple[int, int] | None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await schema.ledger_versions(conn)


async def test_migrate_creates_then_finds_nothing_to_do_and_grants(
    pg_server: PgServer, tmp_path: Path
) -> None:
    dsn = pg_server.create_db("cli_migrate")
    config = _config(tmp_path, dsn)
    first = run_cli(config, "fleet", "migrate")
    assert first.returncode == 0, first.stderr
    where = f"postgresql://127.0.0.1:{pg_server.port}/cli_migrate"
    v = schema.SCHEMA_VERSION
    steps = ", ".join(str(s.version) for s in schema.STEPS)
    assert first.stdout == f"ledger {where}: schema version 0 -> {v} (applied step {steps})\n"
    assert await _versions(dsn) == (schema.SCHEMA_VERSION, 1)
    again = run_cli(config, "fleet", "migrate")
    assert (again.returncode, again.stdout) == (
        0,
        f"ledger {where}: schema already at version {v}\n",
    )

    pg_server.create_role("bg_cli_node")
    granted = run_cli(config, "fleet", "migrate", "--grant", "bg_cli_node")
    assert granted.returncode == 0, granted.stderr
    assert "granted the nodes' rights to role bg_cli_node" in granted.stdout
    node_dsn = pg_server.dsn("cli_migrate", "bg_cli_node")
    async with await psycopg.AsyncConnection.connect(node_dsn, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO nodes (name, node_id, checkpoint_key) VALUES ('bg-a', 'i', %s)", (PEER,)
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await conn.execute("UPDATE nodes SET node_id = 'j'")


def test_migrate_refusals_name_the_ledger_and_hold_no_secret(
    pg_server: PgServer, tmp_path: Path
) -> None:
    down = _config(tmp_path / "down", pg_server.dsn("ledger", port=1))
    result = run_cli(down, "fleet", "migrate")
    assert result.returncode == 1
    assert "postgresql://127.0.0.1:1/ledger" in result.stderr

    no_fleet = tmp_path / "plain" / "proxy.yaml"
    no_fleet.parent.mkdir()
    no_fleet.write_text("{}\n")
    result = run_cli(no_fleet, "fleet", "migrate")
    assert result.returncode == 1
    assert "no fleet: section" in result.stderr

    secret = "hunter2-not-echoed"
    result = run_cli(no_fleet, "fleet", "migrate", "--dsn", f"postgresql://u:{secret}@db/x")
    assert result.returncode == 1
    assert "must not contain a password" in result.stderr
    assert secret not in result.stderr + result.stdout

    result = run_cli(
        no_fleet,
        "fleet",
        "migrate",
        "--grant",
        "no_such_role",
        "--dsn",
        pg_server.create_db("cli_bad_grant"),
    )
    assert result.returncode == 1
    assert 'role "no_such_role" does not exist' in result.stderr


async def _one(conn: psycopg.AsyncConnection[Any]) -> int:
    cur = await conn.execute("SELECT 1")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_the_password_comes_from_the_password_file(
    pg_server: PgServer, tmp_path: Path
) -> None:
    password = "s3cret-from-the-file"
    pg_server.require_password("bg_pw", password)
    pg_server.psql('CREATE DATABASE "pw_ledger" OWNER bg_pw')
    dsn = pg_server.dsn("pw_ledger", "bg_pw")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg_server.port}:pw_ledger:bg_pw:{password}\n")
    os.chmod(passfile, 0o600)
    # The CLI, configured with the file, migrates as the owner.
    result = run_cli(
        _config(tmp_path / "cfg", dsn, password_file=str(passfile)), "fleet", "migrate"
    )
    assert result.returncode == 0, result.stderr

    fleet = FleetConfig(node="bg-a", postgres=dsn, password_file=passfile, peers={"bg-a": PEER})
    led = Ledger(fleet)
    try:
        assert await led.run(_one, what="probe") == 1
    finally:
        await led.close()

    wrong = tmp_path / "wrong"
    wrong.write_text(f"*:*:*:bg_pw:not-{password}\n")
    os.chmod(wrong, 0o600)
    led = Ledger(FleetConfig(node="bg-a", postgres=dsn, password_file=wrong, peers={}))
    try:
        with pytest.raises(LedgerUnreachable, match="password authentication failed") as caught:
            await led.run(_one, what="probe")
        assert password not in caught.value.message
    finally:
        await led.close()
