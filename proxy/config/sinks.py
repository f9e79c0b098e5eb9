"""The ``alerts.sinks`` entries for the services people already watch: ``slack``,
``teams``, ``pagerduty``, ``jsm`` and ``email``.

Owns their checks: each secret (a webhook URL, a routing key, an API key, SMTP
credentials) is in a file closed to group and others, an overriding URL is https, a CA
file loads, e-mail addresses are plain ``user@host`` and a password never travels
without TLS. Part of the config loader (proxy.config.alerts); never sends anything and
never puts a secret file's content into a message.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import get_args
from urllib.parse import urlsplit

import yaml

from proxy.config import files
from proxy.config.model import SinkConfig, SmtpTls
from proxy.config.yamlnodes import Fields, MapView, read_list, read_text

__all__ = ["NOTIFY_SINK_KEYS", "NotifySinks"]

NOTIFY_SINK_KEYS: dict[str, tuple[str, ...]] = {
    "slack": ("type", "url_file", "ca_file", "timeout"),
    "teams": ("type", "url_file", "ca_file", "timeout"),
    "pagerduty": ("type", "routing_key_file", "url", "ca_file", "timeout"),
    "jsm": ("type", "api_key_file", "url", "ca_file", "timeout"),
    "email": (
        "type",
        "host",
        "port",
        "tls",
        "auth_file",
        "from",
        "to",
        "ca_file",
        "timeout",
    ),
}
_KEY_FILE = {"pagerduty": "routing_key_file", "jsm": "api_key_file"}
# Deliberately narrow: an address with a display name, a comment or a second "@" is a
# typo or an attempt to smuggle a header, not something a config needs.
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+\.?[A-Za-z0-9-]*")
_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


class NotifySinks(Fields):
    def notify_sink(self, kind: str, view: MapView, timeout: float) -> SinkConfig:
        ca = self.ca_file(view)
        if kind in ("slack", "teams"):
            self.require(view, "url_file")
            return SinkConfig(
                type=kind,  # type: ignore[arg-type]  # checked against NOTIFY_SINK_KEYS
                url_file=self.secret(view, "url_file"),
                ca_file=ca,
                timeout=timeout,
            )
        if kind in _KEY_FILE:
            key = _KEY_FILE[kind]
            self.require(view, key)
            return SinkConfig(
                type=kind,  # type: ignore[arg-type]
                key_file=self.secret(view, key),
                url=self.https_url(view, "url"),
                ca_file=ca,
                timeout=timeout,
            )
        return self.email(view, ca, timeout)

    def secret(self, view: MapView, key: str) -> Path | None:
        if self.text(view, key) is None:
            return None
        path = self.path(view, key, "")
        issue = files.secret_file_issue(path, view.path(key))
        if issue:
            self.p.add(view.get(key), *issue)
        return path

    def https_url(self, view: MapView, key: str) -> str | None:
        url = self.text(view, key)
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            self.p.add(
                view.get(key),
                f"{view.path(key)} {url!r} is not an https URL",
                "the service's own endpoint is the default; override it only for a proxy",
            )
        return url

    def ca_file(self, view: MapView) -> Path | None:
        if self.text(view, "ca_file") is None:
            return None
        path = self.path(view, "ca_file", "")
        try:
            ssl.create_default_context().load_verify_locations(cafile=str(path))
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.p.add(
                view.get("ca_file"),
                f"{view.path('ca_file')} {path} is not a readable PEM CA file"
                f" ({type(exc).__name__})",
                "certificates in PEM; the system's trust store is always used as well",
            )
        return path

    def email(self, view: MapView, ca: Path | None, timeout: float) -> SinkConfig:
        self.require(view, "host", "from", "to")
        tls_text = self.text(view, "tls") or "starttls"
        modes = get_args(SmtpTls)
        tls: SmtpTls = "starttls"
        if tls_text in modes:
            tls = tls_text  # type: ignore[assignment]
        else:
            self.p.add(
                view.get("tls"),
                f"{view.path('tls')} must be starttls, implicit or none, got {tls_text!r}",
            )
        host = self.text(view, "host")
        auth = self.secret(view, "auth_file")
        if tls == "none" and auth is not None:
            self.p.add(
                view.get("tls"),
                f"{view.path('tls')} is none but {view.path('auth_file')} is set:"
                " the password would travel in clear",
                "use starttls or implicit, or a local relay without authentication",
            )
        if tls == "none" and host is not None and host not in _LOOPBACK_HOSTS:
            self.p.add(
                view.get("tls"),
                f"{view.path('tls')}: none is only for a relay on this host, not {host!r}",
                "use starttls (the default) or implicit",
            )
        default_port = 465 if tls == "implicit" else 587
        sender = self.address(view.get("from"), view.path("from"), self.text(view, "from"))
        node = view.get("to")
        items = [] if node is None else (read_list(node, view.path("to"), self.p) or [])
        if node is not None and not items:
            self.p.add(node, f"{view.path('to')} must name at least one address")
        to = []
        for i, item in enumerate(items):
            what = f"{view.path('to')}[{i}]"
            to.append(self.address(item, what, read_text(item, what, self.p)) or "")
        return SinkConfig(
            type="email",
            host=host,
            port=self.integer(view, "port", default_port, 1, 65535),
            tls=tls,
            auth_file=auth,
            mail_from=sender,
            mail_to=tuple(to),
            ca_file=ca,
            timeout=timeout,
        )

    def address(self, node: yaml.Node | None, what: str, text: str | None) -> str | None:
        if text is not None and not _ADDRESS.fullmatch(text):
            self.p.add(
                node,
                f"{what} {text!r} is not an e-mail address",
                "write a plain user@example.com, without a name or <>",
            )
        return text
