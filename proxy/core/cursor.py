"""The event log's cursor: where a reader (``breakglass events``, the syslog forwarder,
a SIEM's shipper) has got to, as text it can keep and hand back.

One node today: the cursor is the last sequence number read, in decimal (``1234``), and
reading resumes with the events after it. The text is kept open for a fleet, where it
will be one position per node, ``NODE:SEQ,NODE:SEQ``; such a cursor is refused here
with a clear error rather than misread. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SEQ = re.compile(r"[0-9]{1,18}")


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
