"""The configuration as data: frozen dataclasses with the documented defaults.

Owns the shape of a loaded config (config/example-full.yaml shows every key);
proxy.config.load fills it from YAML and proxy.config re-exports the public names. The
parts the pure core decides with (PolicyConfig, TargetConfig, AlertRules) are
proxy.core.settings', and JustificationRule is proxy.core.policy's, so the rule loaded is
the rule checked. Plain data: no I/O, no validation beyond keeping ``logins`` consistent
with ``login``. Paths are absolute once loaded.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# One rule type for config and policy: proxy.core.policy checks what this file loads.
from proxy.core.policy import JustificationRule

# The settings the pure core decides with live in proxy.core.settings (the core imports
# nothing above it); they are part of the config's shape, so they are re-exported here.
from proxy.core.settings import (
    DEFAULT_JUSTIFICATION_BYTES,
    DEFAULT_RULES,
    MAX_JUSTIFICATION_BYTES,
    AlertRules,
    IPNetwork,
    PolicyConfig,
    QuietHours,
    RateRule,
    TargetConfig,
    all_sources,
    default_justification,
)

__all__ = [
    "DEFAULT_JUSTIFICATION_BYTES",
    "DEFAULT_RULES",
    "DEFAULT_SINK_TIMEOUT",
    "FLEET_NODE_NAME",
    "MAX_JUSTIFICATION_BYTES",
    "AlertRules",
    "AlertsConfig",
    "Config",
    "FleetConfig",
    "IPNetwork",
    "JustificationRule",
    "ListenConfig",
    "PolicyConfig",
    "QuietHours",
    "RateRule",
    "RecordingConfig",
    "SinkConfig",
    "SinkType",
    "SmtpTls",
    "StorageConfig",
    "SyslogEvents",
    "TargetConfig",
    "all_sources",
    "default_justification",
]

# A fleet node's name: it keys the node's events in the ledger and prefixes its session
# ids (NODE/SESSION), so it stays short, lower-case and free of '/'.
FLEET_NODE_NAME = r"[a-z0-9][a-z0-9-]{0,62}"

SinkType = Literal["webhook", "syslog", "command", "slack", "teams", "pagerduty", "jsm", "email"]
SmtpTls = Literal["starttls", "implicit", "none"]
SyslogEvents = Literal["alerts", "all"]
DEFAULT_SINK_TIMEOUT = 10.0


@dataclass(frozen=True, kw_only=True)
class ListenConfig:
    host: str = "127.0.0.1"
    port: int = 2222
    host_key: Path  # may not exist yet: generated on first start
    # Also offer chacha20-poly1305, for clients without AES-GCM (Dropbear's dbclient).
    # Off by default: the client's preference wins, and OpenSSH prefers chacha20, so
    # turning it on moves OpenSSH clients to it too, at a higher CPU cost per byte.
    chacha20: bool = False


@dataclass(frozen=True, kw_only=True)
class StorageConfig:
    database: Path
    recordings: Path
    # Below min_free on the store's or the recordings' filesystem new sessions are
    # refused (a session that cannot be recorded must not start); below warn_free the
    # proxy warns, like auditd's space_left.
    min_free: int = 256 * 1024 * 1024
    warn_free: int = 1024 * 1024 * 1024
    # Above min_free, this much more is kept for authenticated sessions: below
    # min_free + failure_reserve failed logins are only counted in memory (and written
    # as one summary when there is room), so strangers cannot use up the last space.
    failure_reserve: int = 64 * 1024 * 1024
    # Casts of sessions that ended longer ago than this are deleted by ``breakglass
    # prune`` (the chain keeps their hashes and records the pruning); None: kept forever.
    retention: float | None = None


@dataclass(frozen=True, kw_only=True)
class RecordingConfig:
    input: bool = False
    max_channel_bytes: int = 64 * 1024 * 1024
    # All casts of one session together, on disk: past it the session is closed rather
    # than recorded partially (a `yes` loop must not fill the disk under everyone else).
    max_session_bytes: int = 1024 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class SinkConfig:
    """One entry of ``alerts.sinks``; each type uses the fields its docs name."""

    type: SinkType
    url: str | None = None  # webhook; pagerduty / jsm: the endpoint (None: the service's)
    secret_file: Path | None = None  # webhook's HMAC key
    url_file: Path | None = None  # slack / teams: the webhook URL is a secret, kept in a file
    key_file: Path | None = None  # pagerduty's routing_key_file, jsm's api_key_file
    ca_file: Path | None = None  # a CA trusted on top of the system's (a private CA, tests)
    address: str | None = None  # syslog
    events: SyslogEvents = "alerts"  # syslog: "all" streams every audit event by cursor
    argv: tuple[str, ...] = ()  # command
    host: str | None = None  # email: the SMTP server
    port: int | None = None  # email: None is 587 (starttls, none) or 465 (implicit)
    tls: SmtpTls = "starttls"
    auth_file: Path | None = None  # email: "USER" and "PASSWORD" lines
    mail_from: str | None = None
    mail_to: tuple[str, ...] = ()
    timeout: float = DEFAULT_SINK_TIMEOUT


@dataclass(frozen=True, kw_only=True)
class AlertsConfig:
    sinks: tuple[SinkConfig, ...] = ()
    rules: AlertRules = field(default_factory=AlertRules)


@dataclass(frozen=True)
class FleetConfig:
    """The ``fleet:`` section: this node's name and the PostgreSQL ledger it ships to.

    ``postgres`` is a libpq URI or key=value DSN without a password (the password comes
    from ``password_file``, a libpq passfile, or $PGPASSFILE); ``peers`` pins every
    node's checkpoint key (``breakglass checkpoint-key``'s "ed25519 HEX" line), this
    node's included. ``timeout`` bounds every ledger call, acquiring a connection too.
    """

    node: str
    postgres: str
    password_file: Path | None = None
    peers: Mapping[str, str] = field(default_factory=lambda: types.MappingProxyType({}))
    timeout: float = 2.0
    ship_interval: float = 0.5
    witness_interval: float = 60.0
    # What a login does when the ledger does not answer while spending a code: "serve"
    # (decide on this node's copy, flag the session, alert, reconcile later) or "refuse".
    unreachable: str = "serve"


@dataclass(frozen=True, kw_only=True)
class Config:
    source: Path
    listen: ListenConfig
    storage: StorageConfig
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    recording: RecordingConfig = field(default_factory=RecordingConfig)
    targets: Mapping[str, TargetConfig] = field(default_factory=lambda: types.MappingProxyType({}))
    alerts: AlertsConfig = field(default_factory=AlertsConfig)
    # None: a node on its own, exactly as without a fleet.
    fleet: FleetConfig | None = None
