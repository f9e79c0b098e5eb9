"""A throwaway OpenSSH sshd on 127.0.0.1, for `breakglass demo` and benchmarks.

Owns one sshd process in its own folder with its own host key and the key the proxy logs
in with. Loopback only, never any other address. Not used by the proxy itself.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import asyncssh

SSHD_PATHS = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout}s")


def write_key(path: Path) -> asyncssh.SSHKey:
    key = asyncssh.generate_private_key("ssh-ed25519")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key())
    path.with_name(path.name + ".pub").write_bytes(key.export_public_key())
    return key


@dataclass
class LocalTarget:
    folder: Path
    port: int
    login: str
    host_pub: str  # "ssh-ed25519 AAAA..." to pin
    proxy_key: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def find_sshd() -> str:
    for path in SSHD_PATHS:
        if os.access(path, os.X_OK):
            return path
    found = shutil.which("sshd")
    if found is None:
        raise FileNotFoundError("sshd not found: apt-get install -y openssh-server")
    return found


def start_target(folder: Path, port: int | None = None, home: Path | None = None) -> LocalTarget:
    """Start sshd in ``folder`` (created 0700). It accepts only the generated proxy key."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    port = port or free_port()
    host_key = write_key(folder / "host_key")
    write_key(folder / "proxy_key")
    authorized = folder / "authorized_keys"
    authorized.write_bytes((folder / "proxy_key.pub").read_bytes())
    os.chmod(authorized, 0o600)
    lines = [
        f"Port {port}",
        "ListenAddress 127.0.0.1",
        f"HostKey {folder / 'host_key'}",
        f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "Subsystem sftp internal-sftp",
        "AcceptEnv LANG LC_*",
        "MaxStartups 200:30:400",
        "LogLevel ERROR",
    ]
    if home is not None:
        lines.append(f"SetEnv HOME={home}")
    (folder / "sshd_config").write_text("\n".join(lines) + "\n")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = open(folder / "sshd.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [find_sshd(), "-D", "-e", "-f", str(folder / "sshd_config")],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log.close()
    try:
        wait_for_port(port, 15, proc)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        raise
    pub = host_key.export_public_key().decode().split()
    return LocalTarget(
        folder=folder,
        port=port,
        login=getpass.getuser(),
        host_pub=f"{pub[0]} {pub[1]}",
        proxy_key=folder / "proxy_key",
        process=proc,
    )
