"""The one place that builds a store: from the config (or, for the demo, a path), in
one of three open modes. Nothing outside ``proxy/store`` names a concrete store, so a
second implementation is chosen here and nowhere else."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from proxy.store.base import Store
from proxy.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from proxy.config import Config

# How a command opens the store. Auditor commands only READ: an existing store,
# read-only, never migrated, so reading the evidence cannot change or replace it. Other
# commands that append to it (review, kill, prune...) WRITE to an existing store. Only
# ``serve`` and the commands that issue or revoke codes may CREATE one.
READ, WRITE, CREATE = "read", "write", "create"


async def open_store(config: Config, mode: str) -> Store:
    """The store ``config`` names, opened in ``mode`` (READ, WRITE or CREATE)."""
    return await open_store_at(config.storage.database, mode)


async def open_store_at(path: Path, mode: str) -> Store:
    """The SQLite store at ``path``: CREATE makes (or migrates) it; READ and WRITE need
    an existing one, READ opening it read-only."""
    if mode == CREATE:
        return await SQLiteStore.open(path)
    if mode not in (READ, WRITE):
        raise ValueError(f"unknown store open mode {mode!r}")
    return await SQLiteStore.open_existing(path, read_only=mode == READ)
