"""Which failed logins are written one by one, and what the rest become.

Owns the bound on what strangers can make the audit trail hold. A failure is written
as its own ``login_failed`` event while its source is under ``per_source`` a
``window`` and all sources together under ``total``; past either it is counted into a
summary instead: one per source network (/24 for IPv4, /64 for IPv6) and minute, at
most ``max_networks`` a minute (the rest share one summary for network ``*``). A
summary keeps the first and last time, the count, counts by reason, the top persons
and code ids tried, and the attempts itemised as (source, person, reason, count) rows
up to ``max_rows`` (the alert rules and ``attempts`` count from those rows, so a
summarised attempt weighs what a single one does).

Failures after a verified secret (the right code, refused for the target, the login,
the source, or a code no longer usable) are never summarised: they come from someone
holding a real code, and each is written whole.

While the disk is inside the reserve kept for real sessions, the adapter *holds*
summaries: they are merged into one, kept in memory, and written once there is room.

Pure: ``now`` is passed in; nothing here reads a clock, a file or the store. Memory is
bounded by the caps above and by ``FailureCounter``'s key limit.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from proxy.core.throttle import FailureCounter, ThrottleRule

MINUTE = 60.0
OTHER_NETWORK = "*"


@dataclass(frozen=True)
class SummaryLimits:
    per_source: int = 5  # failures a source may have written one by one per window
    total: int = 30  # failures all sources together may have written one by one per window
    window: float = MINUTE
    max_networks: int = 32  # summaries a minute; further networks share one
    max_rows: int = 64  # itemised (source, person, reason) rows per summary
    top: int = 20  # persons and code ids named in a summary


@dataclass(frozen=True)
class Attempt:
    """One failed login, as much of it as a summary keeps."""

    time: float
    source: str
    person: str | None
    reason: str
    code_id: str | None


def network_of(source: str) -> str:
    """The /24 (IPv4) or /64 (IPv6) a source address belongs to; the text itself when it
    is no address (it then counts as its own network)."""
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source[:64]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


@dataclass
class _Bucket:
    network: str
    minute: float
    first: float
    last: float
    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    persons: Counter[str] = field(default_factory=Counter)
    code_ids: Counter[str] = field(default_factory=Counter)
    rows: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    unitemised: int = 0

    def add(self, attempt: Attempt, limits: SummaryLimits) -> None:
        self.count += 1
        self.first = min(self.first, attempt.time)
        self.last = max(self.last, attempt.time)
        self.reasons[attempt.reason] += 1
        # Person and code id counters are bounded like the rows: a flood of distinct
        # names must not grow memory; names past the cap only count in ``count``.
        if attempt.person is not None:
            _bump(self.persons, attempt.person, limits.max_rows)
        if attempt.code_id is not None:
            _bump(self.code_ids, attempt.code_id, limits.max_rows)
        row = (attempt.source, attempt.person or "", attempt.reason)
        if row in self.rows or len(self.rows) < limits.max_rows:
            self.rows[row] += 1
        else:
            self.unitemised += 1

    def merge(self, other: _Bucket, limits: SummaryLimits) -> None:
        self.count += other.count
        self.first = min(self.first, other.first)
        self.last = max(self.last, other.last)
        self.reasons.update(other.reasons)
        for name, n in other.persons.items():
            _bump(self.persons, name, limits.max_rows, n)
        for code_id, n in other.code_ids.items():
            _bump(self.code_ids, code_id, limits.max_rows, n)
        for row, n in other.rows.items():
            if row in self.rows or len(self.rows) < limits.max_rows:
                self.rows[row] += n
            else:
                self.unitemised += n
        self.unitemised += other.unitemised

    def data(self, limits: SummaryLimits, **extra: Any) -> dict[str, Any]:
        return {
            "network": self.network,
            "first": self.first,
            "last": self.last,
            "count": self.count,
            "reasons": dict(sorted(self.reasons.items())),
            "persons": [[p, n] for p, n in _top(self.persons, limits.top)],
            "credential_ids": [[c, n] for c, n in _top(self.code_ids, limits.top)],
            "attempts": [[s, p or None, r, n] for (s, p, r), n in sorted(self.rows.items())],
            "unitemised": self.unitemised,
            **extra,
        }


def _bump(counter: Counter[str], key: str, cap: int, n: int = 1) -> None:
    if key in counter or len(counter) < cap:
        counter[key] += n


def _top(counter: Counter[str], n: int) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


class FailureSummariser:
    """Decides single-or-summarised for each failure and keeps the open summaries."""

    def __init__(self, limits: SummaryLimits | None = None) -> None:
        self.limits = limits = limits or SummaryLimits()
        window = limits.window
        self._per_source = FailureCounter(ThrottleRule(count=limits.per_source, window=window))
        self._total = FailureCounter(ThrottleRule(count=limits.total, window=window))
        self._open: dict[tuple[str, float], _Bucket] = {}
        self._held: _Bucket | None = None
        self.summarised = 0  # attempts counted into summaries since start

    def offer(self, attempt: Attempt, *, verified: bool = False, room: bool = True) -> bool:
        """True: write ``attempt`` as its own event. False: it was counted into a summary.

        ``room`` False (the adapter's word for "no single event may be written now":
        the disk is inside the reserve, or too many writes are queued) summarises
        everything but a verified failure."""
        if verified:
            return True
        if room:
            t = attempt.time
            # Both counters see the attempt only when it is written singly, so a
            # source that is summarised does not use up the others' share.
            source_ok = self._per_source.count(attempt.source, t) < self.limits.per_source
            total_ok = self._total.count("", t) < self.limits.total
            if source_ok and total_ok:
                self._per_source.record(attempt.source, t)
                self._total.record("", t)
                return True
        self._add(attempt)
        return False

    def _add(self, attempt: Attempt) -> None:
        minute = attempt.time - attempt.time % MINUTE
        network = network_of(attempt.source)
        key = (network, minute)
        bucket = self._open.get(key)
        if bucket is None:
            in_minute = sum(1 for _, m in self._open if m == minute)
            if in_minute >= self.limits.max_networks:
                key = (OTHER_NETWORK, minute)
                bucket = self._open.get(key)
            if bucket is None:
                bucket = self._open[key] = _Bucket(key[0], minute, attempt.time, attempt.time)
        bucket.add(attempt, self.limits)
        self.summarised += 1

    def due(self, now: float) -> list[dict[str, Any]]:
        """The summaries whose minute has ended, as event data, oldest first; forgotten."""
        keys = sorted((k for k in self._open if k[1] + MINUTE <= now), key=lambda k: k[1])
        return [self._open.pop(k).data(self.limits, minute=k[1]) for k in keys]

    def hold(self, now: float) -> None:
        """No room to write: merge the summaries whose minute has ended into the one held
        in memory (one bucket, whatever the flood's length)."""
        for key in sorted((k for k in self._open if k[1] + MINUTE <= now), key=lambda k: k[1]):
            bucket = self._open.pop(key)
            if self._held is None:
                self._held = _Bucket(OTHER_NETWORK, bucket.minute, bucket.first, bucket.last)
            self._held.merge(bucket, self.limits)

    def held(self) -> bool:
        return self._held is not None

    def release(self) -> dict[str, Any] | None:
        """The held summary as event data (``degraded``: written late, for lack of room)."""
        held, self._held = self._held, None
        if held is None:
            return None
        return held.data(self.limits, minute=held.minute, degraded=True)

    def drain(self) -> list[dict[str, Any]]:
        """Everything still open or held, as event data (the proxy is stopping)."""
        out = self.due(float("inf"))
        held = self.release()
        return out + ([held] if held is not None else [])
