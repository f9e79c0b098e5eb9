"""The one exception tree of breakglass.

Every refusal carries a machine-readable ``reason`` (it lands in the audit log) and a
human sentence (it may be shown to the person). Messages never contain secrets: no
codes, no key material, no hashes.
"""

from __future__ import annotations


class BreakglassError(Exception):
    """Base of every error this package raises on purpose."""

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigError(BreakglassError):
    """The configuration file is wrong. ``problems`` lists every problem found."""

    reason = "config_invalid"

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class ConfigProblem:
    """One problem in a config file, located at ``file:line`` with a hint."""

    def __init__(self, file: str, line: int | None, message: str, hint: str = "") -> None:
        self.file = file
        self.line = line
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        text = f"{where}: {self.message}"
        if self.hint:
            text += f" (hint: {self.hint})"
        return text

    def __repr__(self) -> str:
        return f"ConfigProblem({self!s})"


class UsageError(BreakglassError):
    """The command line is wrong (exit status 2)."""

    reason = "usage"


class StoreError(BreakglassError):
    """The audit store could not be read or written. Access fails closed on this."""

    reason = "store_unavailable"


class RecordingError(BreakglassError):
    """A recording could not be written. The channel is closed (fail closed)."""

    reason = "recording_failed"


class EventDataError(BreakglassError, ValueError):
    """Event data that does not match its type in the catalogue (proxy/core/events.py)."""

    reason = "event_malformed"


class NotFound(BreakglassError):
    """A session, channel or credential asked for by id does not exist."""

    reason = "not_found"


class UpstreamError(BreakglassError):
    """The target could not be reached. ``reason`` says which way it failed:
    ``target_unresolved`` (its host name does not resolve now), ``target_unreachable``,
    ``host_key_mismatch``, ``upstream_auth_refused``, ``upstream_timeout``,
    ``upstream_error``."""

    reason = "upstream_error"
