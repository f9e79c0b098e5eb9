"""Nodes of a fleet for the integration tests: real ``breakglass serve`` processes that
ship to one real PostgreSQL ledger, and the reads a test checks the ledger with.

Each node is a ``Deployment`` of its own (config, store, recordings, port); its
checkpoint key is made before it starts, so every node's config pins every peer's key
as ``breakglass checkpoint-key`` prints it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from proxy.audit.checkpoint import key_line, key_path, load_or_generate
from tests.integration.harness import Deployment, SshdTarget

# Quick enough that a test sees shipping within a second or two.
FLEET_OPTIONS: dict[str, object] = {"timeout": 2.0, "ship_interval": 0.2, "witness_interval": 1.0}


def make_key(directory: Path) -> str:
    """The checkpoint key of the node kept in ``directory``, made now if it is not yet."""
    recordings = directory / "recordings"
    recordings.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = load_or_generate(key_path(recordings))
    return key_line(key.public_key())


def fleet_section(
    node: str, dsn: str, peers: Mapping[str, str], **options: object
) -> dict[str, object]:
    return {"node": node, "postgres": dsn, "peers": dict(peers), **FLEET_OPTIONS, **options}


@dataclass
class Fleet:
    """Nodes by name, and the ledger they ship to."""

    dsn: str
    nodes: dict[str, Deployment]

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()


def start_fleet(
    directory: Path,
    names: Sequence[str],
    dsn: str,
    targets: Mapping[str, Mapping[str, object]],
    sshd_targets: Mapping[str, SshdTarget],
    *,
    ship_to: str | None = None,
    **options: object,
) -> Fleet:
    """One node per name, each in ``directory/NAME``, all pinning each other's keys. The
    nodes ship to ``ship_to`` (a relay, say) when given, else to ``dsn``; the test reads
    the ledger at ``dsn``."""
    peers = {name: make_key(directory / name) for name in names}
    nodes = {}
    try:
        for name in names:
            nodes[name] = Deployment.start(
                directory / name,
                targets,
                sshd_targets=sshd_targets,
                fleet=fleet_section(name, ship_to or dsn, peers, **options),
            )
    except BaseException:
        Fleet(dsn, nodes).stop()
        raise
    return Fleet(dsn, nodes)


# -------------------------------------------------------------------------- the ledger


def query(dsn: str, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
    """Rows of one query on the ledger (its own short connection)."""
    with psycopg.connect(dsn, connect_timeout=5, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return list(cur.fetchall()) if cur.description is not None else []


Row = tuple[int, float, str, str | None, int | None, str, str, str]


def ledger_rows(dsn: str, node: str) -> list[Row]:
    """The node's events in the ledger, by seq, as the local chain stores them."""
    rows = query(
        dsn,
        "SELECT seq, time, type, session_id, channel, data, prev_hash, hash FROM events"
        " WHERE node = %s ORDER BY seq",
        (node,),
    )
    return [tuple(r) for r in rows]


def local_rows(database: Path) -> list[Row]:
    """The node's own chain, read-only."""
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        rows = connection.execute(
            "SELECT seq, time, type, session_id, channel, data, prev_hash, hash FROM events"
            " ORDER BY seq"
        ).fetchall()
    finally:
        connection.close()
    return [tuple(r) for r in rows]


def ledger_cast(dsn: str, node: str, session_id: str, channel: int) -> bytes:
    rows = query(
        dsn,
        'SELECT "offset", data FROM cast_chunks WHERE node = %s AND session_id = %s'
        ' AND channel = %s ORDER BY "offset"',
        (node, session_id, channel),
    )
    out = b""
    for offset, data in rows:
        assert offset == len(out), f"chunk at {offset} after {len(out)} bytes"
        out += bytes(data)
    return out


def ledger_types(dsn: str, node: str, session_id: str | None = None) -> list[str]:
    return [r[2] for r in ledger_rows(dsn, node) if session_id is None or r[3] == session_id]


def data_of(row: Row) -> dict[str, Any]:
    data = json.loads(row[5])
    assert isinstance(data, dict)
    return data


def status(dsn: str, node: str) -> dict[str, Any] | None:
    rows = query(
        dsn,
        "SELECT node_id, journal_seq, shipped_seq, unshipped_bytes, problem FROM node_status"
        " WHERE name = %s",
        (node,),
    )
    if not rows:
        return None
    keys = ("node_id", "journal_seq", "shipped_seq", "unshipped_bytes", "problem")
    return dict(zip(keys, rows[0], strict=True))
