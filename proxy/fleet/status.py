"""``breakglass fleet status``: every node as the ledger last heard from it.

Owns reading ``nodes``, ``node_status`` and each node's last event in the ledger, and
what the operator is shown for each node: when it last reached the ledger (its last
heartbeat, and how long ago by the ledger's own clock), the events and cast bytes it has
not shipped yet, its clock's offset from the ledger's ``now()`` (flagged above
``CLOCK_LIMIT``), and the problem it reports (a name taken, a conflict, too old).

``node_status`` is liveness, not evidence (nodes update it): this says how the fleet is
doing, ``verify`` says whether its record holds. One bounded ledger call; reads only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from proxy.audit.views import rfc3339
from proxy.core.text import escape
from proxy.core.units import format_duration, format_size

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from proxy.fleet.scan import LedgerCalls

CLOCK_LIMIT = 2.0  # seconds a node's clock may be off the ledger's before it is flagged
# A node heartbeats every shipping round (about a second): this long without one, it is
# not reaching the ledger (down, cut off, or stopped).
SILENT_AFTER = 30.0

_QUERY = """
SELECT coalesce(n.name, s.name),
       n.name IS NOT NULL,
       extract(epoch FROM s.heartbeat_at)::double precision,
       s.node_time, s.journal_seq, s.shipped_seq, s.unshipped_bytes, s.version, s.problem,
       (SELECT max(e.seq) FROM events e WHERE e.node = coalesce(n.name, s.name)),
       extract(epoch FROM now())::double precision
FROM nodes n FULL JOIN node_status s ON s.name = n.name
ORDER BY 1
"""


@dataclass
class NodeStatus:
    node: str
    claimed: bool  # has a row in ``nodes``
    pinned: bool  # has a key in ``fleet.peers``
    heartbeat: float | None = None  # the ledger's clock at its last heartbeat
    age: float | None = None  # seconds since then, by the ledger's clock
    clock_offset: float | None = None  # its clock minus the ledger's at that heartbeat
    journal_seq: int | None = None
    shipped_seq: int | None = None
    unshipped_bytes: int | None = None
    ledger_seq: int = 0  # its last event in the ledger
    version: str | None = None
    problem: str | None = None  # what the node itself reports
    flags: list[str] = field(default_factory=list)  # what this command sees wrong

    @property
    def unshipped_events(self) -> int | None:
        if self.journal_seq is None or self.shipped_seq is None:
            return None
        return max(self.journal_seq - self.shipped_seq, 0)


@dataclass
class FleetStatus:
    ledger: str
    now: float  # the ledger's now()
    nodes: list[NodeStatus]


async def fleet_status(ledger: LedgerCalls, peers: Mapping[str, str]) -> FleetStatus:
    """Every node the ledger knows, and every node pinned in ``peers`` that it does not."""

    async def read(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
        cur = await conn.execute(_QUERY)
        return await cur.fetchall()

    rows = await ledger.run(read, what="the fleet's status")
    now = float(rows[0][10]) if rows else 0.0
    if not rows:
        now = await ledger.run(_ledger_now, what="the ledger's clock")
    nodes: list[NodeStatus] = []
    for (
        name,
        claimed,
        beat,
        node_time,
        journal,
        shipped,
        unshipped,
        version,
        problem,
        seq,
        _,
    ) in rows:
        st = NodeStatus(str(name), bool(claimed), str(name) in peers, ledger_seq=int(seq or 0))
        if beat is not None:
            st.heartbeat, st.age = float(beat), max(now - float(beat), 0.0)
            st.clock_offset = float(node_time) - float(beat)
            st.journal_seq, st.shipped_seq = int(journal), int(shipped)
            st.unshipped_bytes, st.version = int(unshipped), str(version)
            st.problem = None if problem is None else str(problem)
        nodes.append(st)
    known = {n.node for n in nodes}
    nodes += [NodeStatus(name, False, True) for name in sorted(peers) if name not in known]
    for st in nodes:
        st.flags = _flags(st)
    return FleetStatus(ledger.describe(), now, sorted(nodes, key=lambda n: n.node))


async def _ledger_now(conn: AsyncConnection[Any]) -> float:
    cur = await conn.execute("SELECT extract(epoch FROM now())::double precision")
    row = await cur.fetchone()
    return float(row[0]) if row else 0.0


def _flags(st: NodeStatus) -> list[str]:
    flags: list[str] = []
    if not st.pinned:
        flags.append("not pinned in fleet.peers")
    if st.heartbeat is None:
        flags.append("never reached the ledger" if not st.claimed else "no heartbeat yet")
        return flags
    if st.age is not None and st.age > SILENT_AFTER:
        flags.append(f"silent for {format_duration(round(st.age))}")
    if st.clock_offset is not None and abs(st.clock_offset) > CLOCK_LIMIT:
        flags.append(f"clock off by {st.clock_offset:+.1f} s")
    if st.shipped_seq is not None and st.ledger_seq < st.shipped_seq:
        flags.append(f"ledger lacks events {st.ledger_seq + 1}..{st.shipped_seq} it shipped")
    return flags


def status_json(s: FleetStatus) -> dict[str, Any]:
    return {
        "ledger": s.ledger,
        "now": rfc3339(s.now),
        "nodes": [
            {
                "node": n.node,
                "claimed": n.claimed,
                "pinned": n.pinned,
                "last_reached": rfc3339(n.heartbeat),
                "heartbeat_age": n.age,
                "clock_offset": n.clock_offset,
                "journal_seq": n.journal_seq,
                "shipped_seq": n.shipped_seq,
                "unshipped_events": n.unshipped_events,
                "unshipped_bytes": n.unshipped_bytes,
                "ledger_seq": n.ledger_seq,
                "version": n.version,
                "problem": n.problem,
                "flags": n.flags,
            }
            for n in s.nodes
        ],
    }


def status_text(s: FleetStatus) -> str:
    out = [f"ledger {escape(s.ledger)}, its clock {rfc3339(s.now)}"]
    if not s.nodes:
        out.append("no nodes: none has claimed its name in the ledger, and fleet.peers is empty")
        return "\n".join(out)
    out.append(
        f"{'NODE':14}  {'LAST REACHED':24}  {'AGO':>7}  {'NOT SHIPPED':>22}  {'IN LEDGER':>9}"
        f"  {'CLOCK':>8}  PROBLEM"
    )
    for n in s.nodes:
        ago = "-" if n.age is None else f"{n.age:.1f} s"
        unshipped = (
            "-"
            if n.unshipped_events is None
            else f"{n.unshipped_events} ev, {format_size(n.unshipped_bytes or 0)}"
        )
        clock = "-" if n.clock_offset is None else f"{n.clock_offset:+.2f} s"
        said = [escape(n.problem)] if n.problem else []
        said += [f"FLAG: {f}" for f in n.flags]
        out.append(
            f"{escape(n.node):14}  {rfc3339(n.heartbeat) or '-':24}  {ago:>7}  {unshipped:>22}"
            f"  {n.ledger_seq:>9}  {clock:>8}  {'; '.join(said) or '-'}"
        )
    return "\n".join(out)
