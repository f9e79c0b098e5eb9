"""A node's identity in the fleet: its id file, and claiming its name in the ledger.

Owns ``<recordings>/fleet-node-id`` (0600, random, generated once and kept: it tells this
node's disk from a clone's or a rebuilt one's) and the claim: one ``nodes`` row per name,
holding the node id and the checkpoint key (as ``breakglass checkpoint-key`` prints it).
A claim is refused, never overwritten, when the ledger holds the name for another node
id or with another key, or when this node's own key is not the one pinned for it in
``fleet.peers``: the node then keeps serving locally but never ships. Rejoining under a
name whose old node was retired is the fleet operations' job, not done here.
"""

from __future__ import annotations

import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import psycopg

from proxy.core.errors import BreakglassError

NODE_ID_NAME = "fleet-node-id"
_NODE_ID = re.compile(r"[0-9a-f]{32}")


class NodeIdError(BreakglassError):
    reason = "fleet_node_id"


def node_id_path(recordings: Path) -> Path:
    return recordings / NODE_ID_NAME


def load_or_create_node_id(path: Path) -> str:
    """This node's id: read from ``path``, or generated (0600) on first use. A file that
    does not hold an id is refused rather than replaced: a new id would make this node a
    stranger to its own name in the ledger."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        node_id = secrets.token_hex(16)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return load_or_create_node_id(path)  # another process made it first
        with os.fdopen(fd, "w") as f:
            f.write(node_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        return node_id
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise NodeIdError(f"cannot read the fleet node id {path}: {exc}") from exc
    if not _NODE_ID.fullmatch(text):
        raise NodeIdError(f"{path} does not hold a fleet node id (32 hex digits)")
    return text


def same_key(a: str, b: str) -> bool:
    """Two keys as ``checkpoint-key`` prints them (``ed25519 HEX``), spacing and case aside."""
    return a.split() == b.split() or a.lower().split() == b.lower().split()


@dataclass(frozen=True)
class Claim:
    """The name is this node's (``detail`` None), or why not."""

    detail: str | None

    @property
    def ok(self) -> bool:
        return self.detail is None


def check_pin(node: str, key: str, pinned: str | None) -> Claim:
    """This node's own key against the one ``fleet.peers`` pins for it."""
    if pinned is None:
        return Claim(f"fleet.peers pins no key for {node}")
    if not same_key(key, pinned):
        return Claim(f"this node's checkpoint key is not the one fleet.peers pins for {node}")
    return Claim(None)


async def claim(conn: psycopg.AsyncConnection, node: str, node_id: str, key: str) -> Claim:
    """Claim ``node`` for this node id and key (one ledger transaction): insert the row
    if the name is free, then judge the row that holds it."""
    await conn.execute(
        "INSERT INTO nodes (name, node_id, checkpoint_key) VALUES (%s, %s, %s)"
        " ON CONFLICT (name) DO NOTHING",
        (node, node_id, key),
    )
    cur = await conn.execute("SELECT node_id, checkpoint_key FROM nodes WHERE name = %s", (node,))
    row = await cur.fetchone()
    if row is None:  # the insert above cannot have lost it: the table is insert-only
        return Claim("the ledger did not keep this node's claim")
    held_id, held_key = str(row[0]), str(row[1])
    if held_id != node_id:
        cur = await conn.execute(
            "SELECT 1 FROM node_retirements WHERE name = %s AND node_id = %s", (node, held_id)
        )
        retired = await cur.fetchone() is not None
        state = "retired" if retired else "not retired"
        return Claim(f"held by node id {held_id[:12]} ({state}); this node is {node_id[:12]}")
    if not same_key(held_key, key):
        return Claim("the ledger holds this node's name with another checkpoint key")
    return Claim(None)
