"""The ``breakglass`` command line: ``main`` is the console script's entry point.

Each module lists its subcommands the same way, as ``Command`` entries in its ``COMMANDS``
(``proxy.cli.registry``); ``proxy.cli.app`` gathers them. ``python -m proxy.cli`` runs
the same ``main``.
"""

from __future__ import annotations

from proxy.cli.app import main

__all__ = ["main"]
