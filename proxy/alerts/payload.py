"""The alert document: one JSON object, the same for every sink and every attempt.

Owns its fields (the README's "Alerts"): ``alert_id`` (stable: receivers drop repeats by
it, since delivery is at-least-once), ``rule``, ``time`` (RFC 3339 UTC), ``session_id``,
``person``, ``source``, ``target``, ``login``, ``justification`` (verbatim: JSON escapes
it), ``credential_id``, ``detail``, ``proxy`` (this host's name). Never carries a code,
a key or a hash. No I/O apart from reading the host name once.
"""

from __future__ import annotations

import datetime as dt
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from proxy.core import events
from proxy.core.anomaly import DRILL, Firing, alert_id
from proxy.store.base import NewAlert

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class AlertContext:
    """Who, where and why, as far as known for the event that raised the alert."""

    session_id: str | None = None
    person: str | None = None
    source: str | None = None
    target: str | None = None
    login: str | None = None
    justification: str | None = None
    credential_id: str | None = None

    @classmethod
    def of_event(cls, event: events.Event, session_id: str | None = None) -> AlertContext:
        """Who and where, from a ``session_start`` or ``login_failed`` event (any other
        event says only its session)."""
        if isinstance(event, events.SessionStart | events.LoginFailed):
            return cls(
                session_id=session_id,
                person=event.person,
                source=event.source,
                target=event.target,
                login=event.login,
                justification=event.justification,
                credential_id=event.credential_id,
            )
        return cls(session_id=session_id)


@cache
def hostname() -> str:
    return socket.gethostname()


def rfc3339(t: float) -> str:
    stamp = dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def build(
    firing: Firing,
    ctx: AlertContext,
    now: float,
    *,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    proxy: str | None = None,
) -> NewAlert:
    aid = alert_id(now, random_bytes(5))
    payload: dict[str, Any] = {
        "alert_id": aid,
        "v": SCHEMA_VERSION,
        "rule": firing.rule,
        "time": rfc3339(now),
        "session_id": ctx.session_id,
        "person": ctx.person,
        "source": ctx.source,
        "target": ctx.target,
        "login": ctx.login,
        "justification": ctx.justification,
        "credential_id": ctx.credential_id,
        "detail": firing.detail,
        "proxy": proxy if proxy is not None else hostname(),
    }
    if firing.rule == DRILL:
        payload["test"] = True
    return NewAlert(
        alert_id=aid,
        time=now,
        rule=firing.rule,
        payload=payload,
        session_id=ctx.session_id,
        subject=firing.subject,
        flag=firing.flag and ctx.session_id is not None,
    )
