"""Which parser reads a channel's bytes, and how its findings become events.

The channel's audit (``proxy.ssh.channel_audit``) asks ``tap_name`` once, when the channel
starts, and builds it with ``make_tap``: an sftp subsystem gets the
passive SFTP parser, an exec command that is exactly legacy scp gets the scp parser, a
shell without a PTY (``ssh host bash < script``) gets the stdin line splitter; every other
channel gets no tap and the relay's hot path stays one ``is None`` test. The parsers only
read copies of the relayed bytes; what they find is handed to an ``EventSink`` (the
channel's audit), which appends it to the audit trail and marks it in the cast.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from proxy.core import events
from proxy.core.lines import LineSplitter
from proxy.core.scp import ScpTap, match_scp
from proxy.core.sftp import SftpTap
from proxy.core.text import escape, truncate

Event = dict[str, Any]

# A script piped into a shell can be millions of lines: past this many, lines are counted.
MAX_STDIN_COMMANDS = 10_000
MARKER_CHARS = 400
# An exec that is just a shell reading its commands from stdin: "ssh host bash < script".
_STDIN_SHELL = re.compile(
    r"(?:/usr)?(?:/bin/)?(?:sh|bash|dash|zsh|ksh|ash)"
    r"(?: (?:-[silxev]+|--login|--noprofile|--norc))*\Z"
)


class EventSink(Protocol):
    def resource(self, event: Event) -> None:
        """Append ``event`` (its "kind" is the event type) to the channel's trail."""


class Tap:
    """Base: a channel that needs no parsing."""

    def up(self, data: bytes) -> None:
        """Bytes from the engineer to the target (stdout data only)."""

    def down(self, data: bytes) -> None:
        """Bytes from the target to the engineer (stdout data only, not stderr)."""

    def finish(self) -> None:
        """The channel ended."""


class SftpChannelTap(Tap):
    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.parser = SftpTap()

    def up(self, data: bytes) -> None:
        for ev in self.parser.feed_client(data):
            self.sink.resource(ev)

    def down(self, data: bytes) -> None:
        for ev in self.parser.feed_server(data):
            self.sink.resource(ev)

    def finish(self) -> None:
        for ev in self.parser.finish():
            self.sink.resource(ev)


class ScpChannelTap(Tap):
    def __init__(self, sink: EventSink, parser: ScpTap) -> None:
        self.sink = sink
        self.parser = parser
        upload = parser.command.mode == "t"
        self._up = parser.feed_control if upload else parser.feed_acks
        self._down = parser.feed_acks if upload else parser.feed_control

    def up(self, data: bytes) -> None:
        for ev in self._up(data):
            self.sink.resource(ev)

    def down(self, data: bytes) -> None:
        for ev in self._down(data):
            self.sink.resource(ev)

    def finish(self) -> None:
        for ev in self.parser.finish():
            self.sink.resource(ev)


class StdinTap(Tap):
    def __init__(self, sink: EventSink) -> None:
        self.sink = sink
        self.lines = LineSplitter()
        self.count = 0
        self.omitted = 0

    def up(self, data: bytes) -> None:
        self._emit(self.lines.feed(data))

    def finish(self) -> None:
        self._emit(self.lines.finish())
        if self.omitted:
            self.sink.resource(
                {"kind": events.CommandsOmitted.TYPE, "count": self.omitted, "source": "stdin"}
            )

    def _emit(self, lines: list[Any]) -> None:
        for line in lines:
            if self.count >= MAX_STDIN_COMMANDS:
                self.omitted += 1
                continue
            self.count += 1
            ev: Event = {"kind": events.Command.TYPE, "text": line.text, "source": "stdin"}
            if line.truncated:
                ev["truncated"] = True
            self.sink.resource(ev)


def tap_name(kind: str, command: str | None, subsystem: str | None, pty: bool) -> str | None:
    """Which parser reads a channel's bytes ("sftp", "scp", "stdin"), or None."""
    if kind == "subsystem":
        return "sftp" if subsystem == "sftp" else None
    if kind == "exec":
        if match_scp(command or "") is not None:
            return "scp"
        if not pty and _STDIN_SHELL.match(command or ""):
            return "stdin"
        return None
    if kind == "shell" and not pty:
        return "stdin"
    return None


def make_tap(name: str | None, command: str | None, sink: EventSink) -> Tap | None:
    """The tap ``tap_name`` chose, reporting to ``sink``."""
    if name == "sftp":
        return SftpChannelTap(sink)
    if name == "scp":
        scp = match_scp(command or "")
        assert scp is not None  # tap_name matched it
        return ScpChannelTap(sink, ScpTap(scp))
    if name == "stdin":
        return StdinTap(sink)
    return None


def marker_text(event: events.Event) -> str:
    """A short, escaped label for the cast's ``"m"`` marker of one event."""
    match event:
        case events.Command():
            redacted = events.given(event.redacted, False)
            text = "(input not echoed: redacted)" if redacted else event.text or ""
        case events.FileEvent():
            text = event.operation() + " " + (event.path or "")
            target = events.given(event.target_path, None)
            if target is not None:
                text += " -> " + target
            status = events.given(event.status, None)
            if status not in (None, "ok"):
                text += f" [{status}]"
        case events.ScpParseError() | events.SftpParseError() | events.SftpTrackingLost():
            text = f"{event.TYPE}: {event.detail}"
        case _:
            text = event.TYPE + " "
    return escape(truncate(text, MARKER_CHARS))
