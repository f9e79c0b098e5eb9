"""One live session: the state shared by the channels of one authenticated connection.

Owns the session's upstream connection, its deadline timer and warnings, its channels'
numbering, its audit writes (in order) and its end. The end is written exactly once,
shielded from cancellation, after every channel has written its own end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import asyncssh

from proxy.alerts.payload import AlertContext
from proxy.config import RecordingConfig, TargetConfig
from proxy.core import answers, events
from proxy.core.errors import StoreError, UpstreamError
from proxy.core.limits import MAX_DETAIL, OpenRate, RefusalTally
from proxy.core.policy import warning_times
from proxy.core.text import truncate
from proxy.core.units import format_duration, format_size
from proxy.ssh import upstream
from proxy.store.base import NewEvent, SessionJournal
from proxy.tasks import TaskOwner

if TYPE_CHECKING:
    from proxy.alerts.raiser import Alerts

log = logging.getLogger("breakglass")

# While refusals keep coming, their counts are written at most this often (and at the end).
REFUSAL_SUMMARY_INTERVAL = 10.0
# A session whose forwarding was refused before it opened any session channel (-N -L,
# -N -D, and what is left of -W / ProxyJump if the client stays) ends after this long
# without one: it has nothing else to do. A channel opened meanwhile (a ControlMaster's
# first client) keeps it, and a master that asks for no forwarding is never timed.
FORWARD_ONLY_GRACE = 5.0
FORWARD_ONLY_MESSAGE = (
    "no channel was opened and breakglass refuses forwarding (-L, -D, -W, ProxyJump -J); "
    "log in with ssh PERSON@TARGET@proxy"
)


class OpenChannel(Protocol):
    """What the session asks of one of its open channels (proxy.ssh.relay's
    ChannelBridge): a notice, a close, and the wait until its cast is final. Named here
    so that the session does not import the relay, which imports the session."""

    def notice(self, line: str) -> None: ...

    def terminate(self, message: str | None) -> None: ...

    async def finalized(self) -> None: ...


@dataclass(frozen=True)
class SessionInfo:
    id: str
    person: str
    credential_id: str
    source: str
    client_version: str
    target: TargetConfig
    login: str
    justification: str
    started_at: float
    deadline: float


class SessionHost(Protocol):
    """What a session needs from the running service (read-only views)."""

    @property
    def store(self) -> SessionJournal: ...

    @property
    def alerts(self) -> Alerts: ...

    @property
    def recordings(self) -> Path: ...

    @property
    def recording(self) -> RecordingConfig: ...

    @property
    def warn_before(self) -> tuple[float, ...]: ...

    @property
    def idle_timeout(self) -> float | None: ...

    @property
    def max_channels(self) -> int: ...

    @property
    def channel_open_rate(self) -> tuple[int, int]: ...

    def upstream_keys(self, target: TargetConfig) -> upstream.UpstreamKeys: ...

    def session_ended(self, session: LiveSession) -> None: ...


class LiveSession:
    def __init__(
        self,
        host: SessionHost,
        info: SessionInfo,
        conn: asyncssh.SSHServerConnection,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.info = info
        self.conn = conn
        self.clock = clock
        self.tasks = TaskOwner(f"session {info.id}")
        self.channels: dict[int, OpenChannel] = {}
        self._next_channel = 0
        self.end_reason: str | None = None
        self.end_detail: str | None = None
        self.upstream_error: UpstreamError | None = None
        self._upstream: asyncio.Task[asyncssh.SSHClientConnection] | None = None
        self._timer: asyncio.Task[None] | None = None
        # A timer, not a task: one per live session, and a sleeping task costs ~2 KiB.
        self._idle: asyncio.TimerHandle | None = None
        self._audit_chain: asyncio.Future[None] | None = None
        self._finished = asyncio.Event()
        self._finishing = False
        self.recorded_bytes = 0
        self._refusals = RefusalTally()
        self._opens = OpenRate(*host.channel_open_rate)
        self._refusal_summary: asyncio.TimerHandle | None = None
        self.forwards_refused = 0
        self._forward_only: asyncio.TimerHandle | None = None
        # Monotonic time of the last byte in either direction, for the idle timeout.
        self.last_activity = time.monotonic()

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Called once authentication has completed: reach the target, arm the timer."""
        self._upstream = self.tasks.spawn(self._connect_upstream(), "upstream")
        self._timer = self.tasks.spawn(self._deadline_timer(), "deadline")
        limit = self.host.idle_timeout
        if limit:
            self._idle_check(limit)

    async def _connect_upstream(self) -> asyncssh.SSHClientConnection:
        target = self.info.target
        try:
            keys = self.host.upstream_keys(target)
            return await upstream.connect(target, keys, self.info.login)
        except UpstreamError as exc:
            self.upstream_error = exc
            self.audit(events.UpstreamFailed(exc.reason, exc.message))
            self.set_end("target_error", exc.reason)
            raise
        except (OSError, ValueError, asyncssh.KeyImportError) as exc:
            err = UpstreamError(f"cannot load keys for target {target.name}: {exc}")
            self.upstream_error = err
            self.audit(events.UpstreamFailed(err.reason, err.message))
            self.set_end("target_error", err.reason)
            raise err from exc

    async def upstream(self) -> asyncssh.SSHClientConnection:
        assert self._upstream is not None, "session not started"
        return await asyncio.shield(self._upstream)

    def recorded(self, size: int) -> None:
        """Bytes written to this session's casts; past the session cap it is closed."""
        self.recorded_bytes += size
        limit = self.host.recording.max_session_bytes
        if self.recorded_bytes > limit and not self._finishing:
            self.audit(events.RecordingLimit(self.recorded_bytes, limit))
            self.close(
                events.RecordingLimit.TYPE,
                f"the session's recordings reached their limit of {format_size(limit)}",
            )

    def forwarding_refused(self) -> None:
        """A forwarding request was refused (audited by the caller). If no session channel
        was ever opened, the session ends after FORWARD_ONLY_GRACE unless one opens."""
        self.forwards_refused += 1
        if self._next_channel == 0 and self._forward_only is None and not self._finishing:
            loop = asyncio.get_running_loop()
            self._forward_only = loop.call_later(FORWARD_ONLY_GRACE, self._end_forward_only)

    def _end_forward_only(self) -> None:
        self._forward_only = None
        if self._next_channel == 0:
            self.close("forwarding_only", FORWARD_ONLY_MESSAGE, detail=self._no_channel_detail())

    def _no_channel_detail(self) -> str:
        if self.forwards_refused:
            return (
                "no channel opened: a forwarding-only or ProxyJump attempt "
                f"({self.forwards_refused} forwarding request(s) refused)"
            )
        return "no channel opened"

    def new_channel_number(self) -> int:
        self._next_channel += 1
        return self._next_channel

    def channel_refusal(self) -> str | None:
        """Why a new channel cannot be opened now (None: it can). Past a limit (open
        channels, or the open rate) the channel costs nothing: no cast, no target
        channel, one event for the first of each."""
        limit = self.host.max_channels
        if len(self.channels) >= limit:
            # One event says the limit was hit; the channels refused after it are counted.
            self.refused("session", f"channel limit: {limit} open", full=1, limit=limit)
            return (
                f"breakglass: this session already has {limit} channels open, its limit"
                " (policy.max_channels); close one and retry"
            )
        if not self._opens.allow(time.monotonic()):
            burst, rate = self._opens.burst, self._opens.per_second
            self.refused(
                "session-rate",
                f"channel open rate: {burst} at once, then {rate:g} a second",
                full=1,
                burst=burst,
                rate=int(rate),
            )
            return (
                f"breakglass: this session opens channels faster than {rate:g} a second"
                f" after {burst} (policy.channel_open_rate, policy.channel_open_burst);"
                " wait a moment and retry"
            )
        return None

    def set_end(self, reason: str, detail: str | None = None) -> None:
        """The first reason given wins: it is the cause, the rest are consequences."""
        if self.end_reason is None:
            self.end_reason = reason
            self.end_detail = detail

    # -- audit ----------------------------------------------------------------------

    def audit(self, ev: events.Event, channel: int | None = None) -> None:
        """Append an event from a synchronous callback, in call order."""
        event = NewEvent.of(ev, self.clock(), self.info.id, channel)
        self._in_order(ev.TYPE, lambda: self.append(event))

    def _in_order(self, type_: str, write: Callable[[], Awaitable[None]]) -> None:
        prev = self._audit_chain

        async def chained() -> None:
            if prev is not None:
                await asyncio.wait([prev])
            await write()

        self._audit_chain = self.tasks.spawn(chained(), f"audit {type_}")

    def refused(
        self,
        request: str,
        detail: str,
        channel: int | None = None,
        *,
        full: int = RefusalTally.FULL_PER_KIND,
        **extra: Any,
    ) -> None:
        """A request refused: the first ``full`` of its kind are events with their
        detail; the rest are counted into one ``request_refused`` event with counts."""
        request = truncate(request, 64)
        if self._refusals.note(request, full):
            refusal = events.RequestRefused(request, truncate(detail, MAX_DETAIL), **extra)
            self.audit(refusal, channel=channel)
        elif self._refusal_summary is None and not self._finishing:
            loop = asyncio.get_running_loop()
            self._refusal_summary = loop.call_later(
                REFUSAL_SUMMARY_INTERVAL, self._write_refusal_summary
            )

    def _write_refusal_summary(self) -> None:
        self._refusal_summary = None
        counts = self._refusals.drain()
        if counts:
            text = ", ".join(f"{k} x{n}" for k, n in sorted(counts.items()))
            summary = events.RequestRefused("repeated", truncate(text, MAX_DETAIL), counts=counts)
            self.audit(summary)

    def audit_alerting(self, ev: events.Event, channel: int | None = None) -> None:
        """Append an event with the alerts it raises (and the flag they set), in order."""
        event = NewEvent.of(ev, self.clock(), self.info.id, channel)
        alerts = self.host.alerts.fixed_for(event, self.context())

        async def write() -> None:
            await self._write(self.host.store.append_with_alerts([event], alerts))
            self.host.alerts.committed(alerts)

        self._in_order(ev.TYPE, write)

    async def append(self, *events: NewEvent) -> None:
        """Write now; on failure the session fails closed."""
        await self._write(self.host.store.append(events))

    async def _write(self, op: Awaitable[None]) -> None:
        try:
            await asyncio.shield(op)
        except StoreError as exc:
            log.critical("audit store write failed for session %s: %s", self.info.id, exc)
            self.host.alerts.store_failed(f"cannot write session events: {exc}", self.context())
            self.close("store_error", "the audit trail cannot be written", detail=str(exc))
            raise

    async def flush_audit(self) -> None:
        if self._audit_chain is not None:
            await asyncio.wait([self._audit_chain])

    # -- deadline -------------------------------------------------------------------

    async def _deadline_timer(self) -> None:
        deadline = self.info.deadline
        for at in warning_times(deadline, self.host.warn_before, self.clock()):
            await asyncio.sleep(max(0.0, at - self.clock()))
            left = format_duration(round(deadline - self.clock()))
            self.broadcast(f"breakglass: this session ends in {left} (time limit)")
            self.audit(events.SessionWarning(round(deadline - self.clock(), 3)))
        await asyncio.sleep(max(0.0, deadline - self.clock()))
        self.close("time_limit", "session time limit reached")

    def _idle_check(self, limit: float) -> None:
        # A tail -f or a long pg_dump moves bytes, so it is never idle; only silence is.
        quiet = time.monotonic() - self.last_activity
        if quiet >= limit:
            self._idle = None
            self.close("idle", f"no activity for {format_duration(limit)} (idle timeout)")
            return
        self._idle = asyncio.get_running_loop().call_later(limit - quiet, self._idle_check, limit)

    def extend(self, by: float, operator: str, reason: str) -> None:
        """An operator moved the deadline by ``by`` seconds: re-arm timer and warnings."""
        if self._finishing:
            return
        deadline = self.info.deadline + by
        self.info = dataclasses.replace(self.info, deadline=deadline)
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.tasks.spawn(self._deadline_timer(), "deadline")
        self.audit(events.DeadlineChanged(deadline, by, operator, reason))
        self.broadcast(f"breakglass: {answers.extended_notice(by, deadline)}")

    def context(self) -> AlertContext:
        i = self.info
        return AlertContext(
            session_id=i.id,
            person=i.person,
            source=i.source,
            target=i.target.name,
            login=i.login,
            justification=i.justification,
            credential_id=i.credential_id,
        )

    def broadcast(self, line: str) -> None:
        for bridge in list(self.channels.values()):
            bridge.notice(line)

    def close(self, reason: str, message: str, detail: str | None = None) -> None:
        """End the session from the proxy's side, telling every channel why."""
        self.set_end(reason, detail)
        if self._finishing:
            return
        self._finishing = True
        for bridge in list(self.channels.values()):
            bridge.terminate(f"breakglass: {message}; closing.")
        self.tasks.spawn(self._disconnect_soon(message), "disconnect")

    async def _disconnect_soon(self, message: str) -> None:
        # Give channels a moment to deliver the message and exit status, then cut.
        for _ in range(20):
            if not self.channels:
                break
            await asyncio.sleep(0.1)
        self.conn.disconnect(asyncssh.DISC_BY_APPLICATION, message)

    async def finish(self) -> None:
        """The connection is gone: close upstream, wait for channels, write the end."""
        self._finishing = True
        for bridge in list(self.channels.values()):
            bridge.terminate(None)
        for timer in (self._timer, self._idle, self._refusal_summary, self._forward_only):
            if timer is not None:
                timer.cancel()
        if self._next_channel == 0:
            # Nothing ran: the record says so plainly. The code's use and the session
            # start stay (they were committed at login, and the login was real).
            if self.forwards_refused:
                self.set_end("forwarding_only", self._no_channel_detail())
            else:
                self.set_end("client_exit", self._no_channel_detail())
        try:
            await self._wait_channels()
            self._write_refusal_summary()
            await self.flush_audit()
        finally:
            await self._close_upstream()
            end = NewEvent.of(
                events.SessionEnd(self.end_reason or "client_exit", self.end_detail),
                self.clock(),
                self.info.id,
            )
            alerts = self.host.alerts.fixed_for(end, self.context())
            try:
                await asyncio.shield(self.host.store.append_with_alerts([end], alerts))
                self.host.alerts.committed(alerts)
            except StoreError as exc:
                log.critical("could not write the end of session %s: %s", self.info.id, exc)
                self.host.alerts.store_failed(f"cannot write a session end: {exc}", self.context())
            self._finished.set()
            self.host.session_ended(self)

    async def _wait_channels(self) -> None:
        waits: list[Awaitable[None]] = [b.finalized() for b in list(self.channels.values())]
        if waits:
            await asyncio.gather(*waits, return_exceptions=True)

    async def _close_upstream(self) -> None:
        task = self._upstream
        if task is None:
            return
        if not task.done():
            task.cancel()
        try:
            up = await task
        except (asyncio.CancelledError, Exception):
            return
        up.close()
        with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
            await asyncio.wait_for(up.wait_closed(), 5)

    async def wait_finished(self) -> None:
        await self._finished.wait()
