"""Which exec commands the proxy refuses (proxy.core.execrules): mosh-server wherever sh
would run it as a program, and nothing that merely names it."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxy.core.execrules import MOSH_REFUSAL, refused_exec


@pytest.mark.parametrize(
    "command",
    [
        # What the stock mosh client sends, and its --server= variants.
        "mosh-server new -c 256 -s -l LANG=en_US.UTF-8",
        "'mosh-server' 'new' '-s' '-c' '256' '-l' 'LANG=C.UTF-8'",
        "/usr/bin/mosh-server new",
        "LC_ALL=en_US.UTF-8 mosh-server new",
        "env LANG=C mosh-server new",
        "exec mosh-server new",
        "sudo -u root mosh-server new",
        "nohup mosh-server new &",
        "timeout 3600 mosh-server new",
        "cd /tmp && mosh-server new",
        "true; mosh-server new",
        "echo hi\nmosh-server new",
        "sh -c 'mosh-server new'",
        "bash -lc 'export X=1; mosh-server new'",
        "(mosh-server new)",
        "if true; then mosh-server new; fi",
    ],
)
def test_mosh_server_is_refused(command: str) -> None:
    assert refused_exec(command) == MOSH_REFUSAL


@pytest.mark.parametrize(
    "command",
    [
        "uptime",
        "apt-get remove -y mosh-server",
        "grep mosh-server /var/log/auth.log",
        "echo mosh-server",
        "echo then mosh-server new",
        "dpkg -L mosh | grep -v mosh-server",
        "ls /usr/bin/mosh-server-old",
        "mosh-server2 new",
        "sudo systemctl restart nginx",
        "sh -c 'echo mosh-server'",
        "unbalanced 'quote mosh-server",
        "",
    ],
)
def test_commands_that_only_name_it_run(command: str) -> None:
    assert refused_exec(command) is None


def test_the_message_says_why_and_what_to_use() -> None:
    assert "UDP" in MOSH_REFUSAL
    assert "recorded" in MOSH_REFUSAL
    assert "ssh PERSON@TARGET@proxy" in MOSH_REFUSAL


@given(st.text(max_size=200))
def test_any_text_gets_an_answer(command: str) -> None:
    assert refused_exec(command) in (None, MOSH_REFUSAL)


def test_deep_nesting_is_bounded() -> None:
    # Each level quotes the one inside (5 characters per quote: keep the count small).
    command = "mosh-server new"
    for _ in range(3):
        command = "sh -c " + shlex.quote(command)
    assert refused_exec(command) == MOSH_REFUSAL
    for _ in range(3):
        command = "sh -c " + shlex.quote(command)
    assert len(command) < 100_000
    assert refused_exec(command) is None  # past the bound: allowed, and cheap
