"""A code's use limit holds under simultaneous logins: the clients are held at the code
prompt until all are there, then released together."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.conftest import TARGET
from tests.integration.harness import Deployment, Reason, SshRun
from tests.waiting import eventually


@pytest.mark.parametrize(("clients", "uses"), [(2, 1), (4, 2)])
def test_a_use_limited_code_admits_exactly_its_uses_at_once(
    deployment: Deployment, person: str, tmp_path: Path, clients: int, uses: int
) -> None:
    code = deployment.code(person, uses=uses)
    gate = tmp_path / "go"
    runs: list[SshRun] = []
    try:
        for _ in range(clients):
            runs.append(deployment.ssh_start(person, TARGET, code, "echo admitted", gate=gate))
        eventually(
            lambda: all(run.askpass.asked_for_code() for run in runs),
            within=20,
            what="every client to reach the code prompt",
        )
    except BaseException:
        for run in runs:
            run.kill()
        raise
    gate.touch()
    results = [run.wait() for run in runs]

    admitted = [r for r in results if r.returncode == 0 and r.stdout == b"admitted\n"]
    refused = [r for r in results if r.returncode == 255 and b"Permission denied" in r.stderr]
    described = "\n".join(r.describe() for r in results)
    assert len(admitted) == uses, described
    assert len(refused) == clients - uses, described
    failures = deployment.wait_for_login_failures(person, count=clients - uses)
    assert [f.get("reason") for f in failures] == [Reason.SPENT] * (clients - uses)
    assert len(deployment.sessions(person)) == uses
