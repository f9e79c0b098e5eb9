"""Durations and sizes as people write them in config files and on the command line.

Owns the text forms ``90d``, ``1h30m``, ``500ms`` and ``64MiB`` and their conversion to
seconds and bytes. Pure functions: no I/O, no clock. Never guesses: a bare number is not
a duration (is ``30`` seconds or minutes?), so it is refused rather than interpreted.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration", "parse_size"]

# Unit -> seconds. Order matters twice: components must appear largest first, and "ms"
# must be tried before "m" in the token pattern.
_DURATION_UNITS: dict[str, float] = {
    "w": 7 * 86400.0,
    "d": 86400.0,
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 0.001,
}
_DURATION_ORDER = list(_DURATION_UNITS)
_DURATION_TOKEN = re.compile(r"\s*(\d+(?:\.\d+)?)(ms|[wdhms])")

_SIZE_UNITS: dict[str, int] = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([A-Za-z]*)")


def _bad_duration(text: object) -> ValueError:
    return ValueError(f"bad duration {text!r}: use e.g. 30s, 15m, 4h, 90d")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: one or more NUMBER+UNIT parts, largest unit first.

    Units: w d h m s ms. ``"1h30m"`` -> 5400.0, ``"0.5s"`` -> 0.5, ``"0s"`` -> 0.0.
    Raises ValueError for empty text, bare numbers, signs, unknown or repeated units.
    """
    if not isinstance(text, str):
        raise _bad_duration(text)
    stripped = text.strip()
    if not stripped:
        raise _bad_duration(text)
    total = 0.0
    pos = 0
    last_rank = -1
    while pos < len(stripped):
        match = _DURATION_TOKEN.match(stripped, pos)
        if match is None:
            raise _bad_duration(text)
        number, unit = match.groups()
        rank = _DURATION_ORDER.index(unit)
        # "30m1h" and "1m1m" are typos more often than intent: refuse them.
        if rank <= last_rank:
            raise _bad_duration(text)
        last_rank = rank
        total += float(number) * _DURATION_UNITS[unit]
        pos = match.end()
    if not math.isfinite(total):
        raise _bad_duration(text)
    return total


def format_duration(seconds: float) -> str:
    """The shortest text ``parse_duration`` reads back as ``seconds`` (to the millisecond).

    5400 -> "1h30m", 45 -> "45s", 0.5 -> "0.5s", 86400 -> "1d", 0 -> "0s".
    Days are the largest unit: "90d" reads better than "12w6d".
    """
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"cannot format duration {seconds!r}")
    millis = round(seconds * 1000)
    parts: list[str] = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    if millis or not parts:
        whole, frac = divmod(millis, 1000)
        parts.append(f"{whole}.{frac:03d}".rstrip("0").rstrip(".") + "s")
    return "".join(parts)


def _bad_size(value: object) -> ValueError:
    return ValueError(
        f"bad size {value!r}: use e.g. 64MiB, 1GiB, 512KiB, 10MB or a number of bytes"
    )


def parse_size(value: str | int) -> int:
    """Bytes in ``value``: an int, a digit string, or NUMBER+UNIT.

    Units (case-insensitive): B; KB MB GB TB (powers of 1000); KiB MiB GiB TiB (powers
    of 1024). Fractions round down to whole bytes: "1.5KiB" -> 1536.
    Raises ValueError for negatives, unknown units, bools and anything else.
    """
    # bool is an int subclass; "max_channel_bytes: true" is a mistake, not 1 byte.
    if isinstance(value, bool):
        raise _bad_size(value)
    if isinstance(value, int):
        if value < 0:
            raise _bad_size(value)
        return value
    if not isinstance(value, str):
        raise _bad_size(value)
    match = _SIZE_RE.fullmatch(value.strip())
    if match is None:
        raise _bad_size(value)
    number: str = match[1]
    unit: str = match[2]
    if not unit:
        if "." in number:
            raise _bad_size(value)
        return int(number)
    if unit.lower() not in _SIZE_UNITS:
        raise _bad_size(value)
    factor: int = _SIZE_UNITS[unit.lower()]
    if "." in number:
        whole, _, frac = number.partition(".")
        # Exact arithmetic: float would turn 1.1GiB into an off-by-one byte count.
        scale: int = 10 ** len(frac)
        return int(whole) * factor + int(frac) * factor // scale
    return int(number) * factor


def format_size(size: int) -> str:
    """2147483648 -> "2GiB", 1536 -> "1.5KiB", 100 -> "100B" (for messages)."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}TiB"  # pragma: no cover - unreachable
