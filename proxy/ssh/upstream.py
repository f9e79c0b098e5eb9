"""Connects to a target with the proxy's key and the target's pinned host key.

Owns the proxy -> target leg: algorithm choice, key loading, and turning every way a
connection can fail into one ``UpstreamError`` with a precise reason. Never reads
``~/.ssh/config``, never uses an agent, never falls back to trust-on-first-use.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import asyncssh

from proxy.config import TargetConfig
from proxy.core.errors import UpstreamError

# The proxy is the client on this leg, so its order wins: GCM first (half the CPU of
# chacha20 in asyncssh), the rest only for targets that lack GCM.
ENCRYPTION_ALGS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes128-ctr",
]
MAC_ALGS = ["hmac-sha2-256-etm@openssh.com", "hmac-sha2-512-etm@openssh.com"]


@dataclass(frozen=True)
class UpstreamKeys:
    """A target's pinned host keys and the proxy's client key, loaded once per config."""

    host_keys: tuple[asyncssh.SSHKey, ...]
    client_key: asyncssh.SSHKey


def load_keys(target: TargetConfig) -> UpstreamKeys:
    return UpstreamKeys(
        host_keys=tuple(asyncssh.import_public_key(k) for k in target.host_keys),
        client_key=asyncssh.read_private_key(target.identity_file),
    )


async def connect(
    target: TargetConfig, keys: UpstreamKeys, login: str
) -> asyncssh.SSHClientConnection:
    """Connect to the first of the target's addresses that answers.

    Raises UpstreamError with reason target_unresolved, target_unreachable,
    host_key_mismatch, upstream_auth_refused, upstream_timeout or upstream_error.
    """
    last: UpstreamError | None = None
    for address in await resolve(target):
        try:
            return await asyncio.wait_for(
                asyncssh.connect(
                    address,
                    target.port,
                    username=login,
                    known_hosts=(list(keys.host_keys), [], []),
                    client_keys=[keys.client_key],
                    agent_path=None,
                    agent_forwarding=False,
                    config=None,
                    gss_host=None,
                    preferred_auth="publickey",
                    encryption_algs=ENCRYPTION_ALGS,
                    mac_algs=MAC_ALGS,
                    compression_algs=["none"],
                    keepalive_interval=30,
                    keepalive_count_max=3,
                    # A dead target must not hold an engineer at a silent prompt.
                    login_timeout=target.connect_timeout,
                ),
                timeout=target.connect_timeout,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise UpstreamError(
                f"host key of target {target.name} does not match the pinned key",
                reason="host_key_mismatch",
            ) from exc
        except asyncssh.PermissionDenied as exc:
            raise UpstreamError(
                f"target {target.name} refused the proxy's key for login {login}",
                reason="upstream_auth_refused",
            ) from exc
        except TimeoutError:
            last = UpstreamError(
                f"target {target.name} did not answer within {target.connect_timeout:g}s",
                reason="upstream_timeout",
            )
        except OSError as exc:
            last = UpstreamError(
                f"target {target.name} is unreachable ({exc.strerror or exc})",
                reason="target_unreachable",
            )
        except asyncssh.Error as exc:
            last = UpstreamError(
                f"connection to target {target.name} failed: {exc.reason}",
                reason="upstream_error",
            )
    raise last or UpstreamError(f"target {target.name} has no address", reason="target_unreachable")


async def resolve(target: TargetConfig) -> list[str]:
    """The target's addresses, asked of the resolver now (at each connect, never cached
    from the config's load: DNS changes, and a name that does not resolve must cost only
    the logins to that target). An address literal is returned as it is."""
    try:
        ipaddress.ip_address(target.host)
        return [target.host]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM),
            timeout=target.connect_timeout,
        )
    except TimeoutError:
        raise UpstreamError(
            f"host name {target.host!r} of target {target.name} did not resolve within "
            f"{target.connect_timeout:g}s",
            reason="target_unresolved",
        ) from None
    except (OSError, UnicodeError) as exc:
        detail = getattr(exc, "strerror", None) or str(exc)
        raise UpstreamError(
            f"host name {target.host!r} of target {target.name} does not resolve ({detail})",
            reason="target_unresolved",
        ) from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
