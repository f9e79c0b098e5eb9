"""Commands typed at an interactive shell, recovered from a PTY channel's bytes.

Pure: no I/O, the caller passes the time (the channel's cast offset). The text of a
command always comes from the *screen* (what the target echoed), never from the
keystrokes, so input typed at a no-echo prompt (``read -s``, sudo) cannot end up in an
event; when the keystrokes were not echoed the event says ``redacted`` and has no text.

How:

* Between commands ("tail mode") only the last ``TAIL_BYTES`` of output are kept and
  scanned for alternate-screen switches; a ``cat hugefile`` never reaches pyte.
* At the first keystroke a fresh pyte screen is built from that tail; the prompt is the
  cursor row left of the cursor. From then on output goes through pyte.
* On Enter the line is read when the terminal echoes the newline (or at the next
  keystroke, or a second later): the rows from the prompt to the cursor, soft wraps
  joined, prompt and readline's reverse-search prefix stripped.
* Further Enters in the same input chunk (a paste) are accepted line by line, each only
  if the screen line ends with the typed text.
* Full-screen programs (alternate screen) are not parsed; the line that launched them is.

Best effort, an index into the recording. Whatever the target prints is parsed
(proxy.core.screen ignores malformed control sequences, as a terminal does); an internal
error emits one ``command_extraction_error`` event and disables extraction for the
channel (the caller alerts and flags the session).
"""

from __future__ import annotations

import codecs
import re
from typing import Any

from proxy.core import events as catalogue
from proxy.core.limits import clamp_size
from proxy.core.screen import ScreenStream, TrackingScreen

TAIL_BYTES = 16 * 1024
# A typing phase that would see more output than this without an Enter being echoed
# (typing ahead while a command floods the terminal) is dropped, so pyte never parses bulk
# output: line-dense output costs it ~6 us a byte, and every session waits meanwhile
# (256 KiB was 2 s). The line is still read if a key follows: typing starts again from
# the last screenful of output, which holds it.
TYPING_OUTPUT_LIMIT = 16 * 1024
ECHO_WAIT = 1.0  # seconds to wait for the echoed newline after Enter
# Lines of one input chunk (a paste) read one by one, at most: each costs a screen read,
# and a 32 KiB paste of empty lines would otherwise hold every session for ~0.3 s. The
# rest are in the transcript and counted in ``lines_not_read``.
MAX_PASTE_LINES = 200
_ALT_SWITCH = re.compile(rb"\x1b\[\?(?:1049|1047|47)([hl])")
_ALT_CARRY = 8  # longest switch is 8 bytes: keep 7 from the previous chunk
_IGNORED_ONLY = frozenset(b"\x03\x04\x1a\x1c")  # ^C ^D ^Z ^\ on their own
_INPUT_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|O.|.)?", re.DOTALL)
_OUTPUT_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|.)?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ISEARCH = re.compile(r"\((?:failed )?(?:reverse|i)-i-search\)`[^']*': ")
_SHELL_PROMPT = re.compile(r"^.{0,80}?[$#%>] ")  # when the captured prompt is gone
_BRACKETED_PASTE = re.compile(rb"\x1b\[200~.*?(?:\x1b\[201~|\Z)", re.DOTALL)


def _printable(text: str, pattern: re.Pattern[str]) -> str:
    return _CONTROL.sub("", pattern.sub("", text))


def _is_subsequence(needle: str, haystack: str) -> bool:
    it = iter(haystack)
    return all(c in it for c in needle)


class CommandExtractor:
    """Fed a PTY channel's output, input and resizes; returns ``command`` events."""

    def __init__(self, columns: int, lines: int, *, source: str = "pty") -> None:
        # The client picks the size: the screen's work and memory grow with it, so it is
        # clamped (proxy.core.limits); a wider terminal's lines wrap here, joined again.
        self.columns, self.lines = clamp_size(columns, lines)
        self.source = source
        self.disabled = False
        self.lines_not_read = 0
        self._tail = bytearray()
        self._carry = b""
        self.alt = False
        # Typing phase: a screen exists from the first keystroke to the echoed newline.
        self._screen: TrackingScreen | None = None
        self._stream: ScreenStream | None = None
        self._decoder: codecs.IncrementalDecoder | None = None
        self._prompt = ""
        self._prompt_row = 0
        self._prompt_scrolled = 0
        self._typed: list[str] = []  # printable keystrokes of the current line
        self._typed_size = 0
        self._echo: list[str] = []  # printable output since the first keystroke
        self._echo_size = 0
        self._fed = 0
        # Enters waiting for their echoed newline: (offset, typed text or None for the
        # first line, whose text comes from the screen alone).
        self._pending: list[tuple[float, str | None]] = []
        self._pending_since = 0.0
        self._echo_at_enter: str | None = None
        self._postponed = 0  # output lines seen before the first line's echo
        self._typed_done = False
        self._output_since_input = False

    # -- public, never raising --------------------------------------------------------

    def output(self, data: bytes, t: float) -> list[dict[str, Any]]:
        return self._guard(self._output, data, t)

    def input(self, data: bytes, t: float) -> list[dict[str, Any]]:
        return self._guard(self._input, data, t)

    def resize(self, columns: int, lines: int, t: float) -> list[dict[str, Any]]:
        return self._guard(self._resize, columns, lines, t)

    def flush(self, t: float) -> list[dict[str, Any]]:
        """The channel ends: read any line still waiting for its echo."""
        return self._guard(self._flush, t)

    def _guard(self, method: Any, *args: Any) -> list[dict[str, Any]]:
        if self.disabled:
            return []
        try:
            events: list[dict[str, Any]] = method(*args)
            return events
        except Exception as exc:
            self.disabled = True
            self._screen = self._stream = None
            self._tail = bytearray()
            return [
                {
                    "kind": catalogue.CommandExtractionError.TYPE,
                    "detail": f"{type(exc).__name__}: {exc}"[:500],
                    "source": self.source,
                    "offset": round(float(args[-1]), 6),
                }
            ]

    # -- output -----------------------------------------------------------------------

    def _output(self, data: bytes, t: float) -> list[dict[str, Any]]:
        events = self._expire(t)
        alt_at = self._scan_alt(data)
        self._tail += data
        if len(self._tail) > 2 * TAIL_BYTES:
            del self._tail[:-TAIL_BYTES]
        if self._screen is None:
            return events
        if alt_at is not None and self.alt:
            # A full-screen program starts: finish the line that launched it, stop.
            before = data[: max(0, alt_at)]
            events += self._feed_typing(before, t)
            events += self._commit_all(t, echoed=bool(self._pending))
            self._stop_typing()
            return events
        if not self._pending and self._fed + len(data) > TYPING_OUTPUT_LIMIT:
            self._stop_typing()  # before pyte parses it, not after
            return events
        events += self._feed_typing(data, t)
        if self._screen is not None and self._fed > TYPING_OUTPUT_LIMIT:
            self._stop_typing()
        return events

    def _scan_alt(self, data: bytes) -> int | None:
        """Track alternate-screen switches; the offset in ``data`` of the last one."""
        window = self._carry + data
        self._carry = window[-(_ALT_CARRY - 1) :]
        if b"\x1b[?" not in window:
            return None
        last = None
        for m in _ALT_SWITCH.finditer(window):
            last = m
        if last is None:
            return None
        on = last.group(1) == b"h"
        if on == self.alt and last.end() <= len(window) - len(data):
            return None  # seen in the previous chunk already
        self.alt = on
        start_in_data = last.start() - (len(window) - len(data))
        if not on:
            # Back on the main screen: the tail before it is a full-screen program's.
            self._tail = bytearray(window[last.end() :])
        return start_in_data

    def _feed_typing(self, data: bytes, t: float) -> list[dict[str, Any]]:
        assert self._decoder is not None
        text = self._decoder.decode(data)
        self._fed += len(data)
        events: list[dict[str, Any]] = []
        while self._pending and self._screen is not None:
            nl = text.find("\n")
            if nl < 0:
                break
            self._feed(text[:nl])
            text = text[nl + 1 :]
            if self._before_echo():
                # Typed ahead while the target still prints its login messages (motd,
                # last login): that newline is theirs; the line typed comes on a later row.
                self._feed("\n")
                self._postponed += 1
                self._prompt_row = self._screen.cursor.y
                self._prompt_scrolled = self._screen.scrolled
                self._echo = []
                continue
            events += self._commit_one(echoed=True)
            self._feed("\n")
        if self._screen is not None and not self._pending and self._typed_done:
            # Every Enter of the chunk has been read: back to tail mode.
            self._stop_typing()
            return events
        if self._screen is not None:
            self._feed(text)
        return events

    def _before_echo(self) -> bool:
        """Is an output newline, while the first line waits, not the echo of its Enter?

        Only when no prompt was on screen as typing began (the shell is not up yet, so
        the kernel or readline echoes the line later) and only for a screenful of
        lines; after a prompt, or past that, the line is read now, redacted if unechoed.
        """
        return (
            self._pending[0][1] is None
            and self._prompt == ""
            and self._postponed < self.lines
            and not self._was_echoed()
        )

    def _feed(self, text: str) -> None:
        if not text:
            return
        assert self._stream is not None
        self._stream.feed(text)
        self._output_since_input = True
        if self._echo_size < TYPING_OUTPUT_LIMIT:
            printable = _printable(text, _OUTPUT_ESCAPE)
            self._echo.append(printable)
            self._echo_size += len(printable)

    # -- input ------------------------------------------------------------------------

    def _input(self, data: bytes, t: float) -> list[dict[str, Any]]:
        events = self._expire(t)
        if self._pending:
            # Typed on before the echo came: read the line from the screen as it is.
            events += self._commit_all(t, echoed=False)
            self._stop_typing()
        if self.alt or not data or all(b in _IGNORED_ONLY for b in data):
            return events
        if b"\x03" in data and self._screen is not None:
            self._stop_typing()  # ^C: the shell discards the line
            return events
        # Enters inside a bracketed paste are text, not Enter.
        scan = _BRACKETED_PASTE.sub(b"", data) if b"\x1b[200~" in data else data
        text = data.decode("utf-8", "replace")
        enters = scan.count(b"\r") + scan.replace(b"\r\n", b"\r").count(b"\n")
        if self._screen is None:
            if enters and not _printable(text, _INPUT_ESCAPE):
                return events  # Enter at an empty prompt: nothing to read
            self._start_typing()
        elif self._output_since_input and not self._was_echoed():
            # What was typed so far went to a program that did not echo it (``q`` to
            # ``less -X``) and the screen moved on: a new prompt, a new line.
            self._capture_prompt(self._screen)
        self._output_since_input = False
        if not enters:
            self._type(_printable(text, _INPUT_ESCAPE))
            return events
        parts = re.split(r"\r\n|\r|\n", text) if b"\x1b[200~" not in data else [text, ""]
        self._type(_printable(parts[0], _INPUT_ESCAPE))
        if self._screen is None:
            return events
        self._echo_at_enter = "".join(self._echo)
        self._pending = [(t, None)]
        more = parts[1:-1]
        self.lines_not_read += max(0, len(more) - MAX_PASTE_LINES)
        self._pending.extend((t, _printable(p, _INPUT_ESCAPE)) for p in more[:MAX_PASTE_LINES])
        self._pending_since = t
        self._typed_done = True
        return events

    def _type(self, printable: str) -> None:
        # A line longer than anything the screen could echo back is not a command line
        # to read (and must not grow without bound when the program echoes nothing).
        self._typed_size += len(printable)
        if self._typed_size > TYPING_OUTPUT_LIMIT:
            self._stop_typing()
        else:
            self._typed.append(printable)

    def _start_typing(self) -> None:
        screen = TrackingScreen(self.columns, self.lines)
        self._screen = screen
        self._stream = ScreenStream(screen)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        # Only the last screenful of lines can hold the prompt: start a line before it
        # (not inside an escape sequence), at most TAIL_BYTES back.
        tail = bytes(self._tail[-TAIL_BYTES:])
        start = len(tail)
        for _ in range(self.lines + 1):
            start = tail.rfind(b"\n", 0, start)
            if start < 0:
                break
        if start >= 0:
            tail = tail[start + 1 :]
        elif len(self._tail) > TAIL_BYTES and (nl := tail.find(b"\n")) >= 0:
            tail = tail[nl + 1 :]
        self._stream.feed(tail.decode("utf-8", "replace"))
        screen.scrolled = 0
        self._fed = 0
        self._pending = []
        self._typed_done = False
        self._postponed = 0
        self._capture_prompt(screen)

    def _capture_prompt(self, screen: TrackingScreen) -> None:
        self._prompt = "".join(screen.row(screen.cursor.y)[: screen.cursor.x])
        self._prompt_row = screen.cursor.y
        self._prompt_scrolled = screen.scrolled
        self._typed = []
        self._typed_size = 0
        self._echo = []
        self._echo_size = 0
        self._echo_at_enter = None

    def _was_echoed(self, window: str | None = None) -> bool:
        echo = "".join(self._echo) if window is None else window
        return _is_subsequence("".join(self._typed), echo)

    def _stop_typing(self) -> None:
        self._screen = None
        self._stream = None
        self._decoder = None
        self._pending = []
        self._typed_done = False

    # -- resize and time --------------------------------------------------------------

    def _resize(self, columns: int, lines: int, t: float) -> list[dict[str, Any]]:
        events = self._expire(t)
        self.columns, self.lines = clamp_size(columns, lines, (self.columns, self.lines))
        if self._screen is not None:
            self._screen.resize(self.lines, self.columns)
        return events

    def _expire(self, t: float) -> list[dict[str, Any]]:
        if self._pending and t - self._pending_since > ECHO_WAIT:
            events = self._commit_all(t, echoed=False)
            self._stop_typing()
            return events
        return []

    def _flush(self, t: float) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if self._pending:
            events = self._commit_all(t, echoed=False)
        self._stop_typing()
        return events

    # -- reading the line -------------------------------------------------------------

    def _commit_all(self, t: float, *, echoed: bool) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while self._pending and self._screen is not None:
            events += self._commit_one(echoed=echoed)
        return events

    def _commit_one(self, *, echoed: bool) -> list[dict[str, Any]]:
        screen = self._screen
        assert screen is not None
        offset, typed = self._pending.pop(0)
        rows = self._line_rows(screen)
        if typed is None:
            # The first line: the prompt row's text, if the keystrokes were echoed.
            line = self._strip_prompt(rows)
            window = "".join(self._echo) if echoed else (self._echo_at_enter or "")
            was_echoed = self._was_echoed(window)
            event = self._event(offset, line, was_echoed)
        else:
            line = self._join(rows[-1:]) if rows else ""
            if not typed.strip():
                event = None
            else:
                event = self._event(offset, typed, line.rstrip().endswith(typed.rstrip()))
        # The next line (a paste) starts on the row after this one.
        self._prompt = ""
        self._prompt_row = screen.cursor.y + 1
        self._prompt_scrolled = screen.scrolled
        return [event] if event else []

    def _line_rows(self, screen: TrackingScreen) -> list[tuple[list[str], bool]]:
        first = self._prompt_row - (screen.scrolled - self._prompt_scrolled)
        first = max(0, min(first, screen.cursor.y))
        return [(screen.row(y), screen.soft_wrapped(y)) for y in range(first, screen.cursor.y + 1)]

    def _strip_prompt(self, rows: list[tuple[list[str], bool]]) -> str:
        prompt = self._prompt
        start = 0
        for i in range(len(rows) - 1, -1, -1):
            text = "".join(rows[i][0])
            if (prompt and text.startswith(prompt)) or _ISEARCH.match(text):
                start = i
                break
        line = self._join(rows[start:])
        if prompt and line.startswith(prompt):
            line = line[len(prompt) :]
        elif (
            not prompt
            and (typed := "".join(self._typed).strip())
            and self._bare_or_prompted(line, typed)
        ):
            # No prompt known (typed before the shell was up) and the row is the typed
            # text, after a prompt or none: the kernel's echo of `echo a > f`.
            line = typed
        else:
            m = _ISEARCH.match(line) or _SHELL_PROMPT.match(line)
            if m:
                line = line[m.end() :]
        return line.strip()

    @staticmethod
    def _bare_or_prompted(line: str, typed: str) -> bool:
        line = line.rstrip()
        if not line.endswith(typed):
            return False
        rest = line[: len(line) - len(typed)]
        return not rest.strip() or _SHELL_PROMPT.fullmatch(rest) is not None

    def _join(self, rows: list[tuple[list[str], bool]]) -> str:
        parts = []
        for i, (cells, wrapped) in enumerate(rows):
            text = "".join(cells)
            if i == len(rows) - 1:
                parts.append(text.rstrip())
            elif wrapped or (cells and cells[-1] not in ("", " ")):
                parts.append(text)  # drawn past the last column: a soft wrap
            else:
                parts.append(text.rstrip() + "\n")
        return "".join(parts)

    def _event(self, offset: float, text: str, echoed: bool) -> dict[str, Any] | None:
        event: dict[str, Any] = {
            "kind": catalogue.Command.TYPE,
            "redacted": False,
            "source": self.source,
            "offset": round(offset, 6),
        }
        if not echoed:
            event["redacted"] = True
            return event
        if not text.strip():
            return None
        event["text"] = text
        return event
