"""The ``alerts`` section of the config: sinks and rules.

Owns the checks on alert sinks (webhook URL and secret file, syslog address and
``events``, command argv; the chat, paging and e-mail sinks' are proxy.config.sinks')
and rules (rate limits, quiet hours). Part of the config loader (proxy.config); never
sends anything and never reads a secret file's content into a message.
"""

from __future__ import annotations

import os
import re
import zoneinfo
from urllib.parse import urlsplit

import yaml

from proxy.config import files
from proxy.config.model import (
    DEFAULT_RULES,
    DEFAULT_SINK_TIMEOUT,
    AlertRules,
    AlertsConfig,
    QuietHours,
    RateRule,
    SinkConfig,
)
from proxy.config.sinks import NOTIFY_SINK_KEYS, NotifySinks
from proxy.config.yamlnodes import (
    MapView,
    describe,
    is_null,
    read_list,
    read_mapping,
    read_text,
    suggest,
)

__all__ = ["AlertsReader"]

_SINK_KEYS: dict[str, tuple[str, ...]] = {
    "webhook": ("type", "url", "secret_file", "ca_file", "timeout"),
    "syslog": ("type", "address", "events", "timeout"),
    "command": ("type", "argv", "timeout"),
    **NOTIFY_SINK_KEYS,
}
_ANY_SINK_KEY = tuple(dict.fromkeys(k for keys in _SINK_KEYS.values() for k in keys))
_RULES = (*DEFAULT_RULES, "quiet_hours")
_RATE = ("count", "window")
_QUIET = ("from", "to", "tz")
_CLOCK = re.compile(r"([01]?[0-9]|2[0-3]):([0-5][0-9])")


class AlertsReader(NotifySinks):
    def alerts(self, view: MapView) -> AlertsConfig:
        sinks: list[SinkConfig] = []
        node = view.get("sinks")
        items = None if node is None or is_null(node) else read_list(node, "alerts.sinks", self.p)
        for i, item in enumerate(items or []):
            sink = self.sink(item, f"alerts.sinks[{i}]")
            if sink is not None:
                sinks.append(sink)
        rules = self.section(view, "rules", _RULES)
        rates = {key: self.rate(rules, key) for key in DEFAULT_RULES}
        return AlertsConfig(
            sinks=tuple(sinks),
            rules=AlertRules(**rates, quiet_hours=self.quiet_hours(rules)),
        )

    def sink(self, node: yaml.Node, where: str) -> SinkConfig | None:
        type_node = None
        if isinstance(node, yaml.MappingNode):
            type_node = next((v for k, v in node.value if k.value == "type"), None)
        kind = str(type_node.value) if isinstance(type_node, yaml.ScalarNode) else None
        # An unknown type accepts every sink key, so only the type itself is reported.
        view = read_mapping(node, where, _SINK_KEYS.get(kind or "", _ANY_SINK_KEY), self.p)
        if view is None:
            return None
        if type_node is None:
            self.require(view, "type")
            return None
        if kind not in _SINK_KEYS:
            self.p.add(
                type_node,
                f"{where}.type must be one of {', '.join(_SINK_KEYS)}, got {describe(type_node)}",
                suggest(kind or "", list(_SINK_KEYS)),
            )
            return None
        timeout = self.duration(view, "timeout", DEFAULT_SINK_TIMEOUT)
        if kind == "webhook":
            return self.webhook(view, timeout)
        if kind == "syslog":
            return self.syslog(view, timeout)
        if kind == "command":
            return self.command(view, timeout)
        return self.notify_sink(kind, view, timeout)

    def webhook(self, view: MapView, timeout: float) -> SinkConfig:
        self.require(view, "url", "secret_file")
        url = self.text(view, "url")
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                self.p.add(view.get("url"), f"{view.path('url')} {url!r} is not an http(s) URL")
        secret = None
        if self.text(view, "secret_file") is not None:
            secret = self.path(view, "secret_file", "")
            issue = files.secret_file_issue(secret, view.path("secret_file"))
            if issue:
                self.p.add(view.get("secret_file"), *issue)
        return SinkConfig(
            type="webhook", url=url, secret_file=secret, ca_file=self.ca_file(view), timeout=timeout
        )

    def syslog(self, view: MapView, timeout: float) -> SinkConfig:
        self.require(view, "address")
        address = self.text(view, "address")
        if address is not None and not _syslog_address_ok(address):
            self.p.add(
                view.get("address"),
                f"{view.path('address')} {address!r} is not a syslog address",
                "use a socket path like /dev/log, or udp://HOST:514, tcp://HOST:514",
            )
        events = self.text(view, "events") or "alerts"
        if events not in ("alerts", "all"):
            self.p.add(
                view.get("events"),
                f"{view.path('events')} must be alerts or all, got {events!r}",
                "all: every audit event, read from the log by cursor",
            )
        return SinkConfig(
            type="syslog",
            address=address,
            events="all" if events == "all" else "alerts",
            timeout=timeout,
        )

    def command(self, view: MapView, timeout: float) -> SinkConfig:
        self.require(view, "argv")
        node = view.get("argv")
        items = [] if node is None else read_list(node, view.path("argv"), self.p)
        if node is not None and items == []:
            self.p.add(node, f"{view.path('argv')} must not be empty", "e.g. [/usr/bin/logger]")
        argv = [
            read_text(item, f"{view.path('argv')}[{i}]", self.p)
            for i, item in enumerate(items or [])
        ]
        if items and argv[0] is not None:
            # A relative program path starts at the config's folder, like every path.
            if os.sep in argv[0] and not os.path.isabs(argv[0]):
                argv[0] = os.path.normpath(self.base / argv[0])
            issue = files.executable_issue(argv[0], f"{view.path('argv')}[0]")
            if issue:
                self.p.add(items[0], *issue)
        return SinkConfig(type="command", argv=tuple(a or "" for a in argv), timeout=timeout)

    def rate(self, rules: MapView, key: str) -> RateRule | None:
        node = rules.get(key)
        if node is None:
            return DEFAULT_RULES[key]
        view = read_mapping(node, rules.path(key), _RATE, self.p)
        if view is None or view.node is None:
            return None  # null turns the rule off
        self.require(view, *_RATE)
        return RateRule(
            count=self.integer(view, "count", 1, 1, 1_000_000),
            window=self.duration(view, "window", 3600.0),
        )

    def quiet_hours(self, rules: MapView) -> QuietHours | None:
        view = read_mapping(rules.get("quiet_hours"), rules.path("quiet_hours"), _QUIET, self.p)
        if view is None or view.node is None:
            return None
        self.require(view, "from", "to")
        times: dict[str, str] = {}
        for key in ("from", "to"):
            text = self.text(view, key)
            match = _CLOCK.fullmatch(text.strip()) if text is not None else None
            if text is not None and match is None:
                self.p.add(
                    view.get(key), f"{view.path(key)} {text!r} is not a time", 'write "HH:MM"'
                )
            times[key] = f"{int(match[1]):02d}:{match[2]}" if match else ""
        if times["from"] and times["from"] == times["to"]:
            self.p.add(view.get("to"), f"{view.path('to')} equals {view.path('from')}: no hours")
        tz = self.text(view, "tz") or "UTC"
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            self.p.add(
                view.get("tz"),
                f"{view.path('tz')} {tz!r} is not a known time zone",
                "use an IANA name like UTC or Europe/Berlin",
            )
        return QuietHours(start=times["from"], end=times["to"], tz=tz)


def _syslog_address_ok(address: str) -> bool:
    """A socket path, or udp://HOST[:PORT] / tcp://HOST[:PORT]."""
    if address.startswith("/"):
        return True
    parts = urlsplit(address)
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return False
    return parts.scheme in ("udp", "tcp") and bool(parts.hostname) and parts.path in ("", "/")
