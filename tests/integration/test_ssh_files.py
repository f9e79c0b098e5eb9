"""Copying files through the proxy the way engineers do during an outage: an sftp batch,
scp in its default SFTP mode and in legacy mode (-O), and rsync -e ssh, each both ways,
content compared by SHA-256; sftp file contents never enter a cast."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.integration.harness import SSH, Deployment, asciinema_cat, cast_text, sha256_file
from tests.integration.sshtools import (
    channel_cast,
    remote,
    rsync_argv,
    run_client,
    scp_argv,
    sftp_argv,
    ssh_options,
)

GIT = shutil.which("git") or "/usr/bin/git"

# A line that, if it ever showed up in a cast, could only have come from file contents.
CONTENT_MARKER = b"file-content-marker-7f3a\n"


def payload(path: Path, size: int = 1_500_000) -> Path:
    """Random bytes around a text marker (binary data, not only text, must survive)."""
    half = size // 2
    path.write_bytes(os.urandom(half) + CONTENT_MARKER + os.urandom(size - half))
    return path


def git(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Local git, for setting up and checking repositories (never through the proxy)."""
    result = subprocess.run(
        [GIT, *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
        check=False,
    )
    assert result.returncode == 0, result
    return result


def test_an_sftp_batch_on_stdin_puts_gets_renames_and_removes(
    deployment: Deployment, person: str, tmp_path: Path
) -> None:
    code = deployment.code(person)
    local = payload(tmp_path / "fix.conf")
    back = tmp_path / "back.conf"
    remote_dir = tmp_path / "remote" / "incoming"
    remote_dir.parent.mkdir()
    # sftp -b would disable the prompts; commands fed on stdin keep them.
    batch = (
        f"mkdir {remote_dir}\n"
        f"put {local} {remote_dir}/fix.conf\n"
        f"rename {remote_dir}/fix.conf {remote_dir}/fix-renamed.conf\n"
        f"get {remote_dir}/fix-renamed.conf {back}\n"
        f"mkdir {remote_dir}/scratch\n"
        f"rmdir {remote_dir}/scratch\n"
        f"ls -1 {remote_dir}\n"
        f"rm {remote_dir}/fix-renamed.conf\n"
        f"rmdir {remote_dir}\n"
    ).encode()

    result = run_client(sftp_argv(deployment.port, person), code, stdin=batch)

    assert result.returncode == 0, result.describe()
    assert result.code_prompts == 1, result.describe()
    assert sha256_file(back) == sha256_file(local)
    # The ls output (one full path a line): the renamed file, and no "scratch" left.
    after_ls = result.stdout.split(f"sftp> ls -1 {remote_dir}\n".encode())[-1]
    listing = after_ls.split(b"sftp> ")[0]
    assert listing.split() == [f"{remote_dir}/fix-renamed.conf".encode()], result.describe()
    assert not remote_dir.exists(), "rm and rmdir did not reach the target"
    session = deployment.wait_for_session(person)
    [channel] = session["channels"]
    assert (channel["kind"], channel["command"]) == ("subsystem", "sftp"), channel
    assert channel["id"] == f"{session['id']}/1"
    assert channel["bytes_up"] >= local.stat().st_size, channel
    assert channel["bytes_down"] >= local.stat().st_size, channel
    cast = channel_cast(deployment, channel)
    assert CONTENT_MARKER.decode().strip() not in cast.read_text(), "sftp contents in the cast"
    assert asciinema_cat(cast).returncode == 0


@pytest.mark.parametrize("legacy", [False, True], ids=["sftp-mode", "legacy-O"])
def test_scp_copies_both_ways(
    deployment: Deployment, person: str, tmp_path: Path, legacy: bool
) -> None:
    code = deployment.code(person)
    local = payload(tmp_path / "dump.sql")
    uploaded = tmp_path / "remote" / "dump-up.sql"
    uploaded.parent.mkdir()
    back = tmp_path / "dump-back.sql"

    up = run_client(
        scp_argv(deployment.port, str(local), remote(person, uploaded), legacy=legacy), code
    )
    assert up.returncode == 0, up.describe()
    assert sha256_file(uploaded) == sha256_file(local)

    down = run_client(
        scp_argv(deployment.port, remote(person, uploaded), str(back), legacy=legacy), code
    )
    assert down.returncode == 0, down.describe()
    assert sha256_file(back) == sha256_file(local)

    session = deployment.wait_for_session(person, count=2)
    [channel] = session["channels"]
    if legacy:
        # scp -O runs "scp -f PATH" on the target: an exec channel, recorded as such.
        assert channel["kind"] == "exec", channel
        assert str(channel["command"]).startswith("scp "), channel
        assert str(uploaded) in str(channel["command"]), channel
    else:
        assert (channel["kind"], channel["command"]) == ("subsystem", "sftp"), channel
    assert channel["exit_status"] == 0, channel
    assert channel["bytes_down"] >= local.stat().st_size, channel
    assert asciinema_cat(channel_cast(deployment, channel)).returncode == 0


def test_rsync_over_ssh_copies_both_ways(
    deployment: Deployment, person: str, tmp_path: Path
) -> None:
    code = deployment.code(person)
    tree = tmp_path / "etc-fix"
    (tree / "conf.d").mkdir(parents=True)
    first = payload(tree / "a.conf")
    second = payload(tree / "conf.d" / "b.conf", 300_000)
    pushed = tmp_path / "remote"
    pushed.mkdir()
    pulled = tmp_path / "pulled"

    push = run_client(rsync_argv(deployment.port, str(tree), remote(person, f"{pushed}/")), code)
    assert push.returncode == 0, push.describe()
    assert sha256_file(pushed / "etc-fix" / "a.conf") == sha256_file(first)
    assert sha256_file(pushed / "etc-fix" / "conf.d" / "b.conf") == sha256_file(second)

    pull = run_client(
        rsync_argv(deployment.port, remote(person, pushed / "etc-fix"), f"{pulled}/"), code
    )
    assert pull.returncode == 0, pull.describe()
    assert sha256_file(pulled / "etc-fix" / "a.conf") == sha256_file(first)
    assert sha256_file(pulled / "etc-fix" / "conf.d" / "b.conf") == sha256_file(second)

    session = deployment.wait_for_session(person, count=2)
    [channel] = session["channels"]
    assert channel["kind"] == "exec", channel
    assert str(channel["command"]).startswith("rsync --server"), channel
    assert channel["exit_status"] == 0, channel
    cast = channel_cast(deployment, channel)
    assert asciinema_cat(cast).returncode == 0
    assert cast_text(cast, "o"), "rsync's protocol output is not in the exec channel's cast"


def test_git_pushes_and_clones_over_ssh(
    deployment: Deployment, person: str, tmp_path: Path
) -> None:
    code = deployment.code(person)
    home = tmp_path / "home"
    home.mkdir()
    # A throwaway git identity and no user or system config: nothing outside tmp_path.
    env = {
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "On Call",
        "GIT_AUTHOR_EMAIL": "oncall@example.com",
        "GIT_COMMITTER_NAME": "On Call",
        "GIT_COMMITTER_EMAIL": "oncall@example.com",
        "GIT_SSH_COMMAND": " ".join([SSH, "-p", str(deployment.port), *ssh_options()]),
    }
    bare = tmp_path / "remote" / "fix.git"
    work = tmp_path / "work"
    git(env, "init", "-q", "--bare", "-b", "main", str(bare))
    git(env, "init", "-q", "-b", "main", str(work))
    tracked = payload(work / "hotfix.patch", 200_000)
    git(env, "-C", str(work), "add", "hotfix.patch")
    git(env, "-C", str(work), "commit", "-q", "-m", "INC-4411 hotfix")
    head = git(env, "-C", str(work), "rev-parse", "HEAD").stdout.strip()

    push = run_client(
        [GIT, "-C", str(work), "push", "-q", remote(person, bare), "main"], code, env=env
    )
    assert push.returncode == 0, push.describe()
    clone = tmp_path / "clone"
    pulled = run_client([GIT, "clone", "-q", remote(person, bare), str(clone)], code, env=env)
    assert pulled.returncode == 0, pulled.describe()

    assert git(env, "-C", str(clone), "rev-parse", "HEAD").stdout.strip() == head
    assert sha256_file(clone / "hotfix.patch") == sha256_file(tracked)
    deployment.wait_for_session(person, count=2)
    commands = [
        str(channel["command"])
        for row in deployment.sessions(person)
        for channel in deployment.show(str(row["id"]))["channels"]
    ]
    assert commands == [f"git-receive-pack '{bare}'", f"git-upload-pack '{bare}'"], commands
