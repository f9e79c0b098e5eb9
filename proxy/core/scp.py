"""Legacy scp (``scp -O``: ``scp -t`` / ``scp -f`` run as an exec command) as file events.

Pure. ``match_scp`` recognises the exec command strictly: anything with shell syntax
(``;``, ``&``, ``|``, ``$``, backquote, redirection, a newline) is not scp but a command,
recorded as such, so ``scp -t /x; bash`` cannot pass for a file copy.

The protocol: the side sending files (the engineer for ``-t``, the target for ``-f``)
writes control lines, each answered by the sink with one ack (``\\0``, or ``\\1``/``\\2``
and a message line)::

    T<mtime> 0 <atime> 0\\n     times of the next file or directory
    C<mode> <size> <name>\\n    a file: then exactly <size> bytes, then \\0
    D<mode> 0 <name>\\n         enter a directory
    E\\n                        leave it

``ScpTap.feed_control`` takes the control side's bytes (file contents are skipped by
count, never looked at), ``feed_acks`` the sink's; one ``file_write`` (``-t``) or
``file_read`` (``-f``) event per file, when the sink has answered for its contents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from proxy.core import events
from proxy.core.sftp import decode_path

Event = dict[str, Any]

MAX_LINE = 8192

# Exactly what OpenSSH's scp sends: "scp [-v] [-r] [-p] [-d] -t|-f [--] PATH".
_SCP = re.compile(
    r"scp((?: -[rpdvq])*) -([tf])( --)? "
    r"(?:'(?P<quoted>[^'\n]*)'|(?P<plain>[^\s;&|$`<>()\\'\"{}!#]+))\Z"
)
_FILE_LINE = re.compile(rb"([CD])([0-7]{3,4}) (\d{1,20}) ([^\n]+)\Z")
_TIME_LINE = re.compile(rb"T(\d{1,20}) (\d{1,9}) (\d{1,20}) (\d{1,9})\Z")


@dataclass(frozen=True)
class ScpCommand:
    mode: str  # "t": the target receives (upload), "f": the target sends (download)
    path: str
    flags: frozenset[str]


def match_scp(command: str) -> ScpCommand | None:
    m = _SCP.match(command)
    if m is None:
        return None
    path = m.group("quoted") if m.group("quoted") is not None else m.group("plain")
    if path.startswith("-") and not m.group(3):
        return None
    flags = frozenset(f[1:] for f in m.group(1).split())
    return ScpCommand(m.group(2), path, flags)


@dataclass
class _Item:
    kind: str  # "file", "dir", "end", "time", "ready"
    name: str = ""
    path: str = ""
    size: int = 0
    mode: str = ""
    raw: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class ScpTap:
    """One legacy scp channel. ``feed_*`` never raise."""

    def __init__(self, command: ScpCommand) -> None:
        self.command = command
        self.kind = events.FileWrite.TYPE if command.mode == "t" else events.FileRead.TYPE
        self.stopped = False
        self._line = bytearray()
        self._remaining = -1  # > 0: file bytes to skip; 0: the source's end byte next
        self._data_item: _Item | None = None
        self._source_error: bool = False
        self._stack: list[str] = []
        self._times: dict[str, Any] = {}
        self._expect: list[_Item] = [_Item("ready")]
        self._ack = bytearray()
        self._acking = False
        self._in_ack_message = False

    # -- paths --------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        root = self.command.path
        if self.command.mode == "t":
            if not self._stack and "d" not in self.command.flags and not root.endswith("/"):
                return root  # one file to an explicit name (when root is not a directory)
            base = root.rstrip("/") or ("/" if root.startswith("/") else "")
        else:
            trimmed = root.rstrip("/")
            base = trimmed.rsplit("/", 1)[0] if "/" in trimmed else ""
            if trimmed.startswith("/") and base == "":
                base = "/"
        parts = [p for p in (base.rstrip("/"), *self._stack, name) if p != ""]
        joined = "/".join(parts)
        return "/" + joined if base.startswith("/") and not joined.startswith("/") else joined

    # -- the control side -----------------------------------------------------------------

    def feed_control(self, data: bytes) -> list[Event]:
        if self.stopped or not data:
            return []
        out: list[Event] = []
        try:
            self._control(data, out)
        except ValueError as exc:
            out.append(self._stop(str(exc)))
        except Exception as exc:  # never let a parser bug reach the relay
            out.append(self._stop(f"internal error: {type(exc).__name__}: {exc}"))
        return out

    def _control(self, data: bytes, out: list[Event]) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._remaining > 0:
                n = min(self._remaining, end - pos)
                self._remaining -= n
                pos += n
                continue
            if self._remaining == 0:
                # The source's end of file: \0, or an error line (it could not read).
                self._remaining = -1
                item = self._data_item
                self._data_item = None
                if data[pos] == 0:
                    pos += 1
                    if item is not None:
                        self._expect.append(item)
                    continue
                self._source_error = True
                if item is not None:
                    item.extra["source_error"] = True
                    self._expect.append(item)
                # fall through: the error message is read as a line
            nl = data.find(b"\n", pos)
            if nl < 0:
                self._line += data[pos:]
                if len(self._line) > MAX_LINE:
                    raise ValueError(f"control line longer than {MAX_LINE} bytes")
                return
            self._line += data[pos:nl]
            pos = nl + 1
            line = bytes(self._line)
            self._line.clear()
            if len(line) > MAX_LINE:
                raise ValueError(f"control line longer than {MAX_LINE} bytes")
            self._control_line(line, out)

    def _control_line(self, line: bytes, out: list[Event]) -> None:
        if not line:
            raise ValueError("empty control line")
        head = line[:1]
        if head in (b"\x01", b"\x02"):
            message = line[1:].decode("utf-8", "backslashreplace")
            if self._source_error:
                self._source_error = False
                return  # the read error was attached to the file's item above
            if self.command.mode == "f":
                out.append(self._event(self.command.path, "", status="error", message=message))
            return
        if head == b"E" and line == b"E":
            self._expect.append(_Item("end"))
            if self._stack:
                self._stack.pop()
            return
        if head == b"T":
            m = _TIME_LINE.match(line)
            if m is None:
                raise ValueError("malformed T line")
            self._times = {"mtime": int(m.group(1)), "atime": int(m.group(3))}
            self._expect.append(_Item("time"))
            return
        m = _FILE_LINE.match(line)
        if m is None:
            raise ValueError(f"unknown control line {line[:40]!r}")
        name, raw = decode_path(m.group(4))
        mode = m.group(2).decode().zfill(4)
        size = int(m.group(3))
        extra, self._times = self._times, {}
        if m.group(1) == b"D":
            item = _Item("dir", name, self._path(name), 0, mode, raw, extra)
            self._stack.append(name)
            self._expect.append(item)
            return
        item = _Item("file", name, self._path(name), size, mode, raw, extra)
        self._expect.append(item)
        self._data_item = item
        self._remaining = size

    # -- the sink's acks ----------------------------------------------------------------

    def feed_acks(self, data: bytes) -> list[Event]:
        if self.stopped or not data:
            return []
        out: list[Event] = []
        try:
            self._acks(data, out)
        except Exception as exc:  # never let a parser bug reach the relay
            out.append(self._stop(f"internal error: {type(exc).__name__}: {exc}"))
        return out

    def _acks(self, data: bytes, out: list[Event]) -> None:
        pos, end = 0, len(data)
        while pos < end:
            if self._in_ack_message:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    if len(self._ack) < MAX_LINE:
                        self._ack += data[pos : pos + MAX_LINE]
                    return
                self._ack += data[pos:nl]
                pos = nl + 1
                self._in_ack_message = False
                self._acked(bytes(self._ack[1:MAX_LINE]).decode("utf-8", "backslashreplace"), out)
                self._ack.clear()
                continue
            byte = data[pos]
            pos += 1
            if byte == 0:
                self._acked(None, out)
            elif byte in (1, 2):
                self._in_ack_message = True
                self._ack = bytearray(data[pos - 1 : pos])
            # anything else on the ack side is not ours to judge: ignored

    def _acked(self, error: str | None, out: list[Event]) -> None:
        if not self._expect:
            return
        item = self._expect.pop(0)
        if item.kind == "file":
            if item is self._data_item:
                # The answer to the C line itself: an error means no contents follow.
                if error is None:
                    return
                self._data_item = None
                self._remaining = -1
            elif error is None and item.extra.pop("source_error", False):
                error = "the source could not read the file"
            out.append(self._item_event(item, error))
        elif item.kind == "dir" and self.command.mode == "t":
            ev = self._item_event(item, error)
            ev["kind"] = events.FileMkdir.TYPE
            out.append(ev)
        elif item.kind == "dir" and error is not None:
            out.append(self._item_event(item, error))

    def _item_event(self, item: _Item, error: str | None) -> Event:
        ev = self._event(item.path, item.name, status="ok" if error is None else "error")
        if error is not None:
            ev["message"] = error
        if item.kind == "file":
            ev["size"] = item.size
        ev["mode"] = item.mode
        ev.update({k: v for k, v in item.extra.items() if k != "source_error"})
        if item.raw:
            ev["raw"] = True
        return ev

    def _event(self, path: str, name: str, **more: Any) -> Event:
        ev: Event = {"kind": self.kind, "path": path}
        if name:
            ev["name"] = name
        ev.update(more)
        ev["source"] = "scp"
        return ev

    def _stop(self, detail: str) -> Event:
        self.stopped = True
        return {"kind": events.ScpParseError.TYPE, "detail": detail, "source": "scp"}

    def finish(self) -> list[Event]:
        """The channel closed: a file whose contents never got their answer."""
        out: list[Event] = []
        if self.stopped:
            return out
        items = list(self._expect)
        if self._data_item is not None and all(i is not self._data_item for i in items):
            items.append(self._data_item)
        for item in items:
            if item.kind == "file":
                ev = self._item_event(item, None)
                ev["status"] = "incomplete"
                out.append(ev)
        self._expect.clear()
        self.stopped = True
        return out
