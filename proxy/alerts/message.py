"""What a person reads in an alert: a title, who, where, when and why, and what to run.

Owns the human side of an alert for the chat, paging and e-mail sinks: the title of each
rule, the labelled fields taken from the payload, the severity a rule maps to, and the
one-line rendering of untrusted text (control characters escaped, length capped) that
keeps a justification from breaking a layout. Pure: no I/O, nothing sent. Every value
taken from the payload is untrusted (a person's name and a justification are typed by
whoever logs in); only titles and labels are this module's own text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from proxy.core.anomaly import DRILL, SESSION_START
from proxy.core.text import escape

Severity = Literal["critical", "error", "warning", "info"]

TITLES: dict[str, str] = {
    "session_start": "Break-glass session started",
    "max_sessions_per_person": "Too many break-glass sessions by one person",
    "max_sessions_total": "Too many break-glass sessions",
    "failed_logins_per_source": "Failed break-glass logins from one source",
    "failed_logins_per_person": "Failed break-glass logins for one person",
    "quiet_hours": "Break-glass session outside the usual hours",
    "not_allowed": "Break-glass attempt at something not allowed",
    "unusable_code": "A revoked, expired or used-up break-glass code was tried",
    "time_limit": "Break-glass session closed at its time limit",
    "idle_timeout": "Break-glass session closed for silence",
    "audit_write_failed": "The break-glass audit trail could not be written",
    "store_write_failed": "The break-glass audit store cannot be written",
    "disk_space": "Disk space low on the break-glass proxy",
    "at_capacity": "Break-glass login refused at the session limit",
    "operator_kill": "Break-glass session killed by an operator",
    "operator_extend": "Break-glass session extended by an operator",
    "extraction_failed": "Break-glass commands or files no longer indexed (recording goes on)",
    "config_reload_failed": "Break-glass config reload refused",
    DRILL: "Break-glass alert drill (a test)",
}
_CRITICAL = frozenset({"store_write_failed", "audit_write_failed"})
_ROUTINE = frozenset({SESSION_START})


def severity(rule: str) -> Severity:
    """The audit trail failing is critical; a session start is a warning (it is what
    break-glass is for, and someone must look); a drill is information; every anomaly
    is an error."""
    if rule in _CRITICAL:
        return "critical"
    if rule == DRILL:
        return "info"
    if rule in _ROUTINE:
        return "warning"
    return "error"


def title(rule: str) -> str:
    return TITLES.get(rule) or f"Break-glass alert: {one_line(rule, 60)}"


def one_line(text: str, limit: int) -> str:
    """``text`` on one line with every control, bidi and invisible character escaped
    (so CR/LF, ANSI and a right-to-left override show as text), at most ``limit``
    characters."""
    shown = escape(text)
    return shown if len(shown) <= limit else shown[: max(0, limit - 1)] + "\u2026"


@dataclass(frozen=True)
class Summary:
    """One alert as read by a person. ``fields`` are (label, raw value): labels are
    ours, values untrusted and not yet escaped (each sink renders them its own way)."""

    rule: str
    title: str
    severity: Severity
    alert_id: str
    fields: tuple[tuple[str, str], ...]
    session_id: str | None
    person: str
    target: str
    test: bool

    @property
    def show_command(self) -> str | None:
        return None if not self.session_id else f"breakglass show {self.session_id}"

    def headline(self, clean: Callable[[str], str]) -> str:
        """The title with who and where: the subject, PagerDuty's summary."""
        who = f": {clean(self.person)}" if self.person else ""
        where = f" on {clean(self.target)}" if self.target else ""
        return f"{self.title}{who}{where}"


def _text(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    return "" if value is None else str(value)


def summarize(payload: Mapping[str, Any]) -> Summary:
    rule = _text(payload, "rule")
    person, target, login = (_text(payload, k) for k in ("person", "target", "login"))
    where = f"{login}@{target}" if login and target else target
    justification = _text(payload, "justification")
    candidates = (
        ("Who", person),
        ("Where", where),
        ("From", _text(payload, "source")),
        ("When", _text(payload, "time")),
        ("Why", f"\u201c{justification}\u201d" if justification else ""),
        ("Session", _text(payload, "session_id")),
        ("Code", _text(payload, "credential_id")),
        ("Detail", _text(payload, "detail")),
        ("Proxy", _text(payload, "proxy")),
        ("Alert id", _text(payload, "alert_id")),
    )
    return Summary(
        rule=rule,
        title=title(rule),
        severity=severity(rule),
        alert_id=_text(payload, "alert_id"),
        fields=tuple((label, value) for label, value in candidates if value),
        session_id=_text(payload, "session_id") or None,
        person=person,
        target=target,
        test=payload.get("test") is True,
    )


def text_body(summary: Summary, clean: Callable[[str], str]) -> str:
    """A plain-text rendering: the title, one ``Label: value`` line per field, the
    command to run. ``clean`` renders each untrusted value (verbatim for e-mail)."""
    width = max((len(label) for label, _ in summary.fields), default=0) + 2
    lines = [summary.title, ""]
    lines += [f"{label + ':':<{width}}{clean(value)}" for label, value in summary.fields]
    if summary.show_command:
        lines += ["", f"The whole session, on the proxy: {summary.show_command}"]
    lines += [
        "",
        "Delivery is at least once: a repeat carries the same alert id.",
    ]
    return "\n".join(lines) + "\n"
