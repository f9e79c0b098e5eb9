"""proxy.ssh.wire: asyncssh stops sending an empty SSH_MSG_IGNORE before every packet
under AEAD ciphers, and nothing else about the connection changes.

Real asyncssh client and server over loopback TCP in this process (the patch is on
asyncssh's connection class, so both ends carry it); asyncssh's own packet log says
which messages went out.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

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


# -- the AES-GCM fast path (sealing, one-pass framing, receive through a memoryview) ----


def test_the_fast_path_is_in_on_the_versions_it_was_checked_against() -> None:
    wire.install()
    assert wire.fast == (asyncssh.__version__ in wire.TESTED)


def test_seal_is_what_aes_gcm_makes_of_the_packet_and_advances_the_iv() -> None:
    from asyncssh.crypto.cipher import GCMCipher
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key, iv = bytes(range(16)), bytes(range(100, 112))
    cipher = GCMCipher("aes128-gcm", key, iv)
    packets = [bytes([6, 94]) + b"abc" * 100 + bytes(6), bytes([4, 2]) + bytes(12)]
    for n, packet in enumerate(packets):
        header = len(packet).to_bytes(4, "big")
        nonce = iv[:4] + (int.from_bytes(iv[4:], "big") + n).to_bytes(8, "big")
        expected = header + AESGCM(key).encrypt(nonce, packet, header)
        assert bytes(wire.seal(cipher, header, packet)) == expected


class _ChunkingRelay:
    """A TCP relay that re-cuts the byte stream into uneven pieces, so packets arrive
    split anywhere (mid-header, mid-tag) and many to one read."""

    def __init__(self, port: int, seed: int) -> None:
        self.port = port
        self.rng = random.Random(seed)
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        sr, sw = await asyncio.open_connection("127.0.0.1", self.port)
        await asyncio.gather(self._pump(cr, sw), self._pump(sr, cw), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending = b""
        while True:
            data = await reader.read(65536)
            if not data:
                break
            pending += data
            while pending:
                cut = self.rng.choice((1, 3, 17, 100, 4096, 40000, 300000))
                writer.write(pending[:cut])
                pending = pending[cut:]
                if cut < 100:
                    await writer.drain()
                    await asyncio.sleep(0)
            await writer.drain()
        writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


async def _echo(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """Send back what came in, in 64 KiB pieces, then the exit status."""
    while True:
        data = await process.stdin.read(65536)
        if not data:
            break
        process.stdout.write(data)
        await process.stdout.drain()
    process.exit(3)


async def test_bulk_both_ways_across_rekeys_through_a_chunking_relay(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """4 MB each way, with a rekey every 256 KiB in each direction and the stream cut
    into random pieces: every byte arrives in order, both ends use the fast path."""
    wire.install()
    used = {"sealed": 0, "views": 0}
    seal, decrypt = wire.seal, GCMEncryption.decrypt_packet

    def counting_seal(*args: Any) -> bytearray:
        used["sealed"] += 1
        return seal(*args)

    def counting_decrypt(self: GCMEncryption, *args: Any) -> bytes | None:
        used["views"] += type(args[2]) is memoryview
        return decrypt(self, *args)

    monkeypatch.setattr(wire, "seal", counting_seal)
    monkeypatch.setattr(GCMEncryption, "decrypt_packet", counting_decrypt)
    payload = random.Random(7).randbytes(4 * 1024 * 1024)
    key = asyncssh.generate_private_key("ssh-ed25519")
    gcm = ["aes128-gcm@openssh.com"]
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[key],
        server_factory=_OpenServer,
        process_factory=_echo,
        encryption_algs=gcm,
        rekey_bytes=256 * 1024,
        encoding=None,
    )
    relay = _ChunkingRelay(server.sockets[0].getsockname()[1], seed=11)
    port = await relay.start()
    caplog.set_level(logging.DEBUG, logger="asyncssh")
    try:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            known_hosts=None,
            username="u",
            encryption_algs=gcm,
            rekey_bytes=256 * 1024,
        ) as conn:
            result = await asyncio.wait_for(
                conn.run("echo", input=payload, encoding=None), timeout=120
            )
            assert type(conn._inpbuf) is bytes  # no view pins a socket read
    finally:
        await relay.close()
        server.close()
        await server.wait_closed()
    assert result.exit_status == 3
    assert result.stdout == payload
    kex = [r for r in caplog.records if r.getMessage().endswith("] Completed key exchange")]
    assert len(kex) >= 2 * 8  # both ends, at least 4 MB / 256 KiB / 2 rekeys
    if wire.fast:  # 8 MB in 32 KiB packets at least, sent and received
        assert used["sealed"] >= 256, used
        assert used["views"] >= 256, used


def test_only_bulk_packets_keep_an_aesgcm_and_only_a_few() -> None:
    """An AESGCM object is 2.7 KiB: idle sessions (keystrokes) keep none, bulk keeps at
    most wire._KEPT, the most recently used."""
    from asyncssh.crypto.cipher import GCMCipher

    wire._kept.clear()
    small = [GCMCipher("aes128-gcm", bytes([n]) * 16, bytes(12)) for n in range(50)]
    for cipher in small:
        wire.seal(cipher, b"\x00\x00\x00\x20", bytes(32))
    assert not wire._kept
    bulk = [GCMCipher("aes128-gcm", bytes([n]) * 16, bytes(12)) for n in range(wire._KEPT + 8)]
    for cipher in bulk:
        wire.seal(cipher, b"\x00\x00\x80\x00", bytes(wire._BULK_BYTES))
    wire.seal(bulk[-1], b"\x00\x00\x80\x00", bytes(wire._BULK_BYTES))
    assert list(wire._kept) == bulk[8:]
    wire._kept.clear()
