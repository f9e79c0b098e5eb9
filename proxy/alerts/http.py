"""One HTTP/1.1 POST with a bounded wait: the wire under every HTTP alert sink.

Owns the request and reading the status line. TLS certificates and host names are
verified (``proxy.alerts.base.tls_context``); redirects are never followed; the response
body is not read (a 2xx is all a sink needs). An error says where (scheme, host, port),
never the URL's path or query: for Slack and Teams the path is the secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from proxy.alerts.base import SinkError, tls_context

MAX_RESPONSE_LINE = 8192
MAX_HEADERS = 100


@dataclass(frozen=True)
class Response:
    status: int

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def port_of(parts: SplitResult) -> int:
    port = parts.port
    if port is not None:
        return int(port)
    return 443 if parts.scheme == "https" else 80


def where(url: str) -> str:
    """``scheme://host:port`` of ``url``: safe to log (no path, no query)."""
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.hostname}:{port_of(parts)}"
    except ValueError:
        return "an unparsable URL"


async def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    within: float,
    tls: ssl.SSLContext | None = None,
) -> Response:
    """POST ``body``; an https URL uses ``tls`` (default: the system's trust store)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = port_of(parts)
    except ValueError:
        raise SinkError("the URL cannot be parsed") from None
    if parts.scheme not in ("http", "https") or not host:
        raise SinkError(f"not an http(s) URL ({where(url)})")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        host_header += f":{parts.port}"
    lines = [f"POST {target} HTTP/1.1", f"Host: {host_header}", "User-Agent: breakglass-alerts"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    try:
        head = "\r\n".join(lines).encode("ascii")
    except UnicodeEncodeError:
        raise SinkError("a request header is not ASCII") from None
    context = (tls or tls_context()) if parts.scheme == "https" else None
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(within):
            reader, writer = await asyncio.open_connection(
                host,
                port,
                ssl=context,
                server_hostname=host if context else None,
                limit=MAX_RESPONSE_LINE,
            )
            writer.write(head + body)
            await writer.drain()
            status = await _read_status(reader)
    except TimeoutError:
        raise SinkError(f"no answer within {within:g}s") from None
    except (OSError, ssl.SSLError, ValueError, asyncio.IncompleteReadError) as exc:
        raise SinkError(f"HTTP request failed: {type(exc).__name__}: {exc}") from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()
    return Response(status)


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


def check(response: Response) -> str:
    """The note for a 2xx; a SinkError for anything else (retried by delivery)."""
    if not response.ok:
        raise SinkError(f"HTTP {response.status}")
    return f"HTTP {response.status}"
