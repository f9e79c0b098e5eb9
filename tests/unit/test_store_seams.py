"""Nothing outside ``proxy/store`` names a concrete store: every consumer is typed
against its narrow Protocol (``proxy.store.base``) and every store is built by
``proxy.store.factory``. A second store (the PostgreSQL ledger) is then one new module
in ``proxy/store`` and one branch in the factory."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from proxy.store import factory

PROXY = Path(__file__).resolve().parents[2] / "proxy"
STORE = PROXY / "store"
CONCRETE_NAMES = {"SQLiteStore", "MemoryStore"}
CONCRETE_MODULES = {"proxy.store.sqlite", "proxy.store.outbox", "proxy.store.feed"}
CONCRETE_MODULES |= {"proxy.store.auditreads", "proxy.store.memory", "proxy.store.memoryrows"}


def concrete_uses(path: Path) -> list[str]:
    """Where the module at ``path`` names a concrete store or imports its module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Name) and node.id in CONCRETE_NAMES:
            found.append(f"{path}:{node.lineno}: {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in CONCRETE_NAMES:
            found.append(f"{path}:{node.lineno}: {node.attr}")
        elif isinstance(node, ast.ImportFrom):
            names = {a.name for a in node.names}
            full = {f"{node.module}.{n}" for n in names}
            if node.module in CONCRETE_MODULES or names & CONCRETE_NAMES or full & CONCRETE_MODULES:
                found.append(f"{path}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.Import):
            found += [
                f"{path}:{node.lineno}: import {a.name}"
                for a in node.names
                if a.name in CONCRETE_MODULES
            ]
    return found


def test_no_module_outside_the_store_names_a_concrete_store() -> None:
    outside = [p for p in sorted(PROXY.rglob("*.py")) if STORE not in p.parents]
    assert len(outside) > 50  # the scan really walked the tree
    problems = [use for p in outside for use in concrete_uses(p)]
    assert problems == []


def test_the_scan_sees_each_way_of_naming_it(tmp_path: Path) -> None:
    lines = [
        "from proxy.store.sqlite import SQLiteStore",
        "import proxy.store.sqlite",
        "from proxy.store import sqlite",
        "x: 'int' = store.SQLiteStore",
        "y = SQLiteStore",
        "from proxy.store.memory import MemoryStore",
    ]
    for line in lines:
        probe = tmp_path / "probe.py"
        probe.write_text(line + "\n")
        assert concrete_uses(probe), line
    probe.write_text("from proxy.store.factory import open_store\n")
    assert concrete_uses(probe) == []


async def test_the_factory_refuses_an_unknown_mode(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown store open mode"):
        await factory.open_store_at(tmp_path / "audit.db", "append")
    assert not (tmp_path / "audit.db").exists()
