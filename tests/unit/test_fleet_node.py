"""A node's fleet identity file, the pin of its own key, the witness of a peer's
checkpoint, and which bytes of a cast file are shipped (real files in tmp_path; the
ledger's side is in tests/integration/test_fleet_shipping.py)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from proxy.audit.checkpoint import key_line, sign
from proxy.core import events
from proxy.core.chaincheck import ChainRow
from proxy.fleet import identity
from proxy.fleet.casts import CHUNK, Cast, CastShipper
from proxy.fleet.witness import Witness


def test_the_node_id_is_made_once_private_and_kept(tmp_path: Path) -> None:
    path = identity.node_id_path(tmp_path / "recordings")
    first = identity.load_or_create_node_id(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert identity.load_or_create_node_id(path) == first
    assert len(first) == 32
    assert int(first, 16) >= 0


def test_a_node_id_file_that_holds_no_id_is_refused_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / identity.NODE_ID_NAME
    path.write_text("not an id\n")
    with pytest.raises(identity.NodeIdError, match="does not hold a fleet node id"):
        identity.load_or_create_node_id(path)
    assert path.read_text() == "not an id\n"


def test_the_own_key_must_be_the_pinned_one() -> None:
    key = "ed25519 " + "ab" * 32
    assert identity.check_pin("bg-a", key, "ed25519  " + "AB" * 32).ok
    assert "pins no key" in str(identity.check_pin("bg-a", key, None).detail)
    other = identity.check_pin("bg-a", key, "ed25519 " + "cd" * 32)
    assert not other.ok
    assert "not the one fleet.peers pins" in str(other.detail)


def _checkpoint_row(key: Ed25519PrivateKey, seq: int) -> str:
    return json.dumps(sign(key, seq, "e" * 64, 1_700_000_000.5).data())


def test_a_peer_checkpoint_is_witnessed_verbatim_once_and_only_when_its_pin_signed_it() -> None:
    key, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    witness = Witness("bg-a", {"bg-a": "x", "bg-b": key_line(key.public_key())})
    assert list(witness.peers) == ["bg-b"]  # never itself
    pinned = witness.peers["bg-b"]
    data = _checkpoint_row(key, 7)
    seen = witness._judge("bg-b", pinned, data)
    assert seen is not None
    assert {"peer": "bg-b", **json.loads(data)} == seen.data()
    witness.witnessed(seen)
    assert witness._judge("bg-b", pinned, data) is None  # the same checkpoint again
    assert witness._judge("bg-b", pinned, _checkpoint_row(stranger, 8)) is None  # forged
    assert witness._judge("bg-b", pinned, '{"seq": 9}') is None  # malformed
    assert witness._judge("bg-b", pinned, _checkpoint_row(key, 9)) is not None


def _row(seq: int, type_: str, channel: int, data: dict[str, object]) -> ChainRow:
    return ChainRow(seq, 0.0, type_, "S1", channel, json.dumps(data), "", "")


def test_a_live_cast_ships_whole_lines_and_a_finished_one_exactly_its_counted_bytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "S1" / "S1" / "1.cast"
    path.parent.mkdir(parents=True)
    path.write_bytes(b'{"version": 2}\n[0.1, "o", "a"]\n[0.2, "o", "par')  # a line being written
    casts = CastShipper("bg-a", tmp_path)
    start = events.ChannelStart("session", True, "S1/S1/1.cast").data()
    casts.note([_row(3, events.ChannelStart.TYPE, 1, start)])
    casts.casts[("S1", 1)].offset = 0  # as the ledger said
    chunks = casts.read()
    assert b"".join(c.data for c in chunks) == b'{"version": 2}\n[0.1, "o", "a"]\n'
    casts.shipped(chunks)
    assert casts.read() == []  # nothing whole since
    with path.open("ab") as f:
        f.write(b't"]\n' + b"x" * (CHUNK + 10) + b"\n")
    end = events.ChannelEnd(0, recording_bytes=path.stat().st_size).data()
    casts.note([_row(9, events.ChannelEnd.TYPE, 1, end)])
    chunks = casts.read()
    assert [c.offset for c in chunks][1] - chunks[0].offset == CHUNK  # chunks of at most CHUNK
    casts.shipped(chunks)
    assert sum(len(c.data) for c in chunks) + 31 == path.stat().st_size
    assert casts.unshipped_bytes == 0
    assert casts.read() == []
    assert casts.casts == {}


def test_a_cast_whose_file_is_gone_is_let_go(tmp_path: Path) -> None:
    casts = CastShipper("bg-a", tmp_path)
    casts.casts[("S1", 1)] = Cast(tmp_path / "missing.cast", 0)
    assert casts.read() == []
    assert casts.casts == {}
    assert not os.path.exists(tmp_path / "missing.cast")
