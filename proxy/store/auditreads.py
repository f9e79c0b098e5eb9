"""The auditor's bulk reads of the SQLite store: a period's sessions with their events,
streamed, and the aggregates ``report`` sums up.

Owns the queries behind ``breakglass report`` over long periods (a year can be 50,000
sessions and a quarter of a million events). Sessions, their channels and their events
are read by three cursors, each in session-id order (the primary key and the
``events_session`` index give that order, so there is no temporary sort), and merged
here a batch at a time: no query per session, no list of ids bound in chunks, and never
the whole period in memory. The summary is SQL aggregates (GROUP BY) over the same
period; only the rounding happens in Python (SQLite's ``round`` is not Python's).

The cursors of one generator are open together on one connection, so SQLite reads
them from one snapshot: a session written meanwhile is in all three or in none.

Mixed into ``SQLiteStore``, which provides ``_db``.
"""

from __future__ import annotations

import bisect
import sqlite3
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any

import aiosqlite

from proxy.core import events
from proxy.core.chaincheck import FLAG_TYPES, PRUNED
from proxy.core.errors import StoreError
from proxy.store.base import (
    ChannelRow,
    EventTuple,
    GroupTotals,
    PeriodSummary,
    SessionRow,
)
from proxy.store.rows import (
    CHANNEL_COLS,
    EVENT_COLS,
    SESSION_COLS,
    channel_row,
    period_clause,
    session_row,
    type_clause,
)

REVIEW = events.Review.TYPE


class _Follower:
    """A cursor over rows sorted by session id (column ``key``), read in step with the
    sessions: ``upto(last)`` returns the next rows whose session id is <= ``last``."""

    def __init__(self, cursor: aiosqlite.Cursor, key: int, size: int) -> None:
        self._cursor = cursor
        self._key = key
        self._size = size
        self._buf: list[Any] = []
        self._pos = 0
        self._done = False

    async def upto(self, last: str) -> list[Any]:
        out: list[Any] = []
        while True:
            if self._pos >= len(self._buf):
                if self._done:
                    return out
                self._buf = list(await self._cursor.fetchmany(self._size))
                self._pos = 0
                if not self._buf:
                    self._done = True
                    return out
            # SQLite orders TEXT by its bytes (UTF-8), Python str by code point: the
            # same order, so the cut can be found by bisection.
            cut = bisect.bisect_right(self._buf, last, lo=self._pos, key=lambda r: r[self._key])
            out += self._buf[self._pos : cut]
            self._pos = cut
            if cut < len(self._buf):
                return out


def _grouped(rows: Sequence[Any], key: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for r in rows:
        sid = r[key]
        group = out.get(sid)
        if group is None:
            out[sid] = [r]
        else:
            group.append(r)
    return out


class AuditReads:
    """Bulk reads for ``report`` (see the module docstring)."""

    _db: aiosqlite.Connection

    async def period_sessions(
        self,
        since: float | None,
        until: float | None,
        types: Collection[str],
        batch: int = 1000,
    ) -> AsyncIterator[list[tuple[SessionRow, list[EventTuple]]]]:
        where, params = period_clause(since, until)
        in_period = f"session_id IN (SELECT id FROM sessions {where})"
        types_sql, type_params = type_clause(types)
        cursors: list[aiosqlite.Cursor] = []
        try:
            sessions = await self._db.execute(
                f"SELECT {SESSION_COLS} FROM sessions {where} ORDER BY id", params
            )
            cursors.append(sessions)
            cur = await self._db.execute(
                f"SELECT {CHANNEL_COLS} FROM channels WHERE {in_period} ORDER BY session_id, n",
                params,
            )
            cursors.append(cur)
            channels = _Follower(cur, 0, 4 * batch)
            cur = await self._db.execute(
                f"SELECT {EVENT_COLS} FROM events WHERE {in_period}{types_sql}"
                " ORDER BY session_id, seq",
                [*params, *type_params],
            )
            cursors.append(cur)
            events = _Follower(cur, 3, 8 * batch)
            while True:
                rows = list(await sessions.fetchmany(batch))
                if not rows:
                    return
                last = rows[-1][0]
                chans = _grouped(await channels.upto(last), 0)
                evs = _grouped(await events.upto(last), 3)
                yield [
                    (
                        session_row(r, [channel_row(c) for c in chans.get(r[0], ())]),
                        evs.get(r[0], []),
                    )
                    for r in rows
                ]
        except sqlite3.Error as exc:
            raise StoreError(f"audit store read failed: {exc}") from exc
        finally:
            for c in cursors:
                await c.close()

    async def _rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        try:
            async with self._db.execute(sql, tuple(params)) as cur:
                return list(await cur.fetchall())
        except sqlite3.Error as exc:
            raise StoreError(f"audit store read failed: {exc}") from exc

    async def period_summary(self, since: float | None, until: float | None) -> PeriodSummary:
        where, params = period_clause(since, until)
        period = (
            f"SELECT person, target, end_reason, ended_at - started_at AS d FROM sessions {where}"
        )

        async def groups(column: str) -> dict[str, GroupTotals]:
            # max(..., 0.0): the longest starts at 0.0, as a person with only live
            # sessions (or a clock that went back) shows it. GROUP BY +column: grouping
            # by an expression keeps SQLite on the started_at index and one sort, where
            # the (person, started_at) index made it seek every person's sessions.
            rows = await self._rows(
                f"SELECT {column}, count(*), total(d), max(coalesce(max(d), 0.0), 0.0)"
                f" FROM ({period}) GROUP BY +{column}",
                params,
            )
            return {r[0]: GroupTotals(int(r[1]), float(r[2]), float(r[3])) for r in rows}

        by_person = await groups("person")
        by_target = await groups("target")
        ((count, ended, total, mean, longest),) = await self._rows(
            f"SELECT count(*), count(d), total(d), avg(d), max(d) FROM ({period})", params
        )
        median: float | None = None
        if ended:
            # The middle one or two of the sorted durations, as statistics.median takes.
            middle = [
                float(r[0])
                for r in await self._rows(
                    f"SELECT d FROM ({period}) WHERE d IS NOT NULL ORDER BY d LIMIT 2 OFFSET ?",
                    [*params, (ended - 1) // 2],
                )
            ]
            median = middle[0] if ended % 2 else (middle[0] + middle[1]) / 2
        reasons = await self._rows(
            "SELECT CASE WHEN end_reason IS NULL OR end_reason = '' THEN 'live'"
            f" ELSE end_reason END AS reason, count(*) FROM ({period}) GROUP BY reason",
            params,
        )
        # +session_id: keeps SQLite on the (type, time) index, reading the few events of
        # the type; on events_session it read every event of every session instead.
        in_period = f"+session_id IN (SELECT id FROM sessions {where})"

        async def sessions_with(types: Collection[str]) -> int:
            marks = ",".join("?" for _ in types)
            ((n,),) = await self._rows(
                f"SELECT count(DISTINCT session_id) FROM events WHERE type IN ({marks})"
                f" AND {in_period}",
                [*sorted(types), *params],
            )
            return int(n)

        return PeriodSummary(
            sessions=int(count),
            by_person=by_person,
            by_target=by_target,
            ended=int(ended),
            total_seconds=float(total),
            mean=None if mean is None else float(mean),
            median=median,
            longest=None if longest is None else float(longest),
            end_reasons={str(r[0]): int(r[1]) for r in reasons},
            flagged=await sessions_with(FLAG_TYPES),
            reviewed=await sessions_with({REVIEW}),
        )

    async def period_recordings(
        self, since: float | None, until: float | None
    ) -> list[tuple[ChannelRow, int | None]]:
        where, params = period_clause(since, until)
        in_period = f"session_id IN (SELECT id FROM sessions {where})"
        rows = await self._rows(
            f"SELECT {CHANNEL_COLS} FROM channels WHERE {in_period}"
            " AND (recording IS NOT NULL OR recording_sha256 IS NOT NULL)"
            " ORDER BY session_id, n",
            params,
        )
        pruned = {
            (r[0], int(r[1])): int(r[2])
            for r in await self._rows(
                "SELECT session_id, channel, max(seq) FROM events WHERE type = ?"
                f" AND channel IS NOT NULL AND +{in_period} GROUP BY session_id, channel",
                [PRUNED, *params],
            )
        }
        return [(c, pruned.get((c.session_id, c.n))) for c in map(channel_row, rows)]
