"""What a login tells the engineer: the words of proxy/core/login.py's answers.

Until a code's secret has verified, every refusal gets the same neutral answer (nothing
here is said), so the client cannot learn whether the person, the code or the target
was wrong. Once it has verified, whoever typed it holds the code, and the answer says
what is wrong: an unknown target (with the targets the code allows, only when it is
usable now), a login the target does not allow, a revoked (when, never why), expired,
burnt or spent code, a target the code does not allow, someone else's code. An address
outside ``policy.allowed_sources`` is told so whatever was typed.

Owns: those texts, the justification rule as shown in the first challenge, the notice
that a login is slowed, and the session notice sent as the authentication banner.

Must never: do I/O or read the clock (times are passed in), say why a code was revoked,
name the person a code belongs to, or put untrusted text in a message unescaped.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from proxy.core.credentials import (
    Credential,
    credential_state,
    target_allowed,
    validate_person,
)
from proxy.core.policy import JustificationRule, ParsedUser, describe_rule
from proxy.core.settings import TargetConfig
from proxy.core.text import escape
from proxy.core.units import format_duration

USAGE = "log in as PERSON@TARGET or PERSON@LOGIN@TARGET"


def when(t: float) -> str:
    """A moment as the engineer reads it: ``2026-12-03 18:05 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def clock(t: float) -> str:
    """A moment within the session's hours: ``18:05 UTC``."""
    return time.strftime("%H:%M UTC", time.gmtime(t))


def justification_rule(rule: JustificationRule) -> str:
    """The rule as the first challenge's instruction states it."""
    return f"The justification must have {describe_rule(rule)}."


def usable_targets(
    cred: Credential, person: str | None, targets: Mapping[str, TargetConfig], now: float
) -> list[str]:
    """The configured targets ``person`` may reach with ``cred`` now; empty when the code
    is not theirs or not usable now (then no list is shown)."""
    if person != cred.person or credential_state(cred, now) not in ("active", "sealed"):
        return []
    return sorted(name for name in targets if target_allowed(cred.targets, name))


def _allows(names: list[str]) -> str:
    return f"; this code allows: {', '.join(names)}" if names else ""


def refusal(
    reason: str,
    *,
    username: str,
    parsed: ParsedUser | None,
    cred: Credential | None,
    verified: bool,
    targets: Mapping[str, TargetConfig],
    source: str,
    now: float,
) -> str:
    """What the client is told of a refused attempt; "" is the neutral answer."""
    if reason == "source_not_allowed":
        return f"address not allowed: {escape(source)} may not use break-glass access"
    if not verified or cred is None:
        return ""
    if parsed is None:
        name = username.lower()
        if not validate_person(name):
            return f"the user name is not one the proxy knows: {USAGE}"
        # "ssh alice@proxy": the target was forgotten.
        hint = f"no target in the user name: log in as {escape(name[:64])}@TARGET"
        return hint + _allows(usable_targets(cred, name, targets, now))
    return _about_the_code(reason, parsed, cred, targets, now)


def _about_the_code(
    reason: str,
    parsed: ParsedUser,
    cred: Credential,
    targets: Mapping[str, TargetConfig],
    now: float,
) -> str:
    target = escape(parsed.target)
    if reason == "unknown_target":
        return f"there is no target named {target}" + _allows(
            usable_targets(cred, parsed.person, targets, now)
        )
    if reason == "target_not_allowed":
        return f"this code does not allow {target}" + _allows(
            usable_targets(cred, parsed.person, targets, now)
        )
    if reason == "login_not_allowed":
        allowed = targets[parsed.target].logins if parsed.target in targets else ()
        return f"login {escape(parsed.login or '')} is not allowed on {target}" + (
            f"; allowed: {', '.join(allowed)}" if allowed else ""
        )
    if reason == "wrong_person":
        return "this code was issued to someone else"
    if reason == "revoked":
        return f"this code was revoked at {when(cred.revoked_at or now)}"
    if reason == "expired":
        return f"this code expired unused at {when(cred.valid_until)}"
    if reason == "burnt":
        return f"this code's window ended at {when((cred.activated_at or now) + cred.window)}"
    if reason == "spent":
        return f"this code has been used for all of its {cred.max_uses} logins"
    return ""


def slowed(wait: float, by_source: bool, person: str | None) -> str:
    """Why a login waits before it is checked (the throttles)."""
    cause = "from this address" if by_source or person is None else f"for {person}"
    return f"login slowed by {wait:g} s after failed attempts {cause}"


def session_notice(session_id: str, deadline: float) -> str:
    """The authentication banner of a session that starts."""
    return f"session {session_id} is recorded; it ends at {clock(deadline)}."


def extended_notice(by: float, deadline: float) -> str:
    return (
        f"an operator extended this session by {format_duration(by)}; "
        f"it now ends at {clock(deadline)}"
    )
