"""The ledger schema on a real PostgreSQL: append-only evidence, linked events,
contiguous cast chunks, the projection views, safe migrations and a node's rights."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest

from proxy.core import chain
from proxy.fleet import schema
from tests.pgserver import PgServer

GENESIS = "0" * 64


def _hash(n: int) -> str:
    return f"{n:064x}"


async def _insert_event(
    conn: psycopg.AsyncConnection[Any],
    seq: int,
    *,
    node: str = "bg-a",
    prev: str | None = None,
    type_: str = "note",
    session: str | None = None,
    channel: int | None = None,
    data: dict[str, object] | None = None,
    time: float | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO events (node, seq, time, type, session_id, channel, data, prev_hash, hash)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            node,
            seq,
            float(seq) if time is None else time,
            type_,
            session,
            channel,
            json.dumps(data or {}),
            (GENESIS if seq == 1 else _hash(seq - 1)) if prev is None else prev,
            _hash(seq),
        ),
    )


async def _refused(conn: psycopg.AsyncConnection[Any], sql: str, message: str) -> None:
    with pytest.raises(psycopg.Error, match=message):
        async with conn.transaction():
            await conn.execute(sql.encode())


async def test_events_are_append_only_and_linked(ledger_dsn: str) -> None:
    assert chain.GENESIS == GENESIS
    async with await psycopg.AsyncConnection.connect(ledger_dsn, autocommit=True) as conn:
        for seq in (1, 2, 3):
            await _insert_event(conn, seq)
        await _insert_event(conn, 1, node="bg-b")  # another node's chain starts at 1
        await _refused(conn, "UPDATE events SET data = '{}' WHERE seq = 2", "append-only")
        await _refused(conn, "DELETE FROM events WHERE seq = 3", "append-only")
        await _refused(conn, "TRUNCATE events", "append-only")
        # A gap, a wrong predecessor hash, a first event that does not start the chain.
        with pytest.raises(psycopg.Error, match=r"\(bg-a, 5\) does not link"):
            await _insert_event(conn, 5)
        with pytest.raises(psycopg.Error, match="does not link"):
            await _insert_event(conn, 4, prev=_hash(2))
        with pytest.raises(psycopg.Error, match="does not link"):
            await _insert_event(conn, 1, node="bg-c", prev=_hash(9))
        # Re-shipping a row is a no-op, as the shipper does it.
        await conn.execute(
            "INSERT INTO events SELECT * FROM events WHERE node = 'bg-a' AND seq = 3"
            " ON CONFLICT DO NOTHING"
        )
        cur = await conn.execute("SELECT node, count(*) FROM events GROUP BY node ORDER BY node")
        assert await cur.fetchall() == [("bg-a", 3), ("bg-b", 1)]


async def test_chunks_follow_each_other_and_evidence_tables_are_append_only(
    ledger_dsn: str,
) -> None:
    async with await psycopg.AsyncConnection.connect(ledger_dsn, autocommit=True) as conn:
        insert = "INSERT INTO cast_chunks VALUES ('bg-a', 's1', 0, %s, %s)"
        await conn.execute(insert, (0, b"hello"))
        await conn.execute(insert, (5, b" world"))
        with pytest.raises(psycopg.Error, match="offset 12 does not follow"):
            await conn.execute(insert, (12, b"gap"))
        with pytest.raises(psycopg.Error, match="does not follow"):
            await conn.execute("INSERT INTO cast_chunks VALUES ('bg-a', 's2', 0, 3, 'x')")
        with pytest.raises(psycopg.Error, match="check"):
            await conn.execute(insert, (11, b""))
        await conn.execute(
            "INSERT INTO nodes (name, node_id, checkpoint_key) VALUES ('bg-a', 'id1', 'k')"
        )
        await conn.execute(
            "INSERT INTO node_retirements (name, node_id, operator, reason)"
            " VALUES ('bg-a', 'id0', 'ops', 'rebuilt')"
        )
        for table in ("cast_chunks", "nodes", "node_retirements"):
            await _refused(
                conn,
                f"UPDATE {table} SET node_id = 'x'"
                if table != "cast_chunks"
                else "UPDATE cast_chunks SET data = 'x'",
                f"ledger {table} are append-only",
            )
            await _refused(conn, f"DELETE FROM {table}", f"ledger {table} are append-only")
        cur = await conn.execute(
            "SELECT string_agg(data, ''::bytea ORDER BY \"offset\") FROM cast_chunks"
        )
        assert await cur.fetchone() == (b"hello world",)


async def test_views_project_sessions_and_channels(ledger_dsn: str) -> None:
    start = {
        "person": "alice",
        "credential_id": "c1",
        "source": "192.0.2.7",
        "client_version": "SSH-2.0-OpenSSH_9.2",
        "target": "db01",
        "login": "root",
        "justification": "INC-1 disk full",
        "deadline": 4000.0,
    }
    rows: list[tuple[str, dict[str, object], int | None]] = [
        ("session_start", start, None),
        (
            "deadline_changed",
            {"deadline": 5000.0, "by": 1000.0, "operator": "o", "reason": "r"},
            None,
        ),
        (
            "channel_start",
            {
                "kind": "session",
                "pty": True,
                "recording": "s1/1.cast",
                "command": None,
                "term": "xterm",
            },
            1,
        ),
        (
            "channel_end",
            {
                "exit_status": 0,
                "recording_sha256": "ab",
                "recording_bytes": 7,
                "bytes_up": 3,
                "bytes_down": 9,
            },
            1,
        ),
        ("session_end", {"reason": "closed"}, None),
        ("session_end", {"reason": "late", "detail": "ignored"}, None),
    ]
    async with await psycopg.AsyncConnection.connect(ledger_dsn, autocommit=True) as conn:
        for seq, (type_, data, channel) in enumerate(rows, 1):
            await _insert_event(
                conn, seq, type_=type_, session="s1", channel=channel, data=data, time=100.0 + seq
            )
        cur = await conn.execute("SELECT * FROM ledger_sessions")
        assert await cur.fetchall() == [
            (
                "bg-a",
                "s1",
                "alice",
                "c1",
                "192.0.2.7",
                "SSH-2.0-OpenSSH_9.2",
                "db01",
                "root",
                "INC-1 disk full",
                101.0,
                5000.0,
                105.0,
                "closed",
                None,
            )
        ]
        cur = await conn.execute("SELECT * FROM ledger_channels")
        assert await cur.fetchall() == [
            (
                "bg-a",
                "s1",
                1,
                "session",
                None,
                1,
                "xterm",
                103.0,
                104.0,
                0,
                None,
                "s1/1.cast",
                "ab",
                7,
                3,
                9,
            )
        ]


async def test_migrate_is_idempotent_and_concurrent_runs_are_safe(pg_server: PgServer) -> None:
    dsn = pg_server.create_db("migrate_race")

    async def one() -> schema.Migrated:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await schema.migrate(conn)

    results = await asyncio.gather(*(one() for _ in range(3)))
    assert sorted(r.applied for r in results) == [(), (), tuple(s.version for s in schema.STEPS)]
    again = await one()
    v = schema.SCHEMA_VERSION
    assert (again.before, again.after, again.applied) == (v, v, ())
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await schema.schema_problem(conn) is None
        assert await schema.ledger_versions(conn) == (schema.SCHEMA_VERSION, 1)
        # A ledger that needs a newer reader: this node is too old, and says so.
        await conn.execute("UPDATE ledger_meta SET value = '2' WHERE key = 'min_reader_version'")
        assert await schema.schema_problem(conn) == schema.TOO_OLD
    pg_server.drop_db("migrate_race")


async def test_unmigrated_ledger_is_named(pg_server: PgServer) -> None:
    dsn = pg_server.create_db("never_migrated")
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await schema.schema_problem(conn) == schema.NOT_MIGRATED
    pg_server.drop_db("never_migrated")


async def test_a_node_role_appends_and_reads_but_never_rewrites(
    pg_server: PgServer, ledger_dsn: str
) -> None:
    pg_server.create_role("bg_node")
    db = ledger_dsn.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(ledger_dsn, autocommit=True) as owner:
        await schema.migrate(owner, grant_to="bg_node")
        # What a later migration step adds is readable without granting again.
        await owner.execute("CREATE VIEW later_step AS SELECT 1 AS one")
    node_dsn = pg_server.dsn(db, "bg_node")
    async with await psycopg.AsyncConnection.connect(node_dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT one FROM later_step")
        assert await cur.fetchone() == (1,)
        await _insert_event(conn, 1)
        cur = await conn.execute("SELECT count(*) FROM events")
        assert await cur.fetchone() == (1,)
        await conn.execute(
            "INSERT INTO node_status VALUES ('bg-a', 'id', now(), 1.0, 1, 1, 0, '0.1', NULL)"
        )
        await conn.execute("UPDATE node_status SET shipped_seq = 2")
        await conn.execute("SELECT * FROM ledger_sessions, ledger_channels")
        for sql in (
            "UPDATE events SET data = '{}'",
            "DELETE FROM events",
            "TRUNCATE events",
            "ALTER TABLE events DISABLE TRIGGER events_append_only",
            "INSERT INTO node_retirements VALUES ('bg-a', 'id', now(), 'me', 'because')",
            "UPDATE ledger_meta SET value = '0'",
        ):
            await _refused(conn, sql, "permission denied|must be owner")


async def test_a_ledger_restored_from_a_dump_is_the_older_ledger_with_its_rules(
    pg_server: PgServer, ledger_dsn: str
) -> None:
    db = ledger_dsn.rsplit("/", 1)[1]
    async with await psycopg.AsyncConnection.connect(ledger_dsn, autocommit=True) as conn:
        for seq in (1, 2):
            await _insert_event(conn, seq)
    dump = pg_server.dump(db)
    async with await psycopg.AsyncConnection.connect(ledger_dsn, autocommit=True) as conn:
        await _insert_event(conn, 3)
    pg_server.restore(db, dump)
    async with await psycopg.AsyncConnection.connect(ledger_dsn, autocommit=True) as conn:
        cur = await conn.execute("SELECT max(seq) FROM events")
        assert await cur.fetchone() == (2,)
        assert await schema.schema_problem(conn) is None
        await _refused(conn, "DELETE FROM events", "append-only")
        with pytest.raises(psycopg.Error, match="does not link"):
            await _insert_event(conn, 4)
        await _insert_event(conn, 3)  # the lost tail is shipped again
