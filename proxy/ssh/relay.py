"""Bridges one engineer channel to one target channel: moves the bytes, nothing more.

Owns a channel's life: the request kind (shell, exec, sftp), PTY parameters, early input
buffered until the target channel exists, flow control both ways, coalescing of the
target's output, EOF, signals, break, window changes, exit status and signal. What the
channel leaves in the audit (cast, commands, taps, resource events) is its
``ChannelAudit``'s (proxy/ssh/channel_audit.py), called at each hook. Every callback is
wrapped: an exception in an asyncssh callback would kill the whole connection.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import asyncssh
from asyncssh.packet import SSHPacket

from proxy.core import events
from proxy.core.errors import RecordingError, StoreError, UpstreamError
from proxy.core.execrules import refused_exec
from proxy.core.limits import MAX_SIGNAL_NAME, RESIZE_INTERVAL, EnvRequests, target_size
from proxy.ssh import wire
from proxy.ssh.channel_audit import ChannelAudit, Relayed
from proxy.ssh.session import LiveSession

log = logging.getLogger("breakglass")

ALLOWED_SUBSYSTEMS = frozenset({"sftp"})
_SIGNAL_NAME = re.compile(rf"[A-Z0-9]{{1,{MAX_SIGNAL_NAME}}}\Z")
# Input that arrives before the target channel exists is held, up to this much.
EARLY_INPUT_LIMIT = 256 * 1024
# Target output held to the end of a socket read, at most: OpenSSH's packet size.
COALESCE_BYTES = 32 * 1024


class UpstreamSession(asyncssh.SSHClientSession[bytes]):
    """The target side of a bridge: forwards everything to the bridge."""

    def __init__(self, bridge: ChannelBridge) -> None:
        self._bridge = bridge
        self.exit_status: int | None = None
        self.exit_signal: tuple[str, bool, str, str] | None = None

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._bridge.from_target(data, datatype)

    def eof_received(self) -> bool:
        self._bridge.target_eof()
        return True

    def pause_writing(self) -> None:
        self._bridge.down_pause_reading()

    def resume_writing(self) -> None:
        self._bridge.down_resume_reading()

    def exit_status_received(self, status: int) -> None:
        self.exit_status = status

    def exit_signal_received(self, signal: str, core_dumped: bool, msg: str, lang: str) -> None:
        self.exit_signal = (signal, core_dumped, msg, lang)

    def connection_lost(self, exc: Exception | None) -> None:
        self._bridge.target_closed(self, exc)


class ChannelBridge(asyncssh.SSHServerSession[bytes]):
    """The engineer side of a bridge, one per channel (``SESSION/N``)."""

    def __init__(self, session: LiveSession) -> None:
        self.session = session
        self.n = session.new_channel_number()
        self.name = f"{session.info.id}/{self.n}"
        self.kind = "shell"
        self.command: str | None = None
        self.subsystem: str | None = None
        self.pty: tuple[str, tuple[int, int, int, int], dict[int, int]] | None = None
        self._chan: asyncssh.SSHServerChannel[bytes] | None = None
        self._up_chan: asyncssh.SSHClientChannel[bytes] | None = None
        self._early: list[tuple[float, bytes, asyncssh.DataType]] = []  # (when, ...)
        self._early_bytes = 0
        self._pending_eof = False
        self._target_eof = False
        self._pending_size: tuple[int, int, int, int] | None = None
        # Window changes: at most one per RESIZE_INTERVAL takes effect, the last one
        # asked wins; both are counted for the channel's end event.
        self._size_due: asyncio.TimerHandle | None = None
        self._size_at = -RESIZE_INTERVAL
        self._resizes = 0
        self._resizes_applied = 0
        self._env = EnvRequests()
        self._closing = False
        self._refusal: str | None = None  # why this exec is refused (core.execrules)
        self._started = time.monotonic()
        self._down: list[bytes] = []  # target output held to the end of a socket read
        self._down_type: asyncssh.DataType = None
        self._down_len = 0
        # What the channel records: made when its request is known (session_started).
        self.audit: ChannelAudit | None = None
        self.bytes_up = 0
        self.bytes_down = 0
        self._exit: tuple[int | None, str | None] = (None, None)
        self._finalized = asyncio.get_running_loop().create_future()
        self._opener: asyncio.Task[None] | None = None
        session.channels[self.n] = self

    # -- requests (before start) -----------------------------------------------------

    def connection_made(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        self._chan = chan
        self._watch_refusals(chan)
        self._take_env(chan)

    def _take_env(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        """Read ``env`` requests into an EnvRequests tally instead of asyncssh's dict.

        asyncssh keeps every variable asked and formats a debug line for each (what
        10,000 of them cost, in memory and time on the one event loop); its handler is a
        private method looked up by name per request, replaced here on this channel.
        """
        if getattr(chan, "_process_env_request", None) is None:
            log.warning("asyncssh changed: environment requests are read by asyncssh")
            return

        def env_request(packet: SSHPacket) -> bool:
            name = packet.get_string()
            value = packet.get_string()
            packet.check_end()
            self._env.add(name, value)
            return True

        setattr(chan, "_process_env_request", env_request)  # noqa: B010 - see above

    def _watch_refusals(self, chan: asyncssh.SSHServerChannel[bytes]) -> None:
        """Audit every channel request asyncssh refuses (agent, X11, unknown ones).

        asyncssh answers these itself; its one seam is the private _report_response,
        wrapped here so no refusal goes unrecorded. tests/integration covers each.
        """
        original = getattr(chan, "_report_response", None)
        queue = getattr(chan, "_request_queue", None)
        if original is None or queue is None:
            log.warning("asyncssh changed: channel refusals are not audited")
            return

        def report(result: bool) -> None:
            request = queue[0][0] if queue else "?"
            if not result and request not in {"shell", "exec", "subsystem"}:
                self._refused(request, "")
            original(result)

        setattr(chan, "_report_response", report)  # noqa: B010 - a private seam, see above

    def _refused(self, request: str, detail: str, **extra: Any) -> None:
        self.session.refused(request, detail, channel=self.n, **extra)

    def pty_requested(
        self,
        term_type: str,
        term_size: tuple[int, int, int, int],
        term_modes: Mapping[int, int],
    ) -> bool:
        self.pty = (term_type, target_size(term_size), dict(term_modes))
        return True

    def shell_requested(self) -> bool:
        self.kind = "shell"
        return True

    def exec_requested(self, command: str) -> bool:
        self.kind = "exec"
        self.command = command
        # Accepted, then answered with the reason on stderr (session_started): a refused
        # exec request would only make ssh say "exec request failed".
        self._refusal = refused_exec(command)
        return True

    def subsystem_requested(self, subsystem: str) -> bool:
        if subsystem not in ALLOWED_SUBSYSTEMS:
            self._refused("subsystem", subsystem)
            return False
        self.kind = "subsystem"
        self.subsystem = subsystem
        return True

    def session_started(self) -> None:
        if self._refusal is not None:
            self._refused("exec", self.command or "")
            self._fail(self._refusal)
            return
        self.audit = ChannelAudit(
            self.session, self.n, self.kind, self.command, self.subsystem, self.pty, self._started
        )
        self._opener = self.session.tasks.spawn(self._open(), f"open {self.name}")

    # -- opening ----------------------------------------------------------------------

    async def _open(self) -> None:
        chan, audit = self._chan, self.audit
        assert chan is not None
        assert audit is not None
        try:
            up_conn = await self.session.upstream()
        except UpstreamError as exc:
            self._fail(
                f"breakglass: cannot reach target {self.session.info.target.name}: {exc.message}"
            )
            return
        except asyncio.CancelledError:
            self._fail("breakglass: session closed before the target was reached")
            return
        try:
            await audit.start()
        except (RecordingError, StoreError) as exc:
            self.session.set_end("store_error", str(exc))
            self._fail("breakglass: the session cannot be recorded, so it is refused; tell ops")
            return
        for name, value in chan.get_environment().items():  # if the seam above is gone
            self._env.add(name.encode(), value.encode())
        env: dict[bytes | str, bytes | str] = {k: v for k, v in self._env.kept.items()}
        refusal = self._env.refusal()
        if refusal is not None:
            self._refused("env", refusal.pop("detail"), **refusal)
        try:
            up_chan, _ = await up_conn.create_session(
                lambda: UpstreamSession(self),
                command=self.command,
                subsystem=self.subsystem,
                env=env,
                request_pty="force" if self.pty else False,
                term_type=self.pty[0] if self.pty else None,
                term_size=self.pty[1] if self.pty else None,
                term_modes=self.pty[2] if self.pty else None,
                encoding=None,
            )
        except (asyncssh.Error, OSError) as exc:
            reason = getattr(exc, "reason", str(exc))
            self.session.audit(
                events.UpstreamFailed("channel_refused", str(reason)), channel=self.n
            )
            self._fail(
                f"breakglass: target {self.session.info.target.name} refused the channel: {reason}"
            )
            return
        self._up_chan = up_chan
        if self._closing:
            up_chan.close()
            return
        audit.target_opened(self._pending_size)
        for when, data, datatype in self._early:
            audit.input(when, data, datatype)
            up_chan.write(data, datatype)
        self._early.clear()
        if self._early_bytes >= EARLY_INPUT_LIMIT:
            chan.resume_reading()
        self._early_bytes = 0
        if self._pending_size is not None:
            self._apply_size()
        if self._pending_eof:
            up_chan.write_eof()

    def _fail(self, line: str) -> None:
        """Refuse the channel with one clear line on stderr and exit status 255."""
        chan = self._chan
        if chan is None or self._closing:
            return
        self._closing = True
        try:
            chan.write_stderr((line + "\r\n").encode())
            chan.exit(255)
        except (OSError, asyncssh.Error):
            chan.close()

    # -- engineer -> target -------------------------------------------------------------

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self._down:
            self._flush_down()  # what the target said first is recorded first
        self.bytes_up += len(data)
        now = self.session.last_activity = time.monotonic()
        if self._up_chan is not None:
            if self.audit is not None:
                self.audit.input(now, data, datatype)
            self._up_chan.write(data, datatype)
            return
        # Recorded when it is sent on: the cast does not exist before the target does.
        self._early.append((now, data, datatype))
        self._early_bytes += len(data)
        if self._early_bytes >= EARLY_INPUT_LIMIT and self._chan is not None:
            self._chan.pause_reading()

    def eof_received(self) -> bool:
        if self._up_chan is not None:
            self._up_chan.write_eof()
        else:
            self._pending_eof = True
        return True

    def terminal_size_changed(self, width: int, height: int, pixwidth: int, pixheight: int) -> None:
        # A flood of window changes (10,000 of them) must not become 10,000 screen
        # resizes, cast events and target requests: the last size asked within
        # RESIZE_INTERVAL of the previous one waits for it, and replaces any waiting.
        self._resizes += 1
        self._pending_size = target_size((width, height, pixwidth, pixheight))
        if self._up_chan is None or self._size_due is not None:
            return
        wait = self._size_at + RESIZE_INTERVAL - time.monotonic()
        if wait > 0:
            self._size_due = asyncio.get_running_loop().call_later(wait, self._apply_size)
        else:
            self._apply_size()

    def _apply_size(self) -> None:
        """The size last asked takes effect: the audit's, then the target's."""
        self._size_due = None
        size, self._pending_size = self._pending_size, None
        if size is None or self._up_chan is None or self._closing:
            return
        self._size_at = time.monotonic()
        self._resizes_applied += 1
        self._flush_down()
        if self.audit is not None:
            self.audit.resize(size[0], size[1])
        self._up_chan.change_terminal_size(*size)

    def signal_received(self, signal: str) -> None:
        if not _SIGNAL_NAME.match(signal):
            self._refused("signal", signal)  # not a signal any target knows
            return
        if self._up_chan is not None:
            self._up_chan.send_signal(signal)

    def break_received(self, msec: int) -> bool:
        if self._up_chan is not None:
            self._up_chan.send_break(msec)
            return True
        return False

    def pause_writing(self) -> None:
        # The engineer is not draining: stop reading from the target.
        if self._up_chan is not None:
            self._up_chan.pause_reading()

    def resume_writing(self) -> None:
        if self._up_chan is not None:
            self._up_chan.resume_reading()

    # -- target -> engineer -------------------------------------------------------------

    def from_target(self, data: bytes, datatype: asyncssh.DataType) -> None:
        # The chunks one socket read brings (a PTY's output comes in sshd's small
        # packets) go on as one: one packet to encrypt and send, one cast event, instead
        # of one per chunk. Bulk data (32 KiB packets) goes on at once.
        if self._down:
            if datatype == self._down_type and self._down_len + len(data) <= COALESCE_BYTES:
                self._down.append(data)
                self._down_len += len(data)
                return
            self._flush_down()
        if len(data) < COALESCE_BYTES and wire.defer(self._flush_down):
            self._down = [data]
            self._down_type = datatype
            self._down_len = len(data)
            return
        self._to_engineer(data, datatype)

    def _flush_down(self) -> None:
        """Send on what ``from_target`` holds; before anything that must come after it."""
        down = self._down
        if down:
            self._down = []
            self._to_engineer(down[0] if len(down) == 1 else b"".join(down), self._down_type)

    def _to_engineer(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.bytes_down += len(data)
        # One clock read per chunk serves the idle timer and the cast's offset.
        now = self.session.last_activity = time.monotonic()
        if self.audit is not None:
            self.audit.output(now, data, datatype)
        if self._chan is not None and not self._closing:
            self._chan.write(data, datatype)

    def target_eof(self) -> None:
        self._flush_down()
        # Held until the target's channel closes, then sent with the exit status: an
        # OpenSSH client whose own input is closed (a ControlMaster channel) answers EOF
        # with CLOSE at once, asyncssh closes our side on CLOSE, and an exit status that
        # comes after is lost (the client exits 255). sshd waits for the exit; so do we.
        self._target_eof = True

    def down_pause_reading(self) -> None:
        if self._chan is not None:
            self._chan.pause_reading()

    def down_resume_reading(self) -> None:
        if self._chan is not None:
            self._chan.resume_reading()

    def target_closed(self, up: UpstreamSession, exc: Exception | None) -> None:
        self._flush_down()
        chan = self._chan
        if up.exit_signal is not None:
            self._exit = (None, up.exit_signal[0])
        elif up.exit_status is not None:
            self._exit = (up.exit_status, None)
        if chan is None or self._closing:
            return
        self._closing = True
        try:
            if self._target_eof:
                chan.write_eof()
            if up.exit_signal is not None:
                chan.exit_with_signal(*up.exit_signal)
            elif up.exit_status is not None:
                chan.exit(up.exit_status)
            else:
                if exc is not None:
                    self.session.set_end("target_error", "connection to the target was lost")
                chan.write_stderr(
                    b"breakglass: the target closed the channel without an exit status\r\n"
                )
                chan.exit(255)
        except (OSError, asyncssh.Error):
            chan.close()

    # -- proxy side -------------------------------------------------------------------

    def notice(self, line: str) -> None:
        """One line to the engineer: the terminal for PTY, stderr otherwise."""
        self._flush_down()
        chan = self._chan
        # Nothing is written into an sftp stream: the client would read it as a reply.
        if chan is None or self._closing or self.kind == "subsystem":
            return
        data = ("\r\n" + line + "\r\n").encode()
        if self.audit is not None:
            self.audit.notice(data)
        try:
            if self.pty is not None:
                chan.write(data)
            else:
                chan.write_stderr(data)
        except (OSError, asyncssh.Error):
            pass

    def terminate(self, message: str | None) -> None:
        """Close from the proxy's side (time limit, kill, shutdown, client gone)."""
        self._flush_down()
        if message is not None:
            self.notice(message)
        if self.audit is not None:
            self.audit.cut()
        if self._up_chan is not None:
            self._up_chan.close()
        if self._opener is not None and not self._opener.done() and self._up_chan is None:
            self._opener.cancel()
        chan = self._chan
        if chan is not None and not self._closing:
            self._closing = True
            try:
                chan.exit(255)
            except (OSError, asyncssh.Error):
                chan.close()

    def connection_lost(self, exc: Exception | None) -> None:
        """The engineer's channel is closed: close the target's, record the end."""
        self._closing = True
        self._flush_down()  # recorded; not sent
        if self.audit is not None:
            self.audit.close()
        if self._size_due is not None:
            self._size_due.cancel()
            self._size_due = None
        if self._up_chan is not None:
            self._up_chan.close()
        if self._opener is not None and not self._opener.done():
            self._opener.cancel()
        self.session.tasks.spawn(self._finalize(), f"finalize {self.name}")

    async def _finalize(self) -> None:
        try:
            if self._opener is not None:
                await asyncio.wait([self._opener])
            if self.audit is not None:
                status, signal = self._exit
                counted = (self.bytes_up, self.bytes_down, self._resizes, self._resizes_applied)
                await self.audit.finish(Relayed(status, signal, *counted))
        finally:
            self.session.channels.pop(self.n, None)
            if not self._finalized.done():
                self._finalized.set_result(None)

    async def finalized(self) -> None:
        await asyncio.shield(self._finalized)
