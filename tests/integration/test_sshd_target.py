"""The harness's sshd targets, checked directly (no proxy): the ground the other tests
stand on. If these fail, every proxy test would fail for the wrong reason."""

from __future__ import annotations

from tests.integration.harness import SshdTarget, file_mode, ssh_direct


def test_direct_login_with_the_proxy_key_runs_a_command(target: SshdTarget) -> None:
    result = ssh_direct(target, "echo hello; id -un; exit 3")

    assert result.returncode == 3, result.stderr
    assert result.stdout == f"hello\n{target.login}\n".encode()


def test_target_gives_a_clean_home(target: SshdTarget) -> None:
    result = ssh_direct(target, 'printf "%s" "$HOME"')

    assert result.returncode == 0, result.stderr
    assert result.stdout == str(target.directory / "home").encode()


def test_proxy_key_is_private_to_its_owner(target: SshdTarget) -> None:
    # The proxy's config check refuses identity files readable by group or others.
    assert file_mode(target.proxy_key) == 0o600


def test_pinning_the_other_targets_host_key_is_refused(
    target: SshdTarget, other_target: SshdTarget
) -> None:
    # The host-key-mismatch tests rely on the two targets having different keys.
    assert target.host_pub != other_target.host_pub
    assert target.host_pub.startswith("ssh-ed25519 AAAA")

    result = ssh_direct(target, "echo should-not-run", host_pub=other_target.host_pub)

    assert result.returncode == 255
    assert b"should-not-run" not in result.stdout
    assert b"Host key verification failed" in result.stderr, result.stderr


def test_second_target_answers_on_its_own_port(other_target: SshdTarget) -> None:
    result = ssh_direct(other_target, "echo other")

    assert result.returncode == 0, result.stderr
    assert result.stdout == b"other\n"
