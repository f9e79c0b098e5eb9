"""The configuration: one YAML file read into frozen dataclasses (proxy.config.model).

Owns the schema (every key, its type, its default) and the rule that a config either
loads completely or fails with one ConfigError listing every problem, each with the
file, the 1-based line and a hint. Relative paths start at the config file's folder.
Strings stay literal: YAML's ``no``, ``22:30`` and ``0755`` are text where text is meant
(see proxy.config.yamlnodes). Target host names are not resolved at load: the proxy resolves
them at each connect, so a name that does not resolve (a DNS outage, a typo) costs that
one target, never the proxy; ``unresolved_hosts`` is the check ``config check`` warns with.
Never puts key material, passphrases or secrets in a message, and never changes a file:
the listen host key may be missing here; ``serve`` creates it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import types
from collections.abc import Mapping
from pathlib import Path

import yaml

from proxy.config import files
from proxy.config.alerts import AlertsReader
from proxy.config.fleet import FleetReader
from proxy.config.model import (
    DEFAULT_JUSTIFICATION_BYTES,
    MAX_JUSTIFICATION_BYTES,
    Config,
    IPNetwork,
    JustificationRule,
    ListenConfig,
    PolicyConfig,
    RecordingConfig,
    StorageConfig,
    TargetConfig,
    all_sources,
)
from proxy.config.yamlnodes import (
    MapView,
    Problems,
    compose,
    is_null,
    line_of,
    read_bool,
    read_int,
    read_list,
    read_mapping,
    read_text,
)
from proxy.core.errors import ConfigError, ConfigProblem
from proxy.core.units import parse_size

__all__ = ["default_config_path", "load_config", "unresolved_hosts"]

DEFAULT_HOST_KEY = "../recordings/ssh_host_ed25519_key"
DEFAULT_DATABASE = "../recordings/audit.db"
DEFAULT_RECORDINGS = "../recordings"

# Keys of each mapping, in the order the example config shows them.
_TOP = ("listen", "storage", "policy", "recording", "targets", "alerts", "fleet")
_LISTEN = ("host", "port", "host_key", "chacha20")
_STORAGE = ("database", "recordings", "min_free", "warn_free", "failure_reserve", "retention")
_POLICY = (
    "justification",
    "max_session",
    "warn_before",
    "idle_timeout",
    "allowed_sources",
    "login_timeout",
    "preauth_timeout",
    "max_unauthenticated",
    "max_unauthenticated_per_source",
    "max_live_sessions",
    "shutdown_grace",
    "max_channels",
    "channel_open_burst",
    "channel_open_rate",
)
_JUSTIFICATION = ("min_length", "max_bytes", "pattern")
_RECORDING = ("input", "max_channel_bytes", "max_session_bytes")
_TARGET = (
    "host",
    "port",
    "login",
    "logins",
    "identity_file",
    "host_key",
    "known_hosts",
    "max_session",
    "connect_timeout",
)

# Target names and logins travel inside the SSH user name PERSON@LOGIN@TARGET, and scp
# splits "user@host:path" at the first ':', so both keep to the alphabet that
# proxy.core.policy.parse_username accepts.
_TARGET_NAME = _LOGIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def default_config_path() -> Path:
    """$BREAKGLASS_CONFIG if set, else ./config/proxy.yaml."""
    return Path(os.environ.get("BREAKGLASS_CONFIG") or "config/proxy.yaml")


def load_config(path: Path) -> Config:
    """Read and check the config at ``path``. Raises ConfigError listing every problem,
    ordered by line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [
                ConfigProblem(
                    str(path),
                    None,
                    f"cannot read config file: {exc.strerror or exc}",
                    "pass -c FILE or set BREAKGLASS_CONFIG",
                )
            ]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigProblem(str(path), None, f"config file is not UTF-8 text (byte {exc.start})")]
        ) from None
    problems = Problems(str(path))
    config = _Loader(Path(os.path.abspath(path)), problems).load(text)
    if problems.items or config is None:
        raise ConfigError(sorted(problems.items, key=lambda p: p.line or 0))
    return config


def unresolved_hosts(config: Config) -> list[str]:
    """One warning per target whose host name does not resolve now (asks the resolver).

    Not a config error: the proxy resolves at each connect, so during a DNS outage it
    still starts and serves every other target; this is for ``config check`` and the log.
    """
    warnings = []
    for name, target in sorted(config.targets.items()):
        try:
            ipaddress.ip_address(target.host)
            continue
        except ValueError:
            pass
        try:
            files.resolve_host(target.host, target.port)
        except OSError as exc:
            warnings.append(
                f"target {name}: host {target.host!r} does not resolve now "
                f"({exc.strerror or exc}); logins to {name} fail until it does"
            )
    return warnings


class _Loader(AlertsReader, FleetReader):
    """One pass over the node tree, section by section."""

    def load(self, text: str) -> Config | None:
        root = compose(text, self.p)
        if root is None:
            if not self.p.items:
                self.p.add(1, "the config file is empty", "start from config/proxy.yaml")
            return None
        top = read_mapping(root, "", _TOP, self.p)
        if top is None:
            return None
        if top.node is None:
            self.p.add(root, "the config file is empty", "start from config/proxy.yaml")
            return None
        return Config(
            source=self.source,
            listen=self.listen(self.section(top, "listen", _LISTEN)),
            storage=self.storage(self.section(top, "storage", _STORAGE)),
            policy=self.policy(self.section(top, "policy", _POLICY)),
            recording=self.recording(self.section(top, "recording", _RECORDING)),
            targets=self.targets(self.section(top, "targets", None)),
            alerts=self.alerts(self.section(top, "alerts", ("sinks", "rules"))),
            fleet=self.fleet(top),
        )

    def listen(self, view: MapView) -> ListenConfig:
        host_key = self.path(view, "host_key", DEFAULT_HOST_KEY)
        # Missing is fine (serve generates it); present means it must be private and sound.
        issue = files.private_key_issue(host_key, view.path("host_key"), must_exist=False)
        if issue:
            self.p.add(view.get("host_key") or view.line, *issue)
        return ListenConfig(
            host=self.text(view, "host") or "127.0.0.1",
            port=self.integer(view, "port", 2222, 1, 65535),
            host_key=host_key,
            chacha20=self.flag(view, "chacha20", False),
        )

    def storage(self, view: MapView) -> StorageConfig:
        node = view.get("database")
        if isinstance(node, yaml.ScalarNode) and "://" in str(node.value):
            self.p.add(
                node,
                "storage.database must be a file path; database URLs are not supported yet",
                f"use e.g. {DEFAULT_DATABASE}",
            )
        default = StorageConfig(database=Path("-"), recordings=Path("-"))
        return StorageConfig(
            database=self.path(view, "database", DEFAULT_DATABASE),
            recordings=self.path(view, "recordings", DEFAULT_RECORDINGS),
            min_free=self.size(view, "min_free", default.min_free),
            warn_free=self.size(view, "warn_free", default.warn_free),
            failure_reserve=self.size(view, "failure_reserve", default.failure_reserve),
            retention=self.optional_duration(view, "retention", default.retention),
        )

    def policy(self, view: MapView) -> PolicyConfig:
        return PolicyConfig(
            justification=self.justification(self.section(view, "justification", _JUSTIFICATION)),
            max_session=self.duration(view, "max_session", 3600.0),
            warn_before=self.warn_before(view),
            idle_timeout=self.optional_duration(view, "idle_timeout", 900.0),
            allowed_sources=self.allowed_sources(view),
            login_timeout=self.duration(view, "login_timeout", 120.0),
            preauth_timeout=self.duration(view, "preauth_timeout", 10.0),
            max_unauthenticated=self.integer(view, "max_unauthenticated", 256, 1, 100_000),
            max_unauthenticated_per_source=self.integer(
                view, "max_unauthenticated_per_source", 64, 1, 100_000
            ),
            max_live_sessions=self.integer(view, "max_live_sessions", 200, 1, 100_000),
            shutdown_grace=self.duration(view, "shutdown_grace", 10.0),
            max_channels=self.integer(view, "max_channels", PolicyConfig().max_channels, 1, 1000),
            channel_open_burst=self.integer(
                view, "channel_open_burst", PolicyConfig().channel_open_burst, 1, 100_000
            ),
            channel_open_rate=self.integer(
                view, "channel_open_rate", PolicyConfig().channel_open_rate, 1, 10_000
            ),
        )

    def justification(self, view: MapView) -> JustificationRule:
        max_bytes = self.integer(
            view, "max_bytes", DEFAULT_JUSTIFICATION_BYTES, 1, MAX_JUSTIFICATION_BYTES
        )
        min_length = self.integer(view, "min_length", 15, 1, MAX_JUSTIFICATION_BYTES)
        node = view.get("min_length")
        if node is not None and min_length > max_bytes:
            self.p.add(
                node,
                f"{view.path('min_length')} ({min_length}) is more than "
                f"{view.path('max_bytes')} ({max_bytes}): no justification could pass",
            )
        node = view.get("pattern")
        pattern = None
        if node is not None and not is_null(node):
            text = read_text(node, view.path("pattern"), self.p)
            try:
                pattern = re.compile(text) if text is not None else None
            except re.error as exc:
                self.p.add(
                    node,
                    f"{view.path('pattern')} is not a valid regular expression: {exc}",
                    "in YAML, single-quote a pattern with backslashes: 'INC-\\d+'",
                )
        return JustificationRule(min_length=min_length, max_bytes=max_bytes, pattern=pattern)

    def warn_before(self, view: MapView) -> tuple[float, ...]:
        node = view.get("warn_before")
        if node is None:
            return PolicyConfig().warn_before
        if is_null(node):
            return ()
        values: set[float] = set()
        for i, item in enumerate(read_list(node, view.path("warn_before"), self.p) or []):
            value = self.duration_of(item, f"{view.path('warn_before')}[{i}]")
            if value is not None:
                values.add(value)
        return tuple(sorted(values, reverse=True))

    def allowed_sources(self, view: MapView) -> tuple[IPNetwork, ...]:
        node = view.get("allowed_sources")
        if node is None:
            return all_sources()
        items = read_list(node, view.path("allowed_sources"), self.p)
        if items == []:
            self.p.add(
                node,
                "policy.allowed_sources is empty: no one could log in",
                'allow every source with ["0.0.0.0/0", "::/0"]',
            )
        networks: list[IPNetwork] = []
        for i, item in enumerate(items or []):
            what = f"policy.allowed_sources[{i}]"
            text = read_text(item, what, self.p)
            if text is None:
                continue
            try:
                networks.append(ipaddress.ip_network(text.strip(), strict=False))
            except ValueError:
                self.p.add(
                    item,
                    f"{what} {text!r} is not an IP network",
                    "write e.g. 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32",
                )
        return tuple(networks)

    def recording(self, view: MapView) -> RecordingConfig:
        default = RecordingConfig()
        node = view.get("input")
        record_input = None if node is None else read_bool(node, view.path("input"), self.p)
        return RecordingConfig(
            input=default.input if record_input is None else record_input,
            max_channel_bytes=self.size(view, "max_channel_bytes", default.max_channel_bytes),
            max_session_bytes=self.size(view, "max_session_bytes", default.max_session_bytes),
        )

    def size(self, view: MapView, key: str, default: int) -> int:
        """A byte size: an integer, or text like 64MiB."""
        node = view.get(key)
        if node is None:
            return default
        what = view.path(key)
        raw: str | int | None
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:int":
            raw = read_int(node, what, self.p, low=0)
        else:
            raw = read_text(node, what, self.p)
        try:
            return default if raw is None else parse_size(raw)
        except ValueError as exc:
            self.p.add(node, f"{what}: {exc}")
            return default

    def targets(self, view: MapView) -> Mapping[str, TargetConfig]:
        result: dict[str, TargetConfig] = {}
        for name, (key_node, value) in view.entries.items():
            if not _TARGET_NAME.fullmatch(name):
                self.p.add(
                    key_node,
                    f"target name {name!r} is not allowed",
                    "use letters, digits, '.', '_' and '-': the name is part of the SSH user name",
                )
            target_view = read_mapping(value, view.path(name), _TARGET, self.p)
            if target_view is None:
                continue  # not a mapping: already reported, nothing more to say
            if target_view.node is None:
                target_view.line = line_of(key_node)
            target = self.target(name, target_view)
            if target is not None:
                result[name] = target
        return types.MappingProxyType(result)

    def target(self, name: str, view: MapView) -> TargetConfig | None:
        self.require(view, "host", "login", "identity_file")
        host = self.text(view, "host")
        port = self.integer(view, "port", 22, 1, 65535)
        login = self.text(view, "login")
        logins = self.logins(view, login)
        identity_file = None
        if self.text(view, "identity_file") is not None:
            identity_file = self.path(view, "identity_file", "")
            issue = files.private_key_issue(identity_file, view.path("identity_file"))
            if issue:
                self.p.add(view.get("identity_file"), *issue)
        host_keys = self.host_keys(name, view, host or "", port)
        if host is None or login is None or identity_file is None:
            return None
        return TargetConfig(
            name=name,
            host=host,
            port=port,
            login=login,
            logins=logins,
            identity_file=identity_file,
            host_keys=host_keys,
            max_session=self.optional_duration(view, "max_session", None),
            connect_timeout=self.duration(view, "connect_timeout", 10.0),
        )

    def logins(self, view: MapView, login: str | None) -> tuple[str, ...]:
        if login is not None:
            self.check_login(view.get("login"), view.path("login"), login)
        node = view.get("logins")
        if node is None:
            return (login,) if login else ()
        items = read_list(node, view.path("logins"), self.p)
        if items == []:
            self.p.add(node, f"{view.path('logins')} must not be empty")
        names: dict[str, None] = {}
        for i, item in enumerate(items or []):
            what = f"{view.path('logins')}[{i}]"
            text = read_text(item, what, self.p)
            if text is not None and self.check_login(item, what, text):
                names[text] = None
        if login is not None and items and login not in names:
            self.p.add(
                view.get("login"),
                f"{view.path('login')} {login!r} is not in {view.path('logins')}",
                f"add {login!r} to logins",
            )
        return tuple(names)

    def check_login(self, node: yaml.Node | None, what: str, login: str) -> bool:
        if _LOGIN_NAME.fullmatch(login):
            return True
        self.p.add(node, f"{what} {login!r} is not a valid login name")
        return False

    def host_keys(self, name: str, view: MapView, host: str, port: int) -> tuple[str, ...]:
        key_node, known_node = view.get("host_key"), view.get("known_hosts")
        if key_node is None and known_node is None:
            self.p.add(
                view.line,
                f"target {name} has no pinned host key",
                "add host_key: with the line of the target's /etc/ssh/ssh_host_ed25519_key.pub,"
                " or known_hosts: FILE",
            )
            return ()
        if key_node is not None and known_node is not None:
            self.p.add(known_node, f"target {name}: give host_key or known_hosts, not both")
            return ()
        if key_node is not None:
            return self.pinned_keys(key_node, view.path("host_key"))
        assert known_node is not None
        if self.text(view, "known_hosts") is None:
            return ()
        path = self.path(view, "known_hosts", "")
        what = f"{view.path('known_hosts')} {path}"
        try:
            keys = files.known_hosts_keys(path, host, port)
        except OSError as exc:
            self.p.add(known_node, f"{what} cannot be read: {exc.strerror or exc}")
            return ()
        except ValueError as exc:
            self.p.add(known_node, f"{what} {exc}")
            return ()
        if host and not keys:
            self.p.add(
                known_node,
                f"target {name} has no pinned host key: {path} has no key for {host}",
                "add the target's key line (checked out of band) to that file",
            )
        return keys

    def pinned_keys(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        if isinstance(node, yaml.ScalarNode):
            items: list[tuple[yaml.Node, str]] = [(node, what)]
        else:
            listed = read_list(node, what, self.p)
            if listed == []:
                self.p.add(node, f"{what} must not be an empty list")
            items = [(item, f"{what}[{i}]") for i, item in enumerate(listed or [])]
        keys: dict[str, None] = {}
        for item, label in items:
            text = read_text(item, label, self.p)
            if text is None:
                continue
            try:
                keys[files.normalise_host_key(text)] = None
            except ValueError as exc:
                self.p.add(item, f"{label} {exc}", "write e.g. ssh-ed25519 AAAAC3Nza...")
        return tuple(keys)
