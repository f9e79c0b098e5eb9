"""Commands typed at a real bash, through the real OpenSSH client inside tmux and the
proxy, become ``command`` events; a secret typed at ``read -s`` is nowhere."""

from __future__ import annotations

import secrets
import shlex
import subprocess
import tempfile
import time
from pathlib import Path

from tests.integration.conftest import TARGET
from tests.integration.harness import (
    GOOD_JUSTIFICATION,
    LOOPBACK,
    SSH,
    Askpass,
    Deployment,
    _client_env,
    events_of,
    user_at,
)
from tests.integration.sshtools import ssh_options
from tests.waiting import eventually


class Tmux:
    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="bg-tmux-")
        self.socket = str(Path(self._dir.name) / "s")
        self.env = env
        self.tmux("new-session", "-d", "-x", "100", "-y", "30", shlex.join(argv))
        self.tmux("set-option", "-g", "remain-on-exit", "on")

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            ["tmux", "-S", self.socket, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=15,
            check=True,
        )
        return done.stdout

    def keys(self, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", *(["-l"] if literal else []), *keys)
        time.sleep(0.3)  # one keystroke chunk at a time, each echoed before the next

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-S", "-300")

    def expect(self, text: str, count: int = 1) -> None:
        eventually(lambda: self.screen().count(text) >= count, within=15, what=repr(text))

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], env=self.env, check=False)
        self._dir.cleanup()


def terminal(deployment: Deployment, person: str, tmp_path: Path, *command: str) -> Tmux:
    """A real ``ssh -t`` through the proxy (login shell, or ``command``) inside tmux."""
    code = deployment.code(person)
    askpass = Askpass(tmp_path / "askpass", codes=[code], justifications=[GOOD_JUSTIFICATION])
    argv = [
        SSH,
        "-t",
        "-p",
        str(deployment.port),
        *ssh_options(["LogLevel=INFO"]),  # the session notice is a banner: INFO shows it
        f"{user_at(person, TARGET)}@{LOOPBACK}",
        *command,
    ]
    return Tmux(argv, _client_env(askpass.env()))


def test_commands_typed_at_a_shell_are_events_and_a_secret_is_not(
    deployment: Deployment, person: str, tmp_path: Path
) -> None:
    secret = f"hunter2-{secrets.token_hex(6)}"
    term = terminal(deployment, person, tmp_path)
    try:
        # Typed ahead, before the session is up: it reaches the target with (and races)
        # the login messages sshd prints, and is still read from its echo.
        term.keys("echo ready-$((40 + 2))", "Enter")
        term.expect("is recorded")
        term.expect("ready-42")
        term.keys("echo wrld")
        term.keys("Left", "Left", "Left")
        term.keys("o", "Enter")
        term.expect("world", 2)
        term.keys("ls -d /et")
        term.keys("Tab")
        term.keys("Enter")
        term.expect("/etc/\n")
        term.keys("Up")
        term.keys("Enter")
        term.keys("C-r")
        term.keys("wor")
        term.keys("Enter")
        term.keys("echo " + "z" * 120, "Enter")  # wraps past 100 columns
        term.keys("for i in 1 2 3\rdo echo item $i\rdone\r", literal=True)
        term.expect("item 3")
        term.keys("echo wrong")
        term.keys("C-u")
        term.keys("echo right", "Enter")
        term.keys("sleep 30", "Enter")
        term.keys("C-c")
        term.keys("vim -u NONE -i NONE /dev/null", "Enter")
        term.expect('"/dev/null"')  # vim's status line: the editor is up
        term.keys("ihello", "Escape")
        term.keys(":q!", "Enter")
        term.keys("less /etc/passwd", "Enter")
        term.expect("root:x:0:0")  # less shows the file
        term.keys("q")
        term.keys("read -s -p 'Password: ' pw; echo; echo len=${#pw}", "Enter")
        term.expect("Password:")
        term.keys(secret, "Enter")
        term.expect(f"len={len(secret)}")
        term.keys("exit 7", "Enter")
        session = deployment.wait_for_session(person, timeout=30)
    finally:
        term.close()

    commands = events_of(session, "command")
    texts = [event["data"].get("text", "<redacted>") for event in commands]
    assert texts == [
        "echo ready-$((40 + 2))",
        "echo world",
        "ls -d /etc/",
        "ls -d /etc/",
        "echo world",
        "echo " + "z" * 120,
        "for i in 1 2 3",
        "do echo item $i",
        "done",
        "echo right",
        "sleep 30",
        "vim -u NONE -i NONE /dev/null",
        "less /etc/passwd",
        "read -s -p 'Password: ' pw; echo; echo len=${#pw}",
        "<redacted>",
        "exit 7",
    ], commands
    assert all(e["data"]["source"] == "pty" for e in commands), commands
    assert len({e["channel"] for e in commands}) == 1
    assert [e["data"]["redacted"] for e in commands].count(True) == 1
    assert secret not in str(session)
    for path in deployment.database.parent.glob(deployment.database.name + "*"):
        assert secret.encode() not in path.read_bytes(), path


def test_commands_typed_in_a_pty_exec_are_events(
    deployment: Deployment, person: str, tmp_path: Path
) -> None:
    """``ssh -t host bash`` (or ``sudo -i``): an exec with a PTY running a shell. The exec
    line is one command event, and what is typed in that shell is recorded the same way
    as at a login shell."""
    term = terminal(deployment, person, tmp_path, "bash --norc -i")
    try:
        term.expect("is recorded")
        term.expect("bash-")  # --norc: bash's default prompt, bash-5.2# as root
        term.keys("echo inner-$((6 * 7))", "Enter")
        term.expect("inner-42")
        term.keys("echo second-$((1 + 1))", "Enter")
        term.expect("second-2")
        term.keys("exit 3", "Enter")
        session = deployment.wait_for_session(person, timeout=30)
    finally:
        term.close()

    commands = events_of(session, "command")
    assert [(e["data"]["source"], e["data"].get("text")) for e in commands] == [
        ("exec", "bash --norc -i"),
        ("pty", "echo inner-$((6 * 7))"),
        ("pty", "echo second-$((1 + 1))"),
        ("pty", "exit 3"),
    ], commands
