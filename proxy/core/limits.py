"""Bounds on what a logged-in user controls, and what the proxy spends on it.

Owns the numbers and the small pure helpers that keep one user's requests from costing
everyone else: terminal sizes the proxy itself uses (the command extractor's screen,
the cast's header and ``"r"`` events) and those it forwards to the target, the size of
one audit event's data, the pace of window changes and of channel opens, and the tally of
repeated refusals.
Pure: no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from proxy.core.chain import canonical
from proxy.core.text import truncate

# The proxy's own view of a terminal (the command extractor's screen, the cast) is at
# most this big. The screen's work and memory grow with its area: a 16,000,000-column
# terminal blocked the event loop for 33 s, and 4,294,967,295 lines ran out of memory.
# 512x256 is more than a 4K monitor with a small font shows; a wider terminal's lines
# wrap on the extractor's screen, which joins soft-wrapped rows anyway.
MAX_COLUMNS = 512
MAX_LINES = 256
# What sshd can apply: struct winsize holds unsigned shorts, so the target gets what the
# client asked up to this (sshd would otherwise truncate the value modulo 65536).
TARGET_MAX_SIZE = 0xFFFF
# A terminal type longer than any terminfo name is cut where the proxy records it.
MAX_TERM_TYPE = 64

# One audit event's data, as stored (canonical JSON, UTF-8 bytes). Past it, long texts
# and lists are cut and the event says how big the whole was and its SHA-256.
MAX_EVENT_DATA = 16 * 1024
# A refusal's detail (an unknown subsystem's name, a forwarding address) is cut here.
MAX_DETAIL = 256
# Refused environment variables named in one event; the rest are counted.
MAX_ENV_NAMES = 32
# Environment variables passed to the target: locale ones only (the target's shell picks
# its own everything else), and at most this many (glibc has 13 LC_ categories).
ENV_ALLOWED = re.compile(r"(LANG|LC_[A-Z_]+)\Z")
MAX_ENV_KEPT = 32

# Window changes take effect at most this often per channel; the last size asked in
# between wins (10,000 of them stalled every other session for 1-2 s).
RESIZE_INTERVAL = 0.1

# A signal name as RFC 4254 defines them ("INT", "TERM", "USR1"): anything else is refused.
MAX_SIGNAL_NAME = 16


def clamp_size(columns: int, lines: int, fallback: tuple[int, int] = (80, 24)) -> tuple[int, int]:
    """The terminal size the proxy itself uses: zero (unknown) becomes ``fallback``."""
    cols = columns if columns > 0 else fallback[0]
    rows = lines if lines > 0 else fallback[1]
    return min(cols, MAX_COLUMNS), min(rows, MAX_LINES)


def target_size(size: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """What the target gets: the client's numbers, within what sshd can apply."""
    width, height, pixwidth, pixheight = size
    return (
        min(max(width, 0), TARGET_MAX_SIZE),
        min(max(height, 0), TARGET_MAX_SIZE),
        min(max(pixwidth, 0), TARGET_MAX_SIZE),
        min(max(pixheight, 0), TARGET_MAX_SIZE),
    )


def env_refusal_detail(names: list[str], count: int | None = None) -> dict[str, Any]:
    """The refused variables' names (at most MAX_ENV_NAMES, each cut) and their count
    (``count``, when more were refused than ``names`` holds)."""
    shown = [truncate(n, 64) for n in names[:MAX_ENV_NAMES]]
    detail: dict[str, Any] = {"detail": ",".join(shown)}
    total = len(names) if count is None else count
    if total > len(shown):
        detail["count"] = total
    return detail


class EnvRequests:
    """The environment variables one channel asked for, as they come: the allowed ones
    kept (the first MAX_ENV_KEPT), the others counted and the first MAX_ENV_NAMES of
    them named. Nothing grows with the count: 10,000 of them were a 1 MB dict per
    channel, and a log line formatted for each."""

    def __init__(self) -> None:
        self.kept: dict[str, bytes] = {}
        self.refused_names: list[str] = []
        self.refused = 0

    def add(self, name: bytes, value: bytes) -> None:
        text = name.decode("utf-8", "backslashreplace")
        if ENV_ALLOWED.match(text) and (text in self.kept or len(self.kept) < MAX_ENV_KEPT):
            self.kept[text] = value
            return
        self.refused += 1
        if len(self.refused_names) < MAX_ENV_NAMES:
            self.refused_names.append(truncate(text, 64))

    def refusal(self) -> dict[str, Any] | None:
        """The ``request_refused`` event's detail, or None when none was refused."""
        if not self.refused:
            return None
        return env_refusal_detail(sorted(self.refused_names), self.refused)


def bound_data(
    data: Mapping[str, Any], limit: int = MAX_EVENT_DATA
) -> tuple[Mapping[str, Any], str]:
    """``data`` and its canonical JSON, as stored: ``data`` itself when the JSON fits in
    ``limit`` bytes; otherwise a copy with long texts and lists cut, plus ``truncated``:
    the size and SHA-256 of the whole (the keys stay, so every reader still finds them)."""
    text = canonical(data)
    if len(text) * 4 <= limit or len(text.encode()) <= limit:
        return data, text
    whole = text.encode()
    mark = {"bytes": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
    keep = limit // 2
    while keep >= 1:
        out = {str(k): _shrink(v, keep) for k, v in list(data.items())[:64]}
        out["truncated"] = mark
        text = canonical(out)
        if len(text.encode()) <= limit:
            return out, text
        keep //= 2
    out = {"truncated": mark}
    return out, canonical(out)


def _shrink(value: Any, keep: int) -> Any:
    if isinstance(value, str):
        if len(value) > keep:
            value = truncate(value, keep)
        # Characters, not bytes: a cut never splits one; 4 bytes each at worst.
        return truncate(value, max(1, keep // 4)) if len(value.encode()) > keep else value
    if isinstance(value, list | tuple):
        return [_shrink(v, keep // 2) for v in list(value)[: max(1, keep // 64)]]
    if isinstance(value, Mapping):
        pairs = list(value.items())[: max(1, keep // 64)]
        return {truncate(str(k), 64): _shrink(v, keep // 2) for k, v in pairs}
    return value


class OpenRate:
    """A token bucket for one session's channel opens: ``burst`` at once, then
    ``per_second`` more each second. A limit on *open* channels alone lets a user open
    and close channels in a loop (a cast and three events each, ~35 a second); this
    bounds how many a session starts, and leaves ControlMaster clients and Ansible
    (a few channels per task) their pace."""

    def __init__(self, burst: int, per_second: float) -> None:
        self.burst = burst
        self.per_second = per_second
        self._tokens = float(burst)
        self._at: float | None = None

    def allow(self, now: float) -> bool:
        """One open at ``now`` (monotonic seconds): True when it is within the rate."""
        if self._at is not None:
            elapsed = max(0.0, now - self._at)
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.per_second)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class RefusalTally:
    """Repeated refusals in one session, written as one event with counts.

    The first ``FULL_PER_KIND`` refusals of each kind are written in full (their detail
    is the evidence); the rest are counted, and ``drain`` hands the counts over once (at
    the session's end, or when the caller writes a summary while a flood goes on).
    """

    FULL_PER_KIND = 10
    MAX_KINDS = 64  # kinds are names the client picks: bounded too

    def __init__(self) -> None:
        self._written: dict[str, int] = {}
        self._counts: dict[str, int] = {}

    def note(self, kind: str, full: int = FULL_PER_KIND) -> bool:
        """Count one refusal; True when it is to be written out in full (the first
        ``full`` of its kind)."""
        written = self._written.get(kind)
        if written is None and len(self._written) >= self.MAX_KINDS:
            kind, written = "other", full
        if written is None or written < full:
            self._written[kind] = (written or 0) + 1
            return True
        self._counts[kind] = self._counts.get(kind, 0) + 1
        return False

    def drain(self) -> dict[str, int]:
        counts, self._counts = self._counts, {}
        return counts
