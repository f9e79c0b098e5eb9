"""``python -m proxy.cli``: the same entry point as the ``breakglass`` script."""

from __future__ import annotations

from proxy.cli.app import main

raise SystemExit(main())
