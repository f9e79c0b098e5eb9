"""How asyncssh puts packets on the wire and takes them off, made cheaper for AES-GCM.

The proxy relays every byte twice (decrypt from one leg, encrypt to the other), and
asyncssh's per-packet Python work, not the cipher, is most of its CPU (benchmarks/,
issue 9). Five changes, each keeping the bytes on the wire and every message the peers
act on exactly as asyncssh would produce them:

1. No empty SSH_MSG_IGNORE before every packet under AEAD ciphers. asyncssh 2.24 sends
   one before each connection-layer packet (``send_packet``: "insert an ignore packet
   into the stream"), a countermeasure for CBC mode's predictable IVs. With AES-GCM or
   chacha20-poly1305, the only ciphers the proxy's client leg offers, each packet has
   its own nonce and tag, so it protects nothing and doubled the packets, encryptions
   and writes of every keystroke and data chunk (PTY output 23 -> 14 CPU s/GB).
2. AES-GCM reuses ``AESGCM`` objects for bulk packets instead of building one for every
   packet, and seals a packet straight into the buffer that goes to the socket.
3. Connection-layer packets (channel data, window adjusts, requests) under AES-GCM after
   authentication are framed and sealed in one pass: one join, one encryption, one
   write.
4. Received bytes are parsed through a ``memoryview``: asyncssh slices its input buffer
   twice per packet (``self._inpbuf = self._inpbuf[n:]``), which copies everything
   behind the packet each time, quadratic in the packets one socket read holds.
   Callers can ``defer`` work to the end of the read: the relay sends the channel data
   of all the packets one read brought as one packet (proxy/ssh/relay.py).
5. The per-packet log line (name lookup, byte count, f-strings) is only built when
   asyncssh's debug level (3) would print it.
6. One connection parses at most ``PACKETS_PER_TURN`` packets per turn of the event
   loop; the rest of what one socket read brought waits for the next turn, with that
   connection's reading paused meanwhile. asyncssh parses a whole read (up to 256 KiB)
   in one go: 10,000 window changes or signals, a few dozen bytes each, held every
   other session for a second. Bulk data (32 KiB packets) never reaches the bound.

Everything else (key exchange, rekeying, authentication, other ciphers, compression)
takes asyncssh's own code. The changes rely on asyncssh internals, so they are only
installed on the asyncssh versions they were checked against (``TESTED``); on any other
the proxy logs a warning and runs on stock asyncssh, correct and slower
(tests/integration/test_wire.py checks the sealing against AES-GCM itself and moves
data both ways across rekeys through a relay that cuts the stream at random).
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import asyncssh
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_IGNORE, MSG_USERAUTH_LAST
from asyncssh.crypto.cipher import GCMCipher
from asyncssh.encryption import ChachaEncryption, GCMEncryption
from asyncssh.logging import SSHLogger
from asyncssh.misc import DisconnectError
from asyncssh.packet import SSHPacketLogger
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger(__name__)
TESTED = ("2.24.1",)
# Packets (two handler calls each: header, then body) one connection parses per turn.
PACKETS_PER_TURN = 64
_AEAD = (GCMEncryption, ChachaEncryption)
_EMPTY_STRING = b"\x00\x00\x00\x00"  # asyncssh.packet.String(b"")
_TAG = 16  # AES-GCM tag size
_installed = False
fast = False  # whether changes 2-5 are in (the asyncssh version is in TESTED)


def install() -> None:
    """Patch asyncssh (idempotent). Called before the proxy listens."""
    global _installed, fast
    if _installed:
        return
    _installed = True
    _drop_ignore_filler()
    if asyncssh.__version__ not in TESTED:
        log.warning(
            "asyncssh %s is not a version the wire fast path was checked against (%s): "
            "running on stock asyncssh, correct but slower",
            asyncssh.__version__,
            ", ".join(TESTED),
        )
        return
    fast = True
    _cache_gcm()
    _fast_send()
    _fast_receive()
    _quiet_packet_log()


def _drop_ignore_filler() -> None:
    send_packet = SSHConnection.send_packet

    def send_packet_without_filler(
        self: SSHConnection, pkttype: int, *args: bytes, handler: Any = None
    ) -> None:
        if (
            pkttype == MSG_IGNORE
            and args == (_EMPTY_STRING,)
            and isinstance(getattr(self, "_send_encryption", None), _AEAD)
        ):
            return
        send_packet(self, pkttype, *args, handler=handler)

    SSHConnection.send_packet = send_packet_without_filler  # type: ignore[method-assign]


# -- 2. AESGCM objects kept for bulk data ------------------------------------------------

# An AESGCM object holds an initialised cipher context, 2.7 KiB: one per direction and
# leg would be 11 KiB on every idle session (the memory goal is 64 KiB a session). A
# fresh one costs ~0.9 us more per packet, ~2.7 us at 32 KiB; so bulk packets reuse one
# from a small most-recently-used table and keystrokes make their own.
_BULK_BYTES = 4096
_KEPT = 32
_kept: OrderedDict[GCMCipher, AESGCM] = OrderedDict()


def _aead(cipher: GCMCipher, size: int) -> AESGCM:
    if size < _BULK_BYTES:
        return AESGCM(cipher._key)
    aead = _kept.get(cipher)
    if aead is None:
        aead = _kept[cipher] = AESGCM(cipher._key)
        if len(_kept) > _KEPT:
            _kept.popitem(last=False)
    else:
        _kept.move_to_end(cipher)
    return aead


def seal(cipher: GCMCipher, header: bytes, packet: bytes) -> bytearray:
    """``header + encrypt(packet) + tag`` in one buffer, the IV advanced: what
    asyncssh's ``encrypt_and_sign`` and ``packet + mac`` produce together."""
    out = bytearray(len(header) + len(packet) + _TAG)
    out[: len(header)] = header
    aead = _aead(cipher, len(packet))
    aead.encrypt_into(cipher._iv, packet, header, memoryview(out)[len(header) :])
    cipher._update_iv()
    return out


def _cache_gcm() -> None:
    def encrypt_and_sign(self: GCMCipher, header: bytes, data: bytes) -> tuple[bytes, bytes]:
        sealed = _aead(self, len(data)).encrypt(self._iv, data, header)
        self._update_iv()
        return header + sealed[:-_TAG], sealed[-_TAG:]

    def verify_and_decrypt(self: GCMCipher, header: bytes, data: bytes, mac: bytes) -> bytes | None:
        try:
            plain = _aead(self, len(data)).decrypt(self._iv, b"".join((data, mac)), header)
        except InvalidTag:
            plain = None
        self._update_iv()
        return plain

    def decrypt_packet(
        self: GCMEncryption, seq: int, first: bytes, rest: bytes, header_len: int, mac: bytes
    ) -> bytes | None:
        # ``first``, ``rest`` and ``mac`` may be memoryviews of the receive buffer (4.).
        cipher: GCMCipher = self._cipher
        try:
            plain = _aead(cipher, len(rest)).decrypt(
                cipher._iv,
                b"".join((first[header_len:], rest, mac)),
                first[:header_len],
            )
        except InvalidTag:
            plain = None
        cipher._update_iv()
        return plain

    GCMCipher.encrypt_and_sign = encrypt_and_sign  # type: ignore[method-assign]
    GCMCipher.verify_and_decrypt = verify_and_decrypt  # type: ignore[method-assign]
    GCMEncryption.decrypt_packet = decrypt_packet  # type: ignore[method-assign]


# -- 3. connection-layer packets in one pass ---------------------------------------------


def _fast_send() -> None:
    send_packet = SSHConnection.send_packet  # with the filler dropped (1.)

    def send_packet_fast(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
        enc = self._send_encryption
        if (
            pkttype <= MSG_USERAUTH_LAST
            or type(enc) is not GCMEncryption
            or not self._kex_complete
            or not self._auth_complete
            or self._compressor
            or self._rekey_bytes_sent >= self._rekey_bytes
            or (self._rekey_seconds and time.monotonic() >= self._rekey_time)
        ):
            # Rekeying due, deferred packets, compression, other ciphers: asyncssh's way.
            send_packet(self, pkttype, *args, handler=handler)
            return
        size = 1 + sum(map(len, args))  # the payload: type byte and fields
        padlen = -(self._send_enchdrlen + size) % self._send_blocksize
        if padlen < 4:
            padlen += self._send_blocksize
        pktlen = 1 + size + padlen
        header = pktlen.to_bytes(4, "big")
        packet = b"".join((bytes((padlen, pkttype)), *args, os.urandom(padlen)))
        self._send(seal(enc._cipher, header, packet))
        seq = self._send_seq
        self._send_seq = (seq + 1) & 0xFFFFFFFF
        self._rekey_bytes_sent += pktlen
        if SSHLogger._debug_level >= 3:  # the slice copies: only when it prints (5.)
            (handler or self).log_sent_packet(pkttype, seq, packet[1 : 1 + size])

    SSHConnection.send_packet = send_packet_fast  # type: ignore[method-assign]


# -- 4. parsing received bytes without re-copying the buffer ------------------------------


_after_read: list[Callable[[], None]] | None = None  # while a socket read is parsed


def defer(callback: Callable[[], None]) -> bool:
    """Run ``callback`` once the socket read being parsed now has been (every packet in
    it delivered); False, and nothing kept, when no read is being parsed (or the fast
    path is not installed): the caller then acts at once."""
    if _after_read is None:
        return False
    _after_read.append(callback)
    return True


def _fast_receive() -> None:
    data_received = SSHConnection.data_received

    def data_received_fast(self: Any, data: bytes, datatype: Any = None) -> None:
        global _after_read
        outer = _after_read
        callbacks: list[Callable[[], None]] = []
        _after_read = callbacks
        try:
            if type(self._recv_encryption) is not GCMEncryption:
                data_received(self, data, datatype)
            else:
                _parse(self, data)
        finally:
            _after_read = outer
            for callback in callbacks:
                try:
                    callback()
                except Exception:  # as an exception in a packet handler would be
                    self.internal_error()

    def _parse(self: Any, data: bytes) -> None:
        buf = self._inpbuf
        self._inpbuf = memoryview(buf + data if buf else data)
        try:
            self._recv_data()
        finally:
            # Keep only what is still unparsed, as bytes: a view would pin the whole
            # socket read in memory for as long as the connection sits idle.
            rest = self._inpbuf
            self._inpbuf = bytes(rest) if rest else b""
            if type(self._packet) is memoryview:
                self._packet = bytes(self._packet)

    recv_data = SSHConnection._recv_data

    def next_turn(self: Any) -> None:
        """The packets a previous turn left: parse (some of) them, then read again."""
        self._bg_next_turn = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        data_received_fast(self, b"")
        if getattr(self, "_bg_next_turn", None) is None and self._transport is not None:
            self._transport.resume_reading()

    def recv_data_fast(self: Any) -> None:
        if type(self._inpbuf) is not memoryview:
            recv_data(self)
            return
        # asyncssh's _recv_data, stopping where a rekey leaves AES-GCM mid-buffer, and
        # after PACKETS_PER_TURN packets (6.).
        self._reset_keepalive_timer()
        budget = 2 * PACKETS_PER_TURN
        try:
            while (
                self._inpbuf
                and type(self._recv_encryption) is GCMEncryption
                and self._recv_handler()
            ):
                budget -= 1
                if budget <= 0 and self._inpbuf and self._transport is not None:
                    if getattr(self, "_bg_next_turn", None) is None:
                        self._transport.pause_reading()
                        self._bg_next_turn = self._loop.call_soon(next_turn, self)
                    return
        except DisconnectError as exc:
            self._send_disconnect(exc.code, exc.reason, exc.lang)
            self._force_close(exc)
            return
        except Exception:
            self.internal_error()
            return
        if self._inpbuf and type(self._recv_encryption) is not GCMEncryption:
            # Another cipher's code wants bytes.
            self._inpbuf = bytes(self._inpbuf)
            if type(self._packet) is memoryview:
                self._packet = bytes(self._packet)
            recv_data(self)

    SSHConnection.data_received = data_received_fast  # type: ignore[method-assign]
    SSHConnection._recv_data = recv_data_fast  # type: ignore[method-assign]


# -- 5. the packet log only when it prints -------------------------------------------------


def _quiet_packet_log() -> None:
    log_packet = SSHPacketLogger._log_packet

    def log_packet_if_printed(self: SSHPacketLogger, *args: Any) -> None:
        if SSHLogger._debug_level >= 3:  # SSHLogger.packet's own test
            log_packet(self, *args)

    SSHPacketLogger._log_packet = log_packet_if_printed  # type: ignore[method-assign,assignment]
