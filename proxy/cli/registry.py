"""The one way a ``breakglass`` subcommand is declared, and the parser built from them.

Each module of proxy.cli lists its subcommands in ``COMMANDS``: a ``Group`` (``cred``,
``config``, ``target``) before the ``Command`` entries under it, each ``Command`` with its
path, help line, arguments and handler. ``build_parser`` turns every list into one
argparse parser whose leaves carry their ``Command``, so ``main`` runs what was parsed
without a second table. Usage errors exit 2 with one clear line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.config import Config
from proxy.core.units import parse_duration

Handler = Callable[[argparse.Namespace, Config], int]
Arguments = Callable[[argparse.ArgumentParser], None]


def no_arguments(parser: argparse.ArgumentParser) -> None:
    """For a command that takes no arguments of its own."""


def json_only(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")


@dataclass(frozen=True, kw_only=True)
class Group:
    """A word that only groups commands: ``breakglass cred ...``."""

    name: str
    help: str


@dataclass(frozen=True, kw_only=True)
class Command:
    """One subcommand: ``path`` is ("serve",) or, under a group, ("cred", "issue").

    ``run`` gets the loaded config; ``run_without_config`` is for the one command that
    must work without a config file (``demo``). Exactly one of them is set.
    """

    path: tuple[str, ...]
    help: str
    arguments: Arguments = no_arguments
    run: Handler | None = None
    run_without_config: Callable[[argparse.Namespace], int] | None = None

    def __post_init__(self) -> None:
        if (self.run is None) == (self.run_without_config is None):
            raise ValueError(f"{' '.join(self.path)}: set exactly one of run, run_without_config")
        if len(self.path) not in (1, 2):
            raise ValueError(f"{' '.join(self.path)}: a command is a word or a group and a word")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2 with a clear line, as documented
        self.print_usage(sys.stderr)
        print(f"breakglass: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser(entries: Iterable[Group | Command]) -> argparse.ArgumentParser:
    """One parser for every entry, in the order given (the order ``--help`` lists)."""
    common = _Parser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="config file (default: $BREAKGLASS_CONFIG or config/proxy.yaml)",
    )
    parser = _Parser(prog="breakglass", parents=[common], description="Break-glass SSH proxy")
    top = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    groups: dict[str, Any] = {}
    for entry in entries:
        if isinstance(entry, Group):
            group = top.add_parser(entry.name, parents=[common], help=entry.help)
            groups[entry.name] = group.add_subparsers(
                dest=f"{entry.name}_command", required=True, parser_class=_Parser
            )
            continue
        if len(entry.path) == 1:
            leaf = top.add_parser(entry.path[0], parents=[common], help=entry.help)
        else:
            leaf = groups[entry.path[0]].add_parser(
                entry.path[1], parents=[common], help=entry.help
            )
        entry.arguments(leaf)
        leaf.set_defaults(command_entry=entry)
    return parser


# Argument types more than one module uses.


def when(text: str) -> float:
    """A point in time: a duration ago (``7d``) or an RFC 3339 / ISO date (UTC if no
    zone is given)."""
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        stamp = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (7d) nor a date (2026-01-31T12:00Z)"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()
