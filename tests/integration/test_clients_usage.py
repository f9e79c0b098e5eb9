"""The client forms the README documents that need a word of their own (issue 19,
item 4): ``sftp -b FILE`` turns BatchMode on, which turns the prompts off, so it needs
``-o BatchMode=no`` to reach the code prompt (the real sftp, through the proxy)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import TARGET
from tests.integration.harness import CLIENT_OPTIONS, LOOPBACK, Deployment, user_at
from tests.integration.sshtools import SFTP, run_client


def test_sftp_batch_file_needs_batchmode_no(
    deployment: Deployment, person: str, tmp_path: Path
) -> None:
    code = deployment.code(person)
    local = tmp_path / "note.txt"
    local.write_bytes(b"batch upload\n")
    uploaded = tmp_path / "uploaded.txt"
    batch = tmp_path / "batch"
    batch.write_text(f"put {local} {uploaded}\n")
    # The harness's options but its BatchMode=no: what an engineer's sftp has.
    argv = [SFTP, "-q", "-P", str(deployment.port), "-F", "none"]
    for option in CLIENT_OPTIONS:
        if option != "BatchMode=no":
            argv += ["-o", option]
    destination = f"{user_at(person, TARGET)}@{LOOPBACK}"

    refused = run_client([*argv, "-b", str(batch), destination], code)
    assert refused.returncode != 0, refused.describe()
    assert refused.code_prompts == 0, refused.describe()
    assert not uploaded.exists()

    documented = [*argv, "-o", "BatchMode=no", "-b", str(batch), destination]
    done = run_client(documented, code)
    assert done.returncode == 0, done.describe()
    assert done.code_prompts == 1, done.describe()
    assert uploaded.read_bytes() == b"batch upload\n"
