"""The alert for when the audit store itself cannot be written.

It cannot wait in the outbox (the outbox is the store), so it goes straight to the
local syslog socket (``/dev/log`` when present) and to the proxy's log, synchronously and
without ever blocking or raising: it is called from the paths that are already failing.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from proxy.alerts.payload import AlertContext, build
from proxy.alerts.sinks import rfc5424
from proxy.core.anomaly import Firing
from proxy.core.text import escape

log = logging.getLogger("breakglass")

LOCAL_SYSLOG = "/dev/log"
RULE = "store_write_failed"


def alert_store_failure(
    detail: str,
    ctx: AlertContext | None = None,
    *,
    now: float | None = None,
    syslog_path: str | None = LOCAL_SYSLOG,
) -> Mapping[str, Any]:
    """Log and syslog a ``store_write_failed`` alert now; return its payload (for
    sending to the configured sinks as well, best effort)."""
    alert = build(Firing(RULE, detail), ctx or AlertContext(), time.time() if now is None else now)
    payload = alert.payload
    text = json.dumps(payload, ensure_ascii=True, sort_keys=True)
    log.critical("ALERT %s: %s %s", RULE, escape(detail), text)
    if syslog_path and os.path.exists(syslog_path):
        _syslog_now(syslog_path, rfc5424(payload, pid=os.getpid()))
    return payload


def _syslog_now(path: str, message: bytes) -> None:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)  # a full syslog queue must not stall the proxy
            sock.sendto(message, path)
    except OSError as exc:
        log.critical("cannot write the store-failure alert to %s: %s", path, exc)
