"""What every `breakglass` subcommand module shares: the store for one command, JSON
output, and who the operator is. No argument parsing here."""

from __future__ import annotations

import getpass
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.config import Config
from proxy.core.text import safe_json
from proxy.store.sqlite import SQLiteStore

T = TypeVar("T")


def operator() -> str:
    """The local OS user running the command, and the sudo user behind it."""
    user = getpass.getuser()
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (via sudo as {user})" if sudo and sudo != user else user


# How a command opens the store. Auditor commands only READ: an existing store,
# read-only, never migrated, so reading the evidence cannot change or replace it. Other
# commands that append to it (review, kill, prune...) WRITE to an existing store. Only
# ``serve`` and the commands that issue or revoke codes may CREATE one.
READ, WRITE, CREATE = "read", "write", "create"


async def open_store(config: Config, mode: str) -> SQLiteStore:
    path = config.storage.database
    if mode == CREATE:
        return await SQLiteStore.open(path)
    return await SQLiteStore.open_existing(path, read_only=mode == READ)


async def with_store(
    config: Config, fn: Callable[[SQLiteStore], Awaitable[T]], mode: str = READ
) -> T:
    store = await open_store(config, mode)
    try:
        return await fn(store)
    finally:
        await store.close()


def print_json(doc: object) -> None:
    print(safe_json(doc, indent=2))
