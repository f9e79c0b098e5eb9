"""Helpers for the tests of every way engineers use SSH (issue 3): scp, sftp and rsync
through the proxy, an OpenSSH client on a real pseudo-terminal, and a proxy started with
policy or recording overrides.

Built on harness.py (which stays untouched); same rules: loopback only, every wait
bounded, processes stopped by the handle that started them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
import termios
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import asyncssh

from tests.integration.conftest import TARGET, standard_targets
from tests.integration.harness import (
    GOOD_JUSTIFICATION,
    LOOPBACK,
    SSH,
    Askpass,
    Deployment,
    SshdTarget,
    SshResult,
    _client_env,
    client_options,
    sha256_file,
    user_at,
)
from tests.waiting import eventually

SCP = shutil.which("scp") or "/usr/bin/scp"
SFTP = shutil.which("sftp") or "/usr/bin/sftp"
RSYNC = shutil.which("rsync") or "/usr/bin/rsync"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ssh_options(extra: Sequence[str] = ()) -> list[str]:
    """``-F none`` plus the harness's client options as ``-o`` arguments."""
    argv = ["-F", "none"]
    for option in client_options("NumberOfPasswordPrompts=1", *extra):
        argv += ["-o", option]
    return argv


def remote(person: str, path: Path | str, target: str = TARGET) -> str:
    """``PERSON@TARGET@127.0.0.1:PATH`` as scp, sftp and rsync take it."""
    return f"{user_at(person, target)}@{LOOPBACK}:{path}"


def run_client(
    argv: Sequence[str],
    code: str,
    *,
    stdin: bytes = b"",
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    justifications: Sequence[str] = (GOOD_JUSTIFICATION,),
) -> SshResult:
    """Run an OpenSSH-based client (ssh, scp, sftp, rsync -e ssh) to completion, its
    prompts answered by a throwaway askpass; fail the test if it outlives ``timeout``."""
    with tempfile.TemporaryDirectory(prefix="bg-askpass-") as tmp:
        askpass = Askpass(Path(tmp), codes=[code], justifications=justifications)
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_client_env({**askpass.env(), **(env or {})}),
        )
        try:
            stdout, stderr = process.communicate(input=stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate(timeout=10)
            raise AssertionError(
                f"{argv[0]} did not finish within {timeout:g}s\nstdout: {stdout!r}\n"
                f"stderr: {stderr!r}\nprompts: {askpass.prompts()!r}\nargv: {argv!r}"
            ) from None
        return SshResult(
            list(argv),
            process.returncode,
            stdout,
            stderr,
            askpass.prompts(),
            len(askpass.code_prompts()),
            len(askpass.justification_prompts()),
        )


def scp_argv(port: int, *paths: str, legacy: bool = False) -> list[str]:
    """``scp -P PORT [-O] ... PATHS`` (SFTP mode unless ``legacy``)."""
    return [SCP, "-q", "-P", str(port), *(["-O"] if legacy else []), *ssh_options(), *paths]


def sftp_argv(port: int, person: str, target: str = TARGET) -> list[str]:
    """``sftp -P PORT ... PERSON@TARGET@127.0.0.1``, commands to come on stdin."""
    return [SFTP, "-q", "-P", str(port), *ssh_options(), f"{user_at(person, target)}@{LOOPBACK}"]


def rsync_argv(port: int, *paths: str) -> list[str]:
    """``rsync -e 'ssh -p PORT ...' PATHS`` as an engineer types it."""
    shell = " ".join([SSH, "-p", str(port), *ssh_options()])
    return [RSYNC, "-a", "-e", shell, *paths]


def channel_cast(deployment: Deployment, channel: Mapping[str, Any]) -> Path:
    """A channel's recording, checked against the hash the audit trail holds."""
    assert channel.get("recording"), channel
    cast = Path(str(channel["recording"]))
    if not cast.is_absolute():
        cast = deployment.recordings / cast
    assert cast.is_file(), cast
    assert channel.get("recording_sha256") == sha256_file(cast), channel
    return cast


def start_deployment(
    directory: Path, target: SshdTarget, other_target: SshdTarget, **config: Any
) -> Deployment:
    """A proxy with the standard targets and config overrides (``policy=``,
    ``recording=``, as write_proxy_config takes them)."""
    return Deployment.start(
        directory,
        standard_targets(target, other_target),
        sshd_targets={TARGET: target},
        **config,
    )


# --------------------------------------------------------------------------- a terminal


class Terminal:
    """A process on a real pseudo-terminal, its output collected by a reader thread.

    What an engineer's terminal emulator does: ssh sees a tty on stdin (so ``-t`` asks
    for a PTY and ssh puts the terminal in raw mode) and the bytes typed, Ctrl-C
    included, go to the far end.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        cols: int = 100,
        rows: int = 30,
    ) -> None:
        self.argv = list(argv)
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self._master = master
        try:
            self.process = subprocess.Popen(
                self.argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                env=dict(env),
                start_new_session=True,
            )
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO once the last process holding the slave has gone
                return
            if not chunk:
                return
            with self._lock:
                self._buffer += chunk

    def output(self) -> bytes:
        with self._lock:
            return bytes(self._buffer)

    def send(self, data: bytes) -> None:
        os.write(self._master, data)

    def expect(self, pattern: bytes, *, timeout: float = 15.0, after: int = 0) -> re.Match[bytes]:
        """Wait for ``pattern`` (a regex) in the output from offset ``after`` on."""
        regex = re.compile(pattern)

        def found() -> re.Match[bytes] | None:
            return regex.search(self.output(), after)

        try:
            return eventually(found, within=timeout, what=f"{pattern!r} on the terminal")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nterminal so far: {self.output()[-3000:]!r}") from None

    def wait(self, timeout: float = 15.0) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.argv[0]} did not exit within {timeout:g}s; "
                f"terminal: {self.output()[-3000:]!r}"
            ) from None

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        with contextlib.suppress(OSError):
            os.close(self._master)


def ssh_terminal(
    port: int,
    person: str,
    code: str,
    command: str | None = None,
    *,
    askpass_dir: Path,
    options: Sequence[str] = (),
    target: str = TARGET,
) -> Terminal:
    """``ssh -t PERSON@TARGET@127.0.0.1 [COMMAND]`` on a real terminal."""
    askpass = Askpass(askpass_dir, codes=[code], justifications=[GOOD_JUSTIFICATION])
    destination = f"{user_at(person, target)}@{LOOPBACK}"
    argv = [SSH, "-t", "-p", str(port), *ssh_options(options), destination]
    if command is not None:
        argv.append(command)
    env = _client_env(askpass.env())
    env["TERM"] = "xterm"
    return Terminal(argv, env)


def processes_matching(pattern: str) -> list[int]:
    """Pids whose command line contains ``pattern`` (the sshd targets run on this host,
    so a test can see what a remote command is doing)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if pattern.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


# --------------------------------------------------------------------------- multiplexing


class ControlMaster:
    """An OpenSSH ControlMaster connection to the proxy (``ssh -M -N``): one login, then
    any number of channels opened over it by ``ssh -o ControlPath=...`` clients."""

    def __init__(
        self, deployment: Deployment, person: str, code: str, *, args: Sequence[str] = ()
    ) -> None:
        # A unix socket path must stay short: not under pytest's deep tmp dirs.
        self._dir = tempfile.TemporaryDirectory(prefix="bg-cm-")
        self.path = Path(self._dir.name) / "cm"
        self.destination = f"{user_at(person, TARGET)}@{LOOPBACK}"
        self.clients: list[subprocess.Popen[bytes]] = []
        self.run = deployment.ssh_start(
            person,
            TARGET,
            code,
            None,
            args=["-M", "-N", *args],
            options=[f"ControlPath={self.path}", "ControlPersist=no"],
        )
        try:
            eventually(self._ready, within=20, what="the ControlMaster's socket")
        except BaseException:
            self.close()
            raise

    def _ready(self) -> bool:
        if self.run.process.poll() is not None:
            result = self.run.wait(timeout=5)
            raise AssertionError(f"the ControlMaster exited: {result.describe()}")
        return self.path.exists()

    def argv(self, command: str | None = None, *, tty: bool = False) -> list[str]:
        """A client that must use the master: BatchMode, so a fallback to a login of its
        own fails instead of prompting."""
        argv = [SSH, "-F", "none", "-o", f"ControlPath={self.path}", "-o", "ControlMaster=no"]
        argv += ["-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
        if tty:
            argv.append("-tt")
        argv.append(self.destination)
        if command is not None:
            argv.append(command)
        return argv

    def start(self, command: str, *, tty: bool = False) -> subprocess.Popen[bytes]:
        """A client running ``command`` over the master (stopped by close() if need be)."""
        client = subprocess.Popen(
            self.argv(command, tty=tty),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_client_env(),
        )
        self.clients.append(client)
        return client

    def exit(self, timeout: float = 15.0) -> SshResult:
        """``ssh -O exit``, then the master's own result."""
        subprocess.run(
            [SSH, "-F", "none", "-o", f"ControlPath={self.path}", "-O", "exit", self.destination],
            capture_output=True,
            timeout=timeout,
            env=_client_env(),
            check=False,
        )
        return self.run.wait(timeout=timeout)

    def close(self) -> None:
        """Stop whatever is still running (only when a test failed midway). The master
        goes first: it holds the clients' stdout and stderr, passed to it over the socket."""
        if self.run.process.poll() is None:
            self.run.kill()
        for client in self.clients:
            if client.poll() is None:
                client.kill()
            client.communicate(timeout=10)
        self._dir.cleanup()


def finish(process: subprocess.Popen[bytes], *, timeout: float = 20.0) -> tuple[int, bytes, bytes]:
    """Close stdin, wait (bounded) for exit: (status, stdout, stderr)."""
    try:
        stdout, stderr = process.communicate(input=b"", timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate(timeout=10)
        raise AssertionError(
            f"{process.args!r} did not finish within {timeout:g}s\n"
            f"stdout: {stdout!r}\nstderr: {stderr!r}"
        ) from None
    return process.returncode, stdout, stderr


# --------------------------------------------------------------------------- signal requests


class _KbdintClient(asyncssh.SSHClient):
    """An asyncssh client answering the proxy's two prompts (OpenSSH's client has no way
    to send a "signal" channel request, so this one stands in for a tool that does)."""

    def __init__(self, code: str) -> None:
        self._code = code

    def kbdint_auth_requested(self) -> str:
        return ""

    def kbdint_challenge_received(
        self, name: str, instructions: str, lang: str, prompts: Sequence[tuple[str, bool]]
    ) -> list[str]:
        return [self._code if "code" in p.lower() else GOOD_JUSTIFICATION for p, _ in prompts]


async def _signal_midway(
    port: int,
    user: str,
    code: str,
    command: str,
    signal: str,
    ready: bytes,
    then: Callable[[], object],
    stdin: bytes,
) -> tuple[bytes, int | None, tuple[str, bool, str, str] | None]:
    async with asyncssh.connect(
        LOOPBACK,
        port,
        username=user,
        client_factory=lambda: _KbdintClient(code),
        known_hosts=None,  # a throwaway proxy on loopback
        preferred_auth="keyboard-interactive",
        client_keys=None,
        agent_path=None,
        config=None,
    ) as conn:
        process = await conn.create_process(command, encoding=None)
        output = await process.stdout.readuntil(ready)
        process.send_signal(signal)
        await asyncio.to_thread(then)
        process.stdin.write(stdin)
        process.stdin.write_eof()
        result = await process.wait(check=False)
        assert isinstance(result.stdout, bytes)
        return output + result.stdout, result.exit_status, result.exit_signal


def send_signal_midway(
    port: int,
    user: str,
    code: str,
    command: str,
    *,
    signal: str,
    ready: bytes,
    then: Callable[[], object],
    stdin: bytes = b"",
    timeout: float = 30.0,
) -> tuple[bytes, int | None, tuple[str, bool, str, str] | None]:
    """Run ``command`` over the proxy with an asyncssh client; once it printed ``ready``,
    send a "signal" channel request, call ``then`` (e.g. wait for the target to log it),
    send ``stdin`` and EOF. Returns (stdout, exit status, exit signal)."""
    return asyncio.run(
        asyncio.wait_for(
            _signal_midway(port, user, code, command, signal, ready, then, stdin), timeout
        )
    )
