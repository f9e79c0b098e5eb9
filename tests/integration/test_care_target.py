"""``breakglass target add``: fetch and pin a real sshd's host key, make the proxy's key
for it, and reach the target with exactly what the command printed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.harness import (
    Deployment,
    SshdTarget,
    file_mode,
    new_person,
    public_line,
    run_cli,
    write_proxy_config,
)


@pytest.fixture
def fresh_target(tmp_path: Path) -> Iterator[SshdTarget]:
    """An sshd of the test's own: the test rewrites its authorized_keys."""
    sshd = SshdTarget.start(tmp_path / "sshd")
    yield sshd
    sshd.stop()


def _printed(stdout: str) -> tuple[list[str], str, dict[str, object]]:
    host_keys = [
        ln.removeprefix("host-key: ") for ln in stdout.splitlines() if ln.startswith("host-key: ")
    ]
    authorized = [ln for ln in stdout.splitlines() if ln.startswith("restrict,")]
    assert len(authorized) == 1, stdout
    snippet = stdout[stdout.index("\ntargets:\n") + 1 :]
    return host_keys, authorized[0], yaml.safe_load(snippet)["targets"]


def test_target_add_pins_the_host_key_and_reaches_the_target(
    tmp_path: Path, fresh_target: SshdTarget
) -> None:
    config = write_proxy_config(tmp_path / "setup", 2222, {})
    before = config.read_text()
    result = run_cli(
        config,
        "target",
        "add",
        "db02",
        f"127.0.0.1:{fresh_target.port}",
        "--login",
        fresh_target.login,
    )
    assert result.returncode == 0, result.stderr
    host_keys, authorized, targets = _printed(result.stdout)

    # The host key shown (and pinned in the snippet) is the sshd's own .pub.
    expected = public_line(fresh_target.host_key.with_name("host_key.pub"))
    assert host_keys == [expected]
    assert "SHA256:" in result.stdout
    entry = targets["db02"]
    assert isinstance(entry, dict)
    assert entry["host_key"] == expected
    assert entry["port"] == fresh_target.port
    assert entry["login"] == fresh_target.login

    # The proxy's key: new, private, where the config's folder keeps keys.
    key = config.parent / "keys" / "db02"
    assert entry["identity_file"] == str(key)
    assert key.exists()
    assert file_mode(key) == 0o600
    assert file_mode(key.parent) == 0o700
    assert authorized.split()[0] == "restrict,pty"
    assert " ".join(authorized.split()[1:3]) == public_line(key.with_name("db02.pub"))
    assert config.read_text() == before  # never writes the config

    # Before the line is installed the target refuses the new key; after, it lets in.
    fresh_target.directory.joinpath("authorized_keys").write_text(authorized + "\n")
    proxy_dir = tmp_path / "proxy"
    deployment = Deployment.start(proxy_dir, targets)  # type: ignore[arg-type]
    try:
        person = new_person()
        done = deployment.ssh(person, "db02", deployment.code(person), "echo reached-$((6*7))")
        assert done.returncode == 0, done.describe()
        assert b"reached-42" in done.stdout
        # restrict,pty keeps a terminal working
        person = new_person()
        tty = deployment.ssh(person, "db02", deployment.code(person), "tty", tty=True)
        assert tty.returncode == 0, tty.describe()
        assert b"/dev/" in tty.stdout
    finally:
        deployment.stop()

    # Run again: the key is reused, not replaced.
    again = run_cli(config, "target", "add", "db02", f"127.0.0.1:{fresh_target.port}")
    assert again.returncode == 0, again.stderr
    assert "reused" in again.stdout
    assert _printed(again.stdout)[1] == authorized


def test_target_add_fails_cleanly_when_nothing_listens(tmp_path: Path) -> None:
    from tests.integration.harness import free_port

    config = write_proxy_config(tmp_path / "setup", 2222, {})
    result = run_cli(config, "target", "add", "gone", f"127.0.0.1:{free_port()}", "--timeout", "3")
    assert result.returncode == 1
    assert "cannot fetch the host key" in result.stderr
    assert not (config.parent / "keys" / "gone").exists()


def test_target_add_rejects_bad_names(tmp_path: Path) -> None:
    config = write_proxy_config(tmp_path / "setup", 2222, {})
    result = run_cli(config, "target", "add", "bad@name", "127.0.0.1:22")
    assert result.returncode == 2
