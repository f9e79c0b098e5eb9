"""No module outside the catalogue (``proxy/core/events.py``) spells an event type as a
string literal: emitters and readers name ``SessionStart.TYPE`` and the catalogue's
groups, so a type is renamed or looked up in one place.

A string equal to an event type is allowed only where it is not an event type: a key of
a dict display or a subscript (``{"command": ...}``, ``d["command"]``: a field or a JSON
key that happens to share the word), and the few other words listed in ``OTHER_MEANINGS``.
SQL text naming a type in quotes is flagged too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from proxy.core import events

ROOT = Path(__file__).resolve().parents[2] / "proxy"
CATALOGUE = ROOT / "core" / "events.py"

# The same word, meaning something else: (module, word) -> what it is there.
OTHER_MEANINGS = {
    ("proxy/cli/registry.py", "command"): "argparse's dest for the subcommand",
    ("proxy/cli/app.py", "review"): "the `breakglass review` subcommand",
    ("proxy/cli/care.py", "backup"): "the `breakglass backup` subcommand",
    ("proxy/cli/ops.py", "drill"): "the `breakglass drill` subcommand",
    ("proxy/config/model.py", "command"): "an alert sink type",
    ("proxy/config/alerts.py", "command"): "an alert sink type",
    ("proxy/core/execrules.py", "command"): "sh's `command` builtin, which runs a program",
    ("proxy/core/errors.py", "recording_failed"): "RecordingError's refusal reason",
    ("proxy/fleet/schema.py", "command"): "channel_start's data key, in the ledger's view",
}


def _allowed_positions(tree: ast.AST) -> set[int]:
    """ids of the string constants that are dict keys or subscript indexes."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            out.update(id(k) for k in node.keys if k is not None)
        elif isinstance(node, ast.Subscript):
            out.add(id(node.slice))
    return out


def literal_spellings(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string constant in ``source`` that spells an event type."""
    tree = ast.parse(source)
    allowed = _allowed_positions(tree)
    types = set(events.CATALOGUE)
    quoted = re.compile("'(" + "|".join(map(re.escape, sorted(types))) + ")'")
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str):
            continue
        if (node.value in types and id(node) not in allowed) or quoted.search(node.value):
            found.append((node.lineno, node.value))
    return found


def test_no_module_outside_the_catalogue_spells_an_event_type() -> None:
    hits = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == CATALOGUE:
            continue
        name = str(path.relative_to(ROOT.parent))
        for line, text in literal_spellings(path.read_text()):
            if (name, text) not in OTHER_MEANINGS:
                hits.append(f"{name}:{line}: {text!r}")
    assert hits == [], "event types spelled outside proxy/core/events.py:\n" + "\n".join(hits)


def test_the_scan_finds_a_spelled_type_and_allows_a_field_key() -> None:
    src = (
        'emit("session_start", {"command": 1})\n'
        'x = d["command"]\n'
        "q = \"SELECT 1 FROM events WHERE type = 'login_failed'\"\n"
    )
    assert sorted(literal_spellings(src)) == [
        (1, "session_start"),
        (3, "SELECT 1 FROM events WHERE type = 'login_failed'"),
    ]
