"""The alert machinery's tasks inside the running proxy: delivery, the event forwarders
(``events: all`` syslog sinks) and the override watch.

Owns their start and their stop: ``start()`` once the proxy is up (alerts left pending
by an earlier run are delivered from then on), ``await stop()`` after the sessions have
written their ends (so their alerts get a last chance to go out).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from proxy.alerts.forward import EventForwarder
from proxy.alerts.overrides import Overridable, handlers, watch_overrides
from proxy.alerts.raiser import Alerts
from proxy.store.base import AlertTaskStore

log = logging.getLogger("breakglass")


class AlertRuntime:
    def __init__(
        self,
        alerts: Alerts,
        store: AlertTaskStore,
        find: Callable[[str], Overridable | None],
        *,
        poll: float = 1.0,
    ) -> None:
        self.alerts = alerts
        self.store = store
        self.find = find
        self.poll = poll
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        on_kill, on_extend = handlers(self.find)
        self._tasks = [
            asyncio.create_task(self.alerts.run(self._stop), name="alerts:delivery"),
            asyncio.create_task(
                watch_overrides(
                    self.store,
                    on_kill,
                    on_extend,
                    self._stop,
                    interval=self.poll,
                    clock=self.alerts.clock,
                ),
                name="alerts:overrides",
            ),
        ]
        for sink in self.alerts.event_sinks:
            forwarder = EventForwarder(self.store, sink, clock=self.alerts.clock)
            self._tasks.append(
                asyncio.create_task(forwarder.run(self._stop), name=f"events:{sink.key}")
            )

    async def stop(self) -> None:
        self._stop.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for task, result in zip(self._tasks, results, strict=True):
            if isinstance(result, Exception):
                log.error("%s ended with an error", task.get_name(), exc_info=result)
        self._tasks = []
