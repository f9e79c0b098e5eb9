"""Strict reading of YAML nodes, for the config loader.

Owns: turning YAML text into a node tree (``yaml.compose`` with the SafeLoader) and
reading typed values (text, integers, booleans, lists, mappings with known keys, paths
and durations) from nodes while collecting every problem with its 1-based line.
Never constructs Python objects with PyYAML's constructors: those apply YAML 1.1's
implicit typing (``no`` -> False, ``22:30`` -> 1350, ``0755`` -> 493), so string fields
read the scalar's raw text instead. Never raises for a bad value: it records a
:class:`~proxy.core.errors.ConfigProblem` and returns ``None`` so the caller can go on and
find the next problem too.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from proxy.core.errors import ConfigProblem
from proxy.core.units import parse_duration

__all__ = [
    "Fields",
    "MapView",
    "Problems",
    "compose",
    "describe",
    "is_null",
    "line_of",
    "read_bool",
    "read_int",
    "read_list",
    "read_mapping",
    "read_text",
    "suggest",
]

_TAG = "tag:yaml.org,2002:"
_STR, _INT, _BOOL, _NULL = _TAG + "str", _TAG + "int", _TAG + "bool", _TAG + "null"
_MAP, _SEQ, _MERGE = _TAG + "map", _TAG + "seq", _TAG + "merge"
# "value" is what the resolver gives a lone "="; harmless as text.
_SCALAR_TAGS = {_STR, _INT, _BOOL, _NULL, *(_TAG + t for t in ("float", "timestamp", "value"))}
# YAML 1.1 also reads 0o17, 0x1F, 1_000 and 1:30 as ints; in a config they are traps.
_DECIMAL = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_TRUE = {"true", "yes", "on", "y"}


def line_of(node: yaml.Node) -> int:
    """The 1-based line where ``node`` starts."""
    return int(node.start_mark.line) + 1


def describe(node: yaml.Node) -> str:
    """How a node looks to a person, for "must be X, got Y" messages."""
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    if is_null(node):
        return "nothing (null)"
    text = str(node.value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def is_null(node: yaml.Node | None) -> bool:
    """True for an absent value, ``~``, ``null`` or an empty plain scalar."""
    return node is None or (isinstance(node, yaml.ScalarNode) and node.tag == _NULL)


class Problems:
    """Every problem found in one config file, in the order found."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[ConfigProblem] = []

    def add(self, where: yaml.Node | int | None, message: str, hint: str = "") -> None:
        line = line_of(where) if isinstance(where, yaml.Node) else where
        self.items.append(ConfigProblem(self.file, line, message, hint))


def compose(text: str, problems: Problems) -> yaml.Node | None:
    """The node tree of ``text``; a syntax error becomes one problem and ``None``."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        detail = exc.problem or exc.context or "cannot be parsed"
        if exc.context and exc.problem:
            detail = f"{exc.context}: {exc.problem}"
        problems.add(
            int(mark.line) + 1 if mark is not None else None,
            f"YAML syntax error: {detail}",
            "check indentation, quoting and the ':' after each key",
        )
        return None
    except yaml.YAMLError as exc:
        problems.add(None, f"YAML syntax error: {exc}")
        return None
    if node is not None:
        _check_tags(node, problems, set())
    return node


def _check_tags(node: yaml.Node, problems: Problems, seen: set[int]) -> None:
    # Aliases share node objects (and may be recursive): visit each node once.
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.ScalarNode):
        allowed = node.tag in _SCALAR_TAGS or node.tag == _MERGE
    elif isinstance(node, yaml.SequenceNode):
        allowed = node.tag == _SEQ
        for item in node.value:
            _check_tags(item, problems, seen)
    else:
        allowed = node.tag == _MAP
        for key, value in node.value:
            _check_tags(key, problems, seen)
            _check_tags(value, problems, seen)
    if not allowed:
        problems.add(node, f"unsupported YAML tag {node.tag!r}", "remove the '!' tag")


@dataclass
class MapView:
    """A checked mapping: keys are unique, known strings; values are nodes.

    ``node`` is None when the section was absent or null (an empty view); ``line``
    is where a "missing key" problem should point.
    """

    where: str
    node: yaml.MappingNode | None = None
    line: int | None = None
    entries: dict[str, tuple[yaml.Node, yaml.Node]] = field(default_factory=dict)

    def get(self, key: str) -> yaml.Node | None:
        """The value node of ``key``, or None when absent."""
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def key_node(self, key: str) -> yaml.Node | None:
        entry = self.entries.get(key)
        return entry[0] if entry else None

    def path(self, key: str) -> str:
        """Dotted name of ``key`` for messages: ``listen.port``."""
        return f"{self.where}.{key}" if self.where else key


def read_mapping(
    node: yaml.Node | None,
    where: str,
    allowed: Iterable[str] | None,
    problems: Problems,
    *,
    line: int | None = None,
) -> MapView | None:
    """Check ``node`` is a mapping with unique, scalar, allowed keys.

    ``allowed=None`` accepts any key (used for the target names). Absent or null gives
    an empty view; anything else that is not a mapping is a problem and gives None.
    """
    if is_null(node):
        return MapView(where, None, line)
    assert node is not None
    if not isinstance(node, yaml.MappingNode):
        problems.add(node, f"{where or 'the top level'} must be a mapping, got {describe(node)}")
        return None
    known = list(allowed) if allowed is not None else None
    view = MapView(where, node, line_of(node))
    for key_node, value_node in node.value:
        if key_node.tag == _MERGE:
            problems.add(key_node, "YAML merge keys ('<<') are not supported", "write keys out")
            continue
        # A key is its raw text: `no:`, `0755:` and even `null:` name things literally.
        if not isinstance(key_node, yaml.ScalarNode) or not str(key_node.value).strip():
            problems.add(key_node, f"{where or 'top level'}: a key must be a plain name")
            continue
        key = str(key_node.value)
        if key in view.entries:
            first = line_of(view.entries[key][0])
            problems.add(key_node, f"duplicate key {view.path(key)!r} (first at line {first})")
            continue
        if known is not None and key not in known:
            problems.add(key_node, f"unknown key {view.path(key)!r}", suggest(key, known))
            continue
        view.entries[key] = (key_node, value_node)
    return view


def suggest(key: str, known: list[str]) -> str:
    """A did-you-mean hint for a misspelt name, or the list of known names."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean {close[0]!r}?"
    return "expected one of: " + ", ".join(known)


def read_text(node: yaml.Node, what: str, problems: Problems) -> str | None:
    """The raw text of a scalar, whatever YAML would have typed it as.

    ``no`` stays "no", ``22:30`` stays "22:30", ``0755`` stays "0755". Null, empty
    text, lists and mappings are problems.
    """
    if not isinstance(node, yaml.ScalarNode) or is_null(node):
        problems.add(node, f"{what} must be a string, got {describe(node)}")
        return None
    text = str(node.value)
    if not text.strip():
        problems.add(node, f"{what} must not be empty")
        return None
    return text


def read_int(
    node: yaml.Node,
    what: str,
    problems: Problems,
    *,
    low: int | None = None,
    high: int | None = None,
) -> int | None:
    """A plain decimal integer, optionally within ``low..high``."""
    if not (isinstance(node, yaml.ScalarNode) and node.tag == _INT):
        problems.add(node, f"{what} must be an integer, got {describe(node)}")
        return None
    text = str(node.value)
    if not _DECIMAL.fullmatch(text):
        problems.add(
            node,
            f"{what} must be a plain decimal integer, got {text!r}",
            "YAML reads leading zeros as octal and 1:30 as base 60; write e.g. 22",
        )
        return None
    value = int(text)
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"at least {low}" if high is None else f"between {low} and {high}"
        problems.add(node, f"{what} must be {bounds}, got {value}")
        return None
    return value


def read_bool(node: yaml.Node, what: str, problems: Problems) -> bool | None:
    """A YAML boolean (true/false, and YAML 1.1's yes/no/on/off)."""
    if not (isinstance(node, yaml.ScalarNode) and node.tag == _BOOL):
        problems.add(node, f"{what} must be true or false, got {describe(node)}")
        return None
    return str(node.value).lower() in _TRUE


def read_list(node: yaml.Node, what: str, problems: Problems) -> list[yaml.Node] | None:
    """The item nodes of a sequence."""
    if not isinstance(node, yaml.SequenceNode):
        problems.add(node, f"{what} must be a list, got {describe(node)}")
        return None
    return list(node.value)


class Fields:
    """Typed readers for the values of a config file, relative to its folder.

    Each reader records a problem and returns the default (a stand-in) when the value
    is wrong, so one pass finds every problem; the stand-ins are never used because the
    caller raises when any problem was found.
    """

    def __init__(self, source: Path, problems: Problems) -> None:
        self.source = source
        self.base = source.parent
        self.p = problems

    def section(self, parent: MapView, key: str, allowed: Iterable[str] | None) -> MapView:
        """The mapping under ``key`` (empty when absent or null)."""
        key_node = parent.key_node(key)
        line = line_of(key_node) if key_node is not None else parent.line
        view = read_mapping(parent.get(key), parent.path(key), allowed, self.p, line=line)
        return view or MapView(parent.path(key), None, line)

    def require(self, view: MapView, *keys: str) -> None:
        for key in keys:
            if view.get(key) is None:
                self.p.add(view.line, f"{view.path(key)} is required")

    def text(self, view: MapView, key: str) -> str | None:
        node = view.get(key)
        return None if node is None else read_text(node, view.path(key), self.p)

    def flag(self, view: MapView, key: str, default: bool) -> bool:
        node = view.get(key)
        value = None if node is None else read_bool(node, view.path(key), self.p)
        return default if value is None else value

    def path(self, view: MapView, key: str, default: str) -> Path:
        """An absolute path; relative ones start at the config file's folder."""
        node = view.get(key)
        raw = default if node is None else read_text(node, view.path(key), self.p)
        return Path(os.path.normpath(self.base / (raw or default)))

    def integer(self, view: MapView, key: str, default: int, low: int, high: int) -> int:
        node = view.get(key)
        value = None if node is None else read_int(node, view.path(key), self.p, low=low, high=high)
        return default if value is None else value

    def duration_of(self, node: yaml.Node, what: str, *, zero: bool = False) -> float | None:
        """Seconds in a duration scalar; zero only when ``zero`` (it then means "off")."""
        text = read_text(node, what, self.p)
        if text is None:
            return None
        if zero and text.strip() == "0":
            return 0.0
        try:
            value = parse_duration(text)
        except ValueError as exc:
            self.p.add(node, f"{what}: {exc}")
            return None
        if value <= 0 and not zero:
            self.p.add(node, f"{what} must be longer than 0")
            return None
        return value

    def duration(self, view: MapView, key: str, default: float) -> float:
        node = view.get(key)
        value = None if node is None else self.duration_of(node, view.path(key))
        return default if value is None else value

    def optional_duration(self, view: MapView, key: str, default: float | None) -> float | None:
        """A duration where null or 0 means "no limit" (None)."""
        node = view.get(key)
        if node is None:
            return default
        if is_null(node):
            return None
        return self.duration_of(node, view.path(key), zero=True) or None
