"""Real alert receivers on 127.0.0.1 for the alert tests: an HTTP server that checks the
webhook signature, UDP and TCP syslog listeners, and a command hook that appends to a
file. Each runs in its own thread, so both async tests and tests driving the proxy as a
subprocess can use them; and ``eventually``, an async bounded wait for a condition.
Loopback only; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from proxy.store.sqlite import SQLiteStore
from tests.integration.harness import LOOPBACK, free_port, write_proxy_config
from tests.waiting import eventually

# How often a test server's loop checks for shutdown: stop() waits up to this long
# (socketserver's default, 0.5 s, was most of each alert test's teardown).
STOP_POLL = 0.02

SECRET = b"s3cret-for-tests"
T = TypeVar("T")


@dataclass
class Received:
    alert_id: str
    body: bytes
    signature_ok: bool
    headers: dict[str, str]
    status: int

    def doc(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


@dataclass
class WebhookReceiver:
    """``mode``: "ok" (204), "fail" (500) or "slow" (answers after ``delay`` seconds).
    Only signature-valid, 2xx-answered requests count as ``delivered``."""

    port: int = field(default_factory=free_port)
    secret: bytes = SECRET
    mode: str = "ok"
    delay: float = 5.0
    requests: list[Received] = field(default_factory=list)
    tls: tuple[Path, Path] | None = None  # (certificate, key): serve HTTPS
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/hook?token=abc"

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                want = "sha256=" + hmac.new(receiver.secret, body, hashlib.sha256).hexdigest()
                got = self.headers.get("X-Breakglass-Signature", "")
                ok = hmac.compare_digest(want, got)
                mode = receiver.mode
                if mode == "slow":
                    time.sleep(receiver.delay)
                status = 204 if ok and mode == "ok" else (500 if mode != "ok" else 401)
                with receiver._lock:
                    receiver.requests.append(
                        Received(
                            str(self.headers.get("X-Breakglass-Alert-Id", "")),
                            body,
                            ok,
                            {k.lower(): v for k, v in self.headers.items()},
                            status,
                        )
                    )
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        self._server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(STOP_POLL,), daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def delivered(self) -> list[Received]:
        """Requests answered 2xx with a valid signature."""
        with self._lock:
            return [r for r in self.requests if r.signature_ok and r.status < 300]

    def wait_for(
        self, pred: Callable[[dict[str, Any]], bool], *, timeout: float = 20.0
    ) -> Received:
        def found() -> Received | None:
            with self._lock:
                return next((r for r in self.requests if r.status < 300 and pred(r.doc())), None)

        return eventually(found, within=timeout, what="a matching webhook request")


class _Udp(socketserver.ThreadingUDPServer):
    daemon_threads = True
    messages: list[bytes]


class _Tcp(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    messages: list[bytes]


class _UdpHandler(socketserver.BaseRequestHandler):
    server: _Udp

    def handle(self) -> None:
        self.server.messages.append(self.request[0])


class _TcpHandler(socketserver.StreamRequestHandler):
    server: _Tcp

    def handle(self) -> None:
        # RFC 6587 octet counting: "LEN SP MSG", repeated.
        while True:
            digits = b""
            while (ch := self.rfile.read(1)) not in (b" ", b""):
                digits += ch
            if not digits:
                return
            self.server.messages.append(self.rfile.read(int(digits)))


@dataclass
class SyslogListener:
    proto: str  # "udp" | "tcp"
    port: int = 0
    _server: _Udp | _Tcp | None = None

    @property
    def address(self) -> str:
        return f"{self.proto}://{LOOPBACK}:{self.port}"

    def start(self) -> SyslogListener:
        server: _Udp | _Tcp
        if self.proto == "udp":
            server = _Udp((LOOPBACK, self.port), _UdpHandler)
        else:
            server = _Tcp((LOOPBACK, self.port), _TcpHandler)
        server.messages = []
        self.port = int(server.server_address[1])
        self._server = server
        threading.Thread(target=server.serve_forever, args=(STOP_POLL,), daemon=True).start()
        return self

    @property
    def messages(self) -> list[bytes]:
        assert self._server is not None
        return list(self._server.messages)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def wait_for(self, needle: str, *, timeout: float = 20.0) -> bytes:
        return eventually(
            lambda: next((m for m in self.messages if needle.encode() in m), None),
            within=timeout,
            what=f"a syslog message containing {needle!r} on {self.address}",
        )


def syslog_json(message: bytes) -> dict[str, Any]:
    """The JSON payload of an RFC 5424 message as the sinks write it."""
    text = message.decode("ascii")
    _, _, msg = text.partition(" - {")
    doc: dict[str, Any] = json.loads("{" + msg)
    return doc


def command_hook(directory: Path, *, exit_status: int = 0) -> tuple[Path, Path]:
    """A hook script appending its stdin and selected environment to a file; returns
    (script, output file)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "hook.out"
    script = directory / "hook.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'{{ cat; echo "ENV $(env | sort | tr "\\n" " ")"; }} >> "{out}"\n'
        f"exit {exit_status}\n"
    )
    script.chmod(0o700)
    return script, out


def hook_payloads(out: Path) -> list[dict[str, Any]]:
    if not out.exists():
        return []
    return [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]


def unused_loopback_port() -> int:
    """A port nobody listens on (a sink that is down)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
    return port


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (IP SAN) and its key, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "breakglass-test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def config_with(tmp_path: Path, sinks: list[dict[str, object]]) -> Path:
    """An installed proxy's config: its store exists (a drill records into it, and only
    ``serve`` and the code commands may create one)."""
    config = write_proxy_config(tmp_path, free_port(), {}, alerts={"sinks": sinks})

    async def create() -> None:
        await (await SQLiteStore.open(tmp_path / "audit.db")).close()

    asyncio.run(create())
    return config
