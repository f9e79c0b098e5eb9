"""What one channel leaves in the audit: its cast, its commands, its resource events.

The relay (``proxy.ssh.relay``) moves bytes; at each of its hooks (input, output, resize,
notice, cut, close, finish) it hands a ``ChannelAudit`` what passed, and the audit decides
what of it is kept. ``ChannelPolicy.of`` is the one place that says what each kind of
channel records:

| channel                 | cast: output  | cast: input     | commands          | tap    |
|-------------------------|---------------|-----------------|-------------------|--------|
| shell with a PTY        | yes           | recording.input | typed (extractor) | -      |
| shell without a PTY     | yes           | yes             | stdin lines       | stdin  |
| exec                    | yes           | yes             | its command line  | -      |
| exec `sh < script`      | yes           | yes             | line + stdin lines| stdin  |
| exec with a PTY         | yes           | recording.input | line + typed      | -      |
| scp (exec `scp -t/-f`)  | yes           | yes (PTY: opt.) | its command line  | scp    |
| sftp subsystem          | no (a marker) | no              | -                 | sftp   |

Taps (``proxy.ssh.taps``) read copies of stdout data only and turn file operations into
events; the cast takes stderr too. ``recording.input``: keystrokes at a PTY, on request.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import asyncssh

from proxy.core import events
from proxy.core.commands import CommandExtractor
from proxy.core.errors import RecordingError, StoreError
from proxy.core.limits import MAX_TERM_TYPE, clamp_size
from proxy.core.recording import CastEncoder
from proxy.core.text import truncate
from proxy.recorder import CastFile, ChannelRecorder, make_private_dirs, recording_path
from proxy.ssh.taps import Tap, make_tap, marker_text, tap_name
from proxy.store.base import NewEvent

if TYPE_CHECKING:
    from proxy.ssh.session import LiveSession

log = logging.getLogger("breakglass")

# The events of a channel tap or the command extractor that gave up (see ``resource``).
EXTRACTION_FAILURES = frozenset(
    t.TYPE
    for t in (
        events.CommandExtractionError,
        events.SftpParseError,
        events.SftpTrackingLost,
        events.ScpParseError,
    )
)
Pty = tuple[str, tuple[int, int, int, int], dict[int, int]]


@dataclass(frozen=True)
class ChannelPolicy:
    """What a channel's cast and trail take (the table in this module's docstring)."""

    output: bool  # the target's output (and the proxy's notices) into the cast
    input: bool  # the engineer's input into the cast
    command_line: bool  # the exec request's command, as a ``command`` event
    commands: bool  # what is typed at a PTY, read by the CommandExtractor
    tap: str | None  # the parser of stdout data (proxy.ssh.taps)
    note: str | None  # a marker at the cast's start, saying what it leaves out

    @staticmethod
    def of(
        kind: str, command: str | None, subsystem: str | None, pty: bool, keystrokes: bool
    ) -> ChannelPolicy:
        """``keystrokes``: the config's ``recording.input``."""
        tap = tap_name(kind, command, subsystem, pty)
        if kind == "subsystem":
            note = f"{subsystem}: file contents are not recorded"
            return ChannelPolicy(False, False, False, False, tap, note)
        return ChannelPolicy(
            output=True,
            # Keystrokes at a PTY carry what was typed at no-echo prompts: only on request.
            input=not pty or keystrokes,
            command_line=kind == "exec",
            # A PTY exec (`ssh -t host sudo -i`) is typed at as much as a login shell; a
            # tapped one (scp) has its parser instead. Full-screen programs are skipped
            # by the extractor itself.
            commands=pty and tap is None,
            tap=tap,
            note=None,
        )


@dataclass(frozen=True)
class Relayed:
    """What the relay counted over a channel's life, for its ``channel_end`` event."""

    exit_status: int | None
    exit_signal: str | None
    bytes_up: int
    bytes_down: int
    resizes: int  # window changes asked ...
    resizes_applied: int  # ... and those that took effect (the relay limits their rate)


class ChannelAudit:
    """The recorder, command extractor, tap and resource events of one channel."""

    def __init__(
        self,
        session: LiveSession,
        n: int,
        kind: str,
        command: str | None,
        subsystem: str | None,
        pty: Pty | None,
        started: float,
    ) -> None:
        self.session = session
        self.n = n
        self.kind = kind
        self.command = command
        self.subsystem = subsystem
        self.pty = pty
        self.policy = ChannelPolicy.of(
            kind, command, subsystem, pty is not None, session.host.recording.input
        )
        self._started = started  # time.monotonic() when the channel opened
        self._cast: CastFile | None = None
        self._enc: CastEncoder | None = None
        self._rec: ChannelRecorder | None = None
        # Reads copies of the bytes for resources accessed (sftp, scp, stdin); None for
        # a PTY shell and a plain exec, whose hot path then stays free of parsing.
        self._tap: Tap | None = None
        self._cmds: CommandExtractor | None = None
        self._lines_not_read = 0  # pasted lines the command extractor left to the cast
        # Closed from the proxy's side: what the target still sends is not recorded. The
        # cast is what the engineer saw, and a session cut at its recording limit stops
        # growing at once instead of taking in whatever is in flight.
        self._cut = False
        # The hot path's one test each way: the recorder while the policy records that
        # direction (and, for output, until the cut), else None.
        self._rec_in: ChannelRecorder | None = None
        self._rec_out: ChannelRecorder | None = None

    def t(self) -> float:
        """Seconds since the channel opened: the cast's offsets."""
        return time.monotonic() - self._started

    # -- start ----------------------------------------------------------------------

    async def start(self) -> None:
        """Create the cast and append the channel's start (RecordingError, StoreError)."""
        self._start_recording()
        assert self._cast is not None
        await self._cast.sync_start(self.session.host.recordings)
        await self.session.append(self._start_event())
        if self.policy.command_line:
            self.resource(
                {"kind": events.Command.TYPE, "text": self.command or "", "source": "exec"}
            )
        self._tap = make_tap(self.policy.tap, self.command, self)

    def target_opened(self, size: tuple[int, int, int, int] | None) -> None:
        """The target's channel exists, at ``size`` (the last asked, or the PTY's)."""
        if self.policy.commands and self.pty is not None:  # (pty: for mypy)
            size = size or self.pty[1]
            self._cmds = CommandExtractor(size[0], size[1])  # clamps the size itself

    def _start_event(self) -> NewEvent:
        start = events.ChannelStart(
            kind=self.kind,
            command=self.command if self.kind == "exec" else self.subsystem,
            pty=self.pty is not None,
            term=truncate(self.pty[0], MAX_TERM_TYPE) if self.pty else None,
            # Relative to the recordings folder: a copy of the store and the folder
            # verifies on its own, wherever it is put.
            recording=str(self._cast.path.relative_to(self.session.host.recordings))
            if self._cast
            else None,
            size=list(clamp_size(self.pty[1][0], self.pty[1][1])) if self.pty else None,
        )
        return NewEvent.of(start, self.session.clock(), self.session.info.id, self.n)

    def _start_recording(self) -> None:
        info = self.session.info
        path = recording_path(self.session.host.recordings, info.id, self.n)
        try:
            make_private_dirs(path, self.session.host.recordings)
        except OSError as exc:
            raise RecordingError(f"cannot create recordings folder: {exc.strerror}") from exc
        self._cast = CastFile(path, self._recording_failed, self.session.recorded)
        width, height = clamp_size(*self.pty[1][:2]) if self.pty else (80, 24)
        env = {"TERM": truncate(self.pty[0], MAX_TERM_TYPE)} if self.pty else {}
        self._enc = CastEncoder(
            width=width,
            height=height,
            timestamp=int(info.started_at),
            max_bytes=self.session.host.recording.max_channel_bytes,
            title=f"{info.person}@{info.login}@{info.target.name} {info.id}/{self.n}",
            command=self.command if self.kind == "exec" else self.subsystem,
            env=env,
            extra={
                "session": info.id,
                "channel": self.n,
                "person": info.person,
                "target": info.target.name,
                "login": info.login,
                "kind": self.kind,
                "pty": self.pty is not None,
            },
        )
        self._rec = ChannelRecorder(self._enc, self._cast)
        self._rec_in = self._rec if self.policy.input else None
        self._rec_out = self._rec if self.policy.output else None
        self._cast.write(self._enc.header())
        if self.policy.note is not None:
            self._cast.write(self._enc.marker(0.0, self.policy.note))

    def _recording_failed(self, exc: RecordingError) -> None:
        log.critical("%s", exc)
        self.session.audit(events.RecordingFailed(str(exc)), channel=self.n)
        self.session.close("recording_error", "the recording cannot be written", detail=str(exc))

    # -- the relay's hooks ---------------------------------------------------------------

    def input(self, now: float, data: bytes, datatype: asyncssh.DataType) -> None:
        """Bytes from the engineer, sent on to the target (``now``: when they came)."""
        t = now - self._started
        if self._rec_in is not None:
            self._rec_in.data(t, "i", data)
        if self._cmds is not None:
            self._resources(self._cmds.input(data, t))
        if self._tap is not None and not datatype:
            self._tap.up(data)

    def output(self, now: float, data: bytes, datatype: asyncssh.DataType) -> None:
        """Bytes from the target, sent on to the engineer (``now``: when they went)."""
        if self._rec_out is not None:
            t = now - self._started
            self._rec_out.data(t, "o", data)
            if self._cmds is not None:
                self._resources(self._cmds.output(data, t))
        if self._tap is not None and not datatype:
            self._tap.down(data)

    def notice(self, data: bytes) -> None:
        """A line the proxy itself wrote to the engineer."""
        if self._rec is not None and self.policy.output:
            self._rec.data(self.t(), "o", data)

    def resize(self, width: int, height: int) -> None:
        """A window change took effect."""
        if self._rec is not None and self._enc is not None and not self._cut:
            self._rec.flush_batch()
            self._rec.write(self._enc.resize(self.t(), width, height))
        if self._cmds is not None:
            self._resources(self._cmds.resize(width, height, self.t()))

    def cut(self) -> None:
        """Closed from the proxy's side: nothing more from the target is recorded."""
        self._cut = True
        self._rec_out = None

    def close(self) -> None:
        """The engineer's channel closed: what the extractor still holds is audited."""
        if self._cmds is not None:
            self._resources(self._cmds.flush(self.t()))
            self._lines_not_read = self._cmds.lines_not_read
            self._cmds = None

    async def finish(self, relayed: Relayed) -> None:
        """The channel's last resources, its cast's end and its ``channel_end`` event."""
        if self._rec is None or self._enc is None:
            return  # never started
        if self._tap is not None:
            tap, self._tap = self._tap, None
            tap.finish()
        status = relayed.exit_status
        # Resources (commands, files) first, then the end of the channel they belong to.
        await self.session.flush_audit()
        t = self.t()
        self._rec.flush_batch()
        if status is not None:
            self._rec.write(self._enc.exit(t, status))
        self._rec.write(self._enc.finish(t))
        closed = await self._rec.aclose()
        capped = self._enc.capped
        resized = relayed.resizes > relayed.resizes_applied
        end = events.ChannelEnd(
            exit_status=status,
            exit_signal=relayed.exit_signal,
            recording_sha256=closed.sha256,
            recording_bytes=closed.size,
            bytes_up=relayed.bytes_up,
            bytes_down=relayed.bytes_down,
            lines_not_read=self._lines_not_read or None,
            resizes=relayed.resizes if resized else None,
            resizes_applied=relayed.resizes_applied if resized else None,
            omitted_bytes=self._enc.omitted_bytes if capped else None,
            omitted_sha256=self._enc.omitted_sha256() if capped else None,
        )
        with contextlib.suppress(StoreError):
            await self.session.append(
                NewEvent.of(end, self.session.clock(), self.session.info.id, self.n)
            )

    # -- resources ----------------------------------------------------------------------

    def resource(self, event: dict[str, Any]) -> None:
        """A resource accessed (a command, a file operation), found by this channel's
        tap: appended to the trail with its offset in the cast, and marked in the cast."""
        t = float(event.get("offset", self.t()))
        data = {k: v for k, v in event.items() if k != "kind"}
        data["offset"] = round(t, 6)
        # The catalogue checks what the parsers found (a field it does not know fails here).
        typed = events.decode(str(event["kind"]), data)
        if typed.TYPE in EXTRACTION_FAILURES:
            # A parser gave up on this channel: what is typed or transferred from now on
            # is only in the transcript, which keeps recording. Breaking the parser is a
            # way to dodge the audit's index, so it alerts and flags the session.
            self.session.audit_alerting(typed, channel=self.n)
        else:
            self.session.audit(typed, channel=self.n)
        if self._rec is not None and self._enc is not None:
            self._rec.flush_batch()
            self._rec.write(self._enc.marker(t, marker_text(typed)))

    def _resources(self, found: list[dict[str, Any]]) -> None:
        """Commands typed at the shell (proxy.core.commands), as ``command`` events."""
        for event in found:
            self.resource(event)
