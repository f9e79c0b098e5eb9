"""The ``breakglass`` command: parses arguments and calls the rooms that do the work.

Thin on purpose. Exit status: 0 success, 1 failure, 2 usage error. ``--json`` prints one
JSON document; human output escapes every untrusted string.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from proxy import cli_ops
from proxy.audit.views import rfc3339, session_json, session_text, sessions_table
from proxy.config import Config, default_config_path, load_config
from proxy.core.credentials import (
    CodeHasher,
    Credential,
    credential_state,
    generate_code,
    parse_target_globs,
    validate_person,
)
from proxy.core.text import escape
from proxy.core.units import format_duration, parse_duration
from proxy.errors import BreakglassError, ConfigError
from proxy.store.base import NewEvent, SessionFilter
from proxy.store.sqlite import SQLiteStore

T = TypeVar("T")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2 with a clear line, as documented
        self.print_usage(sys.stderr)
        print(f"breakglass: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="config file (default: $BREAKGLASS_CONFIG or config/proxy.yaml)",
    )
    p = _Parser(prog="breakglass", parents=[common], description="Break-glass SSH proxy")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    sub.add_parser("serve", parents=[common], help="run the proxy")
    sub.add_parser("demo", parents=[common], help="a throwaway local target + proxy + code")
    sub.add_parser("client-config", parents=[common], help="known_hosts line + ssh_config")
    cfg = sub.add_parser("config", parents=[common], help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, parser_class=_Parser)
    cfg_sub.add_parser("check", parents=[common], help="check the config file")

    cred = sub.add_parser("cred", parents=[common], help="break-glass codes")
    cred_sub = cred.add_subparsers(dest="cred_command", required=True, parser_class=_Parser)
    issue = cred_sub.add_parser("issue", parents=[common], help="issue a sealed code")
    issue.add_argument("person")
    issue.add_argument(
        "--valid",
        type=_duration,
        default=parse_duration("90d"),
        help="time the code may wait sealed before its first use (90d)",
    )
    issue.add_argument(
        "--window",
        type=_duration,
        default=parse_duration("4h"),
        help="how long the code works after its first use (4h)",
    )
    issue.add_argument("--uses", type=int, default=0, help="max logins in the window, 0 = no cap")
    issue.add_argument("--targets", default="*", help="target globs, e.g. 'db*,web01'")
    issue.add_argument("--max-session", type=_duration, default=None)
    issue.add_argument("--json", action="store_true")
    lst = cred_sub.add_parser("list", parents=[common], help="list codes (never the secrets)")
    lst.add_argument("--json", action="store_true")
    revoke = cred_sub.add_parser("revoke", parents=[common], help="revoke a code")
    revoke.add_argument("cred_id")
    revoke.add_argument("--reason", required=True)

    sessions = sub.add_parser("sessions", parents=[common], help="list sessions")
    sessions.add_argument("--person")
    sessions.add_argument("--target")
    sessions.add_argument("--since", type=_duration, help="e.g. 7d")
    sessions.add_argument("--live", action="store_true", help="only sessions still running")
    sessions.add_argument("--json", action="store_true")
    show = sub.add_parser("show", parents=[common], help="one session in full")
    show.add_argument("session")
    show.add_argument("--json", action="store_true")
    cli_ops.register(sub, common)
    return p


def _config(args: argparse.Namespace) -> Config:
    path = getattr(args, "config", None) or default_config_path()
    return load_config(Path(path))


def _operator() -> str:
    user = getpass.getuser()
    sudo = os.environ.get("SUDO_USER")
    return f"{sudo} (via sudo as {user})" if sudo and sudo != user else user


async def _with_store(config: Config, fn: Callable[[SQLiteStore], Awaitable[T]]) -> T:
    store = await SQLiteStore.open(config.storage.database)
    try:
        return await fn(store)
    finally:
        await store.close()


def _print_json(doc: object) -> None:
    print(json.dumps(doc, indent=2, ensure_ascii=False))


def _cred_json(c: Credential, now: float) -> dict[str, Any]:
    return {
        "id": c.cred_id,
        "person": c.person,
        "state": credential_state(c, now),
        "issued_by": c.issued_by,
        "issued_at": rfc3339(c.issued_at),
        "valid_until": rfc3339(c.valid_until),
        "window": c.window,
        "max_uses": c.max_uses,
        "uses": c.uses,
        "targets": list(c.targets),
        "max_session": c.max_session,
        "activated_at": rfc3339(c.activated_at),
        "window_ends": rfc3339(None if c.activated_at is None else c.activated_at + c.window),
        "revoked_at": rfc3339(c.revoked_at),
        "revoke_reason": c.revoke_reason,
    }


def cmd_cred_issue(args: argparse.Namespace, config: Config) -> int:
    person = args.person.lower()
    if not validate_person(person):
        print("breakglass: person names are letters, digits, '.', '_' and '-'", file=sys.stderr)
        return 2
    if args.uses < 0:
        print("breakglass: --uses must be 0 (no cap) or more", file=sys.stderr)
        return 2
    try:
        targets = parse_target_globs(args.targets)
    except ValueError as exc:
        print(f"breakglass: --targets: {exc}", file=sys.stderr)
        return 2
    now = time.time()
    new = generate_code(secrets.token_bytes)
    cred = Credential(
        cred_id=new.cred_id,
        person=person,
        issued_by=_operator(),
        issued_at=now,
        valid_until=now + args.valid,
        window=args.window,
        max_uses=args.uses,
        uses=0,
        targets=targets,
        max_session=args.max_session,
        activated_at=None,
        revoked_at=None,
        revoke_reason=None,
    )
    code_hash = CodeHasher().hash(new.cred_id, new.secret)
    event = NewEvent(
        "cred_issued",
        now,
        data={k: v for k, v in _cred_json(cred, now).items() if k not in {"state", "uses"}},
    )
    asyncio.run(_with_store(config, lambda s: s.issue_credential(cred, code_hash, event)))
    doc = _cred_json(cred, now)
    if args.json:
        _print_json({**doc, "code": new.code})
        return 0
    print(f"Break-glass code for {person} (shown once; seal it now):\n\n    {new.code}\n")
    print(
        f"id {cred.cred_id}; sealed until {doc['valid_until']}; works for "
        f"{format_duration(cred.window)} after first use; uses "
        f"{cred.max_uses or 'unlimited'}; targets {','.join(targets)}"
    )
    return 0


def cmd_cred_list(args: argparse.Namespace, config: Config) -> int:
    creds = asyncio.run(_with_store(config, lambda s: s.list_credentials()))
    now = time.time()
    if args.json:
        _print_json([_cred_json(c, now) for c in creds])
        return 0
    print(f"{'ID':8}  {'PERSON':14}  {'STATE':8}  {'USES':>5}  {'ISSUED (UTC)':16}  TARGETS")
    for c in creds:
        uses = f"{c.uses}/{c.max_uses}" if c.max_uses else str(c.uses)
        issued = (rfc3339(c.issued_at) or "")[:16].replace("T", " ")
        print(
            f"{c.cred_id:8}  {escape(c.person):14}  {credential_state(c, now):8}  {uses:>5}  "
            f"{issued:16}  {escape(','.join(c.targets))}"
        )
    return 0


def cmd_cred_revoke(args: argparse.Namespace, config: Config) -> int:
    cred_id = args.cred_id.upper()
    cred = asyncio.run(
        _with_store(
            config, lambda s: s.revoke_credential(cred_id, args.reason, _operator(), time.time())
        )
    )
    if cred is None:
        print(f"breakglass: no code with id {escape(args.cred_id)}", file=sys.stderr)
        return 1
    print(f"revoked {cred.cred_id} ({escape(cred.person)})")
    return 0


def cmd_sessions(args: argparse.Namespace, config: Config) -> int:
    flt = SessionFilter(
        person=args.person.lower() if args.person else None,
        target=args.target,
        since=None if args.since is None else time.time() - args.since,
        live=True if args.live else None,
    )
    rows = asyncio.run(_with_store(config, lambda s: s.list_sessions(flt)))
    if args.json:
        _print_json([session_json(r) for r in rows])
    else:
        print(sessions_table(rows))
    return 0


def cmd_show(args: argparse.Namespace, config: Config) -> int:
    async def fetch(store: SQLiteStore) -> tuple[Any, Any]:
        row = await store.get_session(args.session)
        return row, (await store.session_events(args.session)) if row else []

    row, events = asyncio.run(_with_store(config, fetch))
    if row is None:
        print(f"breakglass: no session {escape(args.session)}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(session_json(row, events))
    else:
        print(session_text(row, events))
    return 0


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from proxy.service import serve

    asyncio.run(serve(config))
    return 0


def cmd_config_check(args: argparse.Namespace, config: Config) -> int:
    print(
        f"{config.source}: OK ({len(config.targets)} target(s): "
        f"{', '.join(sorted(config.targets)) or 'none'})"
    )
    if not config.targets:
        print("note: no targets are configured, so nobody can reach anything yet")
    return 0


def cmd_client_config(args: argparse.Namespace, config: Config) -> int:
    from proxy.service import ensure_host_key

    key = ensure_host_key(config.listen.host_key)
    pub = key.export_public_key().decode().split()
    host, port = config.listen.host, config.listen.port
    pattern = host if port == 22 else f"[{host}]:{port}"
    print("# known_hosts line: pin the proxy's host key (add to ~/.ssh/known_hosts)")
    print(f"{pattern} {pub[0]} {pub[1]}")
    print()
    print("# ssh_config snippet (add to ~/.ssh/config); then: ssh PERSON@TARGET@breakglass")
    print("Host breakglass")
    print(f"    HostName {host}")
    print(f"    Port {port}")
    print("    PreferredAuthentications keyboard-interactive")
    print("    PubkeyAuthentication no")
    print("    StrictHostKeyChecking yes")
    print(f"    HostKeyAlias {pattern}")
    print("    ForwardAgent no")
    print("    ForwardX11 no")
    return 0


def cmd_demo(args: argparse.Namespace, config: Config | None) -> int:
    from proxy.demo import run_demo

    return run_demo()


COMMANDS: dict[tuple[str, ...], Callable[[argparse.Namespace, Config], int]] = {
    ("serve",): cmd_serve,
    ("client-config",): cmd_client_config,
    ("config", "check"): cmd_config_check,
    ("cred", "issue"): cmd_cred_issue,
    ("cred", "list"): cmd_cred_list,
    ("cred", "revoke"): cmd_cred_revoke,
    ("sessions",): cmd_sessions,
    ("show",): cmd_show,
    **cli_ops.COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    if args.command == "demo":
        return cmd_demo(args, None)
    key = tuple(
        k
        for k in (
            args.command,
            getattr(args, "config_command", None),
            getattr(args, "cred_command", None),
        )
        if k
    )
    try:
        config = _config(args)
        return COMMANDS[key](args, config)
    except ConfigError as exc:
        print(f"breakglass: the configuration has {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except BreakglassError as exc:
        print(f"breakglass: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
