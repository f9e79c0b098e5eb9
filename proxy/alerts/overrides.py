"""Operator overrides reaching the running proxy: ``breakglass kill`` and ``extend``.

The CLI appends ``operator_kill``/``operator_extend`` events to the store (with the
operator and the reason, and an alert); ``watch_overrides`` polls the events table for new
ones by seq and hands each to the proxy. Going through the store, not a socket, means it
works the same when several proxy nodes share one store later: each node acts on the
sessions it holds and ignores the rest. Never acts on events older than its own start:
sessions of an earlier run were ended by crash recovery.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from proxy.clock import SYSTEM, Clock
from proxy.core import events
from proxy.core.errors import StoreError
from proxy.core.text import escape
from proxy.core.units import format_duration
from proxy.store.base import OverrideReads, StoredEvent

log = logging.getLogger("breakglass")

KILL = events.OperatorKill.TYPE
EXTEND = events.OperatorExtend.TYPE
TYPES = (KILL, EXTEND)
POLL_INTERVAL = 1.0
BATCH = 100

Handler = Callable[[StoredEvent], Awaitable[None] | None]


async def watch_overrides(
    store: OverrideReads,
    on_kill: Handler,
    on_extend: Handler,
    stop: asyncio.Event,
    *,
    interval: float = POLL_INTERVAL,
    after_seq: int | None = None,
    clock: Clock = SYSTEM,
) -> None:
    """Call ``on_kill``/``on_extend`` for each new operator event, in seq order, until
    ``stop``. A failing handler or store read is logged; the watch goes on."""
    last = after_seq
    while last is None and not stop.is_set():
        try:
            last = await store.last_seq()
        except StoreError as exc:
            log.error("override watch cannot read the store: %s", exc)
            await clock.wait(interval, stop)
    while last is not None and not stop.is_set():
        try:
            found = await store.events_after(last, TYPES, BATCH)
        except StoreError as exc:
            log.error("override watch cannot read the store: %s", exc)
            found = []
        for ev in found:
            last = ev.seq
            handler = on_kill if ev.type == KILL else on_extend
            try:
                result = handler(ev)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("handling %s (seq %d) failed", ev.type, ev.seq)
        if len(found) < BATCH:
            await clock.wait(interval, stop)


# -- the proxy's side: what a kill or an extend does to a live session -------------------


class Overridable(Protocol):
    def close(self, reason: str, message: str, detail: str | None = None) -> None: ...

    def extend(self, by: float, operator: str, reason: str) -> None: ...


def kill_message(operator: str, reason: str) -> str:
    """What the engineer sees (escaped: the reason is typed by an operator)."""
    return f"an operator ({escape(operator)}) closed this session: {escape(reason)}"


def handlers(
    find: Callable[[str], Overridable | None],
) -> tuple[Callable[[StoredEvent], None], Callable[[StoredEvent], None]]:
    """``on_kill`` and ``on_extend`` acting on the live sessions ``find`` knows."""

    def on_kill(ev: StoredEvent) -> None:
        session = find(ev.session_id or "")
        if session is None:
            return  # not ours (another node), or already gone
        kill = ev.typed()
        assert isinstance(kill, events.OperatorKill)
        operator, reason = kill.operator, kill.reason
        log.warning("session %s killed by operator %s", ev.session_id, escape(operator))
        session.close("killed", kill_message(operator, reason), detail=f"{operator}: {reason}")

    def on_extend(ev: StoredEvent) -> None:
        session = find(ev.session_id or "")
        if session is None:
            return
        extend = ev.typed()
        assert isinstance(extend, events.OperatorExtend)
        by, operator, reason = extend.by, extend.operator, extend.reason
        if by <= 0:
            return
        log.warning(
            "session %s extended by %s by operator %s",
            ev.session_id,
            format_duration(float(by)),
            escape(operator),
        )
        session.extend(float(by), operator, reason)

    return on_kill, on_extend
