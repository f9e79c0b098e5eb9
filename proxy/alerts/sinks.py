"""Alert sinks: which sink each configured entry becomes, and the three plain ones (a
webhook, syslog, a command). Each sends one alert once, or says why not.

Owns the wire formats of the plain sinks: the webhook is an HTTP/1.1 POST of the JSON
payload with ``X-Breakglass-Signature: sha256=<hex HMAC-SHA256 of the body keyed with
the secret file's content>`` (TLS certificates and host names verified; redirects are
not followed); syslog is RFC 5424 (facility authpriv, the JSON payload, ASCII only, as
the message) to a local socket (datagram), ``udp://HOST[:514]`` or ``tcp://HOST[:514]``
with RFC 6587 octet counting; a command is run from its argv (never a shell) with the
JSON payload and a newline on stdin, a minimal environment, and killed with its process
group at the timeout. Slack and Teams are proxy.alerts.chat's, PagerDuty and JSM
proxy.alerts.paging's, e-mail proxy.alerts.mail's. Every send is bounded by the sink's
timeout.

Never retries (proxy.alerts.delivery does), never logs a URL's path or query (they
often carry a token) and never reads a secret into a message: a sink's ``key`` names a
secret by its file's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import hmac
import json
import os
import signal
import socket
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from proxy.alerts.base import Outgoing, Sink, SinkError, read_secret, tls_context
from proxy.alerts.chat import ChatSink
from proxy.alerts.http import check, post, where
from proxy.alerts.mail import EmailSink
from proxy.alerts.paging import JsmSink, PagerDutySink
from proxy.config.model import SinkConfig
from proxy.core import events

__all__ = [
    "ALERT_ID_HEADER",
    "SIGNATURE_HEADER",
    "CommandSink",
    "Outgoing",
    "Sink",
    "SinkError",
    "SyslogSink",
    "WebhookSink",
    "alert_severity",
    "make_event_sinks",
    "make_sinks",
    "octet_counted",
    "read_secret",
    "rfc5424",
    "signature",
    "sink_key",
    "syslog_line",
]

SIGNATURE_HEADER = "X-Breakglass-Signature"
ALERT_ID_HEADER = "X-Breakglass-Alert-Id"
SYSLOG_PORT = 514
FACILITY_AUTHPRIV = 10
SEVERITY_ALERT = 1
SEVERITY_CRIT = 2
SEVERITY_WARNING = 4
SEVERITY_NOTICE = 5
SEVERITY_INFO = 6
_ROUTINE = frozenset({events.SessionStart.TYPE, events.Drill.TYPE})
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def sink_key(cfg: SinkConfig) -> str:
    """The sink's stable name in the delivery records and the log: never a secret."""
    if cfg.type == "webhook":
        url = cfg.url or ""
        digest = hashlib.sha256(url.encode()).hexdigest()[:8]
        return f"webhook:{where(url)}#{digest}"
    if cfg.type == "syslog":
        suffix = "#events" if cfg.events == "all" else ""
        return f"syslog:{cfg.address}{suffix}"
    if cfg.type in ("slack", "teams"):
        return f"{cfg.type}:{cfg.url_file}"
    if cfg.type in ("pagerduty", "jsm"):
        endpoint = f"@{where(cfg.url)}" if cfg.url else ""
        return f"{cfg.type}:{cfg.key_file}{endpoint}"
    if cfg.type == "email":
        to = hashlib.sha256(",".join(cfg.mail_to).encode()).hexdigest()[:8]
        return f"email:{cfg.host}:{cfg.port}#{to}"
    return f"command:{cfg.argv[0] if cfg.argv else '?'}"


def make_sink(cfg: SinkConfig, key: str) -> Sink:
    if cfg.type == "webhook":
        return WebhookSink(key, cfg.url or "", cfg.secret_file, cfg.timeout, ca_file=cfg.ca_file)
    if cfg.type == "syslog":
        return SyslogSink(key, cfg.address or "/dev/log", cfg.timeout)
    if cfg.type in ("slack", "teams"):
        assert cfg.url_file is not None  # the config requires it
        return ChatSink(key, cfg.type, cfg.url_file, cfg.timeout, cfg.ca_file)
    if cfg.type == "pagerduty":
        assert cfg.key_file is not None
        return PagerDutySink(key, cfg.key_file, cfg.timeout, cfg.url, cfg.ca_file)
    if cfg.type == "jsm":
        assert cfg.key_file is not None
        return JsmSink(key, cfg.key_file, cfg.timeout, cfg.url, cfg.ca_file)
    if cfg.type == "email":
        return EmailSink(
            key,
            host=cfg.host or "localhost",
            port=cfg.port or 587,
            tls=cfg.tls,
            sender=cfg.mail_from or "",
            recipients=cfg.mail_to,
            timeout=cfg.timeout,
            auth_file=cfg.auth_file,
            ca_file=cfg.ca_file,
        )
    return CommandSink(key, cfg.argv, cfg.timeout)


def _distinct(configs: Sequence[SinkConfig]) -> list[Sink]:
    sinks: dict[str, Sink] = {}
    for cfg in configs:
        key = sink_key(cfg)
        if key not in sinks:
            sinks[key] = make_sink(cfg, key)
    return list(sinks.values())


def make_sinks(configs: Sequence[SinkConfig]) -> list[Sink]:
    """The outbox's sinks: one per distinct configured sink (an exact duplicate is sent
    to once). A syslog sink with ``events: all`` is not one of them: it reads the whole
    log by cursor instead (``make_event_sinks``), alerts included."""
    return _distinct([c for c in configs if not (c.type == "syslog" and c.events == "all")])


def make_event_sinks(configs: Sequence[SinkConfig]) -> list[SyslogSink]:
    """The syslog sinks that get every audit event (``events: all``)."""
    sinks = _distinct([c for c in configs if c.type == "syslog" and c.events == "all"])
    return [s for s in sinks if isinstance(s, SyslogSink)]


# --------------------------------------------------------------------------- webhook


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookSink:
    def __init__(
        self,
        key: str,
        url: str,
        secret_file: Path | None,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
        *,
        ca_file: Path | None = None,
    ) -> None:
        self.key = key
        self.url = url
        self.secret_file = secret_file
        self.timeout = timeout
        self._ssl = ssl_context
        self.ca_file = ca_file

    async def send(self, alert: Outgoing) -> str:
        secret = read_secret(self.secret_file) if self.secret_file else b""
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: signature(secret, alert.body),
            ALERT_ID_HEADER: alert.alert_id,
        }
        tls = self._ssl or (tls_context(self.ca_file) if self.ca_file else None)
        response = await post(self.url, alert.body, headers, within=self.timeout, tls=tls)
        return check(response)


# --------------------------------------------------------------------------- syslog


def _printable(text: str, limit: int) -> str:
    clean = "".join(ch for ch in text if 33 <= ord(ch) <= 126)[:limit]
    return clean or "-"


def alert_severity(rule: str) -> int:
    if rule == "store_write_failed":
        return SEVERITY_CRIT
    return SEVERITY_WARNING if rule in _ROUTINE else SEVERITY_ALERT


def syslog_line(severity: int, stamp: str, host: str, msgid: str, msg: str, pid: int) -> bytes:
    """``<PRI>1 TIMESTAMP HOSTNAME breakglass PROCID MSGID - MSG`` (facility authpriv);
    ``msg`` must already be one line of ASCII (JSON with ensure_ascii)."""
    pri = FACILITY_AUTHPRIV * 8 + severity
    header = f"<{pri}>1 {_printable(stamp, 32)} {_printable(host, 255)} breakglass {pid}"
    return f"{header} {_printable(msgid, 32)} - {msg}".encode("ascii")


def rfc5424(payload: Mapping[str, Any], *, pid: int, host: str | None = None) -> bytes:
    """One RFC 5424 message: the payload as single-line ASCII JSON is the MSG, so no
    field can forge a second record or reach a terminal as an escape sequence."""
    rule = str(payload.get("rule", ""))
    msg = json.dumps(payload, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    hostname = host if host is not None else str(payload.get("proxy") or "-")
    stamp = str(payload.get("time") or "-")
    return syslog_line(alert_severity(rule), stamp, hostname, rule, msg, pid)


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 octet-counting framing for syslog over TCP."""
    return str(len(message)).encode("ascii") + b" " + message


class _Udp(asyncio.DatagramProtocol):
    pass


class SyslogSink:
    def __init__(self, key: str, address: str, timeout: float) -> None:
        self.key = key
        self.address = address
        self.timeout = timeout

    async def send(self, alert: Outgoing) -> str:
        return await self.send_message(rfc5424(alert.payload(), pid=os.getpid()))

    async def send_message(self, message: bytes) -> str:
        return await self.send_messages([message])

    async def send_messages(self, messages: Sequence[bytes]) -> str:
        """Ready RFC 5424 messages, in order, over one connection (the event
        forwarder's way in: a page of events). All or, for the caller, none: a failure
        part way means the whole page is sent again."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._send(messages)
        except TimeoutError:
            raise SinkError(f"syslog did not take the message within {self.timeout:g}s") from None
        except OSError as exc:
            raise SinkError(f"syslog send failed: {type(exc).__name__}: {exc}") from None

    async def _send(self, messages: Sequence[bytes]) -> str:
        loop = asyncio.get_running_loop()
        if self.address.startswith("/"):
            notes = [await send_unix(self.address, m) for m in messages]
            return notes[-1] if notes else "nothing to send"
        parts = urlsplit(self.address)
        host, port = parts.hostname or "", parts.port or SYSLOG_PORT
        if parts.scheme == "udp":
            transport, _ = await loop.create_datagram_endpoint(_Udp, remote_addr=(host, port))
            try:
                for message in messages:
                    transport.sendto(message)
            finally:
                transport.close()
            return "sent (udp: no acknowledgement)"
        _, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"".join(octet_counted(m) for m in messages))
            await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return "sent (tcp)"


async def send_unix(path: str, message: bytes) -> str:
    """To a local syslog socket: datagram (like /dev/log), or stream if that is what
    listens there (newline-terminated, as local stream daemons expect)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.setblocking(False)
    try:
        try:
            await loop.sock_connect(sock, path)
            await loop.sock_sendall(sock, message)
            return "sent (local datagram)"
        except OSError as exc:
            if exc.errno != errno.EPROTOTYPE:  # a stream socket listens there
                raise
    finally:
        sock.close()
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.setblocking(False)
    try:
        await loop.sock_connect(stream, path)
        await loop.sock_sendall(stream, message + b"\n")
    finally:
        stream.close()
    return "sent (local stream)"


# --------------------------------------------------------------------------- command


class CommandSink:
    def __init__(self, key: str, argv: Sequence[str], timeout: float) -> None:
        self.key = key
        self.argv = tuple(argv)
        self.timeout = timeout

    def environment(self, alert: Outgoing) -> dict[str, str]:
        """Minimal: nothing of the proxy's own environment leaks into a hook."""
        return {
            "PATH": HOOK_PATH,
            "LANG": "C.UTF-8",
            "BREAKGLASS_ALERT_ID": alert.alert_id,
            "BREAKGLASS_ALERT_RULE": alert.rule,
        }

    async def send(self, alert: Outgoing) -> str:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=self.environment(alert),
                cwd="/",
                start_new_session=True,  # its own process group, killed as one
            )
        except OSError as exc:
            raise SinkError(f"cannot run {self.argv[0]}: {exc.strerror}") from None
        try:
            async with asyncio.timeout(self.timeout):
                _, err = await proc.communicate(alert.body + b"\n")
        except TimeoutError:
            raise SinkError(f"{self.argv[0]} did not finish within {self.timeout:g}s") from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5.0):
                        await proc.wait()
        if proc.returncode != 0:
            tail = err.decode("utf-8", "replace").strip()[-200:]
            raise SinkError(f"{self.argv[0]} exited {proc.returncode}: {tail}".rstrip(": "))
        return "exit 0"
