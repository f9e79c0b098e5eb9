"""`breakglass demo`: a throwaway local target, a proxy and a code, for a first look.

Everything lives in one temporary folder on 127.0.0.1; nothing else on the machine is
touched. Prints the exact commands to log in, list, show and replay.
"""

from __future__ import annotations

import asyncio
import secrets
import shlex
import sys
import tempfile
import time
from pathlib import Path

from proxy.config import load_config
from proxy.core import events
from proxy.core.credentials import CodeHasher, Credential, generate_code
from proxy.localtarget import LocalTarget, free_port, start_target
from proxy.service import ensure_host_key, serve
from proxy.store.base import NewEvent
from proxy.store.factory import CREATE, open_store_at

PERSON = "alice"


def _port() -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 2222))
            return 2222
        except OSError:
            return free_port()


def _program(name: str) -> str:
    """The absolute path of a program installed beside this Python (the venv's bin)."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else name


def _write_config(folder: Path, port: int, target: LocalTarget) -> Path:
    cfg = folder / "proxy.yaml"
    cfg.write_text(
        f"""# breakglass demo config (throwaway)
listen: {{host: 127.0.0.1, port: {port}, host_key: ssh_host_ed25519_key}}
storage: {{database: audit.db, recordings: recordings}}
policy:
  justification: {{min_length: 15}}
  max_session: 15m
  warn_before: [5m, 1m]
targets:
  demo:
    host: 127.0.0.1
    port: {target.port}
    login: {target.login}
    identity_file: {target.proxy_key}
    host_key: "{target.host_pub}"
"""
    )
    return cfg


async def _issue(db: Path) -> str:
    now = time.time()
    new = generate_code(secrets.token_bytes)
    cred = Credential(
        cred_id=new.cred_id,
        person=PERSON,
        issued_by="demo",
        issued_at=now,
        valid_until=now + 86400,
        window=4 * 3600,
        max_uses=0,
        uses=0,
        targets=("*",),
        max_session=None,
        activated_at=None,
        revoked_at=None,
        revoke_reason=None,
    )
    store = await open_store_at(db, CREATE)
    try:
        issued = events.CredIssued(credential_id=cred.cred_id, person=PERSON, by="demo")
        event = NewEvent.of(issued, now)
        await store.issue_credential(cred, CodeHasher().hash(new.cred_id, new.secret), event)
    finally:
        await store.close()
    return new.code


def run_demo() -> int:
    folder = Path(tempfile.mkdtemp(prefix="breakglass-demo-"))
    try:
        target = start_target(folder / "target")
    except (OSError, RuntimeError) as exc:
        print(f"breakglass demo: cannot start a local sshd target: {exc}", file=sys.stderr)
        return 1
    try:
        port = _port()
        cfg_path = _write_config(folder, port, target)
        config = load_config(cfg_path)
        key = ensure_host_key(config.listen.host_key)
        known = folder / "known_hosts"
        pub = key.export_public_key().decode().split()
        known.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
        code = asyncio.run(_issue(config.storage.database))
        bg = f"{_program('breakglass')} -c {shlex.quote(str(cfg_path))}"
        print(
            f"""
breakglass demo is running (folder {folder}).

1. Log in through the proxy to the target "demo" (a local sshd):

     ssh -p {port} -o UserKnownHostsFile={known} {PERSON}@demo@127.0.0.1

   Break-glass code:  {code}
   Justification:     INC-1234 first look at breakglass (15+ characters)

   or one command:    ssh -p {port} -o UserKnownHostsFile={known} {PERSON}@demo@127.0.0.1 uptime

2. In another terminal, look at the audit trail:

     {bg} sessions
     {bg} show SESSION_ID
     {bg} replay SESSION_ID
     {bg} verify

Press Ctrl-C to stop the demo.
""",
            flush=True,
        )
        asyncio.run(serve(config))
    finally:
        target.stop()
    print(f"demo stopped; its files stay in {folder}")
    return 0
