"""The auditor's reads over the fleet's ledger: every node's sessions, events, codes,
report aggregates, chains and casts, as the store's read Protocols return them.

Owns ``LedgerReads`` (``SessionReads``, ``ReportReads``, ``CredentialReads``), the
per-node ``NodeChain`` (``ChainReads`` and the node's event page), the fleet's event
page (one position per node) and the casts read back from ``cast_chunks``.

Ids: a session in the fleet is ``NODE/SESSION`` (``SessionRow.id``, ``ChannelRow.
session_id``, ``StoredEvent.session_id``); a code ``NODE/ID``. Every read that takes an
id also takes the bare one when exactly one node has it (``AmbiguousId`` otherwise).
The chain reads (``ChainRow``) stay exactly as stored, bare ids included: they are what
was hashed.

Every query is one bounded ledger call (``Ledger.run``): long listings and reports are
read in keyset pages, so no call holds the ledger for long and none is unbounded. The
ledger is append-only, so pages read at different moments never contradict each other:
a later page may only see a session that has ended since. Read-only: nothing here
writes to the ledger.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from itertools import groupby
from typing import Any, Protocol, TypeVar

from psycopg import AsyncConnection

from proxy.core import chain, events
from proxy.core.chaincheck import FLAG_TYPES, PRUNED, ChainRow
from proxy.core.credentials import Credential
from proxy.core.credstate import CRED_EVENTS, CredentialReplay
from proxy.core.errors import BreakglassError
from proxy.core.text import escape
from proxy.store.base import (
    ChannelRow,
    CredentialRead,
    EventTuple,
    GroupTotals,
    PeriodSummary,
    SessionFilter,
    SessionRow,
    StoredEvent,
)
from proxy.store.rows import channel_row, loads, session_row

T = TypeVar("T")

# Rows per ledger call when a read walks many: each call stays well inside the
# ledger's bound (``fleet.timeout``) on a large ledger.
PAGE = 10000
# Cast bytes per ledger call (chunks are at most 256 KiB each).
CAST_PAGE = 16

SESSION_COLS = (
    "s.node, s.id, s.person, s.credential_id, s.source, s.client_version, s.target, s.login,"
    " s.justification, s.started_at, s.deadline, s.ended_at, s.end_reason, s.end_detail"
)
CHANNEL_COLS = (
    "c.session_id, c.n, c.kind, c.command, c.pty, c.term, c.started_at, c.ended_at,"
    " c.exit_status, c.exit_signal, c.recording, c.recording_sha256, c.recording_bytes,"
    " c.bytes_up, c.bytes_down"
)
EVENT_COLS = "e.node, e.seq, e.time, e.type, e.session_id, e.channel, e.data, e.prev_hash, e.hash"
BY_ID = "s.id, s.node"
# Every node with events, by a walk of the primary key (one index probe per node).
NODES_SQL = """
WITH RECURSIVE n(node) AS (
    SELECT min(node) FROM events
    UNION ALL
    SELECT (SELECT min(node) FROM events WHERE node > n.node) FROM n WHERE n.node IS NOT NULL
) SELECT node FROM n WHERE node IS NOT NULL"""

_FLAGGING = sorted(FLAG_TYPES)
_FILE_TYPES = sorted(events.FILE_TYPES)
_REVIEW = events.Review.TYPE


class LedgerCalls(Protocol):
    """What the reads need of ``proxy.fleet.ledger.Ledger``: one bounded call (its
    failures are ``LedgerUnreachable``) and the ledger's name without secrets."""

    async def run(self, fn: Callable[[AsyncConnection[Any]], Awaitable[T]], *, what: str) -> T: ...

    def describe(self) -> str: ...


class AmbiguousId(BreakglassError):
    """A bare id that more than one node has: the command must name the node."""

    reason = "ambiguous_id"


def qualify(node: str, local_id: str) -> str:
    """``NODE/ID``. Both parts come from the ledger, which every node can write to: a
    name no node of this code would send is escaped, so it reaches no terminal raw."""
    return f"{escape(node)}/{escape(local_id)}"


def split_id(text: str) -> tuple[str | None, str]:
    """``NODE/ID`` -> (NODE, ID); a bare ``ID`` -> (None, ID)."""
    node, sep, local = text.rpartition("/")
    return (node, local) if sep else (None, text)


NEVER = "$."  # a regular expression no text matches


def glob_regex(glob: str) -> str:
    """A GLOB (SQLite's: ``*``, ``?``, ``[...]``/``[^...]``, case-sensitive, the whole
    text) as a PostgreSQL regular expression for ``~``."""
    out = ["^"]
    i = 0
    while i < len(glob):
        c = glob[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            # A ']' right after '[' or '[^' belongs to the set, as in GLOB.
            start = i + 1 + (glob[i + 1 : i + 2] == "^")
            end = glob.find("]", start + 1)
            if end < 0:
                return NEVER  # an unclosed set: SQLite's GLOB matches nothing
            else:
                out.append("[" + glob[i + 1 : end].replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append("\\" + c if not c.isalnum() and c not in " _-/" and ord(c) < 128 else c)
        i += 1
    out.append("$")
    return "".join(out)


def type_condition(types: Collection[str] | None, column: str = "e.type") -> tuple[str, list[Any]]:
    """`` AND (...)`` for these event types; a type with ``*`` is a glob."""
    if types is None:
        return "", []
    exact = sorted(t for t in types if "*" not in t)
    globs = sorted(t for t in types if "*" in t)
    parts: list[str] = []
    params: list[Any] = []
    if exact:
        parts.append(f"{column} = ANY(%s)")
        params.append(exact)
    for g in globs:
        parts.append(f"{column} ~ %s")
        params.append(glob_regex(g))
    if not parts:
        return " AND false", []
    return f" AND ({' OR '.join(parts)})", params


def _range(column: str, since: float | None, until: float | None) -> tuple[str, list[Any]]:
    clauses, params = [], []
    if since is not None:
        clauses.append(f" AND {column} >= %s")
        params.append(since)
    if until is not None:
        clauses.append(f" AND {column} < %s")
        params.append(until)
    return "".join(clauses), params


def _session(r: Sequence[Any], channels: Sequence[ChannelRow]) -> SessionRow:
    # r: SESSION_COLS (node first); the store's row converter takes the rest.
    return session_row((qualify(r[0], r[1]), *r[2:14]), channels)


def _channel(node: str, r: Sequence[Any]) -> ChannelRow:
    return channel_row((qualify(node, r[0]), *r[1:]))


def _stored(r: Sequence[Any]) -> StoredEvent:
    # r: EVENT_COLS (node first).
    sid = None if r[4] is None else qualify(r[0], r[4])
    return StoredEvent(int(r[1]), float(r[2]), r[3], sid, r[5], loads(r[6]), r[7], r[8])


def _tuple(r: Sequence[Any]) -> EventTuple:
    sid = None if r[4] is None else qualify(r[0], r[4])
    return (int(r[1]), float(r[2]), r[3], sid, r[5], r[6], r[7], r[8])


def _by_time(rows: Sequence[Sequence[Any]]) -> list[Sequence[Any]]:
    """Rows of several nodes (EVENT_COLS, by node then seq) interleaved by time, each
    node's kept in seq order (a node's clock may step back; its order may not)."""
    per_node = [list(g) for _, g in groupby(rows, key=lambda r: r[0])]
    return list(heapq.merge(*per_node, key=lambda r: (r[2], r[0])))


async def _fetch(conn: AsyncConnection[Any], sql: str, params: Sequence[Any] = ()) -> list[Any]:
    cur = await conn.execute(sql, params)
    return list(await cur.fetchall())


def _sessions_with_channels(joined: Sequence[Sequence[Any]]) -> list[SessionRow]:
    """Rows of SESSION_COLS + CHANNEL_COLS (NULL channel columns for a session without
    one), in session order, folded into sessions."""
    out: list[SessionRow] = []
    width = 14
    for _, group in groupby(joined, key=lambda r: (r[0], r[1])):
        rows = list(group)
        chans = [_channel(rows[0][0], r[width:]) for r in rows if r[width] is not None]
        out.append(_session(rows[0], chans))
    return out


class NodeChain:
    """One node's chain in the ledger, as ``verify`` and an export's check read it
    (``ChainReads``), and that node's event page."""

    def __init__(self, ledger: LedgerCalls, node: str) -> None:
        self._ledger = ledger
        self.node = node

    async def head(self) -> tuple[int, str]:
        rows = await self._ledger.run(
            lambda c: _fetch(
                c,
                "SELECT seq, hash FROM events WHERE node = %s ORDER BY seq DESC LIMIT 1",
                (self.node,),
            ),
            what=f"read {self.node}'s head",
        )
        return (int(rows[0][0]), str(rows[0][1])) if rows else (0, chain.GENESIS)

    async def chain_rows(self, after_seq: int, limit: int) -> list[ChainRow]:
        return await self.event_page(after_seq, limit)

    async def event_page(
        self,
        after_seq: int,
        limit: int,
        since: float | None = None,
        until: float | None = None,
    ) -> list[ChainRow]:
        """Up to ``limit`` of the node's events with seq > ``after_seq`` (and since <=
        time < until), by seq, exactly as stored."""
        times, params = _range("time", since, until)
        rows = await self._ledger.run(
            lambda c: _fetch(
                c,
                "SELECT seq, time, type, session_id, channel, data, prev_hash, hash"
                f" FROM events WHERE node = %s AND seq > %s{times} ORDER BY seq LIMIT %s",
                (self.node, after_seq, *params, int(limit)),
            ),
            what=f"read {self.node}'s events",
        )
        return [ChainRow(int(r[0]), float(r[1]), *r[2:]) for r in rows]


class LedgerReads:
    """The auditor's read Protocols over every node's events in the ledger."""

    def __init__(self, ledger: LedgerCalls) -> None:
        self._ledger = ledger

    def describe(self) -> str:
        return self._ledger.describe()

    async def _call(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._ledger.run(lambda c: _fetch(c, sql, params), what=what)

    # -- nodes and ids -----------------------------------------------------------------

    async def nodes(self) -> list[str]:
        """Every node with events in the ledger, by name."""
        return [r[0] for r in await self._call("list the nodes", NODES_SQL)]

    def chain(self, node: str) -> NodeChain:
        return NodeChain(self._ledger, node)

    async def resolve(self, text: str) -> tuple[str, str] | None:
        """(node, session) for ``NODE/SESSION``, or a bare SESSION exactly one node has
        events of; None when no node has it. ``AmbiguousId`` when several do."""
        node, local = split_id(text)
        if node is not None:
            return node, local
        rows = await self._call(
            "find a session's node",
            f"SELECT n.node FROM ({NODES_SQL}) AS n WHERE EXISTS (SELECT 1 FROM events e"
            " WHERE e.node = n.node AND e.session_id = %s) ORDER BY 1",
            (local,),
        )
        return _one(text, [r[0] for r in rows], "session")

    # -- SessionReads --------------------------------------------------------------------

    async def _session_pages(
        self, where: str, params: Sequence[Any], limit: int | None, channels: bool
    ) -> list[SessionRow]:
        """Sessions matching ``where`` (over ``ledger_sessions AS s``) by id, read in
        keyset pages, with their channels when asked."""
        out: list[SessionRow] = []
        after: tuple[str, str] | None = None
        while limit is None or len(out) < limit:
            size = PAGE if limit is None else min(PAGE, limit - len(out))
            sql, page_params = _page(where, params, after, size, channels)
            rows = await self._call("list sessions", sql, page_params)
            page = _sessions_with_channels(rows) if channels else [_session(r, ()) for r in rows]
            out += page
            if len(page) < size:
                break
            after = (rows[-1][1], rows[-1][0])  # as stored, not as shown
        return out

    async def list_sessions(self, flt: SessionFilter, *, channels: bool = True) -> list[SessionRow]:
        where, params = _filter(flt)
        return await self._session_pages(where, params, flt.limit or None, channels)

    async def get_session(self, session_id: str) -> SessionRow | None:
        found = await self.resolve(session_id)
        if found is None:
            return None
        rows = await self._session_pages(" AND s.node = %s AND s.id = %s", found, 1, True)
        return rows[0] if rows else None

    async def session_events(self, session_id: str) -> list[StoredEvent]:
        found = await self.resolve(session_id)
        if found is None:
            return []
        rows = await self._call(
            "read a session's events",
            f"SELECT {EVENT_COLS} FROM events e WHERE e.node = %s AND e.session_id = %s"
            " ORDER BY e.seq",
            found,
        )
        return [_stored(r) for r in rows]

    async def unfinished_sessions(self) -> list[SessionRow]:
        return await self._session_pages(" AND s.ended_at IS NULL", (), None, True)

    async def events_for_sessions(
        self, session_ids: Sequence[str], types: Collection[str] | None = None
    ) -> list[StoredEvent]:
        keys = [k for k in [await self.resolve(s) for s in session_ids] if k is not None]
        if not keys:
            return []
        cond, params = type_condition(types)
        rows = await self._call(
            "read sessions' events",
            f"SELECT {EVENT_COLS} FROM unnest(%s::text[], %s::text[]) AS k(node, sid)"
            " JOIN events e ON e.node = k.node AND e.session_id = k.sid"
            f" WHERE true{cond} ORDER BY e.node, e.seq",
            ([k[0] for k in keys], [k[1] for k in keys], *params),
        )
        return [_stored(r) for r in _by_time(rows)]

    async def events_between(
        self, types: Collection[str], since: float | None, until: float | None
    ) -> list[StoredEvent]:
        cond, params = type_condition(types)
        times, time_params = _range("e.time", since, until)
        rows = await self._call(
            "read events of a period",
            f"SELECT {EVENT_COLS} FROM events e WHERE true{cond}{times} ORDER BY e.node, e.seq",
            (*params, *time_params),
        )
        return [_stored(r) for r in _by_time(rows)]

    # -- ReportReads ---------------------------------------------------------------------

    async def period_sessions(
        self,
        since: float | None,
        until: float | None,
        types: Collection[str],
        batch: int = 1000,
    ) -> AsyncIterator[list[tuple[SessionRow, list[EventTuple]]]]:
        period, params = _range("s.started_at", since, until)
        cond, type_params = type_condition(types)
        # Read in the ledger's pages (fewer calls), handed out ``batch`` at a time.
        size = max(batch, PAGE)
        after: tuple[str, str] | None = None
        while True:
            page, page_params = _page(period, params, after, size, True)

            async def read(
                conn: AsyncConnection[Any], page: str = page, page_params: list[Any] = page_params
            ) -> tuple[list[Any], list[Any]]:
                joined = await _fetch(conn, page, page_params)
                keys = sorted({(r[0], r[1]) for r in joined})
                evs = await _fetch(
                    conn,
                    f"SELECT {EVENT_COLS} FROM unnest(%s::text[], %s::text[]) AS k(node, sid)"
                    " JOIN events e ON e.node = k.node AND e.session_id = k.sid"
                    f" WHERE true{cond} ORDER BY e.node, e.session_id, e.seq",
                    ([k[0] for k in keys], [k[1] for k in keys], *type_params),
                )
                return joined, evs

            joined, evs = await self._ledger.run(read, what="read a period's sessions")
            sessions = _sessions_with_channels(joined)
            if not sessions:
                return
            by_session: dict[str | None, list[EventTuple]] = {}
            for r in evs:
                t = _tuple(r)
                by_session.setdefault(t[3], []).append(t)
            for i in range(0, len(sessions), batch):
                yield [(s, by_session.get(s.id, [])) for s in sessions[i : i + batch]]
            if len(sessions) < size:
                return
            after = (joined[-1][1], joined[-1][0])  # as stored, not as shown

    async def period_summary(self, since: float | None, until: float | None) -> PeriodSummary:
        where, params = _range("started_at", since, until)
        period = (
            "SELECT node, id, person, target, end_reason, ended_at - started_at AS d"
            f" FROM ledger_sessions WHERE true{where}"
        )

        async def summary(conn: AsyncConnection[Any]) -> PeriodSummary:
            async def groups(column: str) -> dict[str, GroupTotals]:
                rows = await _fetch(
                    conn,
                    f"SELECT {column}, count(*), coalesce(sum(d), 0.0),"
                    f" greatest(coalesce(max(d), 0.0), 0.0) FROM ({period}) AS p GROUP BY {column}",
                    params,
                )
                return {r[0]: GroupTotals(int(r[1]), float(r[2]), float(r[3])) for r in rows}

            ((count, ended, total, mean, longest),) = await _fetch(
                conn,
                f"SELECT count(*), count(d), coalesce(sum(d), 0.0), avg(d), max(d) FROM ({period})"
                " AS p",
                params,
            )
            median: float | None = None
            if ended:
                # The middle one or two of the sorted durations, as statistics.median.
                middle = [
                    float(r[0])
                    for r in await _fetch(
                        conn,
                        f"SELECT d FROM ({period}) AS p WHERE d IS NOT NULL ORDER BY d"
                        " LIMIT 2 OFFSET %s",
                        (*params, (int(ended) - 1) // 2),
                    )
                ]
                median = middle[0] if ended % 2 else (middle[0] + middle[1]) / 2
            reasons = await _fetch(
                conn,
                "SELECT CASE WHEN end_reason IS NULL OR end_reason = '' THEN 'live'"
                f" ELSE end_reason END AS reason, count(*) FROM ({period}) AS p GROUP BY reason",
                params,
            )

            async def sessions_with(types: Collection[str]) -> int:
                ((n,),) = await _fetch(
                    conn,
                    "SELECT count(*) FROM (SELECT DISTINCT e.node, e.session_id FROM events e"
                    f" JOIN ({period}) AS p ON e.node = p.node AND e.session_id = p.id"
                    " WHERE e.type = ANY(%s)) AS x",
                    (*params, sorted(types)),
                )
                return int(n)

            return PeriodSummary(
                sessions=int(count),
                by_person=await groups("person"),
                by_target=await groups("target"),
                ended=int(ended),
                total_seconds=float(total),
                mean=None if mean is None else float(mean),
                median=median,
                longest=None if longest is None else float(longest),
                end_reasons={str(r[0]): int(r[1]) for r in reasons},
                flagged=await sessions_with(FLAG_TYPES),
                reviewed=await sessions_with({_REVIEW}),
            )

        return await self._ledger.run(summary, what="sum up a period")

    async def period_recordings(
        self, since: float | None, until: float | None
    ) -> list[tuple[ChannelRow, int | None]]:
        where, params = _range("s.started_at", since, until)
        rows = await self._call(
            "list a period's recordings",
            f"SELECT s.node, {CHANNEL_COLS}, (SELECT max(e.seq) FROM events e WHERE"
            " e.node = c.node AND e.session_id = c.session_id AND e.channel = c.n"
            " AND e.type = %s) FROM ledger_sessions AS s JOIN ledger_channels AS c"
            " ON c.node = s.node AND c.session_id = s.id"
            f" WHERE (c.recording IS NOT NULL OR c.recording_sha256 IS NOT NULL){where}"
            f" ORDER BY {BY_ID}, c.n",
            (PRUNED, *params),
        )
        return [(_channel(r[0], r[1:16]), None if r[16] is None else int(r[16])) for r in rows]

    # -- CredentialReads -------------------------------------------------------------------

    async def _codes(self, node: str | None, cred_id: str | None) -> list[tuple[str, Any]]:
        """Every code's events replayed, per node: (node, replay). The state is the
        chain's own (each event carries it): the ledger has no separate row, and never
        the argon2 hash."""
        clauses, params = "", []
        if node is not None:
            clauses += " AND e.node = %s"
            params.append(node)
        if cred_id is not None:
            clauses += (
                " AND (e.data::jsonb ->> 'credential_id' = %s OR e.data::jsonb ->> 'id' = %s)"
            )
            params += [cred_id, cred_id]
        rows = await self._call(
            "read the codes' events",
            f"SELECT {EVENT_COLS} FROM events e WHERE e.type = ANY(%s){clauses}"
            " ORDER BY e.node, e.seq",
            (list(CRED_EVENTS), *params),
        )
        out = []
        for n, group in groupby(rows, key=lambda r: r[0]):
            replay = CredentialReplay()
            for r in group:
                replay.feed(int(r[1]), r[3], float(r[2]), loads(r[6]))
            out.append((n, replay))
        return out

    async def list_credentials(self) -> list[Credential]:
        found = [
            c
            for node, replay in await self._codes(None, None)
            for cred_id, code in replay.codes.items()
            if (c := _credential(qualify(node, cred_id), code.state)) is not None
        ]
        return sorted(found, key=lambda c: (c.issued_at, c.cred_id))

    async def get_credential(self, cred_id: str) -> CredentialRead | None:
        node, local = split_id(cred_id)
        codes = [
            (n, replay) for n, replay in await self._codes(node, local) if local in replay.codes
        ]
        found = _one(cred_id, [n for n, _ in codes], "code")
        if found is None:
            return None
        replay = dict(codes)[found[0]]
        cred = _credential(qualify(found[0], local), replay.codes[local].state)
        if cred is None:
            return None
        problems = [p for p in replay.problems if f"code {local}" in p]
        return CredentialRead(cred, "", "; ".join(problems) or None)

    # -- the fleet's event feed ---------------------------------------------------------------

    async def fleet_page(
        self,
        positions: Mapping[str, int],
        limit: int,
        since: float | None = None,
        until: float | None = None,
    ) -> list[tuple[str, ChainRow]]:
        """Up to ``limit`` events of every node after its position (the last seq read of
        it; 0 for a node not in ``positions``), each node's in seq order, the nodes
        interleaved by time. A node's events reach the ledger in seq order, so a reader
        that moves each node's position to the last event it took misses none, even
        when a node ships late."""
        names = sorted(positions)
        times, params = _range("e.time", since, until)
        rows = await self._call(
            "read the fleet's events",
            "SELECT n.node, e.seq, e.time, e.type, e.session_id, e.channel, e.data, e.prev_hash,"
            f" e.hash FROM ({NODES_SQL}) AS n LEFT JOIN unnest(%s::text[], %s::bigint[])"
            " AS p(node, seq) ON p.node = n.node CROSS JOIN LATERAL (SELECT * FROM events e"
            f" WHERE e.node = n.node AND e.seq > coalesce(p.seq, 0){times}"
            " ORDER BY e.seq LIMIT %s) AS e ORDER BY n.node, e.seq",
            (names, [int(positions[n]) for n in names], *params, int(limit)),
        )
        return [(r[0], ChainRow(int(r[1]), float(r[2]), *r[3:])) for r in _by_time(rows)[:limit]]

    # -- casts ----------------------------------------------------------------------------------

    async def cast_chunks(self, session_id: str, channel: int) -> AsyncIterator[bytes]:
        """The bytes of one channel's cast as shipped, in offset order, a page of
        chunks per ledger call."""
        found = await self.resolve(session_id)
        if found is None:
            return
        offset = -1
        while True:
            rows = await self._call(
                "read a cast",
                'SELECT "offset", data FROM cast_chunks WHERE node = %s AND session_id = %s'
                ' AND channel = %s AND "offset" > %s ORDER BY "offset" LIMIT %s',
                (*found, channel, offset, CAST_PAGE),
            )
            for r in rows:
                yield bytes(r[1])
            if len(rows) < CAST_PAGE:
                return
            offset = int(rows[-1][0])

    async def cast_digests(
        self, channels: Sequence[ChannelRow]
    ) -> dict[tuple[str, int], tuple[str, int]]:
        """The sha256 and size of each channel's shipped cast, by (session, channel):
        hashed by the ledger, so no cast crosses the network for it. A channel with no
        chunk shipped is absent."""
        keys: list[tuple[str, str, int]] = []
        for c in channels:
            node, local = split_id(c.session_id)
            if node is not None:
                keys.append((node, local, c.n))
        if not keys:
            return {}
        rows = await self._call(
            "hash the casts",
            "SELECT k.node, k.sid, k.n, encode(sha256(string_agg(x.data, ''::bytea"
            " ORDER BY x.\"offset\")), 'hex'), sum(length(x.data))"
            " FROM unnest(%s::text[], %s::text[], %s::int[]) AS k(node, sid, n)"
            " JOIN cast_chunks x ON x.node = k.node AND x.session_id = k.sid AND x.channel = k.n"
            " GROUP BY k.node, k.sid, k.n",
            ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]),
        )
        return {(qualify(r[0], r[1]), int(r[2])): (str(r[3]), int(r[4])) for r in rows}


def _page(
    where: str, params: Sequence[Any], after: tuple[str, str] | None, size: int, channels: bool
) -> tuple[str, list[Any]]:
    """One page of sessions matching ``where`` (over ``ledger_sessions AS s``) after the
    session ``after`` (id, node), by id then node, with their channels when asked.

    The page's keys first: each node's matching sessions in id order (its part of the
    events index: node, session, seq), at most ``size`` of each, merged. Then the rows
    of only those. A page costs a page per node, whatever the ledger holds, where
    sorting every session for each page would make a long listing quadratic."""
    page_where, page_params = where, list(params)
    if after is not None:
        # Node by node: its sessions from the last id read, past the last node read.
        page_where += " AND s.id >= %s AND (s.id > %s OR s.node > %s)"
        page_params += [after[0], after[0], after[1]]
    keys = (
        f"SELECT k.node, k.id FROM ({NODES_SQL}) AS n CROSS JOIN LATERAL (SELECT s.node, s.id"
        f" FROM ledger_sessions AS s WHERE s.node = n.node{page_where}"
        f" ORDER BY s.id LIMIT {int(size)}) AS k ORDER BY k.id, k.node LIMIT {int(size)}"
    )
    sql = (
        f"SELECT {SESSION_COLS} FROM ({keys}) AS k JOIN ledger_sessions AS s"
        " ON s.node = k.node AND s.id = k.id"
    )
    if channels:
        sql = (
            f"SELECT s.*, {CHANNEL_COLS} FROM ({sql}) AS s LEFT JOIN ledger_channels AS c"
            f" ON c.node = s.node AND c.session_id = s.id ORDER BY {BY_ID}, c.n"
        )
    else:
        sql += f" ORDER BY {BY_ID}"
    return sql, page_params


def _one(text: str, nodes: Sequence[str], what: str) -> tuple[str, str] | None:
    if not nodes:
        return None
    if len(nodes) > 1:
        raise AmbiguousId(
            f"{what} {text} is on {len(nodes)} nodes ({', '.join(nodes)}): name it as NODE/{text}"
        )
    return nodes[0], text


def _filter(flt: SessionFilter) -> tuple[str, list[Any]]:
    """``SessionFilter`` as conditions over ``ledger_sessions AS s``."""
    where = ""
    params: list[Any] = []
    for column, value in (("s.person", flt.person), ("s.target", flt.target)):
        if value is not None:
            where += f" AND {column} = %s"
            params.append(value)
    times, time_params = _range("s.started_at", flt.since, flt.until)
    where += times
    params += time_params
    if flt.end_reason is not None:
        where += " AND s.end_reason = %s"
        params.append(flt.end_reason)
    if flt.live is not None:
        where += " AND s.ended_at IS NULL" if flt.live else " AND s.ended_at IS NOT NULL"
    own = "e.node = s.node AND e.session_id = s.id"
    if flt.flagged is not None:
        where += f" AND {'' if flt.flagged else 'NOT '}EXISTS (SELECT 1 FROM events e WHERE {own}"
        where += " AND e.type = ANY(%s))"
        params.append(_FLAGGING)
    if flt.command is not None:
        regex = glob_regex(flt.command)
        where += (
            " AND (EXISTS (SELECT 1 FROM ledger_channels c WHERE c.node = s.node"
            " AND c.session_id = s.id AND c.command ~ %s)"
            f" OR EXISTS (SELECT 1 FROM events e WHERE {own} AND e.type = %s"
            " AND e.data::jsonb ->> 'text' ~ %s))"
        )
        params += [regex, events.Command.TYPE, regex]
    if flt.path is not None:
        where += (
            f" AND EXISTS (SELECT 1 FROM events e WHERE {own} AND e.type = ANY(%s)"
            " AND e.data::jsonb ->> 'path' ~ %s)"
        )
        params += [_FILE_TYPES, glob_regex(flt.path)]
    return where, params


def _credential(cred_id: str, state: Mapping[str, Any]) -> Credential | None:
    """A code as its replayed state holds it; None when its events never recorded a
    whole state (the first releases' events carry only some facts)."""
    try:
        return Credential(
            cred_id=cred_id,
            person=str(state["person"]),
            issued_by=str(state["issued_by"]),
            issued_at=float(state["issued_at"]),
            valid_until=float(state["valid_until"]),
            window=float(state["window"]),
            max_uses=int(state["max_uses"]),
            uses=int(state["uses"]),
            targets=tuple(state["targets"]),
            max_session=None if state.get("max_session") is None else float(state["max_session"]),
            activated_at=None
            if state.get("activated_at") is None
            else float(state["activated_at"]),
            revoked_at=None if state.get("revoked_at") is None else float(state["revoked_at"]),
            revoke_reason=state.get("revoke_reason"),
        )
    except (KeyError, TypeError, ValueError):
        return None


__all__ = [
    "AmbiguousId",
    "LedgerCalls",
    "LedgerReads",
    "NodeChain",
    "glob_regex",
    "qualify",
    "split_id",
]
