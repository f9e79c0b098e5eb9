"""load_config: defaults, relative paths, YAML traps, and every rule with its line.

No network: host names are loopback literals or "localhost", and the one test of a
name that does not resolve replaces socket.getaddrinfo.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from proxy.config import (
    AlertRules,
    Config,
    QuietHours,
    RateRule,
    SinkConfig,
    TargetConfig,
    default_config_path,
    load_config,
    unresolved_hosts,
)
from proxy.core.errors import ConfigError, ConfigProblem

REPO = Path(__file__).resolve().parents[2]
IS_ROOT = os.geteuid() == 0


def make_key(path: Path, mode: int = 0o600, comment: str = "test") -> str:
    """Write a new ed25519 private key; return its public line "type base64 comment"."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    key.write_private_key(path)
    os.chmod(path, mode)
    return key.export_public_key().decode().strip()


def bare(line: str) -> str:
    """A public key line without its comment: how the config stores host keys."""
    return " ".join(line.split()[:2])


@dataclass
class Site:
    """A config folder with a target identity key and a target host key line."""

    folder: Path
    host_pub: str

    def write(self, text: str, name: str = "proxy.yaml") -> Path:
        path = self.folder / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    def target(self, text: str, name: str = "proxy.yaml") -> Path:
        """A config whose only section is ``targets``; ``text`` is db01's body (4 spaces
        deep), so db01 starts on line 2 and its first key is on line 3."""
        body = textwrap.indent(textwrap.dedent(text).strip("\n"), "    ")
        return self.write(f"targets:\n  db01:\n{body}\n", name)


@pytest.fixture
def site(tmp_path: Path) -> Site:
    folder = tmp_path / "etc"
    make_key(folder / "keys" / "db01")
    host_pub = make_key(tmp_path / "target_host_key", comment="root@db01")
    return Site(folder, host_pub)


def problems_of(path: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def one_problem(path: Path) -> ConfigProblem:
    problems = problems_of(path)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def assert_problem(path: Path, line: int | None, message: str, hint: str | None = None) -> None:
    problem = one_problem(path)
    assert (problem.line, problem.message) == (line, message)
    assert problem.file == str(path)
    if hint is not None:
        assert problem.hint == hint


def good_target(site: Site, **extra: str) -> str:
    lines = [
        "host: 127.0.0.1",
        "login: root",
        "identity_file: keys/db01",
        f'host_key: "{site.host_pub}"',
    ]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the shipped files


def test_shipped_default_config_loads_as_is() -> None:
    config = load_config(REPO / "config" / "proxy.yaml")
    assert config.source == REPO / "config" / "proxy.yaml"
    assert (config.listen.host, config.listen.port) == ("127.0.0.1", 2222)
    assert config.listen.host_key == REPO / "recordings" / "ssh_host_ed25519_key"
    assert config.storage.database == REPO / "recordings" / "audit.db"
    assert config.storage.recordings == REPO / "recordings"
    assert dict(config.targets) == {}
    assert config.alerts.sinks == ()
    assert config.policy.max_session == 3600
    assert config.policy.warn_before == (300, 60)
    assert config.policy.idle_timeout == 900
    assert config.recording.max_channel_bytes == 64 * 1024 * 1024


def test_shipped_full_example_fails_only_on_missing_files(monkeypatch: pytest.MonkeyPatch) -> None:
    real = socket.getaddrinfo

    def no_dns(host: str, *args: Any, **kwargs: Any) -> Any:
        if host != "10.0.0.5":  # a literal: answered without the network
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    problems = problems_of(REPO / "config" / "example-full.yaml")
    expected = (
        "does not exist",
        "is not a valid OpenSSH public key line",
        "does not resolve",
        "cannot be read",
        "is not executable",
    )
    assert problems, "the example must not load: its files do not exist"
    for problem in problems:
        assert any(part in problem.message for part in expected), str(problem)
    assert not any("unknown key" in p.message or "duplicate" in p.message for p in problems)


# --------------------------------------------------------------------------- defaults and paths


def test_empty_mapping_gives_every_default(site: Site) -> None:
    config = load_config(site.write("{}\n"))
    recordings = site.folder.parent / "recordings"
    assert config == Config(
        source=site.folder / "proxy.yaml",
        listen=config.listen,
        storage=config.storage,
        targets=config.targets,
    )
    assert config.listen.host == "127.0.0.1"
    assert config.listen.port == 2222
    assert config.listen.host_key == recordings / "ssh_host_ed25519_key"
    assert config.storage.database == recordings / "audit.db"
    assert config.storage.recordings == recordings
    policy = config.policy
    assert policy.justification.min_length == 15
    assert policy.justification.max_bytes == 1000
    assert policy.justification.pattern is None
    assert (policy.max_session, policy.warn_before, policy.idle_timeout) == (3600, (300, 60), 900)
    assert policy.login_timeout == 120
    assert policy.max_channels == 32
    assert policy.allowed_sources == (
        ipaddress.ip_network("0.0.0.0/0"),
        ipaddress.ip_network("::/0"),
    )
    assert (config.recording.input, config.recording.max_channel_bytes) == (False, 64 << 20)
    assert dict(config.targets) == {}
    assert config.alerts.sinks == ()
    assert config.alerts.rules == AlertRules(
        max_sessions_per_person=RateRule(count=3, window=3600),
        max_sessions_total=RateRule(count=10, window=3600),
        failed_logins_per_source=RateRule(count=5, window=600),
        failed_logins_per_person=RateRule(count=5, window=600),
        quiet_hours=None,
    )


def test_null_sections_take_defaults(site: Site) -> None:
    config = load_config(site.write("listen:\nstorage:\npolicy:\ntargets:\nalerts:\n"))
    assert config.listen.port == 2222
    assert dict(config.targets) == {}
    assert config.policy.max_session == 3600


def test_relative_paths_start_at_the_config_folder(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.write(
        """
        listen: {host_key: keys/proxy_host_key}
        storage: {database: ../state/audit.db, recordings: /var/lib/bg/rec}
        """
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("../etc/proxy.yaml"))
    assert config.source == site.folder / "proxy.yaml"
    assert config.listen.host_key == site.folder / "keys" / "proxy_host_key"
    assert config.storage.database == tmp_path / "state" / "audit.db"
    assert config.storage.recordings == Path("/var/lib/bg/rec")


def test_problem_file_is_the_path_as_given(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    site.write("listen: {port: x}\n")
    monkeypatch.chdir(site.folder)
    problem = one_problem(Path("proxy.yaml"))
    assert (problem.file, problem.line) == ("proxy.yaml", 1)
    assert str(problem) == "proxy.yaml:1: listen.port must be an integer, got 'x'"


def test_default_config_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BREAKGLASS_CONFIG", raising=False)
    assert default_config_path() == Path("config/proxy.yaml")
    monkeypatch.setenv("BREAKGLASS_CONFIG", "/etc/breakglass/proxy.yaml")
    assert default_config_path() == Path("/etc/breakglass/proxy.yaml")
    monkeypatch.setenv("BREAKGLASS_CONFIG", "")
    assert default_config_path() == Path("config/proxy.yaml")


def test_config_is_frozen(site: Site) -> None:
    config = load_config(site.write("{}\n"))
    with pytest.raises(AttributeError):
        config.listen.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.targets["x"] = config.targets.get("y")  # type: ignore[index]


# --------------------------------------------------------------------------- the file as a whole


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    problem = one_problem(path)
    assert (problem.line, problem.message) == (
        None,
        "cannot read config file: No such file or directory",
    )
    assert problem.hint == "pass -c FILE or set BREAKGLASS_CONFIG"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "~\n", "null\n"])
def test_empty_file(site: Site, text: str) -> None:
    assert_problem(site.write(text), 1, "the config file is empty")


@pytest.mark.parametrize(
    ("text", "got"), [("- a\n- b\n", "a list"), ("hello\n", "'hello'"), ("42\n", "'42'")]
)
def test_top_level_must_be_a_mapping(site: Site, text: str, got: str) -> None:
    assert_problem(site.write(text), 1, f"the top level must be a mapping, got {got}")


def test_not_utf8(site: Site) -> None:
    path = site.folder / "proxy.yaml"
    path.write_bytes(b"listen: {host: \xff}\n")
    assert_problem(path, None, "config file is not UTF-8 text (byte 15)")


def test_yaml_syntax_error_is_one_problem_with_its_line(site: Site) -> None:
    path = site.write(
        """
        listen:
          port: 2222
        policy:
          max_session: [1h
        recording: {}
        """
    )
    problem = one_problem(path)
    assert problem.line == 5
    assert problem.message.startswith("YAML syntax error: ")
    assert "flow sequence" in problem.message


def test_yaml_bad_indentation(site: Site) -> None:
    problem = one_problem(site.write("listen:\n  port: 1\n host: x\n"))
    assert problem.line == 3
    assert problem.message.startswith("YAML syntax error: ")


def test_two_documents_are_refused(site: Site) -> None:
    problem = one_problem(site.write("listen: {}\n---\nstorage: {}\n"))
    assert problem.line == 2
    assert "expected a single document" in problem.message


def test_every_problem_is_reported_in_line_order(site: Site) -> None:
    path = site.write(
        """
        recording: {input: maybe}
        listen:
          port: 99999
          hots: 0.0.0.0
        policy: {max_session: forever}
        """
    )
    problems = problems_of(path)
    assert [(p.line, p.message) for p in problems] == [
        (1, "recording.input must be true or false, got 'maybe'"),
        (3, "listen.port must be between 1 and 65535, got 99999"),
        (4, "unknown key 'listen.hots'"),
        (5, "policy.max_session: bad duration 'forever': use e.g. 30s, 15m, 4h, 90d"),
    ]
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).splitlines()[0] == (
        f"{path}:1: recording.input must be true or false, got 'maybe'"
    )
    assert info.value.reason == "config_invalid"


# --------------------------------------------------------------------------- keys


def test_unknown_top_level_key_suggests_the_right_one(site: Site) -> None:
    assert_problem(
        site.write("listen: {}\npolcy: {}\n"), 2, "unknown key 'polcy'", "did you mean 'policy'?"
    )


def test_unknown_nested_key_suggests_the_right_one(site: Site) -> None:
    path = site.write("policy:\n  justification:\n    min_lenght: 20\n")
    assert_problem(
        path, 3, "unknown key 'policy.justification.min_lenght'", "did you mean 'min_length'?"
    )


def test_unknown_key_without_a_close_match_lists_the_keys(site: Site) -> None:
    path = site.write("listen:\n  colour: blue\n")
    assert_problem(
        path, 2, "unknown key 'listen.colour'", "expected one of: host, port, host_key, chacha20"
    )


def test_duplicate_key(site: Site) -> None:
    path = site.write("listen:\n  port: 2222\n  host: 127.0.0.1\n  port: 2223\n")
    assert_problem(path, 4, "duplicate key 'listen.port' (first at line 2)")


def test_duplicate_section(site: Site) -> None:
    path = site.write("listen: {}\nstorage: {}\nlisten: {port: 1}\n")
    assert_problem(path, 3, "duplicate key 'listen' (first at line 1)")


def test_duplicate_target_name(site: Site) -> None:
    body = textwrap.indent(good_target(site), "    ")
    path = site.write(f"targets:\n  db01:\n{body}\n  db01:\n{body}\n")
    assert_problem(path, 7, "duplicate key 'targets.db01' (first at line 2)")


def test_non_scalar_key(site: Site) -> None:
    assert_problem(site.write("listen:\n  [a]: 1\n"), 2, "listen: a key must be a plain name")


def test_merge_keys_are_refused(site: Site) -> None:
    path = site.write("base: &b {port: 2222}\n")
    assert one_problem(path).message == "unknown key 'base'"
    path = site.write("listen:\n  <<: {port: 2222}\n")
    assert_problem(path, 2, "YAML merge keys ('<<') are not supported")


def test_custom_tags_are_refused(site: Site) -> None:
    assert_problem(site.write("listen:\n  host: !secret x\n"), 2, "unsupported YAML tag '!secret'")


def test_anchors_and_aliases_work(site: Site) -> None:
    path = site.write(
        """
        policy:
          max_session: &limit 30m
          login_timeout: *limit
        """
    )
    policy = load_config(path).policy
    assert (policy.max_session, policy.login_timeout) == (1800, 1800)


# --------------------------------------------------------------------------- value types


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "listen.port must be an integer, got 'abc'"),
        ('"2222"', "listen.port must be an integer, got '2222'"),
        ("[1]", "listen.port must be an integer, got a list"),
        ("{a: 1}", "listen.port must be an integer, got a mapping"),
        ("", "listen.port must be an integer, got nothing (null)"),
        ("22.5", "listen.port must be an integer, got '22.5'"),
        ("true", "listen.port must be an integer, got 'true'"),
        ("0", "listen.port must be between 1 and 65535, got 0"),
        ("65536", "listen.port must be between 1 and 65535, got 65536"),
        ("-1", "listen.port must be between 1 and 65535, got -1"),
    ],
)
def test_integer_fields(site: Site, value: str, message: str) -> None:
    assert_problem(site.write(f"listen:\n  port: {value}\n"), 2, message)


@pytest.mark.parametrize("value", ["0022", "0x16", "0b101", "1_000", "1:22"])
def test_integer_fields_refuse_yaml11_number_forms(site: Site, value: str) -> None:
    # YAML 1.1 reads these as octal, hex or base 60: never what a port number meant.
    assert_problem(
        site.write(f"listen:\n  port: {value}\n"),
        2,
        f"listen.port must be a plain decimal integer, got {value!r}",
        "YAML reads leading zeros as octal and 1:30 as base 60; write e.g. 22",
    )


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("yes", True), ("off", False)])
def test_boolean_fields(site: Site, value: str, expected: bool) -> None:
    config = load_config(site.write(f"recording:\n  input: {value}\n"))
    assert config.recording.input is expected


def test_chacha20_is_off_unless_asked_for(site: Site) -> None:
    assert load_config(site.write("listen: {}\n")).listen.chacha20 is False
    assert load_config(site.write("listen:\n  chacha20: true\n")).listen.chacha20 is True
    path = site.write("listen:\n  chacha20: always\n")
    assert_problem(path, 2, "listen.chacha20 must be true or false, got 'always'")


@pytest.mark.parametrize(
    ("value", "got"), [('"true"', "'true'"), ("1", "'1'"), ("[true]", "a list")]
)
def test_boolean_fields_refuse_other_values(site: Site, value: str, got: str) -> None:
    path = site.write(f"recording:\n  input: {value}\n")
    assert_problem(path, 2, f"recording.input must be true or false, got {got}")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("[a]", "listen.host must be a string, got a list"),
        ("", "listen.host must be a string, got nothing (null)"),
        ('"  "', "listen.host must not be empty"),
    ],
)
def test_string_fields(site: Site, value: str, message: str) -> None:
    assert_problem(site.write(f"listen:\n  host: {value}\n"), 2, message)


def test_long_values_are_shortened_in_messages(site: Site) -> None:
    problem = one_problem(site.write(f"listen:\n  port: {'x' * 100}\n"))
    assert problem.message == f"listen.port must be an integer, got '{'x' * 37}...'"


# --------------------------------------------------------------------------- durations and sizes


def test_durations(site: Site) -> None:
    path = site.write(
        """
        policy:
          max_session: 1h30m
          warn_before: [1m, 10m, 30s, 1m]
          idle_timeout: 5m
          login_timeout: 90s
        """
    )
    policy = load_config(path).policy
    assert policy.max_session == 5400
    assert policy.warn_before == (600, 60, 30)  # sorted, largest first, no repeats
    assert policy.idle_timeout == 300
    assert policy.login_timeout == 90


def test_max_channels_is_a_policy_setting_within_bounds(site: Site) -> None:
    assert load_config(site.write("policy:\n  max_channels: 4\n")).policy.max_channels == 4
    problem = one_problem(site.write("policy:\n  max_channels: 0\n"))
    assert "policy.max_channels" in str(problem)


def test_preauth_limits_and_the_reserve_for_sessions(site: Site) -> None:
    defaults = load_config(site.write("policy: {}\n"))
    assert defaults.policy.preauth_timeout == 10
    assert (
        defaults.policy.max_unauthenticated,
        defaults.policy.max_unauthenticated_per_source,
    ) == (
        256,
        64,
    )
    assert defaults.storage.failure_reserve == 64 * 1024 * 1024
    path = site.write(
        """
        storage:
          failure_reserve: 1GiB
        policy:
          preauth_timeout: 3s
          max_unauthenticated: 40
          max_unauthenticated_per_source: 8
        """
    )
    config = load_config(path)
    assert config.policy.preauth_timeout == 3
    assert (config.policy.max_unauthenticated, config.policy.max_unauthenticated_per_source) == (
        40,
        8,
    )
    assert config.storage.failure_reserve == 1 << 30


def test_the_channel_open_rate_is_a_policy_setting_within_bounds(site: Site) -> None:
    policy = load_config(site.write("policy: {}\n")).policy
    assert (policy.channel_open_burst, policy.channel_open_rate) == (100, 10)
    text = "policy:\n  channel_open_burst: 20\n  channel_open_rate: 2\n"
    policy = load_config(site.write(text)).policy
    assert (policy.channel_open_burst, policy.channel_open_rate) == (20, 2)
    problem = one_problem(site.write("policy:\n  channel_open_rate: 0\n"))
    assert "policy.channel_open_rate" in str(problem)


@pytest.mark.parametrize("value", ["0", "0s", "null", "~", ""])
def test_idle_timeout_zero_or_null_turns_it_off(site: Site, value: str) -> None:
    config = load_config(site.write(f"policy:\n  idle_timeout: {value}\n"))
    assert config.policy.idle_timeout is None


@pytest.mark.parametrize("value", ["[]", "null"])
def test_warn_before_may_be_empty(site: Site, value: str) -> None:
    assert load_config(site.write(f"policy:\n  warn_before: {value}\n")).policy.warn_before == ()


@pytest.mark.parametrize(
    ("value", "shown"),
    [("90x", "90x"), ("3600", "3600"), ("-5m", "-5m"), ("22:30", "22:30"), ("1.5", "1.5")],
)
def test_bad_duration(site: Site, value: str, shown: str) -> None:
    assert_problem(
        site.write(f"policy:\n  max_session: {value}\n"),
        2,
        f"policy.max_session: bad duration {shown!r}: use e.g. 30s, 15m, 4h, 90d",
    )


def test_zero_duration_is_refused_where_it_means_nothing(site: Site) -> None:
    assert_problem(
        site.write("policy:\n  max_session: 0s\n"), 2, "policy.max_session must be longer than 0"
    )


def test_bad_warn_before_item(site: Site) -> None:
    path = site.write("policy:\n  warn_before:\n    - 5m\n    - soon\n")
    assert_problem(
        path, 4, "policy.warn_before[1]: bad duration 'soon': use e.g. 30s, 15m, 4h, 90d"
    )


def test_warn_before_must_be_a_list(site: Site) -> None:
    path = site.write("policy:\n  warn_before: 5m\n")
    assert_problem(path, 2, "policy.warn_before must be a list, got '5m'")


@pytest.mark.parametrize(
    ("value", "size"), [("10MB", 10_000_000), ("1048576", 1048576), ("0", 0), ("1GiB", 1 << 30)]
)
def test_max_channel_bytes(site: Site, value: str, size: int) -> None:
    config = load_config(site.write(f"recording:\n  max_channel_bytes: {value}\n"))
    assert config.recording.max_channel_bytes == size


def test_bad_size(site: Site) -> None:
    assert_problem(
        site.write("recording:\n  max_channel_bytes: lots\n"),
        2,
        "recording.max_channel_bytes: bad size 'lots': "
        "use e.g. 64MiB, 1GiB, 512KiB, 10MB or a number of bytes",
    )


def test_negative_size(site: Site) -> None:
    assert_problem(
        site.write("recording:\n  max_channel_bytes: -1\n"),
        2,
        "recording.max_channel_bytes must be at least 0, got -1",
    )


# --------------------------------------------------------------------------- policy


def test_justification_pattern_compiles(site: Site) -> None:
    path = site.write("policy:\n  justification: {min_length: 20, pattern: 'INC-\\d+'}\n")
    rule = load_config(path).policy.justification
    assert rule.min_length == 20
    assert rule.pattern is not None
    assert rule.pattern.pattern == r"INC-\d+"
    assert rule.pattern.search("fixing INC-4411 now")


def test_justification_pattern_no_is_the_text_no(site: Site) -> None:
    rule = load_config(site.write("policy:\n  justification: {pattern: no}\n")).policy.justification
    assert rule.pattern is not None
    assert rule.pattern.pattern == "no"


def test_bad_justification_pattern(site: Site) -> None:
    path = site.write("policy:\n  justification:\n    pattern: 'INC-(\\d+'\n")
    assert_problem(
        path,
        3,
        "policy.justification.pattern is not a valid regular expression: "
        "missing ), unterminated subpattern at position 4",
        "in YAML, single-quote a pattern with backslashes: 'INC-\\d+'",
    )


def test_justification_min_length_bounds(site: Site) -> None:
    path = site.write("policy:\n  justification: {min_length: 0}\n")
    assert_problem(path, 2, "policy.justification.min_length must be between 1 and 1022, got 0")


def test_justification_max_bytes_defaults_to_1000_and_stays_under_openssh_s_cut(
    site: Site,
) -> None:
    assert load_config(site.write("policy: {}\n")).policy.justification.max_bytes == 1000
    path = site.write("policy:\n  justification: {max_bytes: 300}\n")
    assert load_config(path).policy.justification.max_bytes == 300
    path = site.write("policy:\n  justification: {max_bytes: 1023}\n")
    assert_problem(path, 2, "policy.justification.max_bytes must be between 1 and 1022, got 1023")
    path = site.write("policy:\n  justification: {min_length: 50, max_bytes: 40}\n")
    assert_problem(
        path,
        2,
        "policy.justification.min_length (50) is more than policy.justification.max_bytes "
        "(40): no justification could pass",
    )


def test_allowed_sources(site: Site) -> None:
    path = site.write('policy:\n  allowed_sources: [10.1.2.3/8, 192.0.2.7, "2001:db8::/32"]\n')
    assert load_config(path).policy.allowed_sources == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
        ipaddress.ip_network("2001:db8::/32"),
    )


def test_bad_allowed_source(site: Site) -> None:
    path = site.write("policy:\n  allowed_sources:\n    - 10.0.0.0/8\n    - office\n")
    assert_problem(
        path,
        4,
        "policy.allowed_sources[1] 'office' is not an IP network",
        "write e.g. 10.0.0.0/8, 192.0.2.7 or 2001:db8::/32",
    )


def test_empty_allowed_sources(site: Site) -> None:
    assert_problem(
        site.write("policy:\n  allowed_sources: []\n"),
        2,
        "policy.allowed_sources is empty: no one could log in",
    )


# --------------------------------------------------------------------------- listen and storage


def test_listen_host_key_may_be_missing(site: Site) -> None:
    config = load_config(site.write("listen: {host_key: hk}\n"))
    assert config.listen.host_key == site.folder / "hk"
    assert not config.listen.host_key.exists()


def test_listen_host_key_that_exists_must_be_private(site: Site) -> None:
    key = site.folder / "hk"
    make_key(key, mode=0o644)
    assert_problem(
        site.write("listen:\n  host_key: hk\n"),
        2,
        f"listen.host_key {key} is accessible by group or others (mode 0644)",
        f"chmod 600 {key}",
    )


def test_default_listen_host_key_is_checked_too(site: Site) -> None:
    key = site.folder.parent / "recordings" / "ssh_host_ed25519_key"
    make_key(key, mode=0o640)
    problem = one_problem(site.write("listen: {port: 2222}\n"))
    assert problem.line == 1
    assert problem.message == f"listen.host_key {key} is accessible by group or others (mode 0640)"


def test_listen_host_key_that_exists_must_parse(site: Site) -> None:
    key = site.folder / "hk"
    key.write_text("not a key\n")
    key.chmod(0o600)
    assert_problem(
        site.write("listen: {host_key: hk}\n"),
        1,
        f"listen.host_key {key} is not a private key the proxy can read",
    )


def test_valid_listen_host_key(site: Site) -> None:
    make_key(site.folder / "hk")
    assert load_config(site.write("listen: {host_key: hk}\n")).listen.host_key == site.folder / "hk"


def test_database_urls_are_not_supported_yet(site: Site) -> None:
    assert_problem(
        site.write("storage:\n  database: postgresql://db/bg\n"),
        2,
        "storage.database must be a file path; database URLs are not supported yet",
    )


# --------------------------------------------------------------------------- targets


def test_a_complete_target(site: Site) -> None:
    path = site.target(
        f"""
        host: 127.0.0.1
        port: 2200
        login: root
        logins: [postgres, root, postgres]
        identity_file: keys/db01
        host_key: "{site.host_pub}"
        max_session: 30m
        connect_timeout: 5s
        """
    )
    target = load_config(path).targets["db01"]
    assert target == TargetConfig(
        name="db01",
        host="127.0.0.1",
        port=2200,
        login="root",
        logins=("postgres", "root"),
        identity_file=site.folder / "keys" / "db01",
        host_keys=(bare(site.host_pub),),
        max_session=1800,
        connect_timeout=5,
    )


def test_target_defaults(site: Site) -> None:
    target = load_config(site.target(good_target(site))).targets["db01"]
    assert (target.port, target.logins, target.max_session, target.connect_timeout) == (
        22,
        ("root",),
        None,
        10,
    )


def test_empty_targets_is_allowed(site: Site) -> None:
    assert dict(load_config(site.write("targets: {}\n")).targets) == {}


def test_targets_must_be_a_mapping(site: Site) -> None:
    assert_problem(site.write("targets: [db01]\n"), 1, "targets must be a mapping, got a list")


def test_a_target_must_be_a_mapping(site: Site) -> None:
    path = site.write("targets:\n  db01: 10.0.0.5\n")
    assert_problem(path, 2, "targets.db01 must be a mapping, got '10.0.0.5'")


@pytest.mark.parametrize("name", ["no", "0755", "on", "1e3", "null", "true", "1_0", "2024-01-01"])
def test_target_names_are_literal_text(site: Site, name: str) -> None:
    body = textwrap.indent(good_target(site), "    ")
    config = load_config(site.write(f"targets:\n  {name}:\n{body}\n"))
    assert list(config.targets) == [name]
    assert config.targets[name].name == name


def test_target_name_22_30_stays_text_and_is_refused(site: Site) -> None:
    body = textwrap.indent(good_target(site), "    ")
    path = site.write(f"targets:\n  22:30:\n{body}\n")
    assert_problem(
        path,
        2,
        "target name '22:30' is not allowed",
        "use letters, digits, '.', '_' and '-': the name is part of the SSH user name",
    )


def test_login_names_are_literal_text(site: Site) -> None:
    path = site.target(good_target(site).replace("login: root", "login: off\nlogins: [off, 0755]"))
    target = load_config(path).targets["db01"]
    assert (target.login, target.logins) == ("off", ("off", "0755"))


def test_target_required_keys(site: Site) -> None:
    path = site.target(f'port: 22\nhost_key: "{site.host_pub}"')
    problems = problems_of(path)
    assert [(p.line, p.message) for p in problems] == [
        (3, "targets.db01.host is required"),
        (3, "targets.db01.login is required"),
        (3, "targets.db01.identity_file is required"),
    ]


def test_empty_target(site: Site) -> None:
    problems = problems_of(site.write("targets:\n  db01:\n"))
    assert [(p.line, p.message) for p in problems] == [
        (2, "targets.db01.host is required"),
        (2, "targets.db01.login is required"),
        (2, "targets.db01.identity_file is required"),
        (2, "target db01 has no pinned host key"),
    ]


def test_unknown_target_key(site: Site) -> None:
    path = site.target(good_target(site) + "\nidentityfile: keys/db01")
    assert_problem(
        path, 7, "unknown key 'targets.db01.identityfile'", "did you mean 'identity_file'?"
    )


def test_login_must_be_in_logins(site: Site) -> None:
    path = site.target(good_target(site) + "\nlogins: [postgres, app]")
    assert_problem(
        path,
        4,
        "targets.db01.login 'root' is not in targets.db01.logins",
        "add 'root' to logins",
    )


def test_logins_must_not_be_empty(site: Site) -> None:
    path = site.target(good_target(site) + "\nlogins: []")
    assert_problem(path, 7, "targets.db01.logins must not be empty")


@pytest.mark.parametrize("login", ["ro ot", "a@b", "x:y", "-rf"])
def test_bad_login_name(site: Site, login: str) -> None:
    path = site.target(good_target(site).replace("login: root", f'login: "{login}"'))
    assert_problem(path, 4, f"targets.db01.login {login!r} is not a valid login name")


def test_bad_login_in_logins(site: Site) -> None:
    path = site.target(good_target(site) + '\nlogins: [root, "a b"]')
    assert_problem(path, 7, "targets.db01.logins[1] 'a b' is not a valid login name")


def test_target_max_session_null(site: Site) -> None:
    path = site.target(good_target(site, max_session="null"))
    assert load_config(path).targets["db01"].max_session is None


def test_target_bad_connect_timeout(site: Site) -> None:
    path = site.target(good_target(site, connect_timeout="10"))
    assert_problem(
        path,
        7,
        "targets.db01.connect_timeout: bad duration '10': use e.g. 30s, 15m, 4h, 90d",
    )


# ---- host resolution: never at load (a DNS outage must not stop the proxy)


def test_a_host_name_is_not_resolved_at_load(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    def fake(host: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    path = site.target(good_target(site).replace("host: 127.0.0.1", "host: db01.invalid"))
    target = load_config(path).targets["db01"]
    assert target.host == "db01.invalid"
    assert asked == []


def test_unresolved_hosts_names_each_name_that_does_not_resolve(site: Site) -> None:
    # .invalid never resolves (RFC 2606); localhost and address literals always do.
    hosts = {"db01": "127.0.0.1", "ghost": "ghost.invalid", "local": "localhost", "v6": '"::1"'}
    body = "".join(
        f"  {name}:\n"
        + textwrap.indent(good_target(site).replace("127.0.0.1", host), "    ")
        + "\n"
        for name, host in hosts.items()
    )
    config = load_config(site.write(f"targets:\n{body}"))
    assert set(config.targets) == set(hosts)

    warnings = unresolved_hosts(config)

    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("target ghost: host 'ghost.invalid' does not resolve now ("), (
        warnings
    )
    assert warnings[0].endswith("logins to ghost fail until it does"), warnings


def test_known_hosts_matches_the_name_not_what_it_resolves_to(site: Site) -> None:
    # DNS must not choose the pinned key: an entry for an address that the name happens
    # to resolve to today does not pin the name (ssh's default CheckHostIP no).
    (site.folder / "known_hosts").write_text(f"127.0.0.1 {site.host_pub}\n")
    problem = one_problem(known_hosts_target(site, host="localhost"))
    assert "has no key for localhost" in problem.message, problem


# ---- identity files


def test_identity_file_missing(site: Site) -> None:
    path = site.target(good_target(site).replace("keys/db01", "keys/nope"))
    key = site.folder / "keys" / "nope"
    assert_problem(
        path,
        5,
        f"targets.db01.identity_file {key} does not exist",
        "check the path; relative paths start at the config file's folder",
    )


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o601])
def test_identity_file_too_open(site: Site, mode: int) -> None:
    key = site.folder / "keys" / "db01"
    key.chmod(mode)
    assert_problem(
        site.target(good_target(site)),
        5,
        f"targets.db01.identity_file {key} is accessible by group or others (mode {mode:04o})",
        f"chmod 600 {key}",
    )


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_identity_file_private_modes_are_fine(site: Site, mode: int) -> None:
    key = site.folder / "keys" / "db01"
    key.chmod(mode)
    assert load_config(site.target(good_target(site))).targets["db01"].identity_file == key


def test_identity_file_absolute_path(site: Site, tmp_path: Path) -> None:
    key = tmp_path / "abs_key"
    make_key(key)
    path = site.target(good_target(site).replace("keys/db01", str(key)))
    assert load_config(path).targets["db01"].identity_file == key


def test_identity_file_is_a_directory(site: Site) -> None:
    path = site.target(good_target(site).replace("keys/db01", "keys"))
    assert_problem(
        path, 5, f"targets.db01.identity_file {site.folder / 'keys'} is not a regular file"
    )


@pytest.mark.skipif(IS_ROOT, reason="root reads files whatever their mode")
def test_identity_file_unreadable(site: Site) -> None:
    key = site.folder / "keys" / "db01"
    key.chmod(0o000)
    problem = one_problem(site.target(good_target(site)))
    assert problem.line == 5
    assert problem.message == f"targets.db01.identity_file {key} cannot be read: Permission denied"


def test_identity_file_that_is_not_a_key(site: Site) -> None:
    key = site.folder / "keys" / "db01"
    secret_text = "hunter2-not-a-key-but-secret"
    key.write_text(secret_text + "\n")
    problem = one_problem(site.target(good_target(site)))
    assert (problem.line, problem.message) == (
        5,
        f"targets.db01.identity_file {key} is not a private key the proxy can read",
    )
    assert secret_text not in str(problem)


def test_identity_file_that_is_a_public_key(site: Site) -> None:
    key = site.folder / "keys" / "db01"
    key.write_text(site.host_pub + "\n")
    problem = one_problem(site.target(good_target(site)))
    assert problem.message.endswith("is not a private key the proxy can read")
    assert bare(site.host_pub).split()[1] not in str(problem)


def test_encrypted_identity_file(site: Site) -> None:
    key = site.folder / "keys" / "db01"
    passphrase = "correct horse battery staple"
    private = asyncssh.generate_private_key("ssh-ed25519")
    private.write_private_key(key, "pkcs8-pem", passphrase=passphrase)
    key.chmod(0o600)
    problem = one_problem(site.target(good_target(site)))
    assert (problem.line, problem.message) == (
        5,
        f"targets.db01.identity_file {key} is encrypted with a passphrase",
    )
    assert problem.hint == f"the proxy needs an unencrypted key: ssh-keygen -p -N '' -f {key}"
    assert passphrase not in str(problem)
    assert "ENCRYPTED" not in str(problem)


# ---- pinned host keys


def test_no_pinned_host_key(site: Site) -> None:
    path = site.target("host: 127.0.0.1\nlogin: root\nidentity_file: keys/db01")
    problem = one_problem(path)
    assert (problem.line, problem.message) == (3, "target db01 has no pinned host key")
    assert "known_hosts: FILE" in problem.hint


def test_host_key_list_is_normalised_and_deduplicated(site: Site, tmp_path: Path) -> None:
    other = make_key(tmp_path / "other", comment="second key")
    path = site.target(
        good_target(site).replace(
            f'host_key: "{site.host_pub}"',
            f'host_key:\n  - "{site.host_pub}"\n  - "  {other}  "\n  - "{bare(site.host_pub)}"',
        )
    )
    assert load_config(path).targets["db01"].host_keys == (bare(site.host_pub), bare(other))


def test_bad_host_key_does_not_echo_it(site: Site) -> None:
    garbage = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGarbageGarbage"
    path = site.target(good_target(site).replace(site.host_pub, garbage))
    problem = one_problem(path)
    assert (problem.line, problem.message) == (
        6,
        "targets.db01.host_key is not a valid OpenSSH public key line",
    )
    assert problem.hint == "write e.g. ssh-ed25519 AAAAC3Nza..."
    assert "Garbage" not in str(problem)


def test_bad_host_key_in_a_list(site: Site) -> None:
    path = site.target(
        good_target(site).replace(
            f'host_key: "{site.host_pub}"', f'host_key:\n  - "{site.host_pub}"\n  - just-a-word'
        )
    )
    assert_problem(
        path,
        8,
        "targets.db01.host_key[1] must be one OpenSSH public key line: TYPE BASE64 [COMMENT]",
    )


def test_known_hosts_style_line_is_refused(site: Site) -> None:
    path = site.target(good_target(site).replace(f'"{site.host_pub}"', f'"db01 {site.host_pub}"'))
    assert (
        one_problem(path).message == "targets.db01.host_key is not a valid OpenSSH public key line"
    )


def test_private_key_pasted_as_host_key(site: Site, tmp_path: Path) -> None:
    private_path = tmp_path / "pasted"
    make_key(private_path)
    private = private_path.read_text()
    block = textwrap.indent(private, "  ")
    path = site.target(
        good_target(site).replace(f'host_key: "{site.host_pub}"', f"host_key: |\n{block}")
    )
    problem = one_problem(path)
    assert (problem.line, problem.message) == (
        6,
        "targets.db01.host_key is a private key; pin the target's public host key instead",
    )
    for line in private.splitlines()[1:-1]:
        assert line not in str(problem)


def test_empty_host_key_list(site: Site) -> None:
    path = site.target(good_target(site).replace(f'"{site.host_pub}"', "[]"))
    assert_problem(path, 6, "targets.db01.host_key must not be an empty list")


def test_host_key_and_known_hosts_together(site: Site) -> None:
    (site.folder / "known_hosts").write_text(f"127.0.0.1 {site.host_pub}\n")
    path = site.target(good_target(site, known_hosts="known_hosts"))
    assert_problem(path, 7, "target db01: give host_key or known_hosts, not both")


# ---- known_hosts


def known_hosts_target(site: Site, host: str = "127.0.0.1", port: int = 22) -> Path:
    return site.target(
        f"""
        host: "{host}"
        port: {port}
        login: root
        identity_file: keys/db01
        known_hosts: known_hosts
        """
    )


def test_known_hosts_picks_the_targets_keys(site: Site, tmp_path: Path) -> None:
    other = make_key(tmp_path / "other")
    third = make_key(tmp_path / "third")
    (site.folder / "known_hosts").write_text(
        f"# comment\n10.9.9.9 {other}\n127.0.0.1,db01 {site.host_pub}\n[127.0.0.1]:2200 {third}\n"
    )
    target = load_config(known_hosts_target(site)).targets["db01"]
    assert target.host_keys == (bare(site.host_pub),)


def test_known_hosts_by_name(site: Site) -> None:
    (site.folder / "known_hosts").write_text(f"localhost {site.host_pub}\n")
    target = load_config(known_hosts_target(site, host="localhost")).targets["db01"]
    assert target.host_keys == (bare(site.host_pub),)


def test_known_hosts_non_standard_port(site: Site, tmp_path: Path) -> None:
    other = make_key(tmp_path / "other")
    (site.folder / "known_hosts").write_text(
        f"127.0.0.1 {other}\n[127.0.0.1]:2200 {site.host_pub}\n"
    )
    target = load_config(known_hosts_target(site, port=2200)).targets["db01"]
    assert target.host_keys == (bare(site.host_pub),)


def test_known_hosts_skips_revoked_keys(site: Site) -> None:
    (site.folder / "known_hosts").write_text(
        f"127.0.0.1 {site.host_pub}\n@revoked 127.0.0.1 {site.host_pub}\n"
    )
    problem = one_problem(known_hosts_target(site))
    assert (problem.line, problem.message) == (
        7,
        f"target db01 has no pinned host key: {site.folder / 'known_hosts'} "
        "has no key for 127.0.0.1",
    )


def test_known_hosts_without_the_target(site: Site) -> None:
    (site.folder / "known_hosts").write_text(f"10.9.9.9 {site.host_pub}\n")
    problem = one_problem(known_hosts_target(site))
    assert problem.line == 7
    assert problem.message.startswith("target db01 has no pinned host key: ")


def test_known_hosts_missing(site: Site) -> None:
    assert_problem(
        known_hosts_target(site),
        7,
        f"targets.db01.known_hosts {site.folder / 'known_hosts'} cannot be read: "
        "No such file or directory",
    )


def test_known_hosts_malformed(site: Site) -> None:
    (site.folder / "known_hosts").write_text("just-one-field\n")
    assert_problem(
        known_hosts_target(site),
        7,
        f"targets.db01.known_hosts {site.folder / 'known_hosts'} "
        "has a line that is not a known_hosts entry",
    )


# --------------------------------------------------------------------------- alerts


@pytest.fixture
def secret(site: Site) -> Path:
    path = site.folder / "hook.secret"
    path.write_text("s3cret-value-for-hmac\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def hook(tmp_path: Path) -> Path:
    path = tmp_path / "page-oncall"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def test_all_sink_types(site: Site, secret: Path, hook: Path) -> None:
    path = site.write(
        f"""
        alerts:
          sinks:
            - {{type: webhook, url: "https://hooks.example/bg", secret_file: hook.secret}}
            - {{type: syslog, address: /dev/log, timeout: 2s}}
            - {{type: syslog, address: "udp://logs.example:514"}}
            - {{type: command, argv: [{hook}, --team, "no"], timeout: 1m}}
        """
    )
    assert load_config(path).alerts.sinks == (
        SinkConfig(type="webhook", url="https://hooks.example/bg", secret_file=secret, timeout=10),
        SinkConfig(type="syslog", address="/dev/log", timeout=2),
        SinkConfig(type="syslog", address="udp://logs.example:514", timeout=10),
        SinkConfig(type="command", argv=(str(hook), "--team", "no"), timeout=60),
    )


def test_command_relative_program_starts_at_config_folder(site: Site) -> None:
    program = site.folder / "hooks" / "page"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\n")
    program.chmod(0o700)
    path = site.write("alerts:\n  sinks:\n    - {type: command, argv: [hooks/page, x]}\n")
    assert load_config(path).alerts.sinks[0].argv == (str(program), "x")


def test_command_bare_program_name_is_looked_up_on_path(
    site: Site, hook: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(hook.parent))
    path = site.write("alerts:\n  sinks:\n    - {type: command, argv: [page-oncall]}\n")
    assert load_config(path).alerts.sinks[0].argv == ("page-oncall",)
    path = site.write("alerts:\n  sinks:\n    - {type: command, argv: [no-such-pager]}\n")
    assert_problem(
        path,
        3,
        "alerts.sinks[0].argv[0]: 'no-such-pager' is not found on $PATH",
        "give the full path",
    )


def test_command_program_not_executable(site: Site, hook: Path) -> None:
    hook.chmod(0o644)
    path = site.write(f"alerts:\n  sinks:\n    - type: command\n      argv:\n        - {hook}\n")
    assert_problem(
        path, 5, f"alerts.sinks[0].argv[0]: {hook} is not executable", f"chmod +x {hook}"
    )


def test_command_program_missing(site: Site, tmp_path: Path) -> None:
    path = site.write(f"alerts:\n  sinks:\n    - {{type: command, argv: [{tmp_path}/nope]}}\n")
    assert_problem(
        path, 3, f"alerts.sinks[0].argv[0]: {tmp_path}/nope does not exist or is not a file"
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ("[]", "alerts.sinks[0].argv must not be empty"),
        ("/bin/true", "alerts.sinks[0].argv must be a list, got '/bin/true'"),
        ("[[a]]", "alerts.sinks[0].argv[0] must be a string, got a list"),
    ],
)
def test_command_bad_argv(site: Site, argv: str, message: str) -> None:
    path = site.write(f"alerts:\n  sinks:\n    - {{type: command, argv: {argv}}}\n")
    assert_problem(path, 3, message)


def test_sink_without_type(site: Site) -> None:
    path = site.write("alerts:\n  sinks:\n    - {url: 'https://x'}\n")
    assert_problem(path, 3, "alerts.sinks[0].type is required")


def test_sink_with_unknown_type(site: Site) -> None:
    path = site.write("alerts:\n  sinks:\n    - type: webhok\n      url: https://x\n")
    assert_problem(
        path,
        3,
        "alerts.sinks[0].type must be one of webhook, syslog, command, slack, teams, pagerduty,"
        " jsm, email, got 'webhok'",
        "did you mean 'webhook'?",
    )


def test_sink_key_of_another_type(site: Site) -> None:
    path = site.write(
        "alerts:\n  sinks:\n    - type: syslog\n      address: /dev/log\n      url: https://x\n"
    )
    assert_problem(
        path,
        5,
        "unknown key 'alerts.sinks[0].url'",
        "expected one of: type, address, events, timeout",
    )


def test_webhook_typo_key(site: Site, secret: Path) -> None:
    path = site.write(
        "alerts:\n  sinks:\n    - type: webhook\n      url: https://x\n      secret: hook.secret\n"
    )
    problems = problems_of(path)
    assert [(p.line, p.message, p.hint) for p in problems] == [
        (3, "alerts.sinks[0].secret_file is required", ""),
        (5, "unknown key 'alerts.sinks[0].secret'", "did you mean 'secret_file'?"),
    ]


def test_webhook_bad_url(site: Site, secret: Path) -> None:
    path = site.write(
        "alerts:\n  sinks:\n    - {type: webhook, url: 'ftp://x/y', secret_file: hook.secret}\n"
    )
    assert_problem(path, 3, "alerts.sinks[0].url 'ftp://x/y' is not an http(s) URL")


def test_webhook_secret_file_too_open(site: Site, secret: Path) -> None:
    secret.chmod(0o644)
    path = site.write(
        "alerts:\n  sinks:\n    - type: webhook\n      url: https://x\n"
        "      secret_file: hook.secret\n"
    )
    problem = one_problem(path)
    assert (problem.line, problem.message, problem.hint) == (
        5,
        f"alerts.sinks[0].secret_file {secret} is accessible by group or others (mode 0644)",
        f"chmod 600 {secret}",
    )
    assert "s3cret" not in str(problem)


def test_webhook_secret_file_missing_or_empty(site: Site, secret: Path) -> None:
    text = "alerts:\n  sinks:\n    - {type: webhook, url: https://x, secret_file: hook.secret}\n"
    secret.write_text("  \n")
    assert_problem(site.write(text), 3, f"alerts.sinks[0].secret_file {secret} is empty")
    secret.unlink()
    assert_problem(site.write(text), 3, f"alerts.sinks[0].secret_file {secret} does not exist")


@pytest.mark.parametrize(
    "address", ["logs:514", "udp://:514", "tcp://h:99999", "http://h", "dev/log"]
)
def test_syslog_bad_address(site: Site, address: str) -> None:
    path = site.write(f'alerts:\n  sinks:\n    - {{type: syslog, address: "{address}"}}\n')
    assert_problem(
        path,
        3,
        f"alerts.sinks[0].address {address!r} is not a syslog address",
        "use a socket path like /dev/log, or udp://HOST:514, tcp://HOST:514",
    )


def test_syslog_needs_an_address(site: Site) -> None:
    path = site.write("alerts:\n  sinks:\n    - {type: syslog}\n")
    assert_problem(path, 3, "alerts.sinks[0].address is required")


def test_sink_bad_timeout(site: Site) -> None:
    path = site.write("alerts:\n  sinks:\n    - {type: syslog, address: /dev/log, timeout: 5}\n")
    assert_problem(path, 3, "alerts.sinks[0].timeout: bad duration '5': use e.g. 30s, 15m, 4h, 90d")


def test_sinks_must_be_a_list(site: Site) -> None:
    path = site.write("alerts:\n  sinks: {type: syslog}\n")
    assert_problem(path, 2, "alerts.sinks must be a list, got a mapping")


def test_rules(site: Site) -> None:
    path = site.write(
        """
        alerts:
          rules:
            max_sessions_per_person: {count: 2, window: 30m}
            max_sessions_total: null
            failed_logins_per_source: {count: 9, window: 1h}
            quiet_hours: {from: 22:30, to: 6:05, tz: Europe/Berlin}
        """
    )
    assert load_config(path).alerts.rules == AlertRules(
        max_sessions_per_person=RateRule(count=2, window=1800),
        max_sessions_total=None,
        failed_logins_per_source=RateRule(count=9, window=3600),
        failed_logins_per_person=RateRule(count=5, window=600),  # default kept
        # Unquoted 22:30 and 6:05 are base-60 integers in YAML 1.1; here they are times.
        quiet_hours=QuietHours(start="22:30", end="06:05", tz="Europe/Berlin"),
    )


def test_quiet_hours_default_time_zone(site: Site) -> None:
    path = site.write("alerts:\n  rules:\n    quiet_hours: {from: '08:00', to: '18:00'}\n")
    assert load_config(path).alerts.rules.quiet_hours == QuietHours(
        start="08:00", end="18:00", tz="UTC"
    )


@pytest.mark.parametrize(
    ("rule", "line", "message"),
    [
        (
            "{count: 0, window: 1h}",
            3,
            "alerts.rules.max_sessions_total.count must be between 1 and 1000000, got 0",
        ),
        ("{count: 3}", 3, "alerts.rules.max_sessions_total.window is required"),
        (
            "{count: 3, window: 60}",
            3,
            "alerts.rules.max_sessions_total.window: bad duration '60': use e.g. 30s, 15m, 4h, 90d",
        ),
        ("{count: 3, window: 1h, per: x}", 3, "unknown key 'alerts.rules.max_sessions_total.per'"),
        ("5", 3, "alerts.rules.max_sessions_total must be a mapping, got '5'"),
    ],
)
def test_bad_rate_rule(site: Site, rule: str, line: int, message: str) -> None:
    path = site.write(f"alerts:\n  rules:\n    max_sessions_total: {rule}\n")
    assert_problem(path, line, message)


def test_unknown_rule(site: Site) -> None:
    path = site.write("alerts:\n  rules:\n    max_session_per_person: {count: 1, window: 1h}\n")
    assert_problem(
        path,
        3,
        "unknown key 'alerts.rules.max_session_per_person'",
        "did you mean 'max_sessions_per_person'?",
    )


@pytest.mark.parametrize(
    ("quiet", "message", "hint"),
    [
        (
            "{from: '25:00', to: '06:00'}",
            "alerts.rules.quiet_hours.from '25:00' is not a time",
            'write "HH:MM"',
        ),
        (
            "{from: 8am, to: '06:00'}",
            "alerts.rules.quiet_hours.from '8am' is not a time",
            'write "HH:MM"',
        ),
        (
            "{from: '08:00', to: '8:00'}",
            "alerts.rules.quiet_hours.to equals alerts.rules.quiet_hours.from: no hours",
            "",
        ),
        ("{from: '08:00'}", "alerts.rules.quiet_hours.to is required", ""),
        (
            "{from: '08:00', to: '18:00', tz: Mars/Olympus}",
            "alerts.rules.quiet_hours.tz 'Mars/Olympus' is not a known time zone",
            "use an IANA name like UTC or Europe/Berlin",
        ),
        (
            "{from: '08:00', to: '18:00', tz: ../../etc/passwd}",
            "alerts.rules.quiet_hours.tz '../../etc/passwd' is not a known time zone",
            "use an IANA name like UTC or Europe/Berlin",
        ),
    ],
)
def test_bad_quiet_hours(site: Site, quiet: str, message: str, hint: str) -> None:
    path = site.write(f"alerts:\n  rules:\n    quiet_hours: {quiet}\n")
    assert_problem(path, 3, message, hint)


def test_unknown_alerts_key(site: Site) -> None:
    path = site.write("alerts:\n  sink: []\n")
    assert_problem(path, 2, "unknown key 'alerts.sink'", "did you mean 'sinks'?")


# --------------------------------------------------------------------------- dataclasses


def test_target_config_always_contains_its_login() -> None:
    target = TargetConfig(
        name="db01",
        host="127.0.0.1",
        login="root",
        logins=("postgres",),
        identity_file=Path("/k"),
        host_keys=("ssh-ed25519 AAAA",),
    )
    assert target.logins == ("root", "postgres")
    plain = TargetConfig(name="db01", host="h", login="app", identity_file=Path("/k"), host_keys=())
    assert plain.logins == ("app",)


def test_problem_str_format(site: Site) -> None:
    path = site.write("listen:\n  prot: 1\n")
    check: Callable[[ConfigProblem], str] = str
    assert (
        check(one_problem(path))
        == f"{path}:2: unknown key 'listen.prot' (hint: did you mean 'port'?)"
    )


def test_modes_used_by_tests_are_what_they_say(site: Site) -> None:
    # Guards the permission tests above: the key written by make_key is 0600.
    assert stat.S_IMODE((site.folder / "keys" / "db01").stat().st_mode) == 0o600


def test_justification_rule_is_the_one_policy_checks(site: Site) -> None:
    from proxy.core.policy import JustificationRule, check_justification

    rule = load_config(
        site.write("policy: {justification: {min_length: 5}}\n")
    ).policy.justification
    assert isinstance(rule, JustificationRule)
    assert check_justification("1234", rule) == "justification_too_short"
    assert check_justification("12345", rule) is None


# ------------------------------------------------- chat, paging and e-mail sinks


def test_service_sinks_load_with_their_defaults(site: Site, secret: Path) -> None:
    path = site.write(
        """
        alerts:
          sinks:
            - {type: slack, url_file: hook.secret}
            - {type: teams, url_file: hook.secret, timeout: 3s}
            - {type: pagerduty, routing_key_file: hook.secret}
            - {type: jsm, api_key_file: hook.secret, url: "https://proxy.example/jsm"}
            - type: email
              host: smtp.example.com
              auth_file: hook.secret
              from: breakglass@example.com
              to: [oncall@example.com, sec@example.com]
            - {type: email, host: mail.example, tls: implicit, from: a@b.example, to: [c@d.example]}
            - {type: email, host: localhost, tls: none, from: a@b.example, to: [c@d.example]}
            - {type: syslog, address: "tcp://siem.example:514", events: all}
        """
    )
    sinks = load_config(path).alerts.sinks
    assert sinks[0] == SinkConfig(type="slack", url_file=secret)
    assert sinks[1] == SinkConfig(type="teams", url_file=secret, timeout=3)
    assert sinks[2] == SinkConfig(type="pagerduty", key_file=secret)
    assert sinks[3] == SinkConfig(type="jsm", key_file=secret, url="https://proxy.example/jsm")
    assert sinks[4] == SinkConfig(
        type="email",
        host="smtp.example.com",
        port=587,
        tls="starttls",
        auth_file=secret,
        mail_from="breakglass@example.com",
        mail_to=("oncall@example.com", "sec@example.com"),
    )
    assert (sinks[5].port, sinks[5].tls) == (465, "implicit")
    assert (sinks[6].port, sinks[6].tls, sinks[6].auth_file) == (587, "none", None)
    assert sinks[7].events == "all"


def test_a_service_secret_file_must_be_private(site: Site, secret: Path) -> None:
    secret.chmod(0o644)
    path = site.write("alerts:\n  sinks:\n    - {type: pagerduty, routing_key_file: hook.secret}\n")
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    assert_problem(
        path,
        3,
        f"alerts.sinks[0].routing_key_file {secret} is accessible by group or others (mode 0644)",
    )


@pytest.mark.parametrize(
    ("sink", "message"),
    [
        ("{type: slack}", "alerts.sinks[0].url_file is required"),
        ("{type: jsm, api_key_file: hook.secret, url: 'http://x/y'}", "is not an https URL"),
        ("{type: teams, url_file: hook.secret, ca_file: missing.pem}", "not a readable PEM"),
        (
            "{type: email, host: smtp.example, tls: none, from: a@b.example, to: [c@d.example]}",
            "none is only for a relay on this host",
        ),
        (
            "{type: email, host: localhost, tls: none, auth_file: hook.secret,"
            " from: a@b.example, to: [c@d.example]}",
            "the password would travel in clear",
        ),
        (
            "{type: email, host: h.example, from: 'Eve <e@x.example>', to: [c@d.example]}",
            "is not an e-mail address",
        ),
        (
            "{type: email, host: h.example, from: a@b.example, to: ['c@d.example\\nBcc: x@y']}",
            "is not an e-mail address",
        ),
        ("{type: email, host: h.example, from: a@b.example, to: []}", "at least one address"),
        ("{type: email, host: h.example, tls: ssl, from: a@b.example, to: [c@d.example]}", "tls"),
        ("{type: syslog, address: /dev/log, events: some}", "must be alerts or all"),
    ],
)
def test_service_sink_mistakes(site: Site, secret: Path, sink: str, message: str) -> None:
    path = site.write(f"alerts:\n  sinks:\n    - {sink}\n")
    problems = problems_of(path)
    assert any(message in p.message for p in problems), problems


def test_fleet_unreachable_is_serve_or_refuse(tmp_path: Path) -> None:
    from proxy.config import load_config
    from proxy.core.errors import ConfigError

    key = "ed25519 " + "a" * 64

    def load(extra: str) -> object:
        path = tmp_path / "proxy.yaml"
        path.write_text(
            "listen: {host: 127.0.0.1, port: 2222, host_key: " + str(tmp_path / "hk") + "}\n"
            "storage: {database: "
            + str(tmp_path / "a.db")
            + ", recordings: "
            + str(tmp_path / "rec")
            + "}\n"
            "fleet: {node: bg-a, postgres: 'postgresql://u@127.0.0.1/db', peers: {bg-a: '"
            + key
            + "'}"
            + extra
            + "}\n"
        )
        return load_config(path)

    assert load("").fleet.unreachable == "serve"  # type: ignore[attr-defined]
    assert load(", unreachable: refuse").fleet.unreachable == "refuse"  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="serve or refuse"):
        load(", unreachable: maybe")
