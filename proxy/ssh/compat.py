"""What asyncssh's server refuses and other SSH clients send: made acceptable.

Two changes.

1. paramiko asks for the ``ssh-userauth`` service again before each method it
tries (``auth_none``, ``auth_publickey``, then ``auth_interactive``; ``SSHClient.connect``
with a key in ``~/.ssh`` does the same). RFC 4253 §10 does not forbid a second request
and OpenSSH's sshd accepts it; asyncssh 2.24 answers "Unexpected service in service
request" and disconnects, so such a client never reaches the code prompt.

   The repeated request is accepted while authentication is in progress, and nothing
   else changes: the connection's handler (its failure count, its growing delay, a
   justification asked again) and asyncssh's own authentication state stay as they
   were. A request for another service, or one after authentication, is refused as
   before. Offered to asyncssh: docs/upstream/asyncssh-repeated-userauth-service.patch.
2. A client that guesses the key exchange (Dropbear sends its curve25519 init right
   after its KEXINIT) guessed right, by RFC 4253 §7.1 and as sshd and Dropbear decide
   it, only when its first key exchange and host key algorithms are the server's
   first ones. asyncssh compares the client's first with the algorithm chosen, so it
   acts on a guess the client itself counts as wrong and sends again: the second init
   arrives after the exchange and asyncssh disconnects ("Key exchange not in
   progress"). The guessed packet is now ignored exactly when the RFC says. Offered to
   asyncssh: docs/upstream/asyncssh-kex-guess-rfc4253.patch.

Both rely on asyncssh internals (the packet dispatch table and a few connection
attributes), so they are only installed on the versions they were checked against
(``TESTED``); on any other the proxy logs a warning and runs stock asyncssh (paramiko
must then use keyboard-interactive first, and Dropbear cannot connect).
tests/integration/test_clients_paramiko.py and test_clients_dropbear.py drive the real
clients through them.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncssh
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_KEXINIT, MSG_SERVICE_ACCEPT, MSG_SERVICE_REQUEST
from asyncssh.misc import ServiceNotAvailable
from asyncssh.packet import PacketDecodeError, SSHPacket, String

log = logging.getLogger(__name__)
TESTED = ("2.24.1",)
_USERAUTH = b"ssh-userauth"
_installed = False


def install() -> bool:
    """Patch asyncssh (idempotent); whether the change is in."""
    global _installed
    if _installed:
        return True
    if asyncssh.__version__ not in TESTED:
        log.warning(
            "asyncssh %s is not a version the client compatibility changes were checked "
            "against (%s): paramiko clients must use keyboard-interactive first and "
            "Dropbear clients cannot connect",
            asyncssh.__version__,
            ", ".join(TESTED),
        )
        return False
    _installed = True
    handlers: dict[int, Any] = SSHConnection._packet_handlers
    _repeated_service_request(handlers)
    _kex_guess_by_rfc(handlers)
    return True


def _repeated_service_request(handlers: dict[int, Any]) -> None:
    stock = handlers[MSG_SERVICE_REQUEST]

    def service_request(self: Any, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        # The state in which stock asyncssh always refuses: a server whose userauth
        # service was already accepted and whose authentication is not complete.
        if (
            self.is_server()
            and self._auth_in_progress
            and not self._auth_complete
            and self._next_service is None
        ):
            service = packet.get_string()
            packet.check_end()
            if service != _USERAUTH:
                raise ServiceNotAvailable("Unexpected service in service request")
            self.logger.debug2("Accepting repeated request for service %s", service)
            self.send_packet(MSG_SERVICE_ACCEPT, String(service))
            return
        stock(self, pkttype, pktid, packet)

    handlers[MSG_SERVICE_REQUEST] = service_request


def _first_algorithms(payload: bytes) -> tuple[bytes, bytes, bool]:
    """A KEXINIT body's first key exchange and host key algorithms, and whether a
    guessed packet follows (RFC 4253 §7.1: cookie, ten name-lists, a boolean)."""
    packet = SSHPacket(payload)
    packet.get_bytes(16)
    kex = packet.get_namelist()
    host_key = packet.get_namelist()
    for _ in range(8):
        packet.get_namelist()
    follows = packet.get_boolean()
    return (kex[0] if kex else b""), (host_key[0] if host_key else b""), follows


def _kex_guess_by_rfc(handlers: dict[int, Any]) -> None:
    stock = handlers[MSG_KEXINIT]

    async def kexinit(self: Any, pkttype: int, pktid: int, packet: SSHPacket) -> None:
        try:
            peer = _first_algorithms(packet.get_remaining_payload())
        except PacketDecodeError:
            peer = None  # asyncssh's own parsing says what is wrong with it
        await stock(self, pkttype, pktid, packet)
        if peer is None or not peer[2] or not self.is_server():
            return
        # Our own KEXINIT as sent (asyncssh keeps it for the exchange hash), after its
        # message type byte.
        own = _first_algorithms(bytes(self._server_kexinit)[1:])
        self._ignore_first_kex = peer[:2] != own[:2]

    handlers[MSG_KEXINIT] = kexinit
