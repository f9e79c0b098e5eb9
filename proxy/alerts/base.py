"""What every alert sink shares: the alert as sent, the failure it raises, the protocol
it implements, its TLS context and how it reads a secret file.

Never logs and never puts a secret (a file's content) into an exception message.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


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


def tls_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Certificates and host names verified against the system's trust store, plus
    ``ca_file`` when set (a private CA, or the tests' own)."""
    context = ssl.create_default_context()
    if ca_file is not None:
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise SinkError(f"cannot load the CA file {ca_file}: {type(exc).__name__}") from None
    return context


def read_secret(path: Path, what: str = "the webhook secret file") -> bytes:
    """The file's content without its trailing newline (``echo s > file`` adds one).
    Read at every send, so a rotated secret takes effect without a restart."""
    try:
        return path.read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        raise SinkError(f"cannot read {what}: {exc.strerror}") from None


def read_secret_text(path: Path, what: str) -> str:
    """A secret file holding one line of text (a URL, a key)."""
    try:
        text = read_secret(path, what).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SinkError(f"{what} is not UTF-8 text") from None
    if not text or "\n" in text:
        raise SinkError(f"{what} must hold exactly one line")
    return text
