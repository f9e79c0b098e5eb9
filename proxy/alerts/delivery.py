"""Delivery from the outbox: every pending alert to every sink, retried until it lands.

Owns the retry policy. One worker per sink, so a sink that hangs or is down delays only
itself; the login path never waits for any of this (it only commits outbox rows). Each
attempt is recorded in the store with its result. Per alert and sink, the wait after the
n-th failure is ``base * factor**(n-1)`` capped at ``cap``; a success on a sink makes
every alert that failed on it before due at once (the sink is back). A round stops after
``streak`` failures in a row (the sink is likely down) and the worker pauses before the
next. Alerts are never given up on: an alert that is lost is a security failure.

At-least-once: an attempt interrupted (crash, shutdown) before its result is recorded is
made again after a restart, with the same payload bytes and ``alert_id``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.alerts.sinks import Outgoing, Sink, SinkError
from proxy.clock import SYSTEM, Clock
from proxy.core.errors import StoreError
from proxy.store.base import AlertOutboxStore, PendingAlert

log = logging.getLogger("breakglass")


@dataclass(frozen=True)
class Backoff:
    base: float = 2.0
    factor: float = 2.0
    cap: float = 300.0

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` failed attempts in a row (0 before any)."""
        if failures <= 0:
            return 0.0
        return min(self.cap, self.base * self.factor ** min(failures - 1, 64))


DEFAULT_BACKOFF = Backoff()


@dataclass(frozen=True)
class Result:
    sink: str
    ok: bool
    detail: str


async def attempt(sink: Sink, alert: Outgoing) -> Result:
    """One send, never raising (a bug in a sink is a failed attempt, logged)."""
    try:
        return Result(sink.key, True, await sink.send(alert))
    except SinkError as exc:
        return Result(sink.key, False, str(exc))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("alert sink %s failed unexpectedly", sink.key)
        return Result(sink.key, False, f"internal error: {type(exc).__name__}")


async def send_everywhere(sinks: Sequence[Sink], alert: Outgoing) -> list[Result]:
    """One attempt at every sink at once (drill; the store-is-down path)."""
    return list(await asyncio.gather(*(attempt(s, alert) for s in sinks)))


class Deliverer:
    def __init__(
        self,
        store: AlertOutboxStore,
        sinks: Sequence[Sink],
        *,
        backoff: Backoff = DEFAULT_BACKOFF,
        poll: float = 1.0,
        batch: int = 100,
        streak: int = 3,
        clock: Clock = SYSTEM,
    ) -> None:
        self.store = store
        self.sinks = list(sinks)
        self.keys = [s.key for s in self.sinks]
        self.backoff = backoff
        self.poll = poll
        self.batch = batch
        self.streak = streak
        self.clock = clock
        self._wake = {s.key: asyncio.Event() for s in self.sinks}

    def wake(self) -> None:
        """A new alert was committed in this process: look now, not at the next poll."""
        for event in self._wake.values():
            event.set()

    async def run(self, stop: asyncio.Event, grace: float = 2.0) -> None:
        """Deliver until ``stop`` is set; a round under way may finish within ``grace``
        seconds, then attempts still in flight are cancelled (and made again after a
        restart)."""
        if not self.sinks:
            log.warning("no alert sinks are configured: alerts stay in the audit store only")
            await stop.wait()
            return
        async with asyncio.TaskGroup() as tg:
            workers = [tg.create_task(self._worker(s, stop)) for s in self.sinks]
            await stop.wait()
            await asyncio.wait(workers, timeout=grace)
            for w in workers:
                w.cancel()

    async def _worker(self, sink: Sink, stop: asyncio.Event) -> None:
        wake = self._wake[sink.key]
        back_since = 0.0  # time of the last success: earlier failures are due now
        down_rounds = 0
        while not stop.is_set():
            wake.clear()
            try:
                outcome = await self.round(sink, back_since)
            except StoreError as exc:
                log.error("alert delivery to %s paused: %s", sink.key, exc)
                outcome = Round(None, 0, 0, None)
            except Exception:  # a bug here must not end delivery, nor the proxy
                log.exception("alert delivery to %s failed; retrying", sink.key)
                outcome = Round(None, 0, 0, None)
            if outcome.last_success is not None:
                back_since = outcome.last_success
            if outcome.failed_streak:
                down_rounds += 1
                pause = self.backoff.delay(down_rounds)
                await self.clock.wait(pause, stop)  # a new alert does not end a down sink's pause
                continue
            down_rounds = 0 if outcome.sent else down_rounds
            now = self.clock.time()
            wait = self.poll if outcome.next_due is None else max(0.0, outcome.next_due - now)
            await self.clock.wait(min(self.poll, wait), stop, wake)

    async def round(self, sink: Sink, back_since: float = 0.0) -> Round:
        """One pass over the alerts pending for ``sink``: attempt those that are due."""
        pending = await self.store.pending_alerts(sink.key, self.batch)
        next_due: float | None = None
        last_success: float | None = None
        sent = failures = 0
        for alert in pending:
            now = self.clock.time()
            due = self.due_at(alert, back_since if last_success is None else last_success)
            if due > now:
                next_due = due if next_due is None else min(next_due, due)
                continue
            result = await attempt(sink, Outgoing.of(alert.payload_json))
            number = await self.store.record_delivery(
                alert.alert_id, sink.key, self.clock.time(), result.ok, result.detail, self.keys
            )
            if result.ok:
                sent += 1
                failures = 0
                last_success = self.clock.time()
                log.info("alert %s (%s) delivered to %s", alert.alert_id, alert.rule, sink.key)
            else:
                failures += 1
                log.warning(
                    "alert %s (%s) not delivered to %s (attempt %d): %s",
                    alert.alert_id,
                    alert.rule,
                    sink.key,
                    number,
                    result.detail,
                )
                retry = self.clock.time() + self.backoff.delay(alert.attempts + 1)
                next_due = retry if next_due is None else min(next_due, retry)
                if failures >= self.streak:
                    return Round(next_due, sent, failures, last_success)
        if len(pending) >= self.batch and sent:
            next_due = self.clock.time()  # more are waiting behind this batch
        return Round(next_due, sent, 0, last_success)

    def due_at(self, alert: PendingAlert, back_since: float) -> float:
        if alert.last_attempt is None or alert.last_attempt < back_since:
            return alert.created if alert.last_attempt is None else back_since
        return alert.last_attempt + self.backoff.delay(alert.attempts)


@dataclass(frozen=True)
class Round:
    next_due: float | None
    sent: int
    failed_streak: int
    last_success: float | None
