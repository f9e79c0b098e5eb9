"""Checks on the things a config file points at: key files, secret files, host keys,
known_hosts files and target host names.

Owns the rules "a secret file is readable by its owner only", "a private key parses",
"a pinned host key is one OpenSSH public key line" and host name resolution at load.
Each check returns an :class:`Issue` (or raises ValueError with a message) and never
puts file contents in a message: key material, passphrases and secrets stay out of
logs and terminals.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import asyncssh

__all__ = [
    "Issue",
    "executable_issue",
    "known_hosts_keys",
    "normalise_host_key",
    "private_key_issue",
    "resolve_host",
    "secret_file_issue",
]


class Issue(NamedTuple):
    message: str
    hint: str = ""


def _private_file(path: Path, what: str, *, must_exist: bool) -> tuple[Issue | None, bytes | None]:
    """Read a file that must be a regular file closed to group and others.

    Gives (None, None) for an absent file that need not exist."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if not must_exist:
            return None, None
        return Issue(
            f"{what} {path} does not exist",
            "check the path; relative paths start at the config file's folder",
        ), b""
    except OSError as exc:
        return Issue(f"{what} {path} cannot be read: {exc.strerror}"), b""
    if not stat.S_ISREG(info.st_mode):
        return Issue(f"{what} {path} is not a regular file"), b""
    if info.st_mode & 0o077:
        mode = f"{stat.S_IMODE(info.st_mode):04o}"
        return Issue(
            f"{what} {path} is accessible by group or others (mode {mode})", f"chmod 600 {path}"
        ), b""
    try:
        return None, path.read_bytes()
    except OSError as exc:
        return Issue(
            f"{what} {path} cannot be read: {exc.strerror}",
            "the proxy's user must own the file or be able to read it",
        ), b""


def private_key_issue(path: Path, what: str, *, must_exist: bool = True) -> Issue | None:
    """Why ``path`` is not a usable private key file, or None when it is (or is absent
    and ``must_exist`` is False)."""
    issue, data = _private_file(path, what, must_exist=must_exist)
    if issue is not None or data is None:
        return issue
    # Imported here, not at the top: the auditor's commands load the config too, and
    # asyncssh costs ~0.1 s to import; they need it only when there is a key to check.
    import asyncssh

    try:
        asyncssh.import_private_key(data)
    # asyncssh raises several types for malformed input; any of them means "unusable".
    except Exception as exc:  # the text is never shown: it may echo key data
        if "passphrase" in str(exc).lower() or isinstance(exc, asyncssh.KeyEncryptionError):
            return Issue(
                f"{what} {path} is encrypted with a passphrase",
                f"the proxy needs an unencrypted key: ssh-keygen -p -N '' -f {path}",
            )
        return Issue(
            f"{what} {path} is not a private key the proxy can read",
            "use an OpenSSH or PEM private key, e.g. made by ssh-keygen -t ed25519",
        )
    return None


def secret_file_issue(path: Path, what: str) -> Issue | None:
    """Why ``path`` is not a usable shared-secret file, or None when it is."""
    issue, data = _private_file(path, what, must_exist=True)
    if issue is None and data is not None and not data.strip():
        return Issue(f"{what} {path} is empty", "put a long random secret in it")
    return issue


def _openssh_line(key: asyncssh.SSHKey) -> str:
    algorithm, blob = key.export_public_key("openssh").decode("ascii").split()[:2]
    return f"{algorithm} {blob}"


def normalise_host_key(text: str) -> str:
    """``text`` (one OpenSSH public key line, comment allowed) as "type base64".

    Raises ValueError with a message that quotes none of ``text``.
    """
    stripped = text.strip()
    if "PRIVATE KEY" in stripped:
        raise ValueError("is a private key; pin the target's public host key instead")
    if "\n" in stripped or len(stripped.split()) < 2:
        raise ValueError("must be one OpenSSH public key line: TYPE BASE64 [COMMENT]")
    import asyncssh

    try:
        key = asyncssh.import_public_key(stripped)
    except Exception:  # as in private_key_issue
        raise ValueError("is not a valid OpenSSH public key line") from None
    return _openssh_line(key)


def known_hosts_keys(path: Path, host: str, port: int) -> tuple[str, ...]:
    """The host keys ``path`` (OpenSSH known_hosts format) pins for the target.

    Matches ``host`` as written in the config (a name or an address), as ssh does with
    its default ``CheckHostIP no``: never what the name resolves to, so DNS neither
    chooses the pinned key nor, when it is down, stops the config from loading.
    ``@revoked`` keys are left out and ``@cert-authority`` lines are not host keys.
    Raises OSError when the file cannot be read, ValueError when it is malformed.
    """
    import asyncssh

    try:
        known = asyncssh.read_known_hosts(str(path))
    except ValueError:
        raise ValueError("has a line that is not a known_hosts entry") from None
    # ssh writes port-22 entries without "[host]:22"; other ports are tried both ways.
    match_port = None if port == 22 else port
    host_keys, _ca_keys, revoked, *_ = known.match(host, "", match_port)
    revoked_lines = {_openssh_line(key) for key in revoked}
    keys = (_openssh_line(key) for key in host_keys)
    return tuple(dict.fromkeys(line for line in keys if line not in revoked_lines))


def resolve_host(host: str, port: int) -> tuple[str, ...]:
    """Addresses of ``host`` in resolver order, without repeats. Raises OSError."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:
        raise OSError(f"not a valid host name ({exc})") from None
    return tuple(dict.fromkeys(str(info[4][0]) for info in infos))


def executable_issue(argv0: str, what: str) -> Issue | None:
    """Why ``argv0`` cannot be run, or None. Bare names are looked up on $PATH."""
    if os.sep not in argv0:
        if shutil.which(argv0) is None:
            return Issue(f"{what}: {argv0!r} is not found on $PATH", "give the full path")
        return None
    if not os.path.isfile(argv0):
        return Issue(f"{what}: {argv0} does not exist or is not a file")
    if not os.access(argv0, os.X_OK):
        return Issue(f"{what}: {argv0} is not executable", f"chmod +x {argv0}")
    return None
