"""Building a fleet ledger's contents directly, for the tests of what reads it.

Each node's journal is a real, honest chain: events appended to a ``MemoryStore`` (the
same hashes as SQLite), checkpoints signed by ``proxy.audit.checkpoint`` with the node's
own Ed25519 key, ``peer_witness`` events copied from a peer's latest checkpoint as the
shipper copies them. ``load`` writes the journals into the ledger as the shipper would
(nodes, events in order, cast chunks, node_status), so these tests do not depend on it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proxy.audit.checkpoint import public_hex, write_checkpoint
from proxy.config import FleetConfig
from proxy.core import events
from proxy.core.chaincheck import ChainRow
from proxy.fleet.ledger import Ledger
from proxy.store.base import NewEvent
from proxy.store.memory import MemoryStore
from tests.eventdata import typed

T0 = 1_790_000_000.0  # 2026-09-21: sessions long over
CHUNK = 100  # bytes per cast chunk: small, so a cast has several


@dataclass
class Node:
    """One node's journal, built in memory."""

    name: str
    t: float = T0
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    store: MemoryStore = field(default_factory=MemoryStore)
    casts: dict[tuple[str, int], bytes] = field(default_factory=dict)

    @property
    def pin(self) -> str:
        """Its key as ``breakglass checkpoint-key`` prints it (``fleet.peers``)."""
        return f"ed25519 {public_hex(self.key.public_key())}"

    def tick(self) -> float:
        self.t += 1.0
        return self.t

    async def append(
        self, ev: events.Event, session: str | None = None, channel: int | None = None
    ) -> None:
        await self.store.append([NewEvent.of(ev, self.tick(), session, channel)])

    async def session(self, sid: str, cast: bytes, *, end: bool = True) -> None:
        """A session with one recorded exec channel whose cast is ``cast``."""
        start = {"person": "alice", "target": "db01", "login": "root", "deadline": T0 + 1e6}
        await self.append(typed("session_start", start), sid)
        recording = f"{sid[:4]}/{sid}/0.cast"
        await self.append(events.ChannelStart("exec", False, recording, command="uptime"), sid, 0)
        self.casts[(sid, 0)] = cast
        if not end:
            return
        digest = hashlib.sha256(cast).hexdigest()
        await self.append(
            events.ChannelEnd(0, recording_sha256=digest, recording_bytes=len(cast)), sid, 0
        )
        await self.append(events.SessionEnd("client_exit"), sid)

    async def checkpoint(self) -> None:
        await write_checkpoint(self.store, self.key, self.tick())

    async def witness(self, peer: Node) -> None:
        """A ``peer_witness`` of ``peer``'s latest checkpoint."""
        rows = await peer.rows()
        cp = next(r for r in reversed(rows) if r.type == events.Checkpoint.TYPE)
        data = events.decode(cp.type, json.loads(cp.data_json))
        assert isinstance(data, events.Checkpoint)
        await self.append(
            events.PeerWitness(peer.name, data.seq, data.head, data.time, data.signature, data.key)
        )

    async def rows(self) -> list[ChainRow]:
        return await self.store.chain_rows(0, 1_000_000)


async def load(conn: Any, nodes: list[Node], *, status: bool = True) -> None:
    """Write the journals into the ledger at ``conn`` (a psycopg AsyncConnection), in
    order, as a node that shipped everything would have."""
    for node in nodes:
        rows = await node.rows()
        await conn.execute(
            "INSERT INTO nodes (name, node_id, checkpoint_key) VALUES (%s, %s, %s)",
            (node.name, f"id-{node.name}", node.pin),
        )
        for r in rows:
            await conn.execute(
                "INSERT INTO events (node, seq, time, type, session_id, channel, data,"
                " prev_hash, hash) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    node.name,
                    r.seq,
                    r.time,
                    r.type,
                    r.session_id,
                    r.channel,
                    r.data_json,
                    r.prev_hash,
                    r.hash,
                ),
            )
        for (sid, n), cast in node.casts.items():
            for offset in range(0, len(cast), CHUNK):
                await conn.execute(
                    'INSERT INTO cast_chunks (node, session_id, channel, "offset", data)'
                    " VALUES (%s, %s, %s, %s, %s)",
                    (node.name, sid, n, offset, cast[offset : offset + CHUNK]),
                )
        if status:
            last = rows[-1].seq if rows else 0
            await heartbeat(conn, node.name, journal_seq=last, shipped_seq=last)
    await conn.commit()


async def heartbeat(
    conn: Any,
    name: str,
    *,
    journal_seq: int,
    shipped_seq: int,
    unshipped_bytes: int = 0,
    clock_offset: float = 0.0,
    ago: float = 0.0,
    problem: str | None = None,
) -> None:
    """A node's heartbeat as the shipper writes it (``ago`` seconds before the ledger's
    now, with the node's clock ``clock_offset`` seconds ahead of the ledger's)."""
    await conn.execute(
        "INSERT INTO node_status (name, node_id, heartbeat_at, node_time, journal_seq,"
        " shipped_seq, unshipped_bytes, version, problem) VALUES"
        " (%s, %s, now() - make_interval(secs => %s),"
        "  extract(epoch FROM now()) - %s + %s, %s, %s, %s, 'test', %s)"
        " ON CONFLICT (name) DO UPDATE SET heartbeat_at = EXCLUDED.heartbeat_at,"
        " node_time = EXCLUDED.node_time, journal_seq = EXCLUDED.journal_seq,"
        " shipped_seq = EXCLUDED.shipped_seq, unshipped_bytes = EXCLUDED.unshipped_bytes,"
        " problem = EXCLUDED.problem",
        (
            name,
            f"id-{name}",
            ago,
            ago,
            clock_offset,
            journal_seq,
            shipped_seq,
            unshipped_bytes,
            problem,
        ),
    )


@asynccontextmanager
async def open_ledger(dsn: str, node: str, peers: Mapping[str, str]) -> AsyncIterator[Ledger]:
    """The ledger at ``dsn``, as node ``node`` pinning ``peers`` reaches it."""
    ledger = Ledger(FleetConfig(node=node, postgres=dsn, peers=dict(peers)))
    await ledger.open()
    try:
        yield ledger
    finally:
        await ledger.close()


def fleet_config(tmp: Path, dsn: str, node: str, peers: Mapping[str, str]) -> Path:
    """A config file for a node of this fleet (its own journal empty, no targets)."""
    (tmp / "rec").mkdir(mode=0o700, exist_ok=True)
    cfg = tmp / "proxy.yaml"
    pins = "".join(f"    {name}: {json.dumps(pin)}\n" for name, pin in peers.items())
    cfg.write_text(
        "listen: {host: 127.0.0.1, port: 2222, host_key: rec/ssh_host_ed25519_key}\n"
        "storage: {database: rec/audit.db, recordings: rec}\n"
        "targets: {}\n"
        f"fleet:\n  node: {node}\n  postgres: {json.dumps(dsn)}\n  peers:\n{pins}"
    )
    return cfg
