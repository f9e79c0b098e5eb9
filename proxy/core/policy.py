"""Login and session rules: who may reach what, with which justification, until when.

Pure decisions over plain values; the SSH shell calls these and does the I/O. One
decision function per control, used by every entry point, so no path skips a check.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


@dataclass(frozen=True)
class ParsedUser:
    """The SSH username ``PERSON@TARGET`` or ``PERSON@LOGIN@TARGET``."""

    person: str
    login: str | None
    target: str


def parse_username(username: str) -> ParsedUser | None:
    """Split the SSH username; None when it is not one of the two shapes.

    Person names are case-insensitive (lowered); login and target are exact, like the
    config's keys. Each part is a plain name, so nothing odd reaches a log or a path.
    """
    parts = username.split("@")
    if len(parts) == 2:
        person, target = parts
        login: str | None = None
    elif len(parts) == 3:
        person, login, target = parts
    else:
        return None
    names = (person, target) if login is None else (person, login, target)
    if not all(_NAME.match(p) for p in names):
        return None
    return ParsedUser(person.lower(), login, target)


@dataclass(frozen=True)
class JustificationRule:
    min_length: int
    max_bytes: int
    pattern: re.Pattern[str] | None


def describe_rule(rule: JustificationRule) -> str:
    text = f"at least {rule.min_length} characters, at most {rule.max_bytes} bytes"
    if rule.pattern is not None:
        text += f", containing a match for {rule.pattern.pattern}"
    return text


def check_justification(text: str, rule: JustificationRule) -> str | None:
    """None when the justification is acceptable, else the machine reason."""
    if len(text.strip()) < rule.min_length:
        return "justification_too_short"
    if len(text.encode("utf-8", "surrogatepass")) > rule.max_bytes:
        return "justification_too_long"
    if rule.pattern is not None and not rule.pattern.search(text):
        return "justification_pattern"
    return None


def source_allowed(address: str, networks: Iterable[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == net.version and ip in net for net in networks)


def login_for(requested: str | None, default: str, allowed: Sequence[str]) -> str | None:
    """The login to use on the target, or None when the requested one is not allowed."""
    login = default if requested is None else requested
    return login if login in allowed else None


def session_deadline(now: float, *limits: float | None) -> float:
    """The smallest of the configured max-session limits, counted from login."""
    present = [limit for limit in limits if limit is not None and limit > 0]
    if not present:
        raise ValueError("at least one max-session limit is required")
    return now + min(present)


def warning_times(deadline: float, warn_before: Sequence[float], now: float) -> list[float]:
    """When to warn: ``deadline - w`` for each ``w`` still in the future, in order."""
    return sorted(deadline - w for w in set(warn_before) if deadline - w > now)


def failure_delay(failures: int, base: float = 1.0, cap: float = 8.0) -> float:
    """Growing delay after the n-th failed attempt in one connection (1, 2, 4, 8 s)."""
    if failures <= 0:
        return 0.0
    return float(min(cap, base * 2 ** (failures - 1)))
