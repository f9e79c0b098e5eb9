"""Signed checkpoints of the audit chain: the proxy's Ed25519 key and the checkpoint events.

Owns the checkpoint key file (``<recordings>/checkpoint_ed25519.key``, PKCS#8 PEM, 0600,
generated on first use), signing a checkpoint (the last event's seq and hash, and the
time) into a ``checkpoint`` event, and checking a checkpoint's signature.

A checkpoint shipped off the box (in an alert, or kept by an auditor with the public key
from ``breakglass checkpoint-key``) makes a rewrite or truncation of history before it
detectable even by someone who controls the box afterwards. Never writes the private key
anywhere but its file, and never logs it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from proxy.core import events
from proxy.core.chaincheck import Checkpoint, checkpoint_from_data, checkpoint_message
from proxy.core.errors import BreakglassError, StoreError, UsageError
from proxy.store.base import CheckpointStore, NewEvent

log = logging.getLogger("breakglass")

KEY_NAME = "checkpoint_ed25519.key"
PUB_NAME = "checkpoint_ed25519.pub"


class CheckpointKeyError(BreakglassError):
    reason = "checkpoint_key"


def key_path(recordings: Path) -> Path:
    return recordings / KEY_NAME


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_hex(pub: Ed25519PublicKey) -> str:
    return _raw(pub).hex()


def key_line(pub: Ed25519PublicKey) -> str:
    """The public key as ``breakglass checkpoint-key`` prints it (``fleet.peers`` pins it so)."""
    return f"ed25519 {public_hex(pub)}"


def fingerprint(pub: Ed25519PublicKey) -> str:
    """``SHA256:<base64>`` of the raw 32-byte public key (OpenSSH's style)."""
    digest = hashlib.sha256(_raw(pub)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def load_or_generate(path: Path) -> Ed25519PrivateKey:
    """The signing key; generated (0600, in a 0700 folder) on first use. A key file that
    others can read is refused: whoever reads it can forge checkpoints."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_generate(path)  # another process made it first: use that one
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        pub = path.with_name(PUB_NAME)
        pub.write_text(key_line(key.public_key()) + "\n")
        log.info("generated checkpoint key %s (%s)", path, fingerprint(key.public_key()))
        return key
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise CheckpointKeyError(
            f"checkpoint key {path} is readable by others (mode {mode:04o}); chmod 600 it"
        )
    return read_private(path)


def read_private(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise CheckpointKeyError(f"cannot read checkpoint key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointKeyError(f"checkpoint key {path} is not an Ed25519 key")
    return key


def parse_public_key(text: str) -> Ed25519PublicKey:
    """A public key as ``checkpoint-key`` prints it: 64 hex digits, optionally after
    ``ed25519``; or the path of a file holding that line or a PEM public/private key."""
    candidate = text.strip()
    words = candidate.split()
    if words and words[0] == "ed25519" and len(words) >= 2:
        candidate = words[1]
    try:
        return Ed25519PublicKey.from_public_bytes(bytes.fromhex(candidate))
    except ValueError:
        pass
    path = Path(text)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CheckpointKeyError(
            f"not a public key (64 hex digits) nor a readable file: {text!r}"
        ) from exc
    if b"PRIVATE KEY" in data:
        return read_private(path).public_key()
    if b"PUBLIC KEY" in data:
        pub = serialization.load_pem_public_key(data)
        if not isinstance(pub, Ed25519PublicKey):
            raise CheckpointKeyError(f"{path} is not an Ed25519 public key")
        return pub
    return parse_public_key(data.decode("utf-8", "replace").strip().splitlines()[0])


def sign(key: Ed25519PrivateKey, seq: int, head: str, now: float) -> events.Checkpoint:
    """A ``checkpoint`` event signing event ``seq`` (whose hash is ``head``)."""
    signature = key.sign(checkpoint_message(seq, head, now))
    return events.Checkpoint(seq, head, now, signature.hex(), fingerprint(key.public_key()))


def signature_ok(pub: Ed25519PublicKey, cp: Checkpoint) -> bool:
    try:
        pub.verify(bytes.fromhex(cp.signature), checkpoint_message(cp.seq, cp.head, cp.time))
    except (InvalidSignature, ValueError):
        return False
    return True


def checkpoint_document(data: Mapping[str, Any]) -> dict[str, Any]:
    """What to ship off the box (alerts, an auditor's notes): the event data as is."""
    return {k: data[k] for k in ("seq", "head", "time", "signature", "key") if k in data}


async def write_checkpoint(store: CheckpointStore, key: Ed25519PrivateKey, now: float) -> None:
    """Sign the chain's head and append it as a ``checkpoint`` event.

    Skipped when nothing was appended since the last checkpoint (an idle proxy does not
    fill its log with checkpoints). Never raises on a store failure: it logs it, since a
    checkpoint is written from shutdown and session-end paths that must not fail on it.
    """
    try:
        seq, head = await store.head()
        if seq == 0:
            return
        last = await store.chain_rows(seq - 1, 1)
        if last and last[0].type == events.Checkpoint.TYPE:
            return
        await store.append([NewEvent.of(sign(key, seq, head, now), now)])
    except StoreError as exc:
        log.critical("could not write an audit checkpoint: %s", exc)


async def checkpoint_loop(
    store: CheckpointStore,
    key: Ed25519PrivateKey,
    interval: float,
    stop: asyncio.Event,
    clock: Callable[[], float] = time.time,
) -> None:
    """Write a checkpoint every ``interval`` seconds until ``stop`` is set."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval)
        except TimeoutError:
            await write_checkpoint(store, key, clock())


def read_checkpoints(paths: Sequence[Path]) -> list[Checkpoint]:
    """Checkpoints an auditor kept off the box: each file holds one JSON document, a
    list, or one per line; each is a checkpoint's data or a whole checkpoint event."""
    out: list[Checkpoint] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            whole = json.loads(text)
            docs: list[Any] = whole if isinstance(whole, list) else [whole]
        except ValueError:
            try:
                docs = [json.loads(line) for line in text.splitlines() if line.strip()]
            except ValueError as exc:
                raise UsageError(f"{path} is not JSON: {exc}") from exc
        for doc in docs:
            if isinstance(doc, dict) and isinstance(doc.get("data"), dict):
                doc = doc["data"]  # a whole checkpoint event, as show --json prints it
            cp = checkpoint_from_data(doc) if isinstance(doc, dict) else None
            if cp is None:
                raise UsageError(f"{path}: not a checkpoint (seq, head, time, signature, key)")
            out.append(cp)
    return out
