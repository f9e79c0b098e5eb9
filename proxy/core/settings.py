"""The settings the pure core decides with: plain frozen dataclasses, documented defaults.

Owns the login policy (``PolicyConfig``), a target as the login sees it
(``TargetConfig``) and the alert rules (``AlertRules``). They are part of the loaded
config (proxy.config.model re-exports them) but live here so that proxy.core.login,
proxy.core.answers and proxy.core.anomaly import nothing outside proxy.core. No I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from proxy.core.policy import JustificationRule

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# OpenSSH sends at most 1023 bytes per answer and cuts longer ones silently: a limit
# below that makes every cut answer too long, so it is refused instead of stored cut.
MAX_JUSTIFICATION_BYTES = 1022
DEFAULT_JUSTIFICATION_BYTES = 1000


def default_justification() -> JustificationRule:
    """At least 15 characters, at most 1000 bytes, no pattern."""
    return JustificationRule(min_length=15, max_bytes=DEFAULT_JUSTIFICATION_BYTES, pattern=None)


def all_sources() -> tuple[IPNetwork, ...]:
    return (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


@dataclass(frozen=True, kw_only=True)
class PolicyConfig:
    justification: JustificationRule = field(default_factory=default_justification)
    max_session: float = 3600.0
    warn_before: tuple[float, ...] = (300.0, 60.0)  # sorted, largest first
    idle_timeout: float | None = 900.0  # None: no idle limit
    allowed_sources: tuple[IPNetwork, ...] = field(default_factory=all_sources)
    login_timeout: float = 120.0
    # Before the prompts (version line, key exchange, user-auth request): a connection
    # that has not reached the prompts by then is cut. login_timeout is for typing.
    preauth_timeout: float = 10.0
    # Unauthenticated connections, all together and per source address. When all are
    # taken, the oldest connection of the source holding the most is cut for a newcomer.
    max_unauthenticated: int = 256
    max_unauthenticated_per_source: int = 64
    max_live_sessions: int = 200
    shutdown_grace: float = 10.0
    # Channels open at once in one session: room for a ControlMaster's multiplexed
    # clients and Ansible's parallel channels (sshd's own MaxSessions is 10 by default).
    max_channels: int = 32
    # Channels one session may open in a burst, then per second (opened and closed in a
    # loop, each would be a cast and three events): a multiplexed ssh or an Ansible run
    # opens a few per command.
    channel_open_burst: int = 100
    channel_open_rate: int = 10


@dataclass(frozen=True, kw_only=True)
class TargetConfig:
    name: str
    host: str  # an address, or a name resolved at each connect (proxy.ssh.upstream)
    port: int = 22
    login: str
    logins: tuple[str, ...] = ()  # empty means (login,); always contains login after init
    identity_file: Path
    host_keys: tuple[str, ...]  # "type base64" lines
    max_session: float | None = None
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.login not in self.logins:
            object.__setattr__(self, "logins", (self.login, *self.logins))


@dataclass(frozen=True, kw_only=True)
class RateRule:
    count: int
    window: float


@dataclass(frozen=True, kw_only=True)
class QuietHours:
    start: str  # "HH:MM"
    end: str
    tz: str


DEFAULT_RULES: dict[str, RateRule] = {
    "max_sessions_per_person": RateRule(count=3, window=3600.0),
    "max_sessions_total": RateRule(count=10, window=3600.0),
    "failed_logins_per_source": RateRule(count=5, window=600.0),
    "failed_logins_per_person": RateRule(count=5, window=600.0),
}


@dataclass(frozen=True, kw_only=True)
class AlertRules:
    max_sessions_per_person: RateRule | None = DEFAULT_RULES["max_sessions_per_person"]
    max_sessions_total: RateRule | None = DEFAULT_RULES["max_sessions_total"]
    failed_logins_per_source: RateRule | None = DEFAULT_RULES["failed_logins_per_source"]
    failed_logins_per_person: RateRule | None = DEFAULT_RULES["failed_logins_per_person"]
    quiet_hours: QuietHours | None = None
