"""What asyncssh's server refuses and other SSH clients send: made acceptable.

One change. paramiko asks for the ``ssh-userauth`` service again before each method it
tries (``auth_none``, ``auth_publickey``, then ``auth_interactive``; ``SSHClient.connect``
with a key in ``~/.ssh`` does the same). RFC 4253 §10 does not forbid a second request
and OpenSSH's sshd accepts it; asyncssh 2.24 answers "Unexpected service in service
request" and disconnects, so such a client never reaches the code prompt.

The repeated request is accepted while authentication is in progress, and nothing else
changes: the connection's handler (its failure count, its growing delay, a justification
asked again) and asyncssh's own authentication state stay as they were. A request for
another service, or one after authentication, is refused as before.

The same change is offered to asyncssh as a patch with its test
(docs/upstream/asyncssh-repeated-userauth-service.patch). It relies on asyncssh
internals (the packet dispatch table and four connection attributes), so it is only
installed on the versions it was checked against (``TESTED``); on any other the proxy
logs a warning and runs stock asyncssh (paramiko must then use keyboard-interactive
first). tests/integration/test_clients.py drives paramiko through it.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncssh
from asyncssh.connection import SSHConnection
from asyncssh.constants import MSG_SERVICE_ACCEPT, MSG_SERVICE_REQUEST
from asyncssh.misc import ServiceNotAvailable
from asyncssh.packet import SSHPacket, String

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
            "asyncssh %s is not a version the repeated service request change was checked "
            "against (%s): paramiko clients must use keyboard-interactive first",
            asyncssh.__version__,
            ", ".join(TESTED),
        )
        return False
    _installed = True
    handlers: dict[int, Any] = SSHConnection._packet_handlers
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
    return True
