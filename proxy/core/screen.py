"""The command extractor's terminal emulator: a pyte screen and stream that any output takes.

Owns ``TrackingScreen`` (pyte's screen plus the alternate screen, soft-wrap marks and a
scroll count) and ``ScreenStream`` (pyte's parser, fed the target's output).

What the target prints is the user's to choose (a prompt, ``printf``), so the emulator
must take any text. pyte 0.8.2 does not: it raises on a control sequence it parses but
cannot apply, and an exception would switch command extraction off for the channel,
which is a way to dodge the command audit. So, as a terminal does, a malformed sequence
is ignored and the stream carries on:

- a private (``?``) form of a sequence that has none (``ESC[?A``, ``ESC[?m``);
- more parameters than the sequence takes (``ESC[1;2A``): the extra ones are dropped,
  as xterm does;
- an erase or tab-clear mode out of range (``ESC[5K``);
- a parameter pyte's parser cannot read as a number: digits that are not ASCII
  (``ESC[²A``; ``str.isdigit`` lets them in) or longer than ``int`` reads (4,300).

``dropped`` counts them. Anything else that goes wrong is a bug and still raises, for
the extractor's alert. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyte

ALT_MODES = (1049, 1047, 47)

# How many parameters each handler pyte dispatches a CSI to takes; None: any number.
_ARITY: dict[str, int | None] = {
    "cursor_position": 2,
    "set_margins": 2,
    "set_mode": None,
    "reset_mode": None,
    "select_graphic_rendition": None,
}
# Handlers that take pyte's ``private`` flag; every other one ignores a private form.
_PRIVATE = frozenset(
    {"set_mode", "reset_mode", "erase_in_line", "erase_in_display", "report_device_attributes"}
)
# The highest mode a handler knows (pyte raises past it, where a terminal ignores it).
_TOP_MODE = {"erase_in_line": 2, "erase_in_display": 3, "clear_tab_stop": 3}
_GUARD = "guarded_"


class TrackingScreen(pyte.Screen):
    """A pyte screen with the alternate screen (pyte 0.8.2 has none) and a scroll count."""

    def __init__(self, columns: int, lines: int) -> None:
        super().__init__(columns, lines)
        self.scrolled = 0
        self.alt = False
        self.dropped = 0  # malformed sequences ignored
        self._saved: tuple[Any, Any] | None = None
        self._drawing = False

    def __getattr__(self, name: str) -> Callable[..., None]:
        # ScreenStream dispatches every CSI to ``guarded_<handler>``: built here, once
        # per handler and stream (pyte looks its handlers up when its parser starts).
        if not name.startswith(_GUARD):
            raise AttributeError(name)
        return self._guarded(name.removeprefix(_GUARD))

    def _guarded(self, name: str) -> Callable[..., None]:
        handler = getattr(self, name)
        arity = _ARITY.get(name, 1)
        private_ok = name in _PRIVATE
        top = _TOP_MODE.get(name)

        def call(*params: int, private: bool = False) -> None:
            if (private and not private_ok) or (top is not None and params and params[0] > top):
                self.dropped += 1
                return
            if arity is not None:
                params = params[:arity]
            if private:
                handler(*params, private=True)
            else:
                handler(*params)

        return call

    def draw(self, data: str) -> None:
        self._drawing = True
        try:
            super().draw(data)
        finally:
            self._drawing = False

    def linefeed(self) -> None:
        # A row left by drawing past the last column is soft-wrapped: one logical line.
        vars(self.buffer[self.cursor.y])["soft_wrap"] = self._drawing
        super().linefeed()

    def soft_wrapped(self, y: int) -> bool:
        return bool(getattr(self.buffer[y], "soft_wrap", False))

    def index(self) -> None:
        bottom = self.margins.bottom if self.margins else self.lines - 1
        if self.cursor.y == bottom:
            self.scrolled += 1
        super().index()

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private") and any(m in ALT_MODES for m in modes) and not self.alt:
            self._saved = (
                {y: dict(row) for y, row in self.buffer.items()},
                (self.cursor.x, self.cursor.y),
            )
            self.alt = True
            self.erase_in_display(2)
        super().set_mode(*modes, **kwargs)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        if kwargs.get("private") and any(m in ALT_MODES for m in modes) and self.alt:
            self.alt = False
            self.erase_in_display(2)
            if self._saved is not None:
                rows, (x, y) = self._saved
                for row_y, row in rows.items():
                    self.buffer[row_y].update(row)
                self.cursor.x, self.cursor.y = x, y
                self._saved = None
        super().reset_mode(*modes, **kwargs)

    def row(self, y: int) -> list[str]:
        line = self.buffer[y]
        return [line[x].data for x in range(self.columns)]


class ScreenStream(pyte.Stream):
    """pyte's parser, each CSI through the screen's guard, unreadable numbers ignored."""

    # pyte reads its dispatch table from the class, as an attribute of its own.
    csi = {code: _GUARD + name for code, name in pyte.Stream.csi.items()}  # noqa: RUF012

    def __init__(self, screen: TrackingScreen) -> None:
        self.screen = screen
        super().__init__(screen)

    def _send_to_parser(self, data: str) -> bool | None:
        try:
            return super()._send_to_parser(data)
        except ValueError:
            # Only ``int()`` of a CSI parameter raises it in pyte's parser (the guard
            # leaves the handlers nothing to raise it on); pyte has started its parser
            # afresh, so the sequence is dropped and the rest is read as text.
            self.screen.dropped += 1
            return True
