"""The e-mail sink: one plain-text message per alert over SMTP (aiosmtplib).

Owns the message and its transport. TLS is implicit (port 465) or STARTTLS (587,
required: a server that does not offer it is a failed send, never a send in clear),
unless ``tls: none`` was chosen for a relay on this host. Certificates are verified
against the system's trust store (plus ``ca_file``). The credentials are read from
``auth_file`` at every send and never logged. The subject names the rule, the person
and the target, with every control character (CR and LF first) removed, so no
untrusted string can add a header; the body shows every value verbatim. The
``Message-ID`` is derived from the ``alert_id``, so a repeat is recognisably the same
message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import ssl
from email.message import EmailMessage
from email.utils import format_datetime, formatdate
from pathlib import Path
from typing import Any

import aiosmtplib

from proxy.alerts.base import Outgoing, SinkError, read_secret, tls_context
from proxy.alerts.message import Summary, summarize, text_body
from proxy.config.model import SmtpTls

SUBJECT_LIMIT = 200


def header_text(text: str, limit: int = SUBJECT_LIMIT) -> str:
    """``text`` fit for a header: every control character (CR, LF, TAB, ESC, ...)
    and line/paragraph separator dropped, runs of spaces kept as they are."""
    kept = "".join(
        ch
        for ch in text
        if ch.isprintable() or ch == " "  # isprintable() is False for every control
    )
    return kept[:limit]


def build_message(
    summary: Summary, payload: dict[str, Any], sender: str, recipients: tuple[str, ...]
) -> EmailMessage:
    msg = EmailMessage()
    prefix = "[breakglass TEST]" if summary.test else "[breakglass]"
    msg["Subject"] = header_text(f"{prefix} {summary.headline(str)}")
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    digest = hashlib.sha256(summary.alert_id.encode()).hexdigest()[:16]
    msg["Message-ID"] = f"<{header_text(summary.alert_id, 40) or digest}@breakglass.invalid>"
    msg["X-Breakglass-Alert-Id"] = header_text(summary.alert_id, 40)
    msg["X-Breakglass-Rule"] = header_text(summary.rule, 64)
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies
    try:
        stamp = dt.datetime.fromisoformat(str(payload.get("time")).replace("Z", "+00:00"))
        msg["Date"] = format_datetime(stamp)
    except ValueError:
        msg["Date"] = formatdate(usegmt=True)
    msg.set_content(text_body(summary, str), charset="utf-8")
    return msg


def read_auth(path: Path) -> tuple[str, str]:
    """``auth_file``: the user name on the first line, the password on the second."""
    lines = read_secret(path, "the email auth_file").decode("utf-8", "replace").splitlines()
    if len(lines) < 2 or not lines[0].strip():
        raise SinkError("the email auth_file must hold the user name, then the password")
    return lines[0].strip(), lines[1]


class EmailSink:
    def __init__(
        self,
        key: str,
        *,
        host: str,
        port: int,
        tls: SmtpTls,
        sender: str,
        recipients: tuple[str, ...],
        timeout: float,
        auth_file: Path | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.key = key
        self.host = host
        self.port = port
        self.tls: SmtpTls = tls
        self.sender = sender
        self.recipients = recipients
        self.timeout = timeout
        self.auth_file = auth_file
        self.ca_file = ca_file

    def message(self, alert: Outgoing) -> EmailMessage:
        payload = alert.payload()
        return build_message(summarize(payload), payload, self.sender, self.recipients)

    async def send(self, alert: Outgoing) -> str:
        user, password = read_auth(self.auth_file) if self.auth_file else (None, None)
        context = tls_context(self.ca_file) if self.tls != "none" else None
        try:
            async with asyncio.timeout(self.timeout):
                await self._send(alert, user, password, context)
        except TimeoutError:
            raise SinkError(
                f"SMTP to {self.host}:{self.port}: no answer within {self.timeout:g}s"
            ) from None
        return f"accepted by {self.host}:{self.port} for {len(self.recipients)} recipient(s)"

    async def _send(
        self,
        alert: Outgoing,
        user: str | None,
        password: str | None,
        context: ssl.SSLContext | None,
    ) -> None:
        try:
            await aiosmtplib.send(
                self.message(alert),
                hostname=self.host,
                port=self.port,
                username=user,
                password=password,
                use_tls=self.tls == "implicit",
                start_tls=self.tls == "starttls",
                tls_context=context,
                timeout=self.timeout,
            )
        except aiosmtplib.SMTPException as exc:
            # Its messages carry the server's reply, never our credentials.
            raise SinkError(f"SMTP to {self.host}:{self.port} failed: {_reason(exc)}") from None
        except OSError as exc:
            raise SinkError(
                f"SMTP to {self.host}:{self.port} failed: {type(exc).__name__}: {exc}"
            ) from None


def _reason(exc: aiosmtplib.SMTPException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"
