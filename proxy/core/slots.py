"""Unauthenticated connection slots, shared fairly between sources.

Owns who may hold a slot while not logged in. A source may hold at most ``per_source``
slots, everyone together ``total``. When the table is full a newcomer is not refused:
the oldest connection of the source holding the most slots is dropped to make room (on
a tie, the source whose oldest connection is oldest). One busy network, or 300 silent
connections, can then never keep a fresh source from reaching the prompts; the
heaviest holder only ever loses its own oldest attempt.

Pure: connections are opaque hashable keys, time is passed in; the caller closes what
``admit`` tells it to drop.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class Admission:
    ok: bool
    # The connection the caller must close to make room for this one (None: none).
    evict: Hashable | None = None
    # Why not ok: "per_source" (this source holds its share); "" when ok.
    refused: str = ""


class SlotTable:
    def __init__(self, total: int, per_source: int) -> None:
        self.total = total
        self.per_source = per_source
        # source -> connection -> when it took its slot, oldest first.
        self._held: dict[str, OrderedDict[Hashable, float]] = {}
        self._source_of: dict[Hashable, str] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def held_by(self, source: str) -> int:
        return len(self._held.get(source, ()))

    def admit(self, source: str, conn: Hashable, now: float) -> Admission:
        """Give ``conn`` from ``source`` a slot, dropping the heaviest source's oldest
        connection when the table is full. Refused only past the per-source share."""
        mine = self._held.get(source)
        if mine is not None and len(mine) >= self.per_source:
            return Admission(False, refused="per_source")
        evict: Hashable | None = None
        if self._count >= self.total:
            evict = self._heaviest_oldest()
            if evict is not None:
                self.release(evict)
        mine = self._held.setdefault(source, OrderedDict())
        mine[conn] = now
        self._source_of[conn] = source
        self._count += 1
        return Admission(True, evict=evict)

    def _heaviest_oldest(self) -> Hashable | None:
        best: tuple[int, float] | None = None
        victim: Hashable | None = None
        for held in self._held.values():
            oldest_conn, oldest_time = next(iter(held.items()))
            rank = (len(held), -oldest_time)
            if best is None or rank > best:
                best, victim = rank, oldest_conn
        return victim

    def release(self, conn: Hashable) -> bool:
        """Free ``conn``'s slot (it logged in, left, or was dropped); False if it held none."""
        source = self._source_of.pop(conn, None)
        if source is None:
            return False
        held = self._held[source]
        del held[conn]
        self._count -= 1
        if not held:
            del self._held[source]
        return True
