"""asciicast v2 encoding of one channel's recording, with a size cap.

Owns: turning channel events (output, input, resizes, markers, exit status) into
asciicast v2 lines (https://docs.asciinema.org/manual/asciicast/v2/) that the real
``asciinema`` player and asciinema-player replay; the per-channel byte cap.

Every non-empty value returned is one or more *complete* lines, each valid UTF-8 JSON
ending in ``\\n``; a writer that writes each returned value in one ``write()`` never
leaves a partial line behind (players refuse a cast whose last line is cut).

Must never: do I/O or read the clock (the shell passes ``t``, seconds since the channel
started), emit a partial line or invalid UTF-8, or record data past the cap.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import math
from collections.abc import Mapping
from json.encoder import encode_basestring

from proxy.core.limits import clamp_size

# Characters that str.splitlines() (and so codecs.StreamReader.readline, which
# asciinema uses for casts fetched over HTTP) treats as line ends. json.dumps with
# ensure_ascii=False leaves them raw inside strings; escaping them keeps one event per
# line for every reader. They can only occur inside JSON strings, where \\uXXXX is valid.
_LINE_BREAKERS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"}


# One encoder for every line: json.dumps with options builds a new one per call.
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "), allow_nan=False)


_UTF8 = codecs.getincrementaldecoder("utf-8")


def _finish_line(text: str) -> bytes:
    for raw, escaped in _LINE_BREAKERS.items():
        if raw in text:
            text = text.replace(raw, escaped)
    # "replace": a lone surrogate in a caller's str (e.g. a label) becomes "?" instead
    # of raising or producing invalid UTF-8; it can only sit inside a JSON string.
    return text.encode("utf-8", "replace") + b"\n"


def _encode(value: object) -> bytes:
    return _finish_line(_JSON.encode(value))


def _event_line(t: float, code: str, text: str) -> bytes:
    """``_encode([t, code, text])`` without the generic encoder's per-call work: the same
    bytes (json writes a float with repr, a str with encode_basestring, the C one)."""
    return _finish_line(f'[{t!r}, "{code}", {encode_basestring(text)}]')


# ASCII output (most terminal output, logs, base64) is escaped as bytes: JSON needs only
# these few replaced, and bytes.replace runs at memory speed where encode_basestring
# walks character by character (the encoder: 2.2 -> 0.9 CPU s/GB of terminal text;
# README, Performance). Output with any other control character takes the general
# path. Backslash goes first so the backslashes the others add are not doubled.
_ASCII_ESCAPES = (
    (b"\\", b"\\\\"),
    (b'"', b'\\"'),
    (b"\n", b"\\n"),
    (b"\r", b"\\r"),
    (b"\t", b"\\t"),
    (b"\x08", b"\\b"),
    (b"\x0c", b"\\f"),
    (b"\x1b", b"\\u001b"),
)
_OTHER_CONTROLS = bytes(c for c in range(0x20) if c not in b"\n\r\t\x08\x0c\x1b")


def _escape_ascii(data: bytes) -> bytes | None:
    """``encode_basestring(data.decode())[1:-1].encode()`` for ASCII ``data``, or None
    when it holds a control character this does not handle."""
    if len(data.translate(None, _OTHER_CONTROLS)) != len(data):
        return None
    for raw, escaped in _ASCII_ESCAPES:
        if raw in data:
            data = data.replace(raw, escaped)
    return data


def _cost(text: str) -> int:
    """The bytes ``text`` takes in a cast line: JSON-escaped UTF-8, without its quotes.
    A NUL is 6 bytes there (\\u0000): the cap counts these, so it bounds the file."""
    return len(_encode(text)) - 3 if text else 0


class CastEncoder:
    """Encoder for one asciicast v2 file. Call ``header()`` first, ``finish()`` last.

    ``max_bytes`` caps the output+input data written into the cast, counted as it is
    written there (JSON-escaped UTF-8, ``data_bytes``), so binary output cannot make the
    file several times the cap; event framing, markers and resizes come on top. Past the cap,
    data is counted in ``omitted_bytes`` and hashed (``omitted_sha256()``, one running
    sha256 over all omitted output and input bytes in call order).
    """

    def __init__(
        self,
        *,
        width: int,
        height: int,
        timestamp: int,
        max_bytes: int,
        title: str | None = None,
        command: str | None = None,
        env: Mapping[str, str] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"terminal size must be positive, got {width}x{height}")
        # A player sizes its screen from these: a client's 16M columns must not reach it.
        width, height = clamp_size(width, height)
        if max_bytes < 0:
            raise ValueError("max_bytes must not be negative")
        header: dict[str, object] = {
            "version": 2,
            "width": width,
            "height": height,
            "timestamp": timestamp,
        }
        if title is not None:
            header["title"] = title
        if command is not None:
            header["command"] = command
        if env is not None:
            header["env"] = dict(env)
        if extra is not None:
            header["breakglass"] = dict(extra)
        # Encoded now so an unserialisable ``extra`` fails at construction, not mid-session.
        self._header = _encode(header)
        self.max_bytes = max_bytes
        self.data_bytes = 0
        self.omitted_bytes = 0
        self.capped = False
        # Made when first needed: most channels never reach the cap (memory per session).
        self._omitted_hash: hashlib._Hash | None = None
        self._last_t = 0.0
        self._finished = False
        # One decoder per direction: a multibyte character split across two output
        # chunks must not be mixed with input bytes arriving in between.
        # (Each made at its first byte: a PTY channel's input is usually not recorded.)
        self._decoders: dict[str, codecs.IncrementalDecoder] = {}

    def header(self) -> bytes:
        return self._header

    def output(self, t: float, data: bytes) -> bytes:
        """An ``"o"`` event (what the target sent), or b"" if nothing to write yet."""
        return self._data(t, "o", data)

    def input(self, t: float, data: bytes) -> bytes:
        """An ``"i"`` event (what the client sent), or b"" if nothing to write yet."""
        return self._data(t, "i", data)

    def resize(self, t: float, cols: int, rows: int) -> bytes:
        """An ``"r"`` event, clamped like the header (0, unknown, becomes 80x24)."""
        cols, rows = clamp_size(int(cols), int(rows))
        return self._event(t, "r", f"{cols}x{rows}")

    def marker(self, t: float, label: str) -> bytes:
        return self._event(t, "m", label)

    def exit(self, t: float, status: int) -> bytes:
        """An ``"x"`` event (asciicast v3's exit status; v2 players skip unknown codes)."""
        return self._event(t, "x", str(int(status)))

    def finish(self, t: float) -> bytes:
        """Flush both decoders (pending partial characters become U+FFFD) and, if the cap
        was hit, add a marker with the omitted byte count and sha256. Idempotent."""
        if self._finished:
            return b""
        self._finished = True
        out = b""
        for code in ("o", "i"):
            dec = self._decoders.get(code)
            text = dec.decode(b"", final=True) if dec is not None else ""
            if text:
                out += self._event(t, code, text)
        if self.capped:
            out += self._event(
                t,
                "m",
                f"recording limit of {self.max_bytes} bytes reached: "
                f"{self.omitted_bytes} bytes omitted, sha256 {self.omitted_sha256()}",
            )
        return out

    def omitted_sha256(self) -> str:
        return (self._omitted_hash or hashlib.sha256()).hexdigest()

    def _time(self, t: float) -> float:
        # Non-decreasing, finite, 6 decimals: a clock step back or a NaN from the
        # caller must not produce a cast that players reject or replay backwards.
        if not math.isfinite(t):
            return self._last_t
        rounded = round(float(t), 6)
        if rounded > self._last_t:
            self._last_t = rounded
        return self._last_t

    def _event(self, t: float, code: str, text: str) -> bytes:
        return _event_line(self._time(t), code, text)

    def _omit(self, data: bytes) -> None:
        self.omitted_bytes += len(data)
        if self._omitted_hash is None:
            self._omitted_hash = hashlib.sha256()
        self._omitted_hash.update(data)

    def _data(self, t: float, code: str, data: bytes) -> bytes:
        if not data:
            return b""
        if self.capped:
            self._omit(data)
            return b""
        decoder = self._decoders.get(code)
        if decoder is None:
            decoder = self._decoders[code] = _UTF8(errors="replace")
        room = self.max_bytes - self.data_bytes
        state = decoder.getstate()
        if not state[0] and data.isascii():
            # Nothing pending in the decoder, so decoding would only copy: escape the
            # bytes directly (the same line, byte for byte; tests/unit/test_recording.py).
            body = _escape_ascii(data)
            if body is not None and len(body) <= room:
                self.data_bytes += len(body)
                return b"".join((f'[{self._time(t)!r}, "{code}", "'.encode(), body, b'"]\n'))
        text = decoder.decode(data)
        line = self._event(t, code, text) if text else b""
        # What the data takes in the line: the line less the same event with no data.
        cost = len(line) - len(self._event(t, code, "")) if text else 0
        if cost <= room:
            self.data_bytes += cost
            return line
        # The longest head whose text fits in the room left (cost only grows with the
        # head); the tail is counted and hashed. final=True: a character cut by the cap
        # is shown as U+FFFD now, not held back.
        low, high = 0, len(data)
        while low < high:
            mid = (low + high + 1) // 2
            decoder.setstate(state)
            if _cost(decoder.decode(data[:mid], final=True)) <= room:
                low = mid
            else:
                high = mid - 1
        decoder.setstate(state)
        head, tail = data[:low], data[low:]
        text = decoder.decode(head, final=True)
        self.data_bytes += _cost(text)
        self.capped = True
        self._omit(tail)
        out = self._event(t, code, text) if text else b""
        return out + self._event(
            t,
            "m",
            f"recording limit of {self.max_bytes} bytes reached: "
            "further data is counted and hashed, not recorded",
        )
