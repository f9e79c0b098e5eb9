"""The running proxy's alerts: rules applied to audit events, outbox rows, delivery.

Owns the glue between the login path and the outbox: it reads recent history, asks
proxy.core.anomaly which rules fire, and turns each firing into a ``NewAlert`` that the
caller commits with the event that raised it. Never waits on a sink: delivery is the
``Deliverer``'s, in its own task. A history read that fails still raises the fixed
alerts (every session start is alerted whatever the rate rules could not count).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable, Sequence

from proxy.alerts.delivery import DEFAULT_BACKOFF, Backoff, Deliverer, send_everywhere
from proxy.alerts.direct import RULE as STORE_FAILED
from proxy.alerts.direct import alert_store_failure
from proxy.alerts.payload import AlertContext, build
from proxy.alerts.sinks import Outgoing, Sink, SyslogSink, make_event_sinks, make_sinks
from proxy.clock import SYSTEM, Clock
from proxy.config.model import AlertsConfig
from proxy.core import anomaly, chain, events
from proxy.core.errors import StoreError
from proxy.core.text import escape
from proxy.store.base import AlertOutboxStore, NewAlert, NewEvent
from proxy.tasks import TaskOwner

log = logging.getLogger("breakglass")

# One store-failure alert per detail per this many seconds goes to the sinks and syslog;
# every one goes to the log. A dead disk must not turn each login into a page.
STORE_FAILURE_QUIET = 60.0


class Alerts:
    def __init__(
        self,
        config: AlertsConfig,
        store: AlertOutboxStore,
        *,
        sinks: Sequence[Sink] | None = None,
        backoff: Backoff = DEFAULT_BACKOFF,
        poll: float = 1.0,
        clock: Clock = SYSTEM,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        syslog_path: str | None = "/dev/log",
    ) -> None:
        self.rules = config.rules
        self.store = store
        self.sinks = list(make_sinks(config.sinks) if sinks is None else sinks)
        # Every audit event, by cursor (proxy.alerts.forward), not through the outbox.
        self.event_sinks: list[SyslogSink] = make_event_sinks(config.sinks)
        self.deliverer = Deliverer(store, self.sinks, backoff=backoff, poll=poll, clock=clock)
        self.clock = clock
        self.random_bytes = random_bytes
        self.syslog_path = syslog_path
        self.tasks = TaskOwner("alerts")
        self._store_failures: dict[str, float] = {}

    def apply_config(self, config: AlertsConfig) -> None:
        """A reload: new rules apply from the next event; sinks need a restart (their
        delivery workers, and the attempts recorded under their names, stay as they are)."""
        self.rules = config.rules
        new_events = [s.key for s in make_event_sinks(config.sinks)]
        if [s.key for s in make_sinks(config.sinks)] != self.deliverer.keys or new_events != [
            s.key for s in self.event_sinks
        ]:
            log.warning("alerts.sinks changed: the new sinks take effect after a restart")

    # -- raising ---------------------------------------------------------------------

    async def history(self, now: float) -> anomaly.History:
        reach = anomaly.horizon(self.rules)
        if reach <= 0:
            return anomaly.History()
        try:
            rows = await self.store.recent_activity(now - reach)
        except StoreError as exc:
            log.error("alert rules cannot read recent history (%s); rate rules skipped", exc)
            return anomaly.History()
        return anomaly.History(
            session_starts=rows.session_starts,
            failures=[anomaly.Failure(*f) for f in rows.failures],
            last_fired={(rule, subject): t for rule, subject, t in rows.fired},
        )

    def build(
        self, firings: Sequence[anomaly.Firing], ctx: AlertContext, now: float
    ) -> list[NewAlert]:
        return [build(f, ctx, now, random_bytes=self.random_bytes) for f in firings]

    async def for_event(self, event: NewEvent, ctx: AlertContext | None = None) -> list[NewAlert]:
        """The alerts ``event`` raises (rate rules included), to commit with it."""
        now = self.clock.time()
        typed = event.typed()
        needs_history = isinstance(
            typed,
            events.SessionStart
            | events.LoginFailed
            | events.LoginFailuresSummarised
            | events.LoginSlotsFull,
        )
        history = await self.history(now) if needs_history else anomaly.History()
        firings = anomaly.evaluate(typed, self.rules, history, now)
        return self.build(firings, ctx or AlertContext.of_event(typed, event.session_id), now)

    def fixed_for(self, event: NewEvent, ctx: AlertContext) -> list[NewAlert]:
        """Without reading history: for session ends, operator actions (synchronous)."""
        now = self.clock.time()
        firings = anomaly.evaluate(event.typed(), self.rules, anomaly.History(), now)
        return self.build(firings, ctx, now)

    async def record(self, event: NewEvent) -> None:
        """Append one event with the alerts it raises (``login_failed``, ``disk_space_*``
        ...). Never raises: a store failure takes the direct path."""
        try:
            alerts = await self.for_event(event)
            await self.store.append_with_alerts([event], alerts)
        except StoreError as exc:
            ctx = AlertContext.of_event(event.typed(), event.session_id)
            self.store_failed(f"cannot write a {event.type} event: {exc}", ctx)
            return
        self.committed(alerts)

    def committed(self, alerts: Sequence[NewAlert]) -> None:
        """``alerts`` were committed: say so in the log, and deliver them now."""
        for a in alerts:
            log.warning(
                "alert %s %s: %s (session=%s)",
                a.alert_id,
                a.rule,
                escape(str(a.payload.get("detail"))),
                a.session_id,
            )
        if alerts:
            self.deliverer.wake()

    # -- when the store is down --------------------------------------------------------

    def store_failed(self, detail: str, ctx: AlertContext | None = None) -> None:
        """The audit store cannot be written: log, syslog and (best effort) every sink,
        right now. Never raises; call it from the failing path."""
        now = self.clock.time()
        last = self._store_failures.get(detail)
        if last is not None and now - last < STORE_FAILURE_QUIET:
            log.critical("ALERT %s (repeat, not re-sent): %s", STORE_FAILED, detail)
            return
        self._store_failures[detail] = now
        payload = alert_store_failure(detail, ctx, now=now, syslog_path=self.syslog_path)
        if self.sinks:
            outgoing = Outgoing.of(chain.canonical(payload))
            try:
                self.tasks.spawn(self._send_direct(outgoing), "store failure alert")
            except RuntimeError:  # no running loop (called from a plain thread)
                log.critical("store-failure alert not sent to the sinks: no event loop")

    async def _send_direct(self, outgoing: Outgoing) -> None:
        for r in await send_everywhere(self.sinks, outgoing):
            level = logging.INFO if r.ok else logging.CRITICAL
            log.log(level, "store-failure alert to %s: %s", r.sink, r.detail)

    # -- running -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """The delivery loop, until ``stop``; then direct sends still running finish
        (each is bounded by its sink's timeout)."""
        try:
            if self.sinks or not self.event_sinks:
                await self.deliverer.run(stop)
            else:  # alerts reach the events-all syslog sinks as their alert events
                await stop.wait()
        finally:
            await self.tasks.wait()
