"""Logging setup: human lines on a terminal, JSON lines for journald.

``BREAKGLASS_LOG_FORMAT=json`` (the systemd unit sets it) writes one JSON object per
record to stdout, so journald keeps each record on one line and a log shipper reads
fields, not prose. JSON escapes control characters, so untrusted text in a message
cannot forge a record; the text format relies on callers escaping it (they do).
Never logs secrets: no code, key or hash is ever passed to a logger.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Callable


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=True)


def setup_logging(fmt: str | None = None) -> None:
    fmt = fmt or os.environ.get("BREAKGLASS_LOG_FORMAT", "text")
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


class LineBudget:
    """At most ``per_minute`` log lines of one kind a minute; the rest are only counted.

    For lines a stranger can cause at will (a failed login, a throttled attempt, a
    refused or cut connection): without a bound, a flood of them fills the journal and
    spends the proxy's time formatting text, however cheap the audit side has been
    made. The audit trail keeps every attempt (singly or summarised); the log needs
    only to show that a flood is on. ``allow`` returns how many lines of that kind were
    held back since the last one let through (to say so in it), or None to hold this
    one back too. Kinds are a few fixed names, so the table stays small.
    """

    def __init__(self, per_minute: int = 20, clock: Callable[[], float] = time.monotonic):
        self.per_minute = per_minute
        self._clock = clock
        self._kinds: dict[str, tuple[float, int, int]] = {}  # kind -> (start, let, held)

    def allow(self, kind: str) -> int | None:
        now = self._clock()
        start, let, held = self._kinds.get(kind, (now, 0, 0))
        if now - start >= 60.0 or now < start:
            start, let = now, 0
        if let >= self.per_minute:
            self._kinds[kind] = (start, let, held + 1)
            return None
        self._kinds[kind] = (start, let + 1, 0)
        return held


def held_note(held: int) -> str:
    """The suffix of a line let through after others of its kind were held back."""
    return f" ({held} similar lines not logged)" if held else ""
