"""Failed login attempts, for the auditor: ``breakglass attempts`` and the report's summary.

Owns reading ``login_failed`` events into ``Attempt`` rows, filtering them (source
address or network, person, reason), counting them by source, person and reason, and
their human table. A flood the proxy summarised into one ``login_failures_summarised``
event counts as the attempts it stands for: a row per itemised (source, person, reason,
count), and one for the network with what was not itemised. Every untrusted string
(the username typed, the client's version) is escaped before it reaches a terminal;
JSON carries it verbatim.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from proxy.audit.views import rfc3339
from proxy.core import events
from proxy.core.text import escape
from proxy.store.base import StoredEvent

SUMMARY_TYPE = events.LoginFailuresSummarised.TYPE
FAILED_TYPES = (events.LoginFailed.TYPE, SUMMARY_TYPE)
NOT_ITEMISED = "not_itemised"
NOBODY = "-"  # no person: the username did not parse


@dataclass(frozen=True)
class Attempt:
    seq: int
    time: float
    source: str
    person: str | None
    target: str | None
    login: str | None
    username: str
    reason: str
    client_version: str
    credential_id: str | None
    count: int = 1  # attempts this event stands for (a summarised flood: more)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def attempt_of(e: StoredEvent) -> Attempt:
    d = e.data
    count = d.get("count")
    return Attempt(
        seq=e.seq,
        time=e.time,
        source=str(d.get("source") or "?"),
        person=_text(d.get("person")),
        target=_text(d.get("target")),
        login=_text(d.get("login")),
        username=str(d.get("username") or ""),
        reason=str(d.get("reason") or "?"),
        client_version=str(d.get("client_version") or ""),
        credential_id=_text(d.get("credential_id")),
        count=count if isinstance(count, int) and not isinstance(count, bool) and count > 0 else 1,
    )


@dataclass(frozen=True)
class AttemptFilter:
    source: str | None = None  # an address, or a network (10.0.0.0/8)
    person: str | None = None
    reason: str | None = None

    def matches(self, a: Attempt) -> bool:
        if self.person is not None and (a.person or "").lower() != self.person.lower():
            return False
        if self.reason is not None and a.reason != self.reason:
            return False
        return self.source is None or _in_source(a.source, self.source)


def _in_source(address: str, wanted: str) -> bool:
    if address == wanted:
        return True
    try:
        # An address, or a summary's network (10.1.2.0/24) inside the one asked for.
        network = ipaddress.ip_network(address, strict=False)
        return network.subnet_of(ipaddress.ip_network(wanted, strict=False))  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return False


def source_filter_problem(text: str) -> str | None:
    """Why ``--source`` cannot match anything, or None."""
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return f"{text!r} is neither an address nor a network (10.0.0.0/8)"
    return None


def _positive(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def summarised(e: StoredEvent) -> Iterator[Attempt]:
    """The attempts a summary event stands for."""
    d = e.data
    t = float(d["last"]) if isinstance(d.get("last"), int | float) else e.time
    itemised = 0
    for row in d.get("attempts") or ():
        if not (isinstance(row, list | tuple) and len(row) == 4):
            continue
        source, person, reason, count = row
        if not _positive(count):
            continue
        itemised += count
        yield Attempt(
            e.seq,
            t,
            str(source),
            _text(person) or None,
            None,
            None,
            "",
            str(reason),
            "",
            None,
            count,
        )
    rest = _positive(d.get("count")) - itemised
    if rest > 0:
        network = str(d.get("network") or "?")
        yield Attempt(e.seq, t, network, None, None, None, "", NOT_ITEMISED, "", None, rest)


def attempts(events: Iterable[StoredEvent], flt: AttemptFilter) -> list[Attempt]:
    out: list[Attempt] = []
    for e in events:
        found = summarised(e) if e.type == SUMMARY_TYPE else (attempt_of(e),)
        out += [a for a in found if flt.matches(a)]
    return out


def summary(items: Iterable[Attempt]) -> dict[str, Any]:
    """Attempts counted by source, person and reason, most first."""
    by_source: Counter[str] = Counter()
    by_person: Counter[str] = Counter()
    by_reason: Counter[str] = Counter()
    total = 0
    for a in items:
        total += a.count
        by_source[a.source] += a.count
        by_person[a.person or NOBODY] += a.count
        by_reason[a.reason] += a.count
    return {
        "total": total,
        "by_source": _ranked(by_source),
        "by_person": _ranked(by_person),
        "by_reason": _ranked(by_reason),
    }


def _ranked(counts: Counter[str]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def attempt_json(a: Attempt) -> dict[str, Any]:
    return {
        "seq": a.seq,
        "time": rfc3339(a.time),
        "source": a.source,
        "person": a.person,
        "target": a.target,
        "login": a.login,
        "username": a.username,
        "reason": a.reason,
        "client_version": a.client_version,
        "credential_id": a.credential_id,
        "count": a.count,
    }


def attempts_json(items: Sequence[Attempt]) -> dict[str, Any]:
    return {"attempts": [attempt_json(a) for a in items], "summary": summary(items)}


def _cell(text: str | None, width: int) -> str:
    shown = escape(text or NOBODY)
    return f"{shown if len(shown) <= width else shown[: width - 1] + '…':{width}}"


def attempts_table_lines(items: Sequence[Attempt]) -> Iterator[str]:
    yield (
        f"{'TIME (UTC)':24}  {'SOURCE':15}  {'PERSON':12}  {'TARGET':12}  "
        f"{'REASON':24}  {'COUNT':>5}  USERNAME"
    )
    for a in items:
        yield (
            f"{rfc3339(a.time):24}  {_cell(a.source, 15)}  {_cell(a.person, 12)}  "
            f"{_cell(a.target, 12)}  {_cell(a.reason, 24)}  {a.count:>5}  "
            f"{escape(a.username[:80])}"
        )
    if not items:
        yield "(no failed attempts)"
        return
    sm = summary(items)
    yield ""
    yield f"{sm['total']} failed attempt(s)"
    for title, key in (("source", "by_source"), ("person", "by_person"), ("reason", "by_reason")):
        counts = ", ".join(f"{escape(k)} {v}" for k, v in list(sm[key].items())[:10])
        more = len(sm[key]) - 10
        yield f"  by {title}: {counts}{f', and {more} more' if more > 0 else ''}"
