"""Refused forwarding says "not allowed", not "connection refused", and what a connection
that never opens a session channel costs.

`-L`, `-D`, `-W` and ProxyJump (`-J`) get OpenSSH's "administratively prohibited" with a
reason that names breakglass and the right usage. A connection that asks only for
forwarding keeps what its login committed (the code's use, the session start and its
alert: the login was real) and its record says plainly that nothing ran: it ends as
``forwarding_only`` with a ``forwarding_only`` alert, at once when the client leaves
(-W, -J) and after a short grace when it stays (-N -L, -N -D). A ControlMaster that opens
channels later is never cut.

The clients run at LogLevel=INFO, OpenSSH's default: the "open failed" line and the
server's disconnect message are logged at that level.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from tests.integration.conftest import TARGET
from tests.integration.harness import (
    GOOD_JUSTIFICATION,
    LOOPBACK,
    SSH,
    Askpass,
    Deployment,
    SshdTarget,
    SshResult,
    _client_env,
    cli_json,
    events_of,
    free_port,
    poke,
    port_accepts,
    socks4_connect,
)
from tests.integration.sshtools import ControlMaster, finish
from tests.waiting import eventually

INFO = ["LogLevel=INFO"]
# proxy.ssh.session.FORWARD_ONLY_GRACE; the tests wait ten times as long at most.
GRACE = 5.0


def assert_prohibited_with_usage(result: SshResult, person: str) -> None:
    stderr = result.stderr.decode(errors="replace")
    assert "open failed: administratively prohibited: breakglass does not forward" in stderr, (
        result.describe()
    )
    assert "ssh PERSON@TARGET@proxy" in stderr, result.describe()
    assert f"ssh {person}@{TARGET}@proxy" in stderr, result.describe()
    assert "Connection refused" not in stderr, result.describe()


def assert_forwarding_only(deployment: Deployment, person: str, credential_id: str) -> None:
    """Ended as forwarding_only, nothing opened, the use and the start alert kept, and an
    alert saying that nothing ran."""
    session = deployment.wait_for_session(person, timeout=10 * GRACE)
    assert session["end_reason"] == "forwarding_only", session
    assert session["channels"] == [], session["channels"]
    [end] = events_of(session, "session_end")
    assert end["data"]["detail"].startswith(
        "no channel opened: a forwarding-only or ProxyJump attempt"
    ), end
    assert events_of(session, "request_refused"), session["events"]
    rules = [e["data"].get("rule") for e in events_of(session, "alert")]
    assert sorted(rules) == ["forwarding_only", "session_start"], session["events"]
    [cred] = [c for c in cli_json(deployment.config, "cred", "list") if c["id"] == credential_id]
    assert cred["uses"] == 1, cred


def test_local_forwarding_is_prohibited_with_the_usage(
    deployment: Deployment, person: str, target: SshdTarget
) -> None:
    # A working session with -L: the forward is refused with the reason, the shell works.
    local = free_port()
    code = deployment.code(person)
    run = deployment.ssh_start(
        person,
        TARGET,
        code,
        "read line; echo got-$line",
        args=["-L", f"127.0.0.1:{local}:127.0.0.1:{target.port}"],
        options=INFO,
    )
    try:
        live = deployment.wait_for_session(person, ended=False)
        received = poke(local)
        deployment.wait_for_event(str(live["id"]), "request_refused")
    except BaseException:
        run.kill()
        raise
    result = run.wait(stdin=b"go\n")

    assert not received.startswith(b"SSH-"), received
    assert result.returncode == 0, result.describe()
    assert result.stdout == b"got-go\n"
    assert_prohibited_with_usage(result, person)
    session = deployment.wait_for_session(person)
    assert session["end_reason"] == "client_exit", session  # it opened a channel


def test_stdio_forwarding_is_prohibited_and_ends_as_forwarding_only(
    deployment: Deployment, person: str, target: SshdTarget
) -> None:
    credential = deployment.issue(person)

    result = deployment.ssh(
        person,
        TARGET,
        str(credential["code"]),
        None,
        args=["-W", f"127.0.0.1:{target.port}"],
        options=INFO,
    )

    assert result.returncode != 0, result.describe()
    assert not result.stdout.startswith(b"SSH-"), result.describe()
    assert_prohibited_with_usage(result, person)
    assert_forwarding_only(deployment, person, str(credential["id"]))


def test_proxyjump_is_prohibited_and_ends_as_forwarding_only(
    deployment: Deployment, person: str, tmp_path: Path
) -> None:
    # ssh passes -F (not -o) to the ssh it starts for the jump, so the options go in a
    # file. The final destination is a name only the jump would look up: never resolved.
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host *\n"
        "    StrictHostKeyChecking no\n"
        "    UserKnownHostsFile /dev/null\n"
        "    PubkeyAuthentication no\n"
        "    PreferredAuthentications keyboard-interactive\n"
        "    NumberOfPasswordPrompts 1\n"
        "    ConnectTimeout 10\n"
        "    LogLevel INFO\n"
    )
    credential = deployment.issue(person)
    askpass = Askpass(
        tmp_path / "askpass", codes=[str(credential["code"])], justifications=[GOOD_JUSTIFICATION]
    )
    jump = f"{person}@{TARGET}@{LOOPBACK}:{deployment.port}"
    argv = [SSH, "-F", str(config), "-J", jump, f"root@{TARGET}", "echo should-not-run"]

    done = subprocess.run(
        argv, input=b"", capture_output=True, timeout=60, env=_client_env(askpass.env())
    )

    result = SshResult(argv, done.returncode, done.stdout, done.stderr, askpass.prompts(), 1, 1)
    assert done.returncode == 255, result.describe()
    assert b"should-not-run" not in done.stdout
    assert len(askpass.code_prompts()) == 1, result.describe()  # the jump's login only
    assert_prohibited_with_usage(result, person)
    assert_forwarding_only(deployment, person, str(credential["id"]))


def test_a_client_that_stays_after_a_refusal_is_ended_after_the_grace(
    deployment: Deployment, person: str, target: SshdTarget
) -> None:
    # ssh -N -D: no session channel, only a SOCKS port whose every use is refused.
    local = free_port()
    credential = deployment.issue(person)
    run = deployment.ssh_start(
        person,
        TARGET,
        str(credential["code"]),
        None,
        args=["-N", "-D", f"127.0.0.1:{local}"],
        options=INFO,
    )
    try:
        deployment.wait_for_session(person, ended=False)
        eventually(lambda: port_accepts(local), within=15, what="the SOCKS port")
        received = poke(local, socks4_connect("127.0.0.1", target.port))
    except BaseException:
        run.kill()
        raise
    result = run.wait(timeout=10 * GRACE)

    assert b"SSH-" not in received, received
    assert result.returncode == 255, result.describe()
    assert_prohibited_with_usage(result, person)
    assert b"no channel was opened and breakglass refuses forwarding" in result.stderr, (
        result.describe()
    )
    assert_forwarding_only(deployment, person, str(credential["id"]))


def test_a_controlmaster_that_opens_a_channel_after_a_refusal_is_kept(
    deployment: Deployment, person: str, target: SshdTarget, tmp_path: Path
) -> None:
    # ssh -M -N -L: the forward is used (and refused) before any client opens a channel;
    # a client opening one within the grace keeps the master, well past the grace.
    local = free_port()
    gate = tmp_path / "gate"
    master = ControlMaster(
        deployment,
        person,
        deployment.code(person),
        args=["-L", f"127.0.0.1:{local}:127.0.0.1:{target.port}"],
    )
    try:
        live = deployment.wait_for_session(person, ended=False)
        poke(local)
        deployment.wait_for_event(str(live["id"]), "request_refused")
        client = master.start(f"while [ ! -e {gate} ]; do sleep 0.05; done; echo kept")
        eventually(
            lambda: events_of(deployment.show(str(live["id"])), "channel_start"),
            within=15,
            what="the client's channel",
        )
        # Only waiting shows that nothing happens: past the grace, the session still runs.
        time.sleep(GRACE + 2)
        assert not deployment.show(str(live["id"]))["ended_at"]
        gate.touch()
        assert finish(client) == (0, b"kept\n", b"")
        later = master.start("echo later")
        assert finish(later) == (0, b"later\n", b"")
        master.exit()
    finally:
        master.close()
    session = deployment.wait_for_session(person)
    assert session["end_reason"] == "client_exit", session
    assert len(session["channels"]) == 2, session["channels"]
