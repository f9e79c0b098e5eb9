"""proxy.cli.registry: every subcommand is declared one way and parsed to its handler."""

from __future__ import annotations

import argparse

import pytest

from proxy.cli import app
from proxy.cli.registry import Command, Group, build_parser


def _run(args: argparse.Namespace, config: object) -> int:
    return 0


# The arguments each command cannot do without.
REQUIRED: dict[tuple[str, ...], list[str]] = {
    ("cred", "issue"): ["alice"],
    ("cred", "revoke"): ["c1", "--reason", "r"],
    ("show",): ["s1"],
    ("replay",): ["s1"],
    ("review",): ["s1", "--note", "n"],
    ("export",): ["s1", "--html", "x.html"],
    ("kill",): ["s1", "--reason", "r"],
    ("extend",): ["s1", "5m", "--reason", "r"],
    ("target", "add"): ["db01", "127.0.0.1"],
    ("backup",): ["out.db"],
}


def test_each_path_is_declared_once_and_parses_to_its_own_entry() -> None:
    commands = [e for e in app.COMMANDS if isinstance(e, Command)]
    paths = [c.path for c in commands]
    assert len(paths) == len(set(paths)) == 26
    parser = build_parser(app.COMMANDS)
    for command in commands:
        argv = [*command.path, *REQUIRED.get(command.path, [])]
        assert parser.parse_args(argv).command_entry is command, argv
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["cred"])
    assert exit_.value.code == 2


def test_a_group_comes_before_its_commands() -> None:
    seen: set[str] = set()
    for entry in app.COMMANDS:
        if isinstance(entry, Group):
            seen.add(entry.name)
        elif len(entry.path) == 2:
            assert entry.path[0] in seen, entry.path


def test_a_command_has_exactly_one_handler() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Command(path=("x",), help="none")
    with pytest.raises(ValueError, match="exactly one"):
        Command(path=("x",), help="both", run=_run, run_without_config=lambda a: 0)
    with pytest.raises(ValueError, match="a word or a group and a word"):
        Command(path=("a", "b", "c"), help="deep", run=_run)
