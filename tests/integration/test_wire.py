"""proxy.ssh.wire: asyncssh stops sending an empty SSH_MSG_IGNORE before every packet
under AEAD ciphers, and nothing else about the connection changes.

Real asyncssh client and server over loopback TCP in this process (the patch is on
asyncssh's connection class, so both ends carry it); asyncssh's own packet log says
which messages went out.
"""

from __future__ import annotations

import logging

import asyncssh
import pytest
from asyncssh.constants import MSG_IGNORE
from asyncssh.encryption import GCMEncryption
from asyncssh.packet import String

from proxy.ssh import wire

PAYLOAD = bytes(range(256)) * 400  # 100 KiB: several full data packets


class _OpenServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return False  # no authentication: this test is about the transport


def _reply(process: asyncssh.SSHServerProcess[bytes]) -> None:
    process.stdout.write(PAYLOAD)
    process.exit(7)


async def _run_over(cipher: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Run one command over a fresh connection with ``cipher``; the packets sent."""
    wire.install()
    key = asyncssh.generate_private_key("ssh-ed25519")
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[key],
        server_factory=_OpenServer,
        process_factory=_reply,
        encryption_algs=[cipher],
        encoding=None,
    )
    port = server.sockets[0].getsockname()[1]
    asyncssh.set_debug_level(3)
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    try:
        async with asyncssh.connect(
            "127.0.0.1", port, known_hosts=None, username="u", encryption_algs=[cipher]
        ) as conn:
            result = await conn.run("x", encoding=None)
    finally:
        asyncssh.set_debug_level(1)
        server.close()
        await server.wait_closed()
    assert result.stdout == PAYLOAD
    assert result.exit_status == 7
    return [r.getMessage() for r in caplog.records if "Sent MSG_" in r.getMessage()]


@pytest.mark.parametrize("cipher", ["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"])
async def test_no_ignore_filler_under_aead(cipher: str, caplog: pytest.LogCaptureFixture) -> None:
    sent = await _run_over(cipher, caplog)
    assert any("MSG_CHANNEL_DATA" in line for line in sent), sent
    assert not [line for line in sent if "MSG_IGNORE" in line], sent


async def test_other_ciphers_keep_the_filler(caplog: pytest.LogCaptureFixture) -> None:
    # Not used by the proxy (AEAD only); asyncssh's countermeasure stays where it matters.
    sent = await _run_over("aes128-ctr", caplog)
    assert [line for line in sent if "MSG_IGNORE" in line]


def test_an_ignore_with_content_is_still_sent() -> None:
    """Only the empty filler is dropped: an IGNORE carrying data reaches asyncssh's
    own send_packet (which, on this bare object, fails: proof it was called)."""
    wire.install()

    class Bare:
        _send_encryption = GCMEncryption.new("aes128-gcm", bytes(16), bytes(12))

    bare = Bare()
    asyncssh.connection.SSHConnection.send_packet(bare, MSG_IGNORE, String(b""))  # type: ignore[arg-type]
    with pytest.raises(AttributeError):
        asyncssh.connection.SSHConnection.send_packet(bare, MSG_IGNORE, String(b"x"))  # type: ignore[arg-type]
