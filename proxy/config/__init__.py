"""The configuration family: one YAML file read into frozen dataclasses.

The package's modules, each with one job:

- ``model``: the loaded config as frozen dataclasses with the documented defaults;
- ``load``: the schema of the top-level keys and ``load_config``;
- ``alerts`` and ``sinks``: the ``alerts:`` section and its sinks;
- ``fleet``: the ``fleet:`` section (the node's name, the ledger, the pinned peers);
- ``files``: the checks on the files a config names (modes, owners, keys);
- ``yamlnodes``: YAML read with line numbers and literal strings.

Callers import the public names from here: ``from proxy.config import Config, load_config``.
"""

from __future__ import annotations

from proxy.config.load import default_config_path, load_config, unresolved_hosts
from proxy.config.model import (
    AlertRules,
    AlertsConfig,
    Config,
    FleetConfig,
    JustificationRule,
    ListenConfig,
    PolicyConfig,
    QuietHours,
    RateRule,
    RecordingConfig,
    SinkConfig,
    StorageConfig,
    TargetConfig,
)

__all__ = [
    "AlertRules",
    "AlertsConfig",
    "Config",
    "FleetConfig",
    "JustificationRule",
    "ListenConfig",
    "PolicyConfig",
    "QuietHours",
    "RateRule",
    "RecordingConfig",
    "SinkConfig",
    "StorageConfig",
    "TargetConfig",
    "default_config_path",
    "load_config",
    "unresolved_hosts",
]
