"""Commands read from a non-PTY shell's stdin (``ssh host bash < script``), one a line.

Pure. Bytes in, complete lines out, each decoded verbatim (bytes that are not UTF-8 become
``\\xNN``); a line longer than ``max_line`` bytes is cut there and flagged, and the rest
of it, up to its newline, is skipped. Blank lines are not commands. Splitting is done by
``bytes.find``: no per-byte Python loop.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE = 4096


@dataclass(frozen=True)
class Line:
    text: str
    truncated: bool = False


def _line(raw: bytes, truncated: bool) -> Line | None:
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    if not raw.strip():
        return None
    return Line(raw.decode("utf-8", "backslashreplace"), truncated)


class LineSplitter:
    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self._partial = bytearray()
        self._skipping = False  # inside a line already cut: drop up to its newline

    def feed(self, data: bytes) -> list[Line]:
        out: list[Line] = []
        pos, end = 0, len(data)
        while pos < end:
            nl = data.find(b"\n", pos)
            stop = end if nl < 0 else nl
            if self._skipping:
                if nl >= 0:
                    self._skipping = False
                pos = stop + 1
                continue
            room = self.max_line - len(self._partial)
            if stop - pos > room:
                self._partial += data[pos : pos + room]
                line = _line(bytes(self._partial), True)
                if line is not None:
                    out.append(line)
                self._partial.clear()
                self._skipping = nl < 0
                pos = stop + 1
                continue
            if nl < 0:
                self._partial += data[pos:]
                break
            if self._partial:
                self._partial += data[pos:nl]
                line = _line(bytes(self._partial), False)
                self._partial.clear()
            else:
                line = _line(data[pos:nl], False)
            if line is not None:
                out.append(line)
            pos = nl + 1
        return out

    def finish(self) -> list[Line]:
        """End of input: a last line without its newline is still a command."""
        if self._skipping or not self._partial:
            self._partial.clear()
            return []
        line = _line(bytes(self._partial), False)
        self._partial.clear()
        return [line] if line is not None else []
