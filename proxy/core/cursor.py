"""The event log's cursor: where a reader (``breakglass events``, the syslog forwarder,
a SIEM's shipper) has got to, as text it can keep and hand back.

One node: the cursor is the last sequence number read, in decimal (``1234``), and
reading resumes with the events after it. A fleet (the ledger): one position per node,
``NODE:SEQ,NODE:SEQ`` (``FleetCursor``), each node's events resuming after its own; a
node not named has not been read yet. Each kind refuses the other's text with a clear
error rather than misreading it. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SEQ = re.compile(r"[0-9]{1,18}")
_NODE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


@dataclass(frozen=True, order=True)
class Cursor:
    seq: int = 0  # the last event read; 0: before the first

    def __post_init__(self) -> None:
        if self.seq < 0:
            raise ValueError("a cursor is never negative")

    def __str__(self) -> str:
        return str(self.seq)

    def after(self, seq: int) -> Cursor:
        """The cursor once event ``seq`` has been read (never moves back)."""
        return self if seq <= self.seq else Cursor(seq)

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """``1234``; raises ValueError saying what is wrong (and nothing else)."""
        value = text.strip()
        if _SEQ.fullmatch(value):
            return cls(int(value))
        if ":" in value:
            raise ValueError(
                f"{value[:40]!r} is a fleet cursor (NODE:SEQ,...); this store is one node:"
                " give the sequence number alone"
            )
        raise ValueError(f"{value[:40]!r} is not a cursor: a cursor is an event's sequence number")


@dataclass(frozen=True)
class FleetCursor:
    """One position per node (the last seq read of it), by node name."""

    positions: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        names = [n for n, _ in self.positions]
        if names != sorted(set(names)) or any(s < 0 for _, s in self.positions):
            raise ValueError("a fleet cursor names each node once, in order, never negative")

    def __str__(self) -> str:
        return ",".join(f"{node}:{seq}" for node, seq in self.positions)

    def as_dict(self) -> dict[str, int]:
        return dict(self.positions)

    def after(self, node: str, seq: int) -> FleetCursor:
        """The cursor once ``node``'s event ``seq`` has been read (never moves back)."""
        now = self.as_dict()
        if seq <= now.get(node, 0):
            return self
        now[node] = seq
        return FleetCursor(tuple(sorted(now.items())))

    @classmethod
    def parse(cls, text: str) -> FleetCursor:
        """``NODE:SEQ,NODE:SEQ`` (empty: nothing read yet); raises ValueError saying
        what is wrong."""
        value = text.strip()
        if not value:
            return cls()
        if _SEQ.fullmatch(value):
            raise ValueError(
                f"{value[:40]!r} is one node's cursor; the ledger holds a fleet: give"
                " NODE:SEQ,... (or read this node's journal with --local)"
            )
        found: dict[str, int] = {}
        for part in value.split(","):
            node, sep, seq = part.strip().partition(":")
            if not sep or not _NODE.fullmatch(node) or not _SEQ.fullmatch(seq):
                raise ValueError(f"{part[:40]!r} is not NODE:SEQ (a fleet cursor's part)")
            if node in found:
                raise ValueError(f"the fleet cursor names node {node} twice")
            found[node] = int(seq)
        return cls(tuple(sorted(found.items())))
