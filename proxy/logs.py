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
