"""What every `breakglass` subcommand module shares: the store for one command, JSON
output, and who the operator is. No argument parsing here."""

from __future__ import annotations

import getpass
import os
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.config import Config
from proxy.core.text import safe_json
from proxy.store.base import Store
from proxy.store.factory import CREATE, READ, WRITE, open_store

T = TypeVar("T")

# The open modes and the factory, re-exported: every subcommand module imports them here.
__all__ = ["CREATE", "READ", "WRITE", "open_store", "operator", "print_json", "with_store"]


def operator() -> str:
    """The local OS user running the command, and the sudo user behind it."""
    user = getpass.getuser()
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (via sudo as {user})" if sudo and sudo != user else user


async def with_store(config: Config, fn: Callable[[Store], Awaitable[T]], mode: str = READ) -> T:
    store = await open_store(config, mode)
    try:
        return await fn(store)
    finally:
        await store.close()


def print_json(doc: object) -> None:
    print(safe_json(doc, indent=2))
