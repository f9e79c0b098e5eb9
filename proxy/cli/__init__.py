"""The ``breakglass`` command line: ``main`` is the console script's entry point.

Each module registers its subcommands the same way (see ``proxy.cli.app``); ``python -m
proxy.cli`` runs the same ``main``.
"""

from __future__ import annotations

from proxy.cli.app import main

__all__ = ["main"]
