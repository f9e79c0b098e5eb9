"""An SSH target in the test's own event loop: an asyncssh server on 127.0.0.1 whose
channels run a Python handler instead of a shell.

For the tests where a real ``sshd`` adds nothing: what the relay does with the bytes
(flow control both ways, coalescing) and what the recorder makes of them (the casts).
The handler controls the target's side exactly (when it writes, how much, whether it
reads at all), which a shell behind OpenSSH cannot. The proxy connects to it as to any
target: with its own key (the only one accepted) and the target's pinned host key. The
end-to-end and hostile suites keep the real ``sshd`` (``harness.SshdTarget``).

Loopback only; the server is closed when the block ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from tests.integration.harness import LOOPBACK, current_login, target_entry

Handler = Callable[[asyncssh.SSHServerProcess[bytes]], Awaitable[None]]


async def _refuse(process: asyncssh.SSHServerProcess[bytes]) -> None:
    process.stderr.write(b"no handler set\n")
    process.exit(127)


@dataclass
class AsyncTarget:
    """The running target; set ``handler`` to decide what its next channel does."""

    port: int
    host_pub: str
    proxy_key: Path
    login: str
    handler: Handler = _refuse

    def target_entry(self, **overrides: object) -> dict[str, object]:
        """This target as a ``targets:`` entry of the proxy config."""
        return target_entry(self.port, self.login, self.proxy_key, self.host_pub, **overrides)

    async def _run(self, process: asyncssh.SSHServerProcess[bytes]) -> None:
        await self.handler(process)


def _public_line(key: asyncssh.SSHKey) -> str:
    """The "type base64" part of the key's OpenSSH public line."""
    key_type, blob = key.export_public_key("openssh").decode().split()[:2]
    return f"{key_type} {blob}"


def _keys(directory: Path) -> tuple[asyncssh.SSHKey, asyncssh.SSHKey, Path]:
    """A fresh host key, and the proxy's key written where its config will name it."""
    directory.mkdir(parents=True, exist_ok=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    proxy_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = directory / "proxy_key"
    proxy_key.write_private_key(key_path)
    key_path.chmod(0o600)
    return host_key, proxy_key, key_path


@contextlib.asynccontextmanager
async def async_target(directory: Path) -> AsyncIterator[AsyncTarget]:
    host_key, proxy_key, key_path = await asyncio.to_thread(_keys, directory)
    authorized = asyncssh.import_authorized_keys(_public_line(proxy_key) + "\n")
    target = AsyncTarget(0, _public_line(host_key), key_path, current_login())
    server = await asyncssh.create_server(
        None,
        LOOPBACK,
        0,
        server_host_keys=[host_key],
        authorized_client_keys=authorized,
        process_factory=target._run,
        encoding=None,
        allow_pty=True,
        x509_trusted_certs=None,
        kbdint_auth=False,
        password_auth=False,
    )
    target.port = int(server.sockets[0].getsockname()[1])
    try:
        yield target
    finally:
        server.close()
        await server.wait_closed()
