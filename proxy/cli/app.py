"""The ``breakglass`` command: the code, audit and service subcommands, every module's
``COMMANDS`` gathered, and ``main``, which parses (proxy.cli.registry) and runs the one
parsed. Thin on purpose: it calls the rooms that do the work. Exit status: 0 success,
1 failure, 2 usage error. ``--json`` prints one JSON document; human output escapes every
untrusted string.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from proxy.audit.facts import SessionFacts, session_facts, with_checks
from proxy.audit.views import (
    rfc3339,
    session_json,
    sessions_table_lines,
    show_json,
    show_text,
    write_json_lines_array,
    write_lines,
)
from proxy.cli import care as cli_care
from proxy.cli import events as cli_events
from proxy.cli import fleet as cli_fleet
from proxy.cli import ops as cli_ops
from proxy.cli.registry import Command, Group, build_parser, json_only, when
from proxy.cli.source import Source, local_argument, with_source
from proxy.cli.util import CREATE, WRITE, operator, print_json, with_store
from proxy.config import Config, default_config_path, load_config, unresolved_hosts
from proxy.core import events
from proxy.core.chaincheck import PRUNED
from proxy.core.credentials import (
    CodeHasher,
    Credential,
    credential_state,
    generate_code,
    parse_target_globs,
    target_allowed,
    validate_person,
)
from proxy.core.credstate import MISMATCH
from proxy.core.errors import BreakglassError, ConfigError, StoreError
from proxy.core.ids import is_session_id
from proxy.core.text import escape
from proxy.core.units import format_duration, parse_duration
from proxy.logs import setup_logging
from proxy.store.base import (
    CredentialReads,
    NewEvent,
    SessionFilter,
    SessionLog,
    SessionRow,
    StoredEvent,
)

T = TypeVar("T")


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def _issue_arguments(issue: argparse.ArgumentParser) -> None:
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


def _revoke_arguments(revoke: argparse.ArgumentParser) -> None:
    revoke.add_argument("cred_id")
    revoke.add_argument("--reason", required=True)


def _sessions_arguments(sessions: argparse.ArgumentParser) -> None:
    sessions.add_argument("--person")
    sessions.add_argument("--target")
    sessions.add_argument("--since", type=when, help="e.g. 7d (ago) or 2026-01-31")
    sessions.add_argument("--until", type=when, help="e.g. 1d (ago) or 2026-02-01T12:00Z")
    sessions.add_argument("--end-reason", help="e.g. time_limit, killed, interrupted")
    sessions.add_argument(
        "--flagged", action="store_true", help="only sessions with an alert or flag"
    )
    sessions.add_argument(
        "--command",
        dest="command_glob",
        metavar="GLOB",
        help="a command run in the session, e.g. '*passwd*'",
    )
    sessions.add_argument("--path", metavar="GLOB", help="a file touched, e.g. '/etc/*'")
    sessions.add_argument("--live", action="store_true", help="only sessions still running")
    sessions.add_argument("--json", action="store_true")
    local_argument(sessions)


def _attempts_arguments(attempts: argparse.ArgumentParser) -> None:
    attempts.add_argument("--since", type=when, help="e.g. 7d (ago) or 2026-01-31")
    attempts.add_argument("--until", type=when, help="e.g. 1d (ago) or 2026-02-01T12:00Z")
    attempts.add_argument("--source", help="an address or a network, e.g. 10.0.0.0/8")
    attempts.add_argument("--person")
    attempts.add_argument("--reason", help="e.g. wrong_code, unknown_target")
    attempts.add_argument("--json", action="store_true")
    local_argument(attempts)


def _show_arguments(show: argparse.ArgumentParser) -> None:
    show.add_argument("session")
    show.add_argument("--json", action="store_true")
    local_argument(show)


def _replay_arguments(replay: argparse.ArgumentParser) -> None:
    replay.add_argument("session", metavar="SESSION[/N]")
    replay.add_argument("--speed", type=_positive, default=None, help="e.g. 2")
    replay.add_argument(
        "--idle-limit", type=_positive, default=None, help="cap pauses at S seconds, e.g. 1"
    )
    local_argument(replay)


def _report_arguments(report: argparse.ArgumentParser) -> None:
    report.add_argument("--since", type=when, default=None, help="default 30d (ago)")
    report.add_argument("--until", type=when, default=None)
    report.add_argument("--format", choices=["markdown", "json", "csv"], default="markdown")
    local_argument(report)


def _export_arguments(export: argparse.ArgumentParser) -> None:
    export.add_argument("session")
    export.add_argument("--html", type=Path, required=True, metavar="FILE")
    local_argument(export)


def _verify_arguments(verify: argparse.ArgumentParser) -> None:
    verify.add_argument("--key", help="the checkpoint public key kept off the box (hex, or a file)")
    verify.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a checkpoint kept off the box (JSON, one per line); repeatable",
    )
    local_argument(verify)
    verify.add_argument("--json", action="store_true")


def _review_arguments(review: argparse.ArgumentParser) -> None:
    review.add_argument("session")
    review.add_argument("--note", required=True)


def _config(args: argparse.Namespace) -> Config:
    path = getattr(args, "config", None) or default_config_path()
    return load_config(Path(path))


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
    _warn_unmatched_globs(targets, config)
    now = time.time()
    new = generate_code(secrets.token_bytes)
    cred = Credential(
        cred_id=new.cred_id,
        person=person,
        issued_by=operator(),
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
    listed = {k: v for k, v in _cred_json(cred, now).items() if k not in {"state", "uses"}}
    event = NewEvent.of(events.decode(events.CredIssued.TYPE, listed), now)
    asyncio.run(with_store(config, lambda s: s.issue_credential(cred, code_hash, event), CREATE))
    doc = _cred_json(cred, now)
    if args.json:
        print_json({**doc, "code": new.code})
        return 0
    print(f"Break-glass code for {person} (shown once; seal it now):\n\n    {new.code}\n")
    print(
        f"id {cred.cred_id}; expires unused at {_minute(cred.valid_until)}; works for "
        f"{format_duration(cred.window)} after first use; uses "
        f"{cred.max_uses or 'unlimited'}; targets {','.join(targets)}"
    )
    return 0


async def _credentials(store: CredentialReads) -> list[tuple[Credential, str | None]]:
    """Every code, and how its row disagrees with the chain (None when it agrees)."""
    out = []
    for c in await store.list_credentials():
        found = await store.get_credential(c.cred_id)
        out.append((c, found.mismatch if found else None))
    return out


def _warn_unmatched_globs(globs: Sequence[str], config: Config) -> None:
    """A glob that matches no configured target is most likely a typo (``bd*``); the
    code is still issued, since targets may be added to the config later."""
    configured = sorted(config.targets)
    listed = ", ".join(configured) if configured else "none"
    for glob in globs:
        if not any(target_allowed((glob,), name) for name in configured):
            print(
                f"breakglass: warning: --targets {escape(glob)!r} matches no configured "
                f"target (configured: {listed})",
                file=sys.stderr,
            )


def _minute(t: float) -> str:
    """``2026-12-03 22:00 UTC``: what an operator reads in a table or a sentence."""
    return (rfc3339(t) or "")[:16].replace("T", " ") + " UTC"


def _state_words(c: Credential, now: float) -> str:
    """sealed, active until T, burnt, spent, revoked or expired."""
    state = credential_state(c, now)
    if state == "active" and c.activated_at is not None:
        return f"active until {_minute(c.activated_at + c.window)}"
    return state


def cmd_cred_list(args: argparse.Namespace, config: Config) -> int:
    creds = asyncio.run(with_store(config, _credentials))
    now = time.time()
    # A row that disagrees with its events is shown as such, never as what it claims.
    if args.json:
        docs = []
        for c, mismatch in creds:
            doc = _cred_json(c, now)
            if mismatch is not None:
                doc |= {"state": MISMATCH, "mismatch": mismatch}
            docs.append(doc)
        print_json(docs)
        return 1 if any(m is not None for _, m in creds) else 0
    states = ["TAMPERED" if mismatch is not None else _state_words(c, now) for c, mismatch in creds]
    width = max([len("STATE"), *map(len, states)])
    print(f"{'ID':8}  {'PERSON':14}  {'STATE':{width}}  {'USES':>5}  {'ISSUED (UTC)':16}  TARGETS")
    for (c, _), state in zip(creds, states, strict=True):
        uses = f"{c.uses}/{c.max_uses}" if c.max_uses else str(c.uses)
        issued = (rfc3339(c.issued_at) or "")[:16].replace("T", " ")
        print(
            f"{c.cred_id:8}  {escape(c.person):14}  {state:{width}}  {uses:>5}  "
            f"{issued:16}  {escape(','.join(c.targets))}"
        )
    if any(m is not None for _, m in creds):
        print(
            "breakglass: a code's stored row disagrees with the audit chain: run breakglass verify",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_cred_revoke(args: argparse.Namespace, config: Config) -> int:
    cred_id = args.cred_id.upper()
    now = time.time()
    cred = asyncio.run(
        with_store(
            config,
            lambda s: s.revoke_credential(cred_id, args.reason, operator(), now),
            CREATE,
        )
    )
    if cred is None:
        print(f"breakglass: no code with id {escape(args.cred_id)}", file=sys.stderr)
        return 1
    if cred.revoked_at is not None and cred.revoked_at != now:
        # The store keeps the first revocation (its time, operator and reason); this one
        # changed nothing, and the operator must not believe their reason was recorded.
        print(
            f"{cred.cred_id} ({escape(cred.person)}) was already revoked at "
            f"{_minute(cred.revoked_at)}; nothing changed (this reason is not recorded)"
        )
        return 0
    print(f"revoked {cred.cred_id} ({escape(cred.person)})")
    return 0


def cmd_sessions(args: argparse.Namespace, config: Config) -> int:
    flt = SessionFilter(
        person=args.person.lower() if args.person else None,
        target=args.target,
        since=args.since,
        until=args.until,
        end_reason=args.end_reason,
        live=True if args.live else None,
        flagged=True if args.flagged else None,
        command=args.command_glob,
        path=args.path,
    )
    # The table shows no channels: not read for it.
    rows, shown = asyncio.run(
        with_source(config, args.local, lambda src: _listing(src, flt, channels=args.json))
    )
    # Written as they are formatted: a listing of every session is 100,000 lines. The
    # JSON array has one session per line (indenting it would take seconds).
    if args.json:
        write_json_lines_array(sys.stdout, (session_json(shown(r)) for r in rows))
    else:
        width = max((len(r.id) for r in rows), default=12)
        write_lines(sys.stdout, sessions_table_lines(rows, width))
    return 0


async def _listing(
    src: Source, flt: SessionFilter, *, channels: bool
) -> tuple[list[SessionRow], Callable[[SessionRow], SessionRow]]:
    return await src.reads.list_sessions(flt, channels=channels), src.shown


def cmd_attempts(args: argparse.Namespace, config: Config) -> int:
    from proxy.audit import attempts as att

    if args.source is not None and (problem := att.source_filter_problem(args.source)):
        print(f"breakglass: --source: {escape(problem)}", file=sys.stderr)
        return 2
    flt = att.AttemptFilter(source=args.source, person=args.person, reason=args.reason)
    events = asyncio.run(
        with_source(
            config,
            args.local,
            lambda src: src.reads.events_between(att.FAILED_TYPES, args.since, args.until),
        )
    )
    found = att.attempts(events, flt)
    if args.json:
        print_json(att.attempts_json(found))
    else:
        write_lines(sys.stdout, att.attempts_table_lines(found))
    return 0


def _no_session(text: str) -> int:
    print(f"breakglass: no session {escape(text)}", file=sys.stderr)
    return 1


async def _session_facts(
    src: Source, session_id: str
) -> tuple[SessionFacts, list[StoredEvent]] | None:
    """One session's facts (recordings checked) and events; None if unknown."""
    row = await src.reads.get_session(session_id)
    if row is None:
        return None
    events = await src.reads.session_events(row.id)
    return await with_checks(session_facts(src.shown(row), events), src.checks), events


def cmd_show(args: argparse.Namespace, config: Config) -> int:
    found = asyncio.run(with_source(config, args.local, lambda s: _session_facts(s, args.session)))
    if found is None:
        return _no_session(args.session)
    facts, events = found
    if args.json:
        print_json(show_json(facts, events))
    else:
        print(show_text(facts, events))
    return 0


async def _replay_plan(
    src: Source, session_id: str, folder: Path
) -> tuple[SessionRow, list[StoredEvent], Path] | None:
    """The session, its events and the folder holding its casts; None if unknown."""
    row = await src.reads.get_session(session_id)
    if row is None:
        return None
    return row, await src.reads.session_events(row.id), await src.casts(row, folder)


def _session_and_channel(text: str) -> tuple[str, str]:
    """``[NODE/]SESSION[/N]`` -> (``[NODE/]SESSION``, ``N`` or ""). Of two parts, the
    second is a channel unless it is a session id (then the first names its node)."""
    parts = text.split("/")
    if len(parts) == 2 and not is_session_id(parts[1]):
        channel = parts[1].isdigit() or is_session_id(parts[0])
    else:
        channel = len(parts) >= 3
    return ("/".join(parts[:-1]), parts[-1]) if channel else (text, "")


def cmd_replay(args: argparse.Namespace, config: Config) -> int:
    from proxy.audit.replay import replay_channels

    session_id, chan = _session_and_channel(args.session)
    if chan and not chan.isdigit():
        print(f"breakglass: bad channel in {escape(args.session)}", file=sys.stderr)
        return 2
    # Casts read from the fleet's ledger are written here, and removed after playing.
    with tempfile.TemporaryDirectory(prefix="breakglass-casts-") as tmp:
        plan = asyncio.run(
            with_source(config, args.local, lambda s: _replay_plan(s, session_id, Path(tmp)))
        )
        if plan is None:
            return _no_session(session_id)
        row, events, root = plan
        channels = [c for c in row.channels if not chan or c.n == int(chan)]
        if not channels:
            print(f"breakglass: no channel {escape(args.session)}", file=sys.stderr)
            return 1
        pruned = {e.channel: e for e in events if e.type == PRUNED and e.channel is not None}
        return replay_channels(channels, root, args.speed, args.idle_limit, pruned)


def cmd_report(args: argparse.Namespace, config: Config) -> int:
    from proxy.audit.report import write_report

    now = time.time()
    since = args.since if args.since is not None else now - parse_duration("30d")

    async def run(src: Source) -> None:
        # Written while it is read: a year's report is tens of megabytes.
        await write_report(
            src.reads,
            config.storage.recordings,
            since,
            args.until,
            now,
            args.format,
            sys.stdout,
            checks=src.checks,
        )

    asyncio.run(with_source(config, args.local, run))
    return 0


def cmd_export(args: argparse.Namespace, config: Config) -> int:
    from proxy.audit.export import ChannelCast, load_cast, render_html, write_html
    from proxy.audit.sessioncheck import SessionCheck, check_session

    now = time.time()

    async def gather(
        src: Source, folder: Path
    ) -> tuple[SessionFacts, list[ChannelCast], SessionCheck] | None:
        found = await _session_facts(src, args.session)
        if found is None:
            return None
        facts, events = found
        root = await src.casts(facts.session, folder)
        casts = [
            cast for c in facts.session.channels if (cast := load_cast(c, facts, root)) is not None
        ]
        chain = src.chain_of(facts.session.id)
        return facts, casts, await check_session(chain, events, facts.recording_checks, now)

    # Casts read from the fleet's ledger are written here, and removed once rendered.
    with tempfile.TemporaryDirectory(prefix="breakglass-casts-") as tmp:
        gathered = asyncio.run(with_source(config, args.local, lambda s: gather(s, Path(tmp))))
    if gathered is None:
        return _no_session(args.session)
    facts, casts, check = gathered
    try:
        write_html(args.html, render_html(facts, casts, now, check))
    except OSError as exc:
        print(f"breakglass: cannot write {escape(str(args.html))}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"wrote {escape(str(args.html))} ({len(casts)} recording(s))")
    return 0


def cmd_verify(args: argparse.Namespace, config: Config) -> int:
    from proxy.audit.checkpoint import parse_public_key, read_checkpoints
    from proxy.audit.verify import unclaimed_casts, verify, verify_json, verify_text

    try:
        pub = parse_public_key(args.key) if args.key else None
        external = read_checkpoints(args.checkpoint)
    except BreakglassError as exc:
        print(f"breakglass: {exc.message}", file=sys.stderr)
        return 2
    if config.fleet is not None and not args.local:
        if args.key:
            print(
                "breakglass: with fleet: the nodes' keys are the ones pinned in fleet.peers;"
                " --key checks this node's own journal, with --local",
                file=sys.stderr,
            )
            return 2
        return cli_fleet.verify_fleet_command(config.fleet, external, args.json)
    root = config.storage.recordings
    try:
        result = asyncio.run(
            with_store(
                config, lambda s: verify(s, root, time.time(), public_key=pub, external=external)
            )
        )
    except StoreError as exc:
        # No store to check is a failure, never "events 0": and the casts it would
        # have claimed are evidence that it existed.
        print(f"breakglass: {exc.message}", file=sys.stderr)
        casts = unclaimed_casts(root, ())
        if casts:
            print(
                f"breakglass: {len(casts)} recording(s) in {escape(str(root))} that no event"
                " claims, e.g. " + escape(str(casts[0])),
                file=sys.stderr,
            )
        print("verify: FAILED")
        return 1
    if args.json:
        print_json(verify_json(result))
    else:
        print(verify_text(result))
    return 0 if result.ok else 1


def cmd_review(args: argparse.Namespace, config: Config) -> int:
    note = args.note
    if not note.strip():
        print("breakglass: --note must say something", file=sys.stderr)
        return 2

    async def write(store: SessionLog) -> bool:
        if await store.get_session(args.session) is None:
            return False
        await store.append(
            [NewEvent.of(events.Review(operator(), note), time.time(), args.session)]
        )
        return True

    if not asyncio.run(with_store(config, write, WRITE)):
        return _no_session(args.session)
    print(f"review of {escape(args.session)} recorded")
    return 0


def cmd_checkpoint_key(args: argparse.Namespace, config: Config) -> int:
    from proxy.audit.checkpoint import fingerprint, key_line, key_path, load_or_generate, public_hex

    path = key_path(config.storage.recordings)
    pub = load_or_generate(path).public_key()
    if args.json:
        print_json(
            {"type": "ed25519", "public_key": public_hex(pub), "fingerprint": fingerprint(pub)}
        )
        return 0
    print("# Keep this off the box; check checkpoints with: breakglass verify --key HEX")
    print(f"# key file {escape(str(path))}, fingerprint {fingerprint(pub)}")
    print(key_line(pub))
    return 0


def cmd_serve(args: argparse.Namespace, config: Config) -> int:
    from proxy.service import serve

    # Everything made so far (modules, config) lives as long as the process: out of the
    # collector's sight, a full collection during a burst of logins stalls every live
    # session's keystrokes ~8 ms instead of 18-37 ms (100 interactive sessions, timed
    # with gc.callbacks). Here, not in serve(): tests run serve() in their own process.
    gc.freeze()
    if os.environ.get("BREAKGLASS_EVENT_LOOP") == "asyncio":
        asyncio.run(serve(config))
    else:
        # uvloop: ~10-15 % less proxy CPU per relayed GB and per keystroke (benchmarks/).
        import uvloop

        uvloop.run(serve(config))
    return 0


def cmd_config_check(args: argparse.Namespace, config: Config) -> int:
    print(
        f"{config.source}: OK ({len(config.targets)} target(s): "
        f"{', '.join(sorted(config.targets)) or 'none'})"
    )
    if not config.targets:
        print("note: no targets are configured, so nobody can reach anything yet")
    for warning in unresolved_hosts(config):
        print(f"warning: {warning}")
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


def cmd_demo(args: argparse.Namespace) -> int:
    from proxy.demo import run_demo

    return run_demo()


COMMANDS: tuple[Group | Command, ...] = (
    Command(path=("serve",), help="run the proxy", run=cmd_serve),
    Command(
        path=("demo",),
        help="a throwaway local target + proxy + code",
        run_without_config=cmd_demo,
    ),
    Command(path=("client-config",), help="known_hosts line + ssh_config", run=cmd_client_config),
    Group(name="config", help="configuration tools"),
    Command(path=("config", "check"), help="check the config file", run=cmd_config_check),
    Group(name="cred", help="break-glass codes"),
    Command(
        path=("cred", "issue"),
        help="issue a sealed code",
        arguments=_issue_arguments,
        run=cmd_cred_issue,
    ),
    Command(
        path=("cred", "list"),
        help="list codes (never the secrets)",
        arguments=json_only,
        run=cmd_cred_list,
    ),
    Command(
        path=("cred", "revoke"),
        help="revoke a code",
        arguments=_revoke_arguments,
        run=cmd_cred_revoke,
    ),
    Command(
        path=("sessions",), help="list sessions", arguments=_sessions_arguments, run=cmd_sessions
    ),
    Command(
        path=("attempts",),
        help="failed login attempts",
        arguments=_attempts_arguments,
        run=cmd_attempts,
    ),
    Command(path=("show",), help="one session in full", arguments=_show_arguments, run=cmd_show),
    Command(
        path=("replay",),
        help="replay a recording (asciinema)",
        arguments=_replay_arguments,
        run=cmd_replay,
    ),
    Command(
        path=("report",),
        help="post-incident report",
        arguments=_report_arguments,
        run=cmd_report,
    ),
    Command(
        path=("export",),
        help="a self-contained HTML page",
        arguments=_export_arguments,
        run=cmd_export,
    ),
    Command(
        path=("verify",),
        help="check the whole audit trail",
        arguments=_verify_arguments,
        run=cmd_verify,
    ),
    Command(
        path=("review",),
        help="sign off a session as reviewed",
        arguments=_review_arguments,
        run=cmd_review,
    ),
    Command(
        path=("checkpoint-key",),
        help="the public key that verifies checkpoints",
        arguments=json_only,
        run=cmd_checkpoint_key,
    ),
    *cli_ops.COMMANDS,
    *cli_care.COMMANDS,
    *cli_events.COMMANDS,
    *cli_fleet.COMMANDS,
)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(COMMANDS).parse_args(argv)
    setup_logging()
    command: Command = args.command_entry
    if command.run_without_config is not None:
        return command.run_without_config(args)
    assert command.run is not None  # Command checks that one of the two is set
    try:
        config = _config(args)
        return command.run(args, config)
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
