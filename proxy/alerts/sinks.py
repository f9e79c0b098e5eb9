"""Alert sinks: a webhook, syslog, a command. Each sends one alert once, or says why not.

Owns the wire formats: the webhook is an HTTP/1.1 POST of the JSON payload with
``X-Breakglass-Signature: sha256=<hex HMAC-SHA256 of the body keyed with the secret
file's content>`` (TLS certificates and host names verified; redirects are not
followed); syslog is RFC 5424 (facility authpriv, the JSON payload, ASCII only, as the
message) to a local socket (datagram), ``udp://HOST[:514]`` or ``tcp://HOST[:514]`` with
RFC 6587 octet counting; a command is run from its argv (never a shell) with the JSON
payload and a newline on stdin, a minimal environment, and killed with its process
group at the timeout. Every send is bounded by the sink's timeout.

Never retries (proxy.alerts.delivery does), never logs a webhook URL's path or query
(they often carry a token), and never reads the secret into a message.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from proxy.configmodel import SinkConfig

SIGNATURE_HEADER = "X-Breakglass-Signature"
ALERT_ID_HEADER = "X-Breakglass-Alert-Id"
SYSLOG_PORT = 514
FACILITY_AUTHPRIV = 10
SEVERITY_ALERT = 1
SEVERITY_CRIT = 2
SEVERITY_WARNING = 4
_ROUTINE = frozenset({"session_start", "drill"})
MAX_RESPONSE_LINE = 8192
MAX_HEADERS = 100
HOOK_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SinkError(Exception):
    """A send failed; the message says how (never a secret)."""


@dataclass(frozen=True)
class Outgoing:
    """One alert as sent: ``body`` is the stored payload text, byte for byte."""

    alert_id: str
    rule: str
    body: bytes

    @classmethod
    def of(cls, payload_json: str) -> Outgoing:
        doc = json.loads(payload_json)
        return cls(str(doc.get("alert_id", "")), str(doc.get("rule", "")), payload_json.encode())

    def payload(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.body)
        return doc


class Sink(Protocol):
    key: str  # stable name recorded with each attempt, e.g. "syslog:udp://127.0.0.1:514"
    timeout: float

    async def send(self, alert: Outgoing) -> str:
        """Deliver; return a short note on success ("HTTP 204"), raise SinkError."""
        ...


def sink_key(cfg: SinkConfig) -> str:
    if cfg.type == "webhook":
        url = cfg.url or ""
        parts = urlsplit(url)
        digest = hashlib.sha256(url.encode()).hexdigest()[:8]
        return f"webhook:{parts.scheme}://{parts.hostname}:{_port(parts)}#{digest}"
    if cfg.type == "syslog":
        return f"syslog:{cfg.address}"
    return f"command:{cfg.argv[0] if cfg.argv else '?'}"


def make_sinks(configs: Sequence[SinkConfig]) -> list[Sink]:
    """One sink per distinct configured sink (an exact duplicate is sent to once)."""
    sinks: dict[str, Sink] = {}
    for cfg in configs:
        key = sink_key(cfg)
        if key in sinks:
            continue
        if cfg.type == "webhook":
            sinks[key] = WebhookSink(key, cfg.url or "", cfg.secret_file, cfg.timeout)
        elif cfg.type == "syslog":
            sinks[key] = SyslogSink(key, cfg.address or "/dev/log", cfg.timeout)
        else:
            sinks[key] = CommandSink(key, cfg.argv, cfg.timeout)
    return list(sinks.values())


def _port(parts: Any) -> int:
    port = parts.port
    if port is not None:
        return int(port)
    return 443 if parts.scheme == "https" else 80


# --------------------------------------------------------------------------- webhook


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def read_secret(path: Path) -> bytes:
    """The file's content without its trailing newline (``echo s > file`` adds one).
    Read at every send, so a rotated secret takes effect without a restart."""
    try:
        return path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise SinkError(f"cannot read the webhook secret file: {exc.strerror}") from None


class WebhookSink:
    def __init__(
        self,
        key: str,
        url: str,
        secret_file: Path | None,
        timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.key = key
        self.url = url
        self.secret_file = secret_file
        self.timeout = timeout
        self._ssl = ssl_context

    async def send(self, alert: Outgoing) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        port = _port(parts)
        secret = read_secret(self.secret_file) if self.secret_file else b""
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            host_header += f":{parts.port}"
        head = (
            f"POST {target} HTTP/1.1\r\n"
            f"Host: {host_header}\r\n"
            "User-Agent: breakglass-alerts\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(alert.body)}\r\n"
            f"{SIGNATURE_HEADER}: {signature(secret, alert.body)}\r\n"
            f"{ALERT_ID_HEADER}: {alert.alert_id}\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            tls = self._ssl or ssl.create_default_context()  # verifies cert and host name
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    host,
                    port,
                    ssl=tls,
                    server_hostname=host if tls else None,
                    limit=MAX_RESPONSE_LINE,
                )
                writer.write(head + alert.body)
                await writer.drain()
                status = await _read_status(reader)
        except TimeoutError:
            raise SinkError(f"no answer within {self.timeout:g}s") from None
        except (OSError, ssl.SSLError, ValueError, asyncio.IncompleteReadError) as exc:
            raise SinkError(f"HTTP request failed: {type(exc).__name__}: {exc}") from None
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()
        if not 200 <= status < 300:
            raise SinkError(f"HTTP {status}")
        return f"HTTP {status}"


async def _read_status(reader: asyncio.StreamReader) -> int:
    line = await reader.readline()
    fields = line.decode("latin-1").split(None, 2)
    if len(fields) < 2 or not fields[0].startswith("HTTP/1.") or not fields[1].isdigit():
        raise ValueError(f"not an HTTP response: {line[:80]!r}")
    for _ in range(MAX_HEADERS):  # read the headers so the server sees a clean close
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            break
    return int(fields[1])


# --------------------------------------------------------------------------- syslog


def _printable(text: str, limit: int) -> str:
    clean = "".join(ch for ch in text if 33 <= ord(ch) <= 126)[:limit]
    return clean or "-"


def rfc5424(payload: Mapping[str, Any], *, pid: int, host: str | None = None) -> bytes:
    """One RFC 5424 message: the payload as single-line ASCII JSON is the MSG, so no
    field can forge a second record or reach a terminal as an escape sequence."""
    rule = str(payload.get("rule", ""))
    if rule == "store_write_failed":
        severity = SEVERITY_CRIT
    elif rule in _ROUTINE:
        severity = SEVERITY_WARNING
    else:
        severity = SEVERITY_ALERT
    pri = FACILITY_AUTHPRIV * 8 + severity
    stamp = _printable(str(payload.get("time") or "-"), 32)
    hostname = _printable(host if host is not None else str(payload.get("proxy") or "-"), 255)
    msg = json.dumps(payload, ensure_ascii=True, sort_keys=True, separators=(",", ":"))
    return f"<{pri}>1 {stamp} {hostname} breakglass {pid} {_printable(rule, 32)} - {msg}".encode(
        "ascii"
    )


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
        message = rfc5424(alert.payload(), pid=os.getpid())
        try:
            async with asyncio.timeout(self.timeout):
                return await self._send(message)
        except TimeoutError:
            raise SinkError(f"syslog did not take the message within {self.timeout:g}s") from None
        except OSError as exc:
            raise SinkError(f"syslog send failed: {type(exc).__name__}: {exc}") from None

    async def _send(self, message: bytes) -> str:
        loop = asyncio.get_running_loop()
        if self.address.startswith("/"):
            return await send_unix(self.address, message)
        parts = urlsplit(self.address)
        host, port = parts.hostname or "", parts.port or SYSLOG_PORT
        if parts.scheme == "udp":
            transport, _ = await loop.create_datagram_endpoint(_Udp, remote_addr=(host, port))
            try:
                transport.sendto(message)
            finally:
                transport.close()
            return "sent (udp: no acknowledgement)"
        _, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(octet_counted(message))
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
