"""Slowing down guessing across connections without ever locking anyone out.

Failed logins are counted per source address and per person over a sliding window.
Past the threshold every further attempt under that key waits, longer the more it
fails, up to a cap: break-glass access must still work for the rightful engineer while
someone else hammers the proxy, so the answer is delay and alert, never refusal.
Pure: the caller passes ``now`` and sleeps.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class ThrottleRule:
    count: int  # failures in the window before attempts are slowed
    window: float  # seconds
    base_delay: float = 1.0
    max_delay: float = 10.0


class FailureCounter:
    """Failures per key in a sliding window; memory bounded by ``max_keys``."""

    def __init__(self, rule: ThrottleRule, max_keys: int = 10_000) -> None:
        self.rule = rule
        self._max_keys = max_keys
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._seen.get(key)
        if times is None:
            return deque()
        horizon = now - self.rule.window
        while times and times[0] <= horizon:
            times.popleft()
        if not times:
            del self._seen[key]
        return times

    def record(self, key: str, now: float) -> int:
        """Count one failure; return the failures in the window, this one included."""
        times = self._recent(key, now)
        if key not in self._seen:
            self._seen[key] = times
        times.append(now)
        # Bounded memory under a flood of distinct keys: drop the least recently failed.
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_keys:
            self._seen.popitem(last=False)
        # One key cannot grow without bound either: only the count matters past the cap.
        while len(times) > self.rule.count * 4 + 16:
            times.popleft()
        return len(times)

    def count(self, key: str, now: float) -> int:
        return len(self._recent(key, now))

    def delay(self, key: str, now: float) -> float:
        """How long an attempt under ``key`` waits before it is even checked."""
        over = self.count(key, now) - self.rule.count
        if over < 0:
            return 0.0
        return float(min(self.rule.max_delay, self.rule.base_delay * 2**over))


class LoginThrottle:
    """The failure counters every connection's logins share: per source address and per
    person. Later attempts under a key that failed a lot wait; nobody is locked out."""

    def __init__(self, by_source: FailureCounter, by_person: FailureCounter) -> None:
        self.by_source = by_source
        self.by_person = by_person

    def delay(self, source: str, person: str | None, now: float) -> float:
        return max(self.delays(source, person, now))

    def delays(self, source: str, person: str | None, now: float) -> tuple[float, float]:
        """(the source's delay, the person's delay)."""
        by_person = self.by_person.delay(person, now) if person is not None else 0.0
        return self.by_source.delay(source, now), by_person

    def record(self, source: str, person: str | None, now: float) -> None:
        self.by_source.record(source, now)
        if person is not None:
            self.by_person.record(person, now)
