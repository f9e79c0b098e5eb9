"""The event feed of the SQLite store: every event in order, for ``breakglass events``
and the syslog forwarder, and the forwarders' cursors.

Owns the ``feed_cursors`` table: one row per forwarder (named by its sink), the last
sequence number it has sent. It is state, not audit: it is outside the hash chain and
may be updated. Reading by sequence number loses nothing: SQLite commits one writer at
a time, so once a reader sees event N, every event before N is committed and visible.

Mixed into ``SQLiteStore``; never sends anything.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import aiosqlite

from proxy.core.chaincheck import ChainRow
from proxy.core.errors import StoreError
from proxy.store.rows import range_clauses

FEED_SCHEMA = """
CREATE TABLE IF NOT EXISTS feed_cursors (
    name    TEXT PRIMARY KEY,
    seq     INTEGER NOT NULL,
    updated REAL NOT NULL
);
"""


class EventFeed:
    """Feed methods of SQLiteStore (which provides ``_db`` and ``_tx``)."""

    # Declared, not stubbed: SQLiteStore defines them, and the mixin is never used alone.
    _db: aiosqlite.Connection
    _tx: Callable[[], AbstractAsyncContextManager[aiosqlite.Connection]]

    async def event_page(
        self,
        after_seq: int,
        limit: int,
        since: float | None = None,
        until: float | None = None,
    ) -> list[ChainRow]:
        """Up to ``limit`` events with seq > ``after_seq`` and since <= time < until,
        by seq, exactly as stored."""
        clauses, params = range_clauses("time", since, until)
        where = " AND ".join(["seq > ?", *clauses])
        try:
            async with self._db.execute(
                "SELECT seq, time, type, session_id, channel, data, prev_hash, hash FROM events"
                f" WHERE {where} ORDER BY seq LIMIT ?",
                (after_seq, *params, int(limit)),
            ) as cur:
                rows = await cur.fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"audit store read failed: {exc}") from exc
        return [ChainRow(*r) for r in rows]

    async def feed_cursor(self, name: str) -> int:
        """The last seq the forwarder ``name`` has sent (0: none yet)."""
        try:
            async with self._db.execute(
                "SELECT seq FROM feed_cursors WHERE name = ?", (name,)
            ) as cur:
                row = await cur.fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"audit store read failed: {exc}") from exc
        return int(row[0]) if row else 0

    async def save_feed_cursor(self, name: str, seq: int, now: float) -> None:
        async with self._tx() as db:  # not inside another coroutine's transaction
            await db.execute(
                "INSERT INTO feed_cursors (name, seq, updated) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET seq = excluded.seq, updated = excluded.updated",
                (name, int(seq), now),
            )
