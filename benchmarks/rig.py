"""The benchmark rig: one sshd target, the real proxy, a code, and both kinds of client.

Owns the throwaway processes and files of one benchmark run, all under one temporary
folder and all on 127.0.0.1: the sshd target (clean HOME), ``breakglass serve`` with
recording on and default settings, an askpass script that answers the proxy's prompts,
and the argv of the OpenSSH client for the direct path and for the proxy path.

Must never: touch the system sshd, ~/.ssh or any address but loopback, or kill a process
it did not start.
"""

from __future__ import annotations

import os
import resource
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.integration.harness import (
    GOOD_JUSTIFICATION,
    LOOPBACK,
    SSH,
    ProxyProcess,
    SshdTarget,
    free_port,
    issue_code,
    write_proxy_config,
)

SFTP = shutil.which("sftp") or "/usr/bin/sftp"
TARGET = "bench01"
PERSON = "bencher"
MAX_LIVE_SESSIONS = 5000
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Both paths: no config files, no host key prompts, nothing else changed from OpenSSH's
# defaults (ciphers, window, compression are the client's own).
COMMON_OPTIONS = (
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",
    "LogLevel=ERROR",
    "ConnectTimeout=20",
)
DIRECT_OPTIONS = (*COMMON_OPTIONS, "IdentitiesOnly=yes", "BatchMode=yes")
PROXY_OPTIONS = (
    *COMMON_OPTIONS,
    "PubkeyAuthentication=no",
    "PreferredAuthentications=keyboard-interactive",
    "BatchMode=no",
    "NumberOfPasswordPrompts=1",
)

_ASKPASS = """#!/bin/sh
case "$1" in
  *[Jj]ustif*) cat "$(dirname "$0")/justification" ;;
  *[Cc]ode*)   cat "$(dirname "$0")/code" ;;
  *) exit 1 ;;
esac
"""


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's open-file limit (children inherit it); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (fields 14 and 15 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle, all cores (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / CLK_TCK


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (from /proc's parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(children.get(child, []))
    return found


def pss_kib(pids: Sequence[int]) -> int:
    """Summed proportional set size (shared pages split between sharers) of ``pids``."""
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
                break
    return total


@dataclass
class Rig:
    """A running target + proxy, and the argv to reach the target both ways."""

    directory: Path
    target: SshdTarget
    proxy: ProxyProcess
    askpass: Path
    _tmp: tempfile.TemporaryDirectory[str] | None

    @classmethod
    def start(cls, keep: bool = False) -> Rig:
        tmp = None if keep else tempfile.TemporaryDirectory(prefix="bg-bench-")
        directory = Path(tempfile.mkdtemp(prefix="bg-bench-") if tmp is None else tmp.name)
        target = SshdTarget.start(directory / "target")
        try:
            config = write_proxy_config(
                directory / "proxy",
                free_port(),
                {TARGET: target.target_entry()},
                # --full holds 1,000 sessions open at once: past the default cap of 200
                # live sessions (config: policy.max_live_sessions), which is a setting.
                policy={"max_live_sessions": MAX_LIVE_SESSIONS},
            )
            proxy = ProxyProcess.start(config)
        except BaseException:
            target.stop()
            raise
        try:
            code = issue_code(config, PERSON, uses=0)
            askpass_dir = directory / "askpass"
            askpass_dir.mkdir(mode=0o700)
            (askpass_dir / "code").write_text(code + "\n")
            (askpass_dir / "justification").write_text(GOOD_JUSTIFICATION + "\n")
            askpass = askpass_dir / "askpass.sh"
            askpass.write_text(_ASKPASS)
            askpass.chmod(0o700)
        except BaseException:
            proxy.stop()
            target.stop()
            raise
        return cls(directory, target, proxy, askpass, tmp)

    def stop(self) -> None:
        self.proxy.stop()
        self.target.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    @property
    def proxy_pid(self) -> int:
        return self.proxy.process.pid

    @property
    def sshd_pid(self) -> int:
        return self.target.process.pid

    def env(self, path: str) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("SSH_AUTH_SOCK", "DISPLAY", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE"):
            env.pop(name, None)
        if path == "proxy":
            env.update({"SSH_ASKPASS": str(self.askpass), "SSH_ASKPASS_REQUIRE": "force"})
        return env

    def _options(self, path: str) -> list[str]:
        argv: list[str] = []
        if path == "direct":
            argv += ["-i", str(self.target.proxy_key)]
        for option in DIRECT_OPTIONS if path == "direct" else PROXY_OPTIONS:
            argv += ["-o", option]
        return argv

    def _destination(self, path: str) -> tuple[int, str]:
        if path == "direct":
            return self.target.port, f"{self.target.login}@{LOOPBACK}"
        return self.proxy.port, f"{PERSON}@{TARGET}@{LOOPBACK}"

    def ssh(self, path: str, command: str | None, *, tty: bool = False) -> list[str]:
        """The client's argv; ``command`` None opens the login shell."""
        port, destination = self._destination(path)
        argv = [SSH, "-F", "none", "-p", str(port), *self._options(path)]
        if tty:
            argv.append("-tt")
        return [*argv, destination] if command is None else [*argv, destination, command]

    def sftp(self, path: str) -> list[str]:
        port, destination = self._destination(path)
        return [SFTP, "-F", "none", "-P", str(port), *self._options(path), destination]
