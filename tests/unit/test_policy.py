"""The login and session rules in proxy.core.policy."""

from __future__ import annotations

import ipaddress
import re

import pytest

from proxy.core.policy import (
    JustificationRule,
    ParsedUser,
    check_justification,
    describe_rule,
    failure_delay,
    login_for,
    parse_username,
    session_deadline,
    source_allowed,
    warning_times,
)


@pytest.mark.parametrize(
    ("username", "expected"),
    [
        ("alice@db01", ParsedUser("alice", None, "db01")),
        ("Alice@db01", ParsedUser("alice", None, "db01")),
        ("alice@postgres@db01", ParsedUser("alice", "postgres", "db01")),
        ("a.b-c_d@web-01.prod", ParsedUser("a.b-c_d", None, "web-01.prod")),
        ("alice@no", ParsedUser("alice", None, "no")),
    ],
)
def test_parse_username_accepts_the_two_shapes(username: str, expected: ParsedUser) -> None:
    assert parse_username(username) == expected


@pytest.mark.parametrize(
    "username",
    [
        "",
        "alice",
        "@db01",
        "alice@",
        "alice@@db01",
        "a@b@c@d",
        "alice@db01\n",
        "alice@db\x1b[31m01",
        "alice@db 01",
        "-alice@db01",
        "alice@../etc",
        "ali/ce@db01",
        "a" * 65 + "@db01",
        "alice@é",
    ],
)
def test_parse_username_rejects_everything_else(username: str) -> None:
    assert parse_username(username) is None


RULE = JustificationRule(min_length=15, max_bytes=2048, pattern=None)
TICKET = JustificationRule(min_length=5, max_bytes=2048, pattern=re.compile(r"INC-\d+"))


def test_justification_rules() -> None:
    assert check_justification("INC-1 disk full on db01", RULE) is None
    assert check_justification("too short", RULE) == "justification_too_short"
    # Padding with blanks does not make a justification long enough.
    assert check_justification("short" + " " * 40, RULE) == "justification_too_short"
    assert check_justification("x" * 2048, RULE) is None
    assert check_justification("x" * 2049, RULE) == "justification_too_long"
    # The limit is in bytes: 700 three-byte characters are 2100 bytes.
    assert check_justification("€" * 700, RULE) == "justification_too_long"
    assert check_justification("fixing the disk", TICKET) == "justification_pattern"
    assert check_justification("INC-4411 fixing the disk", TICKET) is None


def test_justification_with_hostile_characters_is_judged_not_rejected() -> None:
    hostile = "INC-1 \x1b]52;c;ZXZpbA==\x07 \u202e\x00\n newline"
    assert check_justification(hostile, RULE) is None


def test_describe_rule_shows_the_pattern() -> None:
    assert describe_rule(RULE) == "at least 15 characters, at most 2048 bytes"
    assert "INC-\\d+" in describe_rule(TICKET)


NETS = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.1.2.3", True),
        ("11.1.2.3", False),
        ("fd00::1", True),
        ("fe80::1", False),
        ("::ffff:10.0.0.1", True),
        ("fe80::1%eth0", False),
        ("not an address", False),
        ("", False),
    ],
)
def test_source_allowed(address: str, allowed: bool) -> None:
    assert source_allowed(address, NETS) is allowed


def test_login_for() -> None:
    assert login_for(None, "root", ("root", "postgres")) == "root"
    assert login_for("postgres", "root", ("root", "postgres")) == "postgres"
    assert login_for("admin", "root", ("root", "postgres")) is None


def test_session_deadline_is_the_smallest_limit() -> None:
    assert session_deadline(1000.0, 3600.0, None, None) == 4600.0
    assert session_deadline(1000.0, 3600.0, 1800.0, None) == 2800.0
    assert session_deadline(1000.0, 3600.0, 1800.0, 60.0) == 1060.0
    assert session_deadline(1000.0, 3600.0, 0.0, None) == 4600.0
    with pytest.raises(ValueError, match="at least one"):
        session_deadline(1000.0, None, None)


def test_warning_times_skip_the_past_and_sort() -> None:
    assert warning_times(1000.0, (300.0, 60.0), 0.0) == [700.0, 940.0]
    assert warning_times(1000.0, (60.0, 300.0), 800.0) == [940.0]
    assert warning_times(1000.0, (300.0, 60.0), 950.0) == []
    assert warning_times(1000.0, (60.0, 60.0), 0.0) == [940.0]


def test_failure_delay_grows_and_is_capped() -> None:
    assert [failure_delay(n) for n in range(6)] == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert failure_delay(3, base=0.5, cap=1.5) == 1.5
