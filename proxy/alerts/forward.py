"""Every audit event to syslog: the ``{type: syslog, events: all}`` sink.

Owns the forwarding loop for one such sink. It reads the event log itself, by cursor,
not the alert outbox: a flood of failed logins adds events to read, never rows to a
queue. Each event is one RFC 5424 message whose MSG is the event's ASCII JSON line
(proxy.audit.feed, the same as ``breakglass events --json``) and whose MSGID is its type;
an ``alert`` event is sent at its rule's severity, refusals at notice, the rest at
info. The cursor is saved in the store (``feed_cursors``) after each page sent, so a
restart resumes there: at least once, and a crash or a failed send repeats at most one
page (a page goes over one connection, in order). A sink that fails is retried from the
same event with the outbox's backoff, for as long as it takes. The first run starts at
the log's first event (the SIEM gets the history).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os

from proxy.alerts.base import SinkError
from proxy.alerts.delivery import DEFAULT_BACKOFF, Backoff
from proxy.alerts.payload import hostname
from proxy.alerts.sinks import (
    SEVERITY_INFO,
    SEVERITY_NOTICE,
    SyslogSink,
    alert_severity,
    syslog_line,
)
from proxy.audit.feed import event_line
from proxy.audit.views import rfc3339
from proxy.clock import SYSTEM, Clock
from proxy.core import events
from proxy.core.chaincheck import ChainRow
from proxy.core.errors import StoreError
from proxy.store.base import FeedStore

log = logging.getLogger("breakglass")

_NOTICE = frozenset(
    t.TYPE
    for t in (
        events.LoginFailed,
        events.LoginFailuresSummarised,
        events.RequestRefused,
        events.Flag,
        events.OperatorKill,
    )
)


def _alert_rule(row: ChainRow) -> str:
    try:
        alert = events.decode(row.type, json.loads(row.data_json))
    except ValueError:  # not JSON, or not an alert: forwarded all the same
        return ""
    return alert.rule if isinstance(alert, events.Alert) else ""


def event_message(row: ChainRow, *, pid: int, host: str) -> bytes:
    severity = SEVERITY_INFO
    if row.type == events.Alert.TYPE:
        severity = alert_severity(_alert_rule(row))
    elif row.type in _NOTICE:
        severity = SEVERITY_NOTICE
    return syslog_line(severity, rfc3339(row.time) or "-", host, row.type, event_line(row), pid)


class EventForwarder:
    def __init__(
        self,
        store: FeedStore,
        sink: SyslogSink,
        *,
        poll: float = 0.5,
        page: int = 200,
        backoff: Backoff = DEFAULT_BACKOFF,
        clock: Clock = SYSTEM,
    ) -> None:
        self.store = store
        self.sink = sink
        self.name = sink.key
        self.poll = poll
        self.page = page
        self.backoff = backoff
        self.clock = clock
        self.failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Forward until ``stop``; a send under way finishes (it is bounded by the
        sink's timeout)."""
        cursor: int | None = None
        while not stop.is_set():
            try:
                if cursor is None:
                    cursor = await self.store.feed_cursor(self.name)
                cursor, more = await self.step(cursor)
            except StoreError as exc:
                self.failures += 1
                log.error("event forwarding to %s paused: %s", self.name, exc)
                more = False
            except Exception:  # a bug here must not end forwarding, nor the proxy
                self.failures += 1
                log.exception("event forwarding to %s failed; retrying", self.name)
                more = False
            if more:
                continue
            pause = self.backoff.delay(self.failures) if self.failures else self.poll
            await self.clock.wait(pause, stop)

    async def step(self, cursor: int) -> tuple[int, bool]:
        """Send one page after ``cursor`` (one connection, in order); return the new
        cursor and whether more are waiting. A failed send leaves the cursor where it
        was: the page is sent again, whole."""
        rows = await self.store.event_page(cursor, self.page)
        sent = cursor
        pid, host = os.getpid(), hostname()
        try:
            if rows:
                await self.sink.send_messages([event_message(r, pid=pid, host=host) for r in rows])
                sent = rows[-1].seq
        except SinkError as exc:
            self.failures += 1
            if self.failures == 1 or self.failures % 10 == 0:
                log.warning(
                    "events to %s stopped at seq %d (attempt %d): %s",
                    self.name,
                    cursor + 1,
                    self.failures,
                    exc,
                )
        else:
            if self.failures:
                log.info("events to %s flow again from seq %d", self.name, cursor + 1)
            self.failures = 0
        if sent != cursor:
            await self.store.save_feed_cursor(self.name, sent, self.clock.time())
        return sent, self.failures == 0 and len(rows) == self.page
