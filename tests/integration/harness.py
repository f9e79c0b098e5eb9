"""Integration-test harness: real sshd targets, the real proxy CLI, the real OpenSSH client.

Owns the throwaway processes and files a test needs (sshd targets, a proxy config, the
proxy process, askpass scripts), all under a test's tmp dir and all on 127.0.0.1.
Benchmarks reuse it, so nothing here depends on pytest.

Must never: bind or connect to anything but loopback, touch the system sshd, ~/.ssh or
git state, kill a process it did not start, or wait without a bound (every wait polls a
condition with a deadline; no bare sleeps standing in for a condition).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from tests.waiting import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"
SSHD = "/usr/sbin/sshd"  # sshd refuses to start unless invoked by absolute path
SSH = shutil.which("ssh") or "/usr/bin/ssh"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
# The player the product depends on; the venv's copy, not whatever is on PATH.
ASCIINEMA = Path(sys.executable).parent / "asciinema"

# Long enough for the default policy (min_length 15), with a ticket id for pattern rules.
GOOD_JUSTIFICATION = "INC-4411 db01 disk full, clearing old WAL segments"

T = TypeVar("T")


class Reason:
    """Audit reasons the tests expect. The event catalogue (proxy/core/events.py) fixes
    the event types and the end and upstream reasons but not every login_failed reason;
    those are kept here, in one place (names as in proxy/core/login.py and
    proxy/core/credentials.py)."""

    # login_failed{reason}
    WRONG_CODE = "wrong_code"  # a well-formed code whose secret does not match
    EXPIRED = "expired"  # --valid passed before the code was activated
    REVOKED = "revoked"
    SPENT = "spent"  # --uses used up
    WRONG_PERSON = "wrong_person"  # the code was issued to someone else
    TARGET_NOT_ALLOWED = "target_not_allowed"  # target not in the code's --targets
    UNKNOWN_TARGET = "unknown_target"  # no such target in the config
    LOGIN_NOT_ALLOWED = "login_not_allowed"  # LOGIN not in the target's logins
    # upstream_failed{reason} (errors.UpstreamError)
    TARGET_UNREACHABLE = "target_unreachable"
    HOST_KEY_MISMATCH = "host_key_mismatch"
    # session_end{reason}
    CLIENT_EXIT = "client_exit"
    TIME_LIMIT = "time_limit"
    TARGET_ERROR = "target_error"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def port_accepts(port: int) -> bool:
    """True if something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1):
            return True
    except OSError:
        return False


def ssh_banner_ready(port: int) -> bool:
    """True once an SSH server on 127.0.0.1:port sends its version banner.

    Stronger than "the port accepts": the server's accept loop is really running.
    """
    try:
        with socket.create_connection((LOOPBACK, port), timeout=1) as sock:
            sock.settimeout(2)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _wait_for_server(
    port: int, process: subprocess.Popen[bytes], log_path: Path, name: str, timeout: float
) -> None:
    def ready() -> bool:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            raise RuntimeError(f"{name} exited with status {process.returncode}:\n{log}")
        return ssh_banner_ready(port)

    eventually(ready, within=timeout, what=f"{name} to accept SSH on 127.0.0.1:{port}")


def _retry_if_port_taken(launch: Callable[[], T], attempts: int = 3) -> T:
    """Run ``launch`` again when the free port it picked was taken before the server
    bound it (another test run on the same host can race us for it)."""
    for attempt in range(attempts):
        try:
            return launch()
        except RuntimeError as exc:
            if "in use" not in str(exc) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _stop_process(process: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM the process we started (by its pid), SIGKILL it if it does not go."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)
    return process.returncode


# --------------------------------------------------------------------------- keys


def generate_key(path: Path, comment: str = "breakglass-test") -> str:
    """Write a fresh ed25519 key pair at ``path`` (mode 0600); return the public line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    path.chmod(0o600)
    return public_line(path.with_name(path.name + ".pub"))


def public_line(pub_path: Path) -> str:
    """The "type base64" part of an OpenSSH .pub file (the comment dropped)."""
    key_type, blob = pub_path.read_text().split()[:2]
    return f"{key_type} {blob}"


def current_login() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- sshd target


def target_entry(
    port: int, login: str, proxy_key: Path, host_pub: str, /, **overrides: object
) -> dict[str, object]:
    """A target on 127.0.0.1 as a ``targets:`` entry of the proxy config: the proxy logs
    in as ``login`` with ``proxy_key`` and pins ``host_pub``."""
    entry: dict[str, object] = {
        "host": LOOPBACK,
        "port": port,
        "login": login,
        "logins": [login],
        "identity_file": str(proxy_key),
        "host_key": host_pub,
    }
    entry.update(overrides)
    return entry


@dataclass
class SshdTarget:
    """A real ``/usr/sbin/sshd`` in its own directory, listening on 127.0.0.1 only.

    ``proxy_key`` is the private key the proxy logs in with (its .pub is the only
    authorized key); ``host_pub`` is the target's host key line to pin in the proxy
    config.
    """

    directory: Path
    port: int
    host_key: Path
    host_pub: str
    proxy_key: Path
    login: str
    process: subprocess.Popen[bytes]

    @classmethod
    def start(
        cls,
        directory: Path,
        *,
        proxy_key: Path | None = None,
        clean_home: bool = True,
        extra_config: Sequence[str] = (),
        timeout: float = 10.0,
    ) -> SshdTarget:
        """Start a target in ``directory`` (created). Pass ``proxy_key`` to share the
        proxy's key with another target; a new host key is always generated."""
        directory.mkdir(parents=True, exist_ok=True)
        host_key = directory / "host_key"
        host_pub = generate_key(host_key, "target-host-key")
        if proxy_key is None:
            proxy_key = directory / "proxy_key"
            generate_key(proxy_key, "breakglass-proxy")
        authorized = directory / "authorized_keys"
        authorized.write_text(public_line(proxy_key.with_name(proxy_key.name + ".pub")) + "\n")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privsep dir

        lines = [
            f"ListenAddress {LOOPBACK}",
            f"HostKey {host_key}",
            f"PidFile {directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {authorized}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "Subsystem sftp internal-sftp",
            "AcceptEnv LANG LC_*",
        ]
        if clean_home:
            # A login shell sourcing a heavy ~/.bashrc would dominate benchmark figures.
            home = directory / "home"
            home.mkdir(exist_ok=True)
            lines.append(f"SetEnv HOME={home}")
        lines.extend(extra_config)
        config = directory / "sshd_config"
        log_path = directory / "sshd.log"

        def launch() -> SshdTarget:
            port = free_port()
            config.write_text("\n".join([f"Port {port}", *lines]) + "\n")
            with log_path.open("wb") as log:
                process = subprocess.Popen(
                    [SSHD, "-D", "-e", "-f", str(config)],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                )
            target = cls(directory, port, host_key, host_pub, proxy_key, current_login(), process)
            try:
                _wait_for_server(port, process, log_path, "sshd target", timeout)
            except BaseException:
                target.stop()
                raise
            return target

        return _retry_if_port_taken(launch)

    def sibling(self, directory: Path) -> SshdTarget:
        """Another target with a different host key but the same proxy key."""
        return SshdTarget.start(directory, proxy_key=self.proxy_key)

    def target_entry(self, **overrides: object) -> dict[str, object]:
        """This target as a ``targets:`` entry of the proxy config."""
        return target_entry(self.port, self.login, self.proxy_key, self.host_pub, **overrides)

    def known_hosts_line(self) -> str:
        return f"[{LOOPBACK}]:{self.port} {self.host_pub}"

    def log(self) -> str:
        path = self.directory / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        _stop_process(self.process, timeout)


def ssh_direct(
    target: SshdTarget, command: str, *, host_pub: str | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[bytes]:
    """Log in to ``target`` directly with the proxy's key, pinning its host key (or
    ``host_pub`` instead, to see a strict client refuse)."""
    known_hosts = target.directory / "known_hosts"
    known_hosts.write_text(f"[{LOOPBACK}]:{target.port} {host_pub or target.host_pub}\n")
    argv = [SSH, "-F", "none", "-p", str(target.port), "-i", str(target.proxy_key)]
    for option in (
        "IdentitiesOnly=yes",
        "BatchMode=yes",
        "StrictHostKeyChecking=yes",
        f"UserKnownHostsFile={known_hosts}",
        "LogLevel=ERROR",
        "ConnectTimeout=10",
    ):
        argv += ["-o", option]
    argv += [f"{target.login}@{LOOPBACK}", command]
    return subprocess.run(
        argv, input=b"", capture_output=True, timeout=timeout, env=_client_env(), check=False
    )


# --------------------------------------------------------------------------- proxy config


def write_proxy_config(
    tmp_dir: Path,
    port: int,
    targets: Mapping[str, Mapping[str, object]],
    *,
    listen: Mapping[str, object] | None = None,
    policy: Mapping[str, object] | None = None,
    recording: Mapping[str, object] | None = None,
    alerts: Mapping[str, object] | None = None,
    fleet: Mapping[str, object] | None = None,
    database: Path | None = None,
    filename: str = "proxy.yaml",
) -> Path:
    """Write a proxy config (keys as in config/example-full.yaml) into ``tmp_dir``; return
    its path.

    Host key, database (unless ``database`` is given) and recordings live inside
    ``tmp_dir``. ``listen``, ``policy`` and
    ``recording`` are merged over the defaults below (a nested ``justification`` mapping
    is merged too).
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    recordings = tmp_dir / "recordings"
    # Ops creates the state dir (systemd StateDirectory=); the proxy writes into it.
    recordings.mkdir(mode=0o700, exist_ok=True)
    merged_policy: dict[str, object] = {"justification": {"min_length": 15}}
    for key, value in (policy or {}).items():
        if key == "justification" and isinstance(value, Mapping):
            merged_policy["justification"] = {**{"min_length": 15}, **value}
        else:
            merged_policy[key] = value
    document: dict[str, object] = {
        "listen": {
            "host": LOOPBACK,
            "port": port,
            "host_key": str(tmp_dir / "proxy_host_key"),
            **(listen or {}),
        },
        "storage": {
            "database": str(database or tmp_dir / "audit.db"),
            "recordings": str(recordings),
        },
        "policy": merged_policy,
        "targets": {name: dict(entry) for name, entry in targets.items()},
    }
    if recording is not None:
        document["recording"] = dict(recording)
    if alerts is not None:
        document["alerts"] = dict(alerts)
    if fleet is not None:
        document["fleet"] = dict(fleet)
    path = tmp_dir / filename
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass(frozen=True)
class ConfigPaths:
    """Where a config written by write_proxy_config keeps things."""

    port: int
    database: Path
    recordings: Path

    @classmethod
    def of(cls, config: Path) -> ConfigPaths:
        document = yaml.safe_load(config.read_text())
        return cls(
            port=int(document["listen"]["port"]),
            database=Path(document["storage"]["database"]),
            recordings=Path(document["storage"]["recordings"]),
        )


# --------------------------------------------------------------------------- the CLI


def cli_argv(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "proxy.cli", "-c", str(config), *args]


def _proxy_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("BREAKGLASS_CONFIG", None)  # -c is explicit; a stray default must not win
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(config: Path, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``breakglass -c CONFIG ARGS...`` to completion (never raises on status)."""
    return subprocess.run(
        cli_argv(config, *args),
        cwd=REPO_ROOT,
        env=_proxy_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_json(config: Path, *args: str) -> Any:
    """Run a ``--json`` command that must succeed; return the parsed document."""
    result = run_cli(config, *args, "--json")
    if result.returncode != 0:
        raise AssertionError(
            f"breakglass {' '.join(args)} --json exited {result.returncode}:\n{result.stderr}"
        )
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"breakglass {' '.join(args)} --json printed non-JSON ({exc}):\n{result.stdout}"
        ) from exc


def issue_credential(
    config: Path,
    person: str,
    *,
    valid: str | None = None,
    window: str | None = None,
    uses: int | None = None,
    targets: str | None = None,
    max_session: str | None = None,
) -> dict[str, Any]:
    """``cred issue PERSON ... --json``: the whole object (id, code, valid_until, ...)."""
    args = ["cred", "issue", person]
    for flag, value in (
        ("--valid", valid),
        ("--window", window),
        ("--uses", None if uses is None else str(uses)),
        ("--targets", targets),
        ("--max-session", max_session),
    ):
        if value is not None:
            args += [flag, value]
    document = cli_json(config, *args)
    if not isinstance(document, dict) or not isinstance(document.get("code"), str):
        raise AssertionError(f"cred issue --json gave no code: {document!r}")
    return document


def issue_code(config: Path, person: str, **options: Any) -> str:
    """The code of a fresh credential for ``person`` (options as issue_credential)."""
    code: str = issue_credential(config, person, **options)["code"]
    return code


def sessions(
    config: Path, *, person: str | None = None, target: str | None = None
) -> list[dict[str, Any]]:
    args = ["sessions"]
    if person is not None:
        args += ["--person", person]
    if target is not None:
        args += ["--target", target]
    document = cli_json(config, *args)
    if not isinstance(document, list):
        raise AssertionError(f"sessions --json is not an array: {document!r}")
    rows = [row for row in document if isinstance(row, dict)]
    if person is not None:
        rows = [row for row in rows if row.get("person") == person]
    return sorted(rows, key=lambda row: str(row.get("started_at") or ""))


def show(config: Path, session_id: str) -> dict[str, Any]:
    document = cli_json(config, "show", session_id)
    if not isinstance(document, dict):
        raise AssertionError(f"show --json is not an object: {document!r}")
    return document


def session_finished(session: Mapping[str, Any]) -> bool:
    """Ended, and every channel closed with its recording hashed (nothing left to write)."""
    if not session.get("ended_at"):
        return False
    for channel in session.get("channels") or []:
        if not channel.get("ended_at"):
            return False
        if channel.get("recording") and not channel.get("recording_sha256"):
            return False
    return True


def wait_for_session(
    config: Path,
    person: str,
    *,
    count: int = 1,
    ended: bool = True,
    timeout: float = 15.0,
) -> dict[str, Any]:
    """The ``show --json`` of ``person``'s newest session, once ``count`` sessions exist
    (and, with ``ended``, once it has been closed and its recordings hashed)."""

    def newest() -> dict[str, Any] | None:
        rows = sessions(config, person=person)
        if len(rows) < count:
            return None
        detail = show(config, str(rows[-1]["id"]))
        if ended and not session_finished(detail):
            return None
        return detail

    state = "ended " if ended else ""
    return eventually(newest, within=timeout, what=f"{state}session #{count} of {person}")


def events_of(session: Mapping[str, Any], event_type: str) -> list[dict[str, Any]]:
    return [event for event in session.get("events") or [] if event.get("type") == event_type]


def wait_for_event(
    config: Path,
    session_id: str,
    event_type: str,
    *,
    timeout: float = 15.0,
    where: Callable[[Mapping[str, Any]], bool] = lambda event: True,
) -> dict[str, Any]:
    """The first ``event_type`` event of a session (live or ended) matching ``where``."""

    def found() -> dict[str, Any] | None:
        for event in events_of(show(config, session_id), event_type):
            if where(event):
                return event
        return None

    return eventually(found, within=timeout, what=f"{event_type} in session {session_id}")


# --------------------------------------------------------------------------- audit store


@dataclass(frozen=True)
class AuditEvent:
    type: str
    data: dict[str, Any]
    row: dict[str, Any]


def read_events(database: Path) -> list[AuditEvent]:
    """Every row of the store's ``events`` table, read-only.

    Failed logins belong to no session, so no CLI command shows them yet; the tests read
    them here. Only two things are assumed of the schema: the event type is in a column
    named ``type`` (or ``event_type``/``kind``) and its payload in a JSON column named
    ``data`` (or ``payload``/``details``).
    """
    if not database.exists():
        return []
    connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)
    try:
        connection.row_factory = sqlite3.Row
        tables = {
            str(name)
            for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        }
        if "events" not in tables:
            raise AssertionError(f"no 'events' table in {database}; tables: {sorted(tables)}")
        rows = [dict(row) for row in connection.execute("SELECT * FROM events")]
    finally:
        connection.close()
    result = []
    for row in rows:
        event_type = next((row[k] for k in ("type", "event_type", "kind") if k in row), None)
        raw = next((row[k] for k in ("data", "payload", "details") if k in row), None)
        data: Any = raw
        if isinstance(raw, str | bytes):
            try:
                data = json.loads(raw)
            except json.JSONDecodeError:
                data = None
        result.append(AuditEvent(str(event_type), data if isinstance(data, dict) else {}, row))
    return result


def login_failures(database: Path, person: str) -> list[dict[str, Any]]:
    """The payloads of ``login_failed`` events whose claimed person is ``person``."""
    return [
        event.data
        for event in read_events(database)
        if event.type == "login_failed" and event.data.get("person") == person
    ]


def wait_for_login_failures(
    database: Path, person: str, *, count: int = 1, timeout: float = 10.0
) -> list[dict[str, Any]]:
    return eventually(
        lambda: found if len(found := login_failures(database, person)) >= count else None,
        within=timeout,
        what=f"{count} login_failed event(s) for {person}",
    )


# --------------------------------------------------------------------------- the proxy


class ProxyProcess:
    """The real ``breakglass serve`` as a subprocess, its stderr kept in a file."""

    def __init__(self, config: Path, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.config = config
        self.process = process
        self.log_path = log_path
        paths = ConfigPaths.of(config)
        self.port = paths.port
        self.database = paths.database
        self.recordings = paths.recordings

    @classmethod
    def start(
        cls,
        config: Path,
        *,
        timeout: float = 20.0,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ProxyProcess:
        """Start the proxy and wait (bounded) until it answers SSH on its port."""
        log_path = log_path or config.with_name(config.stem + ".log")
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                cli_argv(config, "serve"),
                cwd=REPO_ROOT,
                env={**_proxy_env(), **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        proxy = cls(config, process, log_path)
        try:
            _wait_for_server(proxy.port, process, log_path, "breakglass serve", timeout)
        except BaseException:
            proxy.stop()
            raise
        return proxy

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (a clean shutdown), SIGKILL after ``timeout``; the exit status."""
        return _stop_process(self.process, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")


# --------------------------------------------------------------------------- the client

_ASKPASS_SCRIPT = r"""#!/bin/sh
# Answers breakglass's keyboard-interactive prompts for a test. ssh passes the prompt as
# $1. Each answer is used once, in order; when the answers run out it fails, which ssh
# turns into an empty answer, so a prompt asked more often than the test expects shows.
d=$(dirname "$0")
printf '%s\n' "$1" >> "$d/prompts"
answer() {  # $1: answers file, $2: counter file
    n=$(cat "$d/$2" 2>/dev/null || echo 0)
    n=$((n + 1))
    echo "$n" > "$d/$2"
    [ "$n" -le "$(wc -l < "$d/$1")" ] || exit 1
    sed -n "${n}p" "$d/$1"
}
case "$1" in
    *[Jj]ustification*) answer justifications justification_count ;;
    *[Cc]ode*)
        if [ -e "$d/gate_path" ]; then
            # Concurrency tests: say we were asked, then hold the answer until released.
            touch "$d/asked"
            gate=$(cat "$d/gate_path")
            i=0
            while [ ! -e "$gate" ] && [ "$i" -lt 400 ]; do sleep 0.05; i=$((i + 1)); done
        fi
        answer codes code_count ;;
    *) exit 1 ;;
esac
"""


class Askpass:
    """A throwaway SSH_ASKPASS program answering from files in its own directory, and
    keeping a log of every prompt it was given."""

    def __init__(
        self,
        directory: Path,
        *,
        codes: Sequence[str],
        justifications: Sequence[str],
        gate: Path | None = None,
    ) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.script = directory / "askpass.sh"
        self.script.write_text(_ASKPASS_SCRIPT)
        self.script.chmod(0o700)
        for name, answers in (("codes", codes), ("justifications", justifications)):
            if any("\n" in answer for answer in answers):
                raise ValueError("an askpass answer cannot contain a newline")
            (directory / name).write_text("".join(f"{answer}\n" for answer in answers))
        (directory / "prompts").write_text("")
        if gate is not None:
            (directory / "gate_path").write_text(str(gate))

    def env(self) -> dict[str, str]:
        return {"SSH_ASKPASS": str(self.script), "SSH_ASKPASS_REQUIRE": "force"}

    def prompts(self) -> list[str]:
        return (self.directory / "prompts").read_text(errors="replace").splitlines()

    def code_prompts(self) -> list[str]:
        return [p for p in self.prompts() if "code" in p.lower() and "ustification" not in p]

    def justification_prompts(self) -> list[str]:
        return [p for p in self.prompts() if "ustification" in p]

    def asked_for_code(self) -> bool:
        """With a gate: the client is now waiting at the code prompt."""
        return (self.directory / "asked").exists()


class SshResult(subprocess.CompletedProcess[bytes]):
    """A finished ssh run, plus the prompts its askpass was given."""

    def __init__(
        self,
        args: list[str],
        returncode: int,
        stdout: bytes,
        stderr: bytes,
        prompts: list[str],
        code_prompts: int,
        justification_prompts: int,
    ) -> None:
        super().__init__(args, returncode, stdout, stderr)
        self.prompts = prompts
        self.code_prompts = code_prompts
        self.justification_prompts = justification_prompts

    def describe(self) -> str:
        return (
            f"ssh exited {self.returncode}\nstdout: {self.stdout!r}\nstderr: {self.stderr!r}"
            f"\nprompts: {self.prompts!r}"
        )


def _client_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # A test says explicitly when it wants an agent or a display.
    for name in ("SSH_AUTH_SOCK", "DISPLAY", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE"):
        env.pop(name, None)
    env.update(extra or {})
    return env


CLIENT_OPTIONS = (
    "StrictHostKeyChecking=no",
    "UserKnownHostsFile=/dev/null",
    "PubkeyAuthentication=no",
    "PreferredAuthentications=keyboard-interactive",
    "LogLevel=ERROR",
    "BatchMode=no",
    "ConnectTimeout=10",
)


def client_options(*extra: str) -> list[str]:
    """CLIENT_OPTIONS, then ``extra``; an extra option replaces a default of the same name
    (ssh keeps the first value it is given), e.g. ``LogLevel=INFO`` to see banners."""
    names = {option.split("=", 1)[0].lower() for option in extra}
    kept = [o for o in CLIENT_OPTIONS if o.split("=", 1)[0].lower() not in names]
    return [*kept, *extra]


def user_at(person: str, target: str, login: str | None = None) -> str:
    """The SSH username: PERSON@TARGET or PERSON@LOGIN@TARGET."""
    return f"{person}@{login}@{target}" if login else f"{person}@{target}"


@dataclass
class SshRun:
    """An ssh client running in the background, for tests that act while it runs."""

    process: subprocess.Popen[bytes]
    askpass: Askpass
    argv: list[str]
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def wait(self, *, stdin: bytes | None = None, timeout: float = 30.0) -> SshResult:
        """Finish (closing stdin after ``stdin``) within ``timeout`` or fail the test."""
        try:
            stdout, stderr = self.process.communicate(input=stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate(timeout=10)
            self._cleanup()
            raise AssertionError(
                f"ssh did not finish within {timeout:g}s\n"
                f"stdout: {stdout!r}\nstderr: {stderr!r}\nprompts: {self.askpass.prompts()!r}"
                f"\nargv: {self.argv!r}"
            ) from None
        result = SshResult(
            self.argv,
            self.process.returncode,
            stdout,
            stderr,
            self.askpass.prompts(),
            len(self.askpass.code_prompts()),
            len(self.askpass.justification_prompts()),
        )
        self._cleanup()
        return result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=10)
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def ssh_start(
    port: int,
    user: str,
    code: str | None,
    command: str | None = None,
    *,
    codes: Sequence[str] | None = None,
    justifications: Sequence[str] = (GOOD_JUSTIFICATION,),
    args: Sequence[str] = (),
    tty: bool = False,
    password_prompts: int = 1,
    gate: Path | None = None,
    options: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    askpass_dir: Path | None = None,
) -> SshRun:
    """Start the real OpenSSH client against the proxy on 127.0.0.1:port.

    ``code`` answers the code prompt (``codes`` gives one answer per prompt instead);
    ``justifications`` answer successive justification prompts. ``options`` are extra
    ``-o`` options; ``args`` go before the destination (e.g. ``-L``, ``-A``, ``-s``).
    stdin is a pipe: see SshRun.
    """
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if askpass_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="bg-askpass-")
        askpass_dir = Path(tmp.name)
    askpass = Askpass(
        askpass_dir,
        codes=list(codes) if codes is not None else ([] if code is None else [code]),
        justifications=justifications,
        gate=gate,
    )
    # -F none: no ~/.ssh/config or /etc/ssh/ssh_config; these options are all there is.
    argv = [SSH, "-F", "none", "-p", str(port)]
    for option in client_options(f"NumberOfPasswordPrompts={password_prompts}", *options):
        argv += ["-o", option]
    if tty:
        argv.append("-tt")
    argv.extend(args)
    argv.append(f"{user}@{LOOPBACK}")
    if command is not None:
        argv.append(command)
    process = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_client_env({**askpass.env(), **(env or {})}),
    )
    return SshRun(process, askpass, argv, tmp)


def ssh(
    port: int,
    user: str,
    code: str | None,
    command: str | None = None,
    *,
    stdin: bytes = b"",
    timeout: float = 30.0,
    **options: Any,
) -> SshResult:
    """Run the real OpenSSH client to completion (bounded by ``timeout``).

    Options as ssh_start; ``stdin`` is sent and then closed.
    """
    return ssh_start(port, user, code, command, **options).wait(stdin=stdin, timeout=timeout)


def cast_events(cast: Path) -> tuple[dict[str, Any], list[list[Any]]]:
    """An asciicast v2 file as (header, [[time, code, data], ...])."""
    lines = cast.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0])
    return header, [json.loads(line) for line in lines[1:] if line.strip()]


def cast_text(cast: Path, codes: str = "oei") -> str:
    """All data of a cast's events with the given codes, joined (chunking undone)."""
    _, events = cast_events(cast)
    return "".join(str(event[2]) for event in events if len(event) >= 3 and event[1] in codes)


def asciinema_cat(cast: Path, *, timeout: float = 30.0) -> subprocess.CompletedProcess[bytes]:
    """The real player printing a cast's output; fails on a malformed cast."""
    with tempfile.TemporaryDirectory(prefix="bg-asciinema-") as home:
        env = dict(os.environ, ASCIINEMA_CONFIG_HOME=home, HOME=home)
        return subprocess.run(
            [str(ASCIINEMA), "cat", str(cast)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            env=env,
            check=False,
        )


def poke(port: int, payload: bytes = b"", *, timeout: float = 15.0) -> bytes:
    """Connect to a local forwarding port an ssh client opened (polling until it
    listens), send ``payload``, and read until the client closes the connection.

    This is what makes ``ssh -L``/``-D`` ask the server for a channel at all.
    """
    sock = eventually(
        lambda: _try_connect(port), within=timeout, what=f"a listener on 127.0.0.1:{port}"
    )
    received = b""
    with sock:
        sock.settimeout(timeout)
        if payload:
            sock.sendall(payload)
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(4096):
                received += chunk
    return received


def _try_connect(port: int) -> socket.socket | None:
    try:
        return socket.create_connection((LOOPBACK, port), timeout=1)
    except OSError:
        return None


def socks4_connect(host: str, port: int) -> bytes:
    """A SOCKS4 CONNECT request, to make ``ssh -D`` open a direct-tcpip channel."""
    return b"\x04\x01" + port.to_bytes(2, "big") + socket.inet_aton(host) + b"\x00"


class SshAgent:
    """A throwaway ``ssh-agent`` on a socket in ``directory`` (ssh sends an agent
    forwarding request only when an agent is there)."""

    def __init__(self, directory: Path, *, timeout: float = 10.0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.socket = directory / "agent.sock"
        self.process = subprocess.Popen(
            [shutil.which("ssh-agent") or "/usr/bin/ssh-agent", "-D", "-a", str(self.socket)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            eventually(self.socket.exists, within=timeout, what="ssh-agent's socket")
        except BaseException:
            self.stop()
            raise

    def env(self) -> dict[str, str]:
        return {"SSH_AUTH_SOCK": str(self.socket)}

    def stop(self) -> None:
        _stop_process(self.process, 10.0)


# --------------------------------------------------------------------------- a deployment


def new_person(prefix: str = "eng") -> str:
    """A person name no other test uses, so tests sharing a proxy stay independent."""
    return f"{prefix}{secrets.token_hex(4)}"


@dataclass
class Deployment:
    """A running proxy with its config, and the everyday calls a test makes against it."""

    directory: Path
    config: Path
    proxy: ProxyProcess
    targets: dict[str, SshdTarget] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        directory: Path,
        targets: Mapping[str, Mapping[str, object]],
        *,
        sshd_targets: Mapping[str, SshdTarget] | None = None,
        **config_options: Any,
    ) -> Deployment:

        def launch() -> Deployment:
            config = write_proxy_config(directory, free_port(), targets, **config_options)
            return cls(directory, config, ProxyProcess.start(config), dict(sshd_targets or {}))

        return _retry_if_port_taken(launch)

    def stop(self) -> int:
        return self.proxy.stop()

    @property
    def port(self) -> int:
        return self.proxy.port

    @property
    def database(self) -> Path:
        return self.proxy.database

    @property
    def recordings(self) -> Path:
        return self.proxy.recordings

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(self.config, *args)

    def issue(self, person: str, **options: Any) -> dict[str, Any]:
        return issue_credential(self.config, person, **options)

    def code(self, person: str, **options: Any) -> str:
        return issue_code(self.config, person, **options)

    def ssh(
        self,
        person: str,
        target: str,
        code: str | None,
        command: str | None = None,
        *,
        login: str | None = None,
        **options: Any,
    ) -> SshResult:
        return ssh(self.port, user_at(person, target, login), code, command, **options)

    def ssh_start(
        self,
        person: str,
        target: str,
        code: str | None,
        command: str | None = None,
        *,
        login: str | None = None,
        **options: Any,
    ) -> SshRun:
        return ssh_start(self.port, user_at(person, target, login), code, command, **options)

    def sessions(self, person: str) -> list[dict[str, Any]]:
        return sessions(self.config, person=person)

    def show(self, session_id: str) -> dict[str, Any]:
        return show(self.config, session_id)

    def wait_for_session(self, person: str, **options: Any) -> dict[str, Any]:
        return wait_for_session(self.config, person, **options)

    def wait_for_event(self, session_id: str, event_type: str, **options: Any) -> dict[str, Any]:
        return wait_for_event(self.config, session_id, event_type, **options)

    def wait_for_login_failures(self, person: str, **options: Any) -> list[dict[str, Any]]:
        return wait_for_login_failures(self.database, person, **options)
