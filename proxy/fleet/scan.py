"""Reading the fleet ledger back in bounded pieces: a node's events, its casts.

Owns the queries ``verify`` runs, each one ``Ledger.run`` call (so each bounded by
``fleet.timeout`` and counted by the ledger's breaker): a node's events as
``ChainReads``, its events at given seqs, the nodes that have events, each cast's
shipped size, and a cast's chunks in offset order. Reads only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, LiteralString, Protocol, TypeVar

from proxy.core.chain import GENESIS
from proxy.core.chaincheck import ChainRow

if TYPE_CHECKING:
    from psycopg import AsyncConnection

T = TypeVar("T")

# Rows per ledger call: each call must fit in ``fleet.timeout``.
CAST_BATCH = 1000  # casts listed per call
CHUNK_BATCH = 8  # chunks (at most 256 KiB each) read per call while hashing
LOOKUP_BATCH = 5000  # events looked up by seq per call


class LedgerCalls(Protocol):
    """What the fleet's auditor commands need of ``proxy.fleet.ledger.Ledger``."""

    def describe(self) -> str: ...

    async def run(self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]], *, what: str) -> T: ...


async def fetch(
    ledger: LedgerCalls, sql: LiteralString, params: Sequence[Any], what: str
) -> list[tuple[Any, ...]]:
    """The rows of one query, in one bounded call."""

    async def call(conn: AsyncConnection[Any]) -> list[tuple[Any, ...]]:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()

    return await ledger.run(call, what=what)


class NodeChain:
    """One node's events in the ledger, read as ``ChainReads``."""

    def __init__(self, ledger: LedgerCalls, node: str) -> None:
        self.ledger = ledger
        self.node = node

    async def head(self) -> tuple[int, str]:
        rows = await fetch(
            self.ledger,
            "SELECT seq, hash FROM events WHERE node = %s ORDER BY seq DESC LIMIT 1",
            (self.node,),
            f"the head of {self.node}'s events",
        )
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, GENESIS)

    async def chain_rows(self, after_seq: int, limit: int) -> list[ChainRow]:
        rows = await fetch(
            self.ledger,
            "SELECT seq, time, type, session_id, channel, data, prev_hash, hash FROM events"
            " WHERE node = %s AND seq > %s ORDER BY seq LIMIT %s",
            (self.node, after_seq, limit),
            f"{self.node}'s events after {after_seq}",
        )
        return [ChainRow(*row) for row in rows]

    async def hashes(self, seqs: Iterable[int]) -> dict[int, str]:
        """The hash of each of these events that the ledger has."""
        wanted = sorted(set(seqs))
        out: dict[int, str] = {}
        for i in range(0, len(wanted), LOOKUP_BATCH):
            rows = await fetch(
                self.ledger,
                "SELECT seq, hash FROM events WHERE node = %s AND seq = ANY(%s)",
                (self.node, wanted[i : i + LOOKUP_BATCH]),
                f"events of {self.node} by seq",
            )
            out.update((int(seq), str(h)) for seq, h in rows)
        return out


async def event_nodes(ledger: LedgerCalls) -> list[str]:
    """Every node with events in the ledger."""
    # A skip scan over the primary key: one index probe per node, not a scan of every event.
    rows = await fetch(
        ledger,
        "WITH RECURSIVE n(node) AS ("
        " SELECT min(node) FROM events"
        " UNION ALL SELECT (SELECT min(e.node) FROM events e WHERE e.node > n.node)"
        " FROM n WHERE n.node IS NOT NULL)"
        " SELECT node FROM n WHERE node IS NOT NULL",
        (),
        "the nodes with events",
    )
    return [str(r[0]) for r in rows]


async def cast_sizes(ledger: LedgerCalls, node: str) -> dict[tuple[str, int], int]:
    """Bytes shipped per cast (session, channel) of ``node``, a page of casts per call."""
    out: dict[tuple[str, int], int] = {}
    after: tuple[str, int] = ("", -1)
    while True:
        rows = await fetch(
            ledger,
            "SELECT session_id, channel, sum(length(data)) FROM cast_chunks"
            " WHERE node = %s AND (session_id, channel) > (%s, %s)"
            " GROUP BY session_id, channel ORDER BY session_id, channel LIMIT %s",
            (node, *after, CAST_BATCH),
            f"the casts of {node}",
        )
        for sid, n, size in rows:
            out[(str(sid), int(n))] = int(size)
        if len(rows) < CAST_BATCH:
            return out
        after = (str(rows[-1][0]), int(rows[-1][1]))


async def cast_chunks(
    ledger: LedgerCalls, node: str, sid: str, n: int
) -> AsyncIterator[tuple[int, bytes]]:
    """Each chunk of one cast as (offset, bytes), in offset order, as stored."""
    after = -1
    while True:
        rows = await fetch(
            ledger,
            'SELECT "offset", data FROM cast_chunks WHERE node = %s AND session_id = %s'
            ' AND channel = %s AND "offset" > %s ORDER BY "offset" LIMIT %s',
            (node, sid, n, after, CHUNK_BATCH),
            f"the cast {sid}/{n} of {node}",
        )
        for offset, data in rows:
            yield int(offset), bytes(data)
        if len(rows) < CHUNK_BATCH:
            return
        after = int(rows[-1][0])
