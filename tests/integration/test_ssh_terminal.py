"""A session as the engineer's terminal sees it: the recorded-session notice, Ctrl-C
reaching a remote command, signal and break requests and exit signals passed on, the
environment allowlist, a script piped to a non-PTY shell, and first contact through
`breakglass client-config`."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import secrets
import signal
import subprocess
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.integration.conftest import TARGET
from tests.integration.harness import (
    LOOPBACK,
    SSH,
    Deployment,
    Reason,
    SshdTarget,
    SshResult,
    asciinema_cat,
    cast_text,
    events_of,
    ssh_direct,
    user_at,
)
from tests.integration.sshtools import (
    channel_cast,
    processes_matching,
    run_client,
    send_signal_midway,
    ssh_terminal,
)
from tests.waiting import eventually

# A second name in this module's config, for the sshd that logs its channel requests.
DEBUG_TARGET = "debug01"


@pytest.fixture(scope="module")
def env_target(
    tmp_path_factory: pytest.TempPathFactory, target: SshdTarget
) -> Iterator[SshdTarget]:
    """An sshd that would accept FOO, so only the proxy can be what keeps it out."""
    sshd = SshdTarget.start(
        tmp_path_factory.mktemp("env-target"),
        proxy_key=target.proxy_key,
        extra_config=["AcceptEnv FOO"],
    )
    yield sshd
    sshd.stop()


@pytest.fixture(scope="module")
def debug_target(
    tmp_path_factory: pytest.TempPathFactory, target: SshdTarget
) -> Iterator[SshdTarget]:
    """An sshd logging each channel request it gets (LogLevel DEBUG1), so break and
    signal requests, which have no visible effect on it, can be seen arriving. (Its
    session processes print debug lines on the channel's stderr too.)"""
    sshd = SshdTarget.start(
        tmp_path_factory.mktemp("debug-target"),
        proxy_key=target.proxy_key,
        extra_config=["LogLevel DEBUG1"],
    )
    yield sshd
    sshd.stop()


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, env_target: SshdTarget, debug_target: SshdTarget
) -> Iterator[Deployment]:
    """This module's proxy: db01 is the permissive sshd above."""
    running = Deployment.start(
        tmp_path_factory.mktemp("proxy"),
        {TARGET: env_target.target_entry(), DEBUG_TARGET: debug_target.target_entry()},
        sshd_targets={TARGET: env_target, DEBUG_TARGET: debug_target},
    )
    yield running
    running.stop()


def test_ctrl_c_reaches_a_remote_sleep_and_the_shell_carries_on(
    deployment: Deployment, person: str, tmp_path: Path
) -> None:
    code = deployment.code(person)
    sleeper = f"sleep 999.{secrets.randbelow(900000) + 100000}"
    terminal = ssh_terminal(
        deployment.port, person, code, askpass_dir=tmp_path / "askpass", options=["LogLevel=INFO"]
    )
    try:
        notice = terminal.expect(rb"is recorded")
        terminal.send(b"echo ready-$((40 + 2))\n")
        ready = terminal.expect(rb"ready-42")
        # The one-line notice comes first, before anything the shell prints.
        assert notice.start() < ready.start()
        terminal.send(sleeper.encode() + b"\n")
        eventually(lambda: processes_matching(sleeper), within=15, what="the remote sleep")

        terminal.send(b"\x03")  # Ctrl-C

        eventually(
            lambda: not processes_matching(sleeper), within=15, what="the sleep to die of ^C"
        )
        mark = len(terminal.output())
        terminal.send(b"echo status-$?\n")
        terminal.expect(rb"status-130", after=mark)  # 128 + SIGINT: killed by the signal
        terminal.send(b"exit 3\n")
        assert terminal.wait() == 3, terminal.output()[-2000:]
    finally:
        terminal.close()
        for pid in processes_matching(sleeper):  # only if the test failed midway
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    session = deployment.wait_for_session(person)
    assert session["end_reason"] == Reason.CLIENT_EXIT
    [channel] = session["channels"]
    assert (channel["kind"], channel["pty"], channel["exit_status"]) == ("shell", True, 3)
    recorded = cast_text(channel_cast(deployment, channel), "o")
    assert "status-130" in recorded


def target_got(target: SshdTarget, request: str, after: int) -> bool:
    """The target logged a channel request of this type since log offset ``after``."""
    pattern = rf"session_input_channel_req: session \d+ req {request}\b"
    return re.search(pattern, target.log()[after:]) is not None


def test_a_signal_request_reaches_the_target_and_the_channel_carries_on(
    deployment: Deployment, person: str, debug_target: SshdTarget
) -> None:
    code = deployment.code(person)
    mark = len(debug_target.log())

    stdout, status, exit_signal = send_signal_midway(
        deployment.port,
        user_at(person, DEBUG_TARGET),
        code,
        'echo started; read line; echo "got-$line"',
        signal="TERM",
        ready=b"started\n",
        then=partial(
            eventually,
            partial(target_got, debug_target, "signal", mark),
            within=15,
            what="the target to get the signal request",
        ),
        stdin=b"go\n",
    )

    # This sshd refuses to deliver it ("signalling requires privilege separation"),
    # as it does to a direct client: the proxy's part is to pass the request on.
    assert (stdout, status, exit_signal) == (b"started\ngot-go\n", 0, None)


def test_a_break_reaches_the_target(
    deployment: Deployment, person: str, debug_target: SshdTarget, tmp_path: Path
) -> None:
    code = deployment.code(person)
    mark = len(debug_target.log())
    terminal = ssh_terminal(
        deployment.port, person, code, askpass_dir=tmp_path / "askpass", target=DEBUG_TARGET
    )
    try:
        terminal.send(b"echo ready-$((40 + 2))\n")
        terminal.expect(rb"ready-42")
        terminal.send(b"\r~B")  # OpenSSH's escape for "send a BREAK", at a line start

        eventually(
            partial(target_got, debug_target, "break", mark),
            within=15,
            what="the target to get the break request",
        )
        terminal.send(b"exit 4\n")
        assert terminal.wait() == 4, terminal.output()[-2000:]
    finally:
        terminal.close()


@pytest.mark.parametrize("tty", [False, True])
def test_the_session_notice_is_the_authentication_banner_naming_the_session(
    deployment: Deployment, person: str, tty: bool
) -> None:
    # Issue 18 item 6 / issue 19 item 8: exec (and scp, sftp, Ansible) see the notice
    # too, on stderr where OpenSSH prints banners, never in the command's stdout.
    code = deployment.code(person)

    result = deployment.ssh(
        person, TARGET, code, "echo hello-$((1 + 1))", tty=tty, options=["LogLevel=INFO"]
    )

    assert result.returncode == 0, result.describe()
    session = deployment.wait_for_session(person)
    ends = dt.datetime.fromisoformat(session["deadline"]).strftime("%H:%M UTC")
    notice = f"breakglass: session {session['id']} is recorded; it ends at {ends}."
    stderr = result.stderr.decode(errors="replace")
    assert stderr.count(notice) == 1, result.describe()
    assert "is recorded" not in result.stdout.decode(errors="replace"), result.describe()
    assert result.stdout.strip() == b"hello-2", result.describe()


def test_ssh_q_hides_the_session_notice(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)

    # LogLevel=INFO shows banners (the test above); -q, later on the command line, wins.
    result = deployment.ssh(
        person,
        TARGET,
        code,
        "echo quiet-$((1 + 1))",
        args=["-q"],
        tty=True,
        options=["LogLevel=INFO"],
    )

    assert result.returncode == 0, result.describe()
    assert result.stdout.strip() == b"quiet-2", result.describe()
    assert b"is recorded" not in result.stdout + result.stderr, result.describe()


def test_a_remote_exit_signal_comes_back_as_it_does_direct(
    deployment: Deployment, person: str, env_target: SshdTarget
) -> None:
    code = deployment.code(person)
    command = "echo before; kill -TERM $$; echo after"
    direct = ssh_direct(env_target, command)

    result = deployment.ssh(person, TARGET, code, command)

    assert result.stdout == direct.stdout == b"before\n", result.describe()
    assert result.returncode == direct.returncode, (result.describe(), direct)
    session = deployment.wait_for_session(person)
    [channel] = session["channels"]
    assert channel["exit_signal"] == "TERM", channel
    assert channel["exit_status"] is None, channel


def test_only_lang_and_lc_variables_reach_the_target(deployment: Deployment, person: str) -> None:
    code = deployment.code(person)
    command = 'echo "lang=${LANG-unset} lc=${LC_BGTEST-unset} foo=${FOO-unset}"'

    result = deployment.ssh(
        person,
        TARGET,
        code,
        command,
        options=["SendEnv=LANG", "SendEnv=LC_BGTEST", "SendEnv=FOO"],
        env={"LANG": "C.UTF-8", "LC_BGTEST": "lc-value-5", "FOO": "leaked-7"},
    )

    assert result.returncode == 0, result.describe()
    assert result.stdout == b"lang=C.UTF-8 lc=lc-value-5 foo=unset\n", result.describe()
    session = deployment.wait_for_session(person)
    refused = [e["data"] for e in events_of(session, "request_refused")]
    assert {"request": "env", "detail": "FOO"} in refused, refused


def test_a_script_piped_to_bash_is_recorded_command_by_command(
    deployment: Deployment, person: str
) -> None:
    code = deployment.code(person)
    script = [
        "echo step-$((1 + 1))",
        'cd /tmp && echo "now in $(pwd)"',
        "printf 'done-%s\\n' \"$((6 * 7))\"",
    ]

    result = deployment.ssh(person, TARGET, code, "bash", stdin="\n".join(script).encode() + b"\n")

    assert result.returncode == 0, result.describe()
    assert result.stdout == b"step-2\nnow in /tmp\ndone-42\n", result.describe()
    session = deployment.wait_for_session(person)
    [channel] = session["channels"]
    assert (channel["kind"], channel["command"], channel["pty"]) == ("exec", "bash", False)
    cast = channel_cast(deployment, channel)
    typed = cast_text(cast, "i")
    for line in script:
        assert line + "\n" in typed, typed
    assert cast_text(cast, "o") == "step-2\nnow in /tmp\ndone-42\n"
    played = asciinema_cat(cast)
    assert played.returncode == 0, played.stderr
    assert b"done-42" in played.stdout


def test_client_config_pins_the_proxy_and_configures_the_host(
    deployment: Deployment, person: str, tmp_path: Path, env_target: SshdTarget
) -> None:
    printed = deployment.cli("client-config")
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    [known] = [line for line in lines if line.strip() and not line.startswith(("#", " ", "Host"))]
    assert re.match(rf"\[{re.escape(LOOPBACK)}\]:{deployment.port} ssh-\S+ \S+$", known), known
    snippet = "\n".join(lines[lines.index("Host breakglass") :]) + "\n"
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known + "\n")
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(snippet)

    parsed = subprocess.run(
        [SSH, "-G", "-F", str(ssh_config), "breakglass"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    assert parsed.returncode == 0, parsed.stderr
    options = set(parsed.stdout.splitlines())
    assert {f"hostname {LOOPBACK}", f"port {deployment.port}"} <= options, parsed.stdout
    assert "stricthostkeychecking true" in options, parsed.stdout

    def connect(hosts_file: Path) -> SshResult:
        argv = [SSH, "-F", str(ssh_config), "-o", f"UserKnownHostsFile={hosts_file}"]
        argv += ["-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        argv += ["-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=10"]
        argv += [f"{user_at(person, TARGET)}@breakglass", "echo pinned-$((2 * 21))"]
        return run_client(argv, deployment.code(person), timeout=30)

    pinned = connect(known_hosts)
    assert pinned.returncode == 0, pinned.describe()
    assert pinned.stdout == b"pinned-42\n", pinned.describe()

    # The same host pattern with another key: the strict client must refuse, unasked.
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"{known.split()[0]} {env_target.host_pub}\n")
    refused = connect(wrong)
    assert refused.returncode == 255, refused.describe()
    assert b"host key" in refused.stderr.lower(), refused.describe()
    assert refused.code_prompts == 0, refused.describe()
