"""The ``fleet:`` section of the config: this node's name, the ledger and the pinned peers.

Owns the checks that keep a fleet config from misbehaving later: the node name's
alphabet, a libpq DSN that parses and holds no password (it would end up in process
lists and logs; the password lives in ``password_file``, a 0600 libpq passfile, or
$PGPASSFILE), every peer key in ``breakglass checkpoint-key``'s "ed25519 HEX" form,
this node among the peers, and the timings. Part of the config loader (proxy.config);
psycopg is imported only when a ``fleet:`` section is present.
"""

from __future__ import annotations

import re
import types

import yaml

from proxy.config import files
from proxy.config.model import FLEET_NODE_NAME, FleetConfig
from proxy.config.yamlnodes import Fields, MapView, is_null, read_mapping, read_text

__all__ = ["FLEET_KEYS", "FleetReader", "dsn_has_password"]

FLEET_KEYS = (
    "node",
    "postgres",
    "password_file",
    "peers",
    "timeout",
    "ship_interval",
    "witness_interval",
    "unreachable",
)
UNREACHABLE = ("serve", "refuse")
_NODE = re.compile(FLEET_NODE_NAME)
# Exactly what `breakglass checkpoint-key` prints: the algorithm, then 64 hex digits.
_PEER_KEY = re.compile(r"ed25519 ([0-9a-fA-F]{64})")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?")


def dsn_has_password(dsn: str) -> bool:
    """True when the libpq URI or key=value DSN ``dsn`` carries a password (``user:pw@``,
    ``?password=``, ``password=``). Raises ValueError, quoting nothing, when it does not
    parse."""
    from psycopg import Error
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Error:  # its message may quote the DSN: not repeated
        raise ValueError("not a PostgreSQL connection string") from None
    return params.get("password") is not None


class FleetReader(Fields):
    def fleet(self, parent: MapView) -> FleetConfig | None:
        if is_null(parent.get("fleet")):
            return None
        view = self.section(parent, "fleet", FLEET_KEYS)
        if view.node is None:
            return None
        self.require(view, "node", "postgres", "peers")
        node = self.text(view, "node")
        if node is not None and not _NODE.fullmatch(node):
            self.p.add(
                view.get("node"),
                f"fleet.node {node!r} is not a node name",
                "lower-case letters, digits and '-', starting with a letter or digit,"
                " at most 63 characters",
            )
        postgres = self.dsn(view)
        password_file = None
        if self.text(view, "password_file") is not None:
            password_file = self.path(view, "password_file", "")
            issue = files.secret_file_issue(password_file, view.path("password_file"))
            if issue:
                self.p.add(view.get("password_file"), *issue)
        peers = self.peers(view)
        if node is not None and view.get("peers") is not None and node not in peers:
            self.p.add(
                view.key_node("peers"),
                f"fleet.peers has no key for this node ({node})",
                "add this node's `breakglass checkpoint-key` line under its name",
            )
        default = FleetConfig(node="-", postgres="-")
        return FleetConfig(
            node=node or "-",
            postgres=postgres or "-",
            password_file=password_file,
            peers=types.MappingProxyType(peers),
            timeout=self.seconds(view, "timeout", default.timeout),
            ship_interval=self.seconds(view, "ship_interval", default.ship_interval),
            witness_interval=self.seconds(view, "witness_interval", default.witness_interval),
            unreachable=self.unreachable(view, default.unreachable),
        )

    def unreachable(self, view: MapView, default: str) -> str:
        text = self.text(view, "unreachable")
        if text is None:
            return default
        if text not in UNREACHABLE:
            self.p.add(
                view.get("unreachable"),
                f"fleet.unreachable must be serve or refuse, not {text!r}",
                "serve: a login decides on this node's copy of the code (flagged, alerted);"
                " refuse: it fails closed",
            )
            return default
        return text

    def dsn(self, view: MapView) -> str | None:
        text = self.text(view, "postgres")
        if text is None:
            return None
        node = view.get("postgres")
        try:
            has_password = dsn_has_password(text)
        except ValueError:
            self.p.add(
                node,
                "fleet.postgres is not a PostgreSQL connection string",
                "write e.g. postgresql://breakglass@db.internal:5432/breakglass",
            )
            return None
        if has_password:
            self.p.add(
                node,
                "fleet.postgres must not contain a password",
                "put it in fleet.password_file (libpq passfile format, chmod 600) or $PGPASSFILE",
            )
            return None
        return text

    def peers(self, view: MapView) -> dict[str, str]:
        node = view.get("peers")
        peers_view = read_mapping(node, "fleet.peers", None, self.p)
        if peers_view is None:
            return {}
        if node is not None and not is_null(node) and not peers_view.entries:
            self.p.add(node, "fleet.peers must not be empty")
        peers: dict[str, str] = {}
        for name, (key_node, value) in peers_view.entries.items():
            if not _NODE.fullmatch(name):
                self.p.add(key_node, f"fleet.peers: {name!r} is not a node name")
            what = peers_view.path(name)
            text = read_text(value, what, self.p)
            if text is None:
                continue
            match = _PEER_KEY.fullmatch(" ".join(text.split()))
            if match is None:
                self.p.add(
                    value,
                    f"{what} is not a checkpoint key",
                    "paste that node's `breakglass checkpoint-key` line:"
                    ' "ed25519 <64 hex digits>"',
                )
                continue
            peers[name] = f"ed25519 {match.group(1).lower()}"
        return peers

    def seconds(self, view: MapView, key: str, default: float) -> float:
        """A duration (2s, 500ms) or, as the fleet's examples write them, a plain number
        of seconds (2.0)."""
        node = view.get(key)
        if node is None:
            return default
        if isinstance(node, yaml.ScalarNode) and _NUMBER.fullmatch(str(node.value)):
            value = float(node.value)
            if value > 0:
                return value
            self.p.add(node, f"{view.path(key)} must be longer than 0")
            return default
        return self.duration(view, key, default)
