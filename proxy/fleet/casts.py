"""Cast files copied to the ledger in chunks while their channels are live.

Owns which casts of this node the ledger does not hold whole yet, and how far it holds
each: a cast is taken up when its ``channel_start`` reaches the ledger (or, at connect,
when the ledger holds a channel whose cast it lacks) and let go once the ledger holds
exactly the bytes its ``channel_end`` counted. Each round reads what the file gained
since, in whole lines only (a crash leaves at most one partial last line, which recovery
cuts: the ledger must never hold bytes the finished cast does not), as chunks of at most
``CHUNK`` bytes at the offsets the ledger's trigger expects. Never writes a cast file.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from proxy.audit.verify import resolve_recording
from proxy.core import events
from proxy.core.chaincheck import ChainRow

log = logging.getLogger("breakglass")

CHUNK = 256 * 1024  # bytes per cast_chunks row at most
ROUND_BYTES = 8 << 20  # cast bytes read per shipping round at most, over every cast

Key = tuple[str, int]  # (session id, channel)


@dataclass
class Cast:
    """One cast the ledger does not hold whole yet."""

    path: Path
    offset: int | None  # bytes the ledger holds (None: not asked yet)
    final: int | None = None  # its size at the channel's end (None: live, or not counted)
    ended: bool = False
    on_disk: int = 0  # the file's size when last read


@dataclass(frozen=True)
class Chunk:
    session_id: str
    channel: int
    offset: int
    data: bytes


# The channels of this node whose cast the ledger may not hold whole: each recorded
# channel, its end's byte count (NULL: no end, or an end without a count), whether it
# ended, and the bytes the ledger holds.
_UNFINISHED = """
WITH starts AS (
    SELECT session_id, channel, data::jsonb ->> 'recording' AS recording
    FROM events WHERE node = %(node)s AND type = %(start)s
), ends AS (
    SELECT session_id, channel, (data::jsonb ->> 'recording_bytes')::bigint AS size
    FROM events WHERE node = %(node)s AND type = %(end)s
), held AS (
    SELECT session_id, channel, max("offset" + length(data)) AS bytes
    FROM cast_chunks WHERE node = %(node)s GROUP BY session_id, channel
)
SELECT s.session_id, s.channel, s.recording, e.size, e.session_id IS NOT NULL,
       coalesce(h.bytes, 0)
FROM starts s
LEFT JOIN ends e ON e.session_id = s.session_id AND e.channel = s.channel
LEFT JOIN held h ON h.session_id = s.session_id AND h.channel = s.channel
WHERE s.recording IS NOT NULL AND s.session_id IS NOT NULL AND s.channel IS NOT NULL
  AND (e.session_id IS NULL OR coalesce(h.bytes, 0) < e.size)
"""


class CastShipper:
    """The casts of one node still to ship, and reading and writing their chunks."""

    def __init__(self, node: str, recordings: Path) -> None:
        self.node = node
        self.recordings = recordings
        self.casts: dict[Key, Cast] = {}

    @property
    def unshipped_bytes(self) -> int:
        """Cast bytes on disk (when last read) that the ledger does not hold."""
        return sum(max(0, c.on_disk - (c.offset or 0)) for c in self.casts.values())

    def _path(self, stored: str | None, session_id: str, channel: int) -> Path | None:
        return resolve_recording(stored, self.recordings, session_id, channel)

    async def load(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """At connect: the casts the ledger lacks, from its own events and chunks."""
        cur = await conn.execute(
            _UNFINISHED,
            {"node": self.node, "start": events.ChannelStart.TYPE, "end": events.ChannelEnd.TYPE},
        )
        found: dict[Key, Cast] = {}
        for session_id, channel, stored, size, ended, held in await cur.fetchall():
            path = self._path(stored, session_id, channel)
            if path is None:
                continue
            found[(session_id, channel)] = Cast(path, int(held), size, bool(ended))
        self.casts = found

    def note(self, rows: Iterable[ChainRow]) -> None:
        """Events that just reached the ledger: a recorded channel's start takes its cast
        up; its end fixes the cast's final size."""
        for row in rows:
            if row.session_id is None or row.channel is None:
                continue
            if row.type == events.ChannelStart.TYPE:
                start = events.decode(row.type, json.loads(row.data_json))
                assert isinstance(start, events.ChannelStart)
                path = self._path(start.recording, row.session_id, row.channel)
                if start.recording and path is not None:
                    self.casts.setdefault((row.session_id, row.channel), Cast(path, None))
            elif row.type == events.ChannelEnd.TYPE:
                cast = self.casts.get((row.session_id, row.channel))
                if cast is not None:
                    end = events.decode(row.type, json.loads(row.data_json))
                    assert isinstance(end, events.ChannelEnd)
                    cast.ended, cast.final = True, end.recording_bytes

    async def ask_offsets(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """How far the ledger holds each cast taken up since the last ask."""
        for (session_id, channel), cast in self.casts.items():
            if cast.offset is not None:
                continue
            cur = await conn.execute(
                'SELECT coalesce(max("offset" + length(data)), 0) FROM cast_chunks'
                " WHERE node = %s AND session_id = %s AND channel = %s",
                (self.node, session_id, channel),
            )
            row = await cur.fetchone()
            cast.offset = int(row[0]) if row else 0

    @property
    def asking(self) -> bool:
        return any(c.offset is None for c in self.casts.values())

    def read(self) -> list[Chunk]:
        """What each cast gained since the ledger's offset (blocking file reads: run it
        in a worker thread). Casts that are done, or whose file is gone, are let go."""
        chunks: list[Chunk] = []
        budget = ROUND_BYTES
        for key, cast in list(self.casts.items()):
            if cast.offset is None or budget <= 0:
                continue
            if cast.ended and (cast.final is None or cast.offset >= cast.final):
                del self.casts[key]  # whole (or not counted at its end: nothing to match)
                continue
            data = self._read_one(key, cast, budget)
            budget -= len(data)
            for at in range(0, len(data), CHUNK):
                chunks.append(Chunk(key[0], key[1], cast.offset + at, data[at : at + CHUNK]))
        return chunks

    def _read_one(self, key: Key, cast: Cast, budget: int) -> bytes:
        assert cast.offset is not None
        try:
            with cast.path.open("rb") as f:
                size = f.seek(0, 2)
                cast.on_disk = size
                end = size if cast.final is None else min(size, cast.final)
                want = min(end - cast.offset, budget)
                if want <= 0:
                    if cast.final is not None and size < cast.final:
                        log.error("fleet: cast %s is shorter than its channel end says", key)
                        del self.casts[key]
                    return b""
                f.seek(cast.offset)
                data = f.read(want)
        except OSError as exc:
            # Pruned by retention, or lost: the ledger keeps what it has.
            log.warning("fleet: cast %s/%d cannot be read (%s); not shipped", *key, exc)
            del self.casts[key]
            return b""
        if cast.final is not None and cast.offset + len(data) == cast.final:
            return data  # the finished cast: all of it, as counted
        return data[: data.rfind(b"\n") + 1]  # whole lines only

    async def insert(self, conn: psycopg.AsyncConnection[Any], chunks: list[Chunk]) -> None:
        async with conn.cursor() as cur:
            await cur.executemany(
                'INSERT INTO cast_chunks (node, session_id, channel, "offset", data)'
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                [(self.node, c.session_id, c.channel, c.offset, c.data) for c in chunks],
            )

    def shipped(self, chunks: list[Chunk]) -> None:
        """``chunks`` are committed in the ledger."""
        for c in chunks:
            cast = self.casts.get((c.session_id, c.channel))
            if cast is not None:
                cast.offset = c.offset + len(c.data)
