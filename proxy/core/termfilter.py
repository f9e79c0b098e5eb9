"""Making a recorded terminal stream safe to replay into the auditor's own terminal.

Owns: ``TermFilter`` (a streaming filter over the text of ``"o"``/``"i"`` events) and
``replayable_cast`` (a whole cast, line by line: filtered event data, and a cut-short
last line dropped so players still replay a cast a crash interrupted).

A cast is attacker-controlled: whatever the target printed is in it. Replayed with
``asciinema play``, it reaches a real terminal that would obey sequences which act
beyond the screen: set the clipboard (OSC 52), move, resize or report the window
(CSI ... t, including the title-report trick CSI 21 t), answer device status and
attribute requests (CSI 5n/6n, CSI c, CSI > c, DECRQM, DECRQSS, XTGETTCAP, DECID, ENQ)
by *typing into the auditor's input*, draw kitty graphics (ESC _ G) or turn on mouse
and focus reporting. The filter removes those and keeps everything that only paints
the screen (text, colours, cursor movement, erasing, scroll regions, modes).

Rules, following the DEC/xterm parser (vt100.net/emu/dec_ansi_parser):

- Every OSC, DCS, SOS, PM and APC string is dropped whole, in 7-bit (ESC ] P X ^ _) and
  8-bit (U+009D U+0090 U+0098 U+009E U+009F) forms, up to ST (ESC \\ or U+009C), BEL
  (OSC) or CAN/SUB. Titles (OSC 0/2) go too: a title is a cheap place to hide text.
- CSI sequences are kept unless they report or act on the window: final ``t``, ``n``
  (DSR), ``c`` (DA1/2/3), ``x`` (DECREQTPARM), ``q`` with a ``>`` prefix (XTVERSION),
  ``$ p`` (DECRQM), ``' |`` (DECRQLP), ``? ... S`` (XTSMGRAPHICS), ``$ w``
  (DECRQPSR), ``? ... u`` (kitty keyboard query), ``> ... m``/``> ... n`` (XTMODKEYS),
  and private modes that make the terminal send reports (mouse, focus). A CSI longer
  than 64 characters is dropped (no terminal needs it; some overflow on it).
- ESC Z (DECID) and ENQ (answerback) are dropped.
- A sequence may be split across events: the filter keeps its state between ``feed``
  calls and holds back an unfinished CSI or ESC sequence until it is complete.

Must never: do I/O, raise on any input, or let a dropped sequence through because it
arrived in pieces.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

ESC = "\x1b"
BEL = "\x07"
CAN = "\x18"
SUB = "\x1a"
ENQ = "\x05"
ST8 = "\x9c"
CSI8 = "\x9b"
_STRING_8BIT = frozenset("\x90\x98\x9d\x9e\x9f")  # DCS SOS OSC PM APC
_STRING_7BIT = frozenset("P]X^_")  # after ESC: DCS OSC SOS PM APC

MAX_CSI = 64

# Private modes (CSI ? Pm h/l) that make the terminal *send* something: X10 and
# normal/button/any-event mouse tracking, focus events, the mouse encodings, and
# the DEC locator.
_REPORTING_MODES = frozenset(
    {"9", "1000", "1001", "1002", "1003", "1004", "1005", "1006", "1015", "1016"}
)

_GROUND, _ESCAPE, _CSI, _STRING, _STRING_ESC, _ESC_IGNORE, _CSI_IGNORE = range(7)


def _csi_allowed(body: str) -> bool:
    """``body`` is everything after the CSI introducer, final character included."""
    final = body[-1]
    inner = body[:-1]
    params = inner.rstrip(" !\"#$%&'()*+,-./")
    intermediates = inner[len(params) :]
    prefix = params[:1] if params[:1] in ("?", ">", "<", "=") else ""
    if final in "tncx" and not intermediates:
        return False
    if final == "q" and prefix == ">":
        return False
    if intermediates == "$" and final in "pw":
        return False
    if intermediates == "'" and final in "|{w}z":
        return False
    if prefix == "?" and final in "Su" and not intermediates:
        return False
    if prefix == ">" and final in "mn":
        return False
    if prefix == "?" and final in "hl" and not intermediates:
        modes = params[1:].split(";")
        if any(m in _REPORTING_MODES for m in modes):
            return False
    return True


class TermFilter:
    """Streaming filter for one direction of one channel. ``feed`` as data arrives,
    ``flush`` at the end (an unfinished sequence is dropped)."""

    def __init__(self) -> None:
        self._state = _GROUND
        self._pending: list[str] = []  # the unfinished ESC or CSI sequence, held back
        self.dropped = 0  # sequences (and ENQs) removed, for the caller's notice

    def feed(self, text: str) -> str:
        out: list[str] = []
        append = out.append
        state = self._state
        pending = self._pending
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            i += 1
            if state == _GROUND:
                if ch == ESC:
                    state = _ESCAPE
                    pending.append(ch)
                elif ch == CSI8:
                    state = _CSI
                    pending.append(ESC + "[")
                elif ch in _STRING_8BIT:
                    state = _STRING
                    self.dropped += 1
                elif ch == ENQ:
                    self.dropped += 1
                else:
                    append(ch)
            elif state == _ESCAPE:
                if ch == "[" and len(pending) == 1:
                    state = _CSI
                    pending.append(ch)
                elif ch in _STRING_7BIT and len(pending) == 1:
                    pending.clear()
                    state = _STRING
                    self.dropped += 1
                elif ch in (CAN, SUB):
                    pending.clear()
                    state = _GROUND
                elif ch == ESC:
                    # ESC ESC: the first is abandoned, the second starts anew.
                    pending[:] = [ESC]
                elif "\x20" <= ch <= "\x2f":
                    pending.append(ch)  # intermediate: ESC ( B, ESC # 8, ESC SP F ...
                    if len(pending) > MAX_CSI:
                        pending.clear()
                        state = _ESC_IGNORE
                        self.dropped += 1
                elif ch < "\x20":
                    append(ch)  # C0 controls act immediately, even mid-sequence
                elif ch == "Z" and len(pending) == 1:
                    pending.clear()  # DECID: "identify yourself" is a report request
                    state = _GROUND
                    self.dropped += 1
                elif "\x30" <= ch <= "\x7e":
                    pending.append(ch)
                    out.extend(pending)
                    pending.clear()
                    state = _GROUND
                else:
                    # DEL, C1 or non-ASCII cannot end an escape sequence: drop it.
                    pending.clear()
                    state = _GROUND
                    self.dropped += 1
            elif state == _CSI:
                if "\x40" <= ch <= "\x7e":
                    pending.append(ch)
                    seq = "".join(pending)
                    pending.clear()
                    state = _GROUND
                    if _csi_allowed(seq[2:]):
                        append(seq)
                    else:
                        self.dropped += 1
                elif "\x20" <= ch <= "\x3f":
                    pending.append(ch)
                    if len(pending) > MAX_CSI:
                        pending.clear()
                        state = _CSI_IGNORE
                        self.dropped += 1
                elif ch in (CAN, SUB):
                    pending.clear()
                    state = _GROUND
                elif ch == ESC:
                    pending[:] = [ESC]
                    state = _ESCAPE
                    self.dropped += 1
                elif ch < "\x20":
                    append(ch)
                else:
                    # DEL, C1 or non-ASCII inside a CSI: malformed, drop it whole.
                    pending.clear()
                    state = _GROUND
                    self.dropped += 1
            elif state in (_ESC_IGNORE, _CSI_IGNORE):
                low = "\x30" if state == _ESC_IGNORE else "\x40"
                if low <= ch <= "\x7e" or ch in (CAN, SUB):
                    state = _GROUND
                elif ch == ESC:
                    pending[:] = [ESC]
                    state = _ESCAPE
            elif state == _STRING:
                if ch == ESC:
                    state = _STRING_ESC
                elif ch in (ST8, BEL, CAN, SUB):
                    state = _GROUND
            elif ch == "\\":  # _STRING_ESC: ESC \\ is ST, the string's end
                state = _GROUND
            else:
                # Any other ESC ends the string (DEC parser) and begins a new sequence:
                # read ``ch`` again in the escape state.
                pending[:] = [ESC]
                state = _ESCAPE
                i -= 1
        self._state = state
        self._pending = pending
        return "".join(out)

    def flush(self) -> str:
        """End of stream: an unfinished sequence is dropped, never emitted."""
        if self._pending or self._state != _GROUND:
            self.dropped += 1
        self._pending = []
        self._state = _GROUND
        return ""


def filter_text(text: str) -> str:
    """One-shot filter of a complete text (tests, one-off rendering)."""
    f = TermFilter()
    return f.feed(text) + f.flush()


@dataclass
class CastReport:
    """What ``replayable_cast`` did to a cast."""

    events: int = 0
    dropped_sequences: int = 0
    cut_line: int | None = None  # 1-based line number where the cast stops being valid


def replayable_cast(
    lines: Iterable[str], report: CastReport, *, filter_codes: str = "oi"
) -> Iterator[str]:
    """Yield the lines of a cast that players can replay safely.

    The header line passes unchanged. Each event's data (for codes in
    ``filter_codes``) goes through a ``TermFilter`` kept per code, so sequences split
    across events are still caught. The first line that is not a complete, valid event
    (a crash cut it, or the file is damaged) ends the cast there: players replay
    everything before it. Each yielded line ends in ``\\n``.
    """
    filters = {code: TermFilter() for code in filter_codes}
    for number, raw in enumerate(lines, start=1):
        if not raw.endswith("\n"):
            report.cut_line = number
            break
        if number == 1:
            try:
                header = json.loads(raw)
            except ValueError:
                report.cut_line = number
                break
            if not isinstance(header, dict):
                report.cut_line = number
                break
            yield raw
            continue
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except ValueError:
            report.cut_line = number
            break
        if (
            not isinstance(event, list)
            or len(event) != 3
            or not isinstance(event[0], int | float)
            or not isinstance(event[1], str)
            or not isinstance(event[2], str)
        ):
            report.cut_line = number
            break
        report.events += 1
        flt = filters.get(event[1])
        if flt is not None:
            event[2] = flt.feed(event[2])
            yield json.dumps(event, ensure_ascii=True) + "\n"
        else:
            yield raw
    for flt in filters.values():
        flt.flush()
        report.dropped_sequences += flt.dropped


def complete_lines(lines: Iterable[str], report: CastReport) -> Iterator[str]:
    """The cast up to its last complete, valid line, unfiltered (for the browser
    player, which emulates a terminal in the page and needs no filter, but refuses a
    whole cast whose last line is cut)."""
    return replayable_cast(lines, report, filter_codes="")
