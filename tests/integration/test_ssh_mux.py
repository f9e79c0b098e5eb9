"""OpenSSH multiplexing (ControlMaster, what Ansible uses): one login, several channels at
once in one session, each its own SESSION/N with its own recording and exit status, and
the code used once."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import TARGET
from tests.integration.harness import (
    GOOD_JUSTIFICATION,
    LOOPBACK,
    Askpass,
    Deployment,
    Reason,
    _client_env,
    cast_text,
    cli_json,
    events_of,
    user_at,
)
from tests.integration.sshtools import ControlMaster, channel_cast, finish, ssh_options
from tests.waiting import eventually


def gated(n: int, gate: Path) -> str:
    """Channel n's command: wait (bounded) for its gate file, print its marker (computed
    remotely, so only output can carry it), exit 10+n."""
    return (
        f"for _ in $(seq 400); do [ -e {gate} ] && break; sleep 0.05; done; "
        f'echo "channel-$(({n} * 111))"; exit {10 + n}'
    )


def opened(deployment: Deployment, session_id: str, count: int) -> bool:
    """At least ``count`` channels of the session have opened."""
    return len(events_of(deployment.show(session_id), "channel_start")) >= count


def test_channels_over_one_controlmaster_share_one_session(
    deployment: Deployment, person: str, tmp_path: Path
) -> None:
    credential = deployment.issue(person)
    gates = {n: tmp_path / f"gate{n}" for n in (1, 2, 3, 4)}
    gates[4].touch()  # the fourth runs straight through
    master = ControlMaster(deployment, person, str(credential["code"]))
    clients: dict[int, subprocess.Popen[bytes]] = {}
    try:
        live = deployment.wait_for_session(person, ended=False)
        session_id = str(live["id"])
        # Three at once, each started once the previous channel is open (numbering is
        # open order).
        for n in (1, 2, 3):
            clients[n] = master.start(gated(n, gates[n]))
            eventually(
                partial(opened, deployment, session_id, n), within=15, what=f"channel {n} open"
            )
        open_now = [c for c in deployment.show(session_id)["channels"] if not c["ended_at"]]
        assert len(open_now) == 3, open_now
        assert all(clients[n].poll() is None for n in (1, 2, 3))

        gates[1].touch()
        first = finish(clients[1])
        assert first == (11, b"channel-111\n", b""), first
        clients[4] = master.start(gated(4, gates[4]))
        fourth = finish(clients[4])
        assert fourth == (14, b"channel-444\n", b""), fourth
        assert clients[2].poll() is None
        assert clients[3].poll() is None
        gates[2].touch()
        gates[3].touch()
        assert finish(clients[2]) == (12, b"channel-222\n", b"")
        assert finish(clients[3]) == (13, b"channel-333\n", b"")
        result = master.exit()
    finally:
        master.close()

    assert result.code_prompts == 1, result.describe()
    assert result.justification_prompts == 1, result.describe()
    [session] = deployment.sessions(person)
    assert session["id"] == session_id
    session = deployment.wait_for_session(person)
    assert session["end_reason"] == Reason.CLIENT_EXIT
    channels = session["channels"]
    assert [c["id"] for c in channels] == [f"{session_id}/{n}" for n in (1, 2, 3, 4)]
    for n, channel in enumerate(channels, start=1):
        assert channel["kind"] == "exec"
        assert channel["command"] == gated(n, gates[n])
        assert channel["exit_status"] == 10 + n
        recorded = cast_text(channel_cast(deployment, channel), "o")
        others = [f"channel-{m * 111}" for m in (1, 2, 3, 4) if m != n]
        assert f"channel-{n * 111}" in recorded
        assert not any(other in recorded for other in others), recorded
    [cred] = [c for c in cli_json(deployment.config, "cred", "list") if c["id"] == credential["id"]]
    assert cred["uses"] == 1, cred
    assert len(events_of(session, "session_start")) == 1


def test_a_channel_that_closes_its_output_early_still_reports_its_exit_status(
    deployment: Deployment, person: str
) -> None:
    # The target sends EOF a second before its exit status; the ControlMaster, its own
    # input closed, answers that EOF with CLOSE. Direct to sshd the client still gets 3.
    master = ControlMaster(deployment, person, deployment.code(person))
    try:
        client = master.start("echo out; exec >&- 2>&-; sleep 1; exit 3")
        status = finish(client)
        master.exit()
    finally:
        master.close()

    assert status == (3, b"out\n", b""), status
    session = deployment.wait_for_session(person)
    assert session["channels"][0]["exit_status"] == 3


ANSIBLE = shutil.which("ansible") or str(Path(sys.executable).parent / "ansible")


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("ansible") is None, reason="Ansible is not installed (optional)"
)
def test_an_ansible_adhoc_command_runs_through_the_proxy(
    deployment: Deployment, person: str
) -> None:
    code = deployment.code(person)
    with tempfile.TemporaryDirectory(prefix="bg-ans-") as tmp:
        home = Path(tmp)
        askpass = Askpass(home / "askpass", codes=[code], justifications=[GOOD_JUSTIFICATION])
        inventory = home / "hosts"
        inventory.write_text(
            f"db01 ansible_host={LOOPBACK} ansible_port={deployment.port} "
            f"ansible_user={user_at(person, TARGET)} "
            # The target is this machine: its modules run on the tests' own interpreter,
            # not on whatever python3 a fresh machine may lack.
            f"ansible_python_interpreter={sys.executable}\n"
        )
        # Ansible's own defaults (ControlMaster=auto, ControlPersist=60s) plus the
        # keyboard-interactive login; ssh keeps the first value given for an option.
        ssh_args = [*ssh_options(["KbdInteractiveAuthentication=yes"])][2:]
        env: dict[str, Any] = {
            **askpass.env(),
            "HOME": str(home),
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_SSH_ARGS": " ".join(
                ["-o", "ControlMaster=auto", "-o", "ControlPersist=60s", *ssh_args]
            ),
            "ANSIBLE_SSH_CONTROL_PATH": str(home / "cm"),
        }
        try:
            result = subprocess.run(
                [ANSIBLE, "all", "-i", str(inventory), "-m", "command", "-a", "echo ansible-ok"],
                capture_output=True,
                timeout=120,
                env=_client_env(env),
                check=False,
            )
        finally:
            # ControlPersist keeps the master for 60 s: end it (and the session) now.
            subprocess.run(
                ["ssh", "-F", "none", "-o", f"ControlPath={home / 'cm'}", "-O", "exit", "x"],
                capture_output=True,
                timeout=15,
                check=False,
            )
        assert result.returncode == 0, result
        assert b"ansible-ok" in result.stdout, result
        assert len(askpass.code_prompts()) == 1, askpass.prompts()
    sessions = deployment.sessions(person)
    assert len(sessions) == 1, sessions
    # Ansible opens several channels over its one connection (probe, put, run, cleanup).
    session = eventually(
        lambda: (s := deployment.show(str(sessions[0]["id"])))["channels"] and s,
        within=15,
        what="the Ansible session's channels",
    )
    assert len(session["channels"]) >= 2, session["channels"]
