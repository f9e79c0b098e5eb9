"""Witnessing the peers: their latest signed checkpoints, copied into this node's chain.

Owns reading each peer's latest ``checkpoint`` event from the ledger and turning it into
a ``peer_witness`` event (the checkpoint's fields verbatim, and the peer's name). Once
this node's chain holds it, a tail later cut from the peer's events in the ledger is
caught by ``verify`` from this node's copy. A checkpoint whose signature does not check
against the key ``fleet.peers`` pins is not witnessed (it is logged: ``verify`` names
it); an unchanged one is not witnessed twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import psycopg

from proxy.audit.checkpoint import parse_public_key, signature_ok
from proxy.core import events
from proxy.core.chaincheck import checkpoint_from_data
from proxy.core.errors import BreakglassError
from proxy.core.text import escape

log = logging.getLogger("breakglass")


class Witness:
    def __init__(self, node: str, peers: Mapping[str, str]) -> None:
        self.node = node
        self.peers = {name: key for name, key in sorted(peers.items()) if name != node}
        self.seen: dict[str, int] = {}  # peer -> the checkpoint seq last witnessed

    async def latest(self, conn: psycopg.AsyncConnection[Any]) -> list[events.PeerWitness]:
        """A ``peer_witness`` for each peer whose latest checkpoint in the ledger is new
        since the last call and signed by its pinned key."""
        out: list[events.PeerWitness] = []
        for peer, pinned in self.peers.items():
            cur = await conn.execute(
                "SELECT data FROM events WHERE node = %s AND type = %s ORDER BY seq DESC LIMIT 1",
                (peer, events.Checkpoint.TYPE),
            )
            row = await cur.fetchone()
            if row is None:
                continue
            witness = self._judge(peer, pinned, str(row[0]))
            if witness is not None:
                out.append(witness)
        return out

    def witnessed(self, witness: events.PeerWitness) -> None:
        """``witness`` is in this node's chain: the same checkpoint is not taken again."""
        self.seen[witness.peer] = witness.seq

    def _judge(self, peer: str, pinned: str, data_json: str) -> events.PeerWitness | None:
        try:
            data = json.loads(data_json)
        except ValueError:
            data = None
        cp = checkpoint_from_data(data) if isinstance(data, dict) else None
        if cp is None:
            log.error("fleet: %s's latest checkpoint in the ledger is malformed", escape(peer))
            return None
        if self.seen.get(peer) == cp.seq:
            return None
        try:
            ok = signature_ok(parse_public_key(pinned), cp)
        except BreakglassError:
            ok = False
        if not ok:
            log.error(
                "fleet: %s's checkpoint at seq %d in the ledger is not signed by its pinned key;"
                " not witnessed",
                escape(peer),
                cp.seq,
            )
            return None
        # The stored fields as they are (time as stored: an int stays an int).
        return events.PeerWitness(peer, cp.seq, cp.head, data["time"], cp.signature, cp.key)
