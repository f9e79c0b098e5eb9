"""Operator commands: ``breakglass live``, ``kill``, ``extend`` and ``drill``.

``kill`` and ``extend`` work through the audit store: they append an ``operator_kill`` /
``operator_extend`` event carrying the operator (the local OS user, and the sudo user
behind it) and the reason verbatim, with an alert, in one transaction; the running proxy
notices within about a second (proxy.alerts.overrides) and acts. The command then waits
(bounded) to see it done. ``drill`` sends a test alert through every configured sink and
says which answered.

Listed in ``COMMANDS`` (proxy.cli.registry). Human output escapes every
untrusted string; ``--json`` prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, TypeVar

from proxy.alerts.overrides import EXTEND, KILL
from proxy.audit.views import rfc3339
from proxy.cli.registry import Command, Group, json_only
from proxy.cli.util import WRITE, open_store, operator, print_json, with_store
from proxy.config import Config
from proxy.core import chain, events
from proxy.core.errors import StoreError
from proxy.core.text import escape
from proxy.core.units import format_duration, parse_duration
from proxy.store.base import NewEvent, OverrideStore, SessionFilter, SessionRow

T = TypeVar("T")
MAX_REASON_BYTES = 2048
WAIT_STEP = 0.2


def _duration(text: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if value <= 0:
        raise argparse.ArgumentTypeError("the duration must be more than zero")
    return value


def _reason(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("a reason is required")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_REASON_BYTES:
        raise argparse.ArgumentTypeError(f"the reason is longer than {MAX_REASON_BYTES} bytes")
    return text


def _override_arguments(p: argparse.ArgumentParser, *, duration: bool) -> None:
    p.add_argument("session")
    if duration:
        p.add_argument("duration", type=_duration, help="added to the deadline, e.g. 15m")
    p.add_argument("--reason", required=True, type=_reason, help="recorded verbatim")
    p.add_argument(
        "--wait",
        type=float,
        default=10.0,
        help="seconds to wait for the proxy to act (0: do not wait); default 10",
    )
    p.add_argument("--json", action="store_true")


def _kill_arguments(p: argparse.ArgumentParser) -> None:
    _override_arguments(p, duration=False)


def _extend_arguments(p: argparse.ArgumentParser) -> None:
    _override_arguments(p, duration=True)


def _live_json(s: SessionRow, now: float) -> dict[str, Any]:
    return {
        "id": s.id,
        "person": s.person,
        "target": s.target,
        "login": s.login,
        "source": s.source,
        "justification": s.justification,
        "started_at": rfc3339(s.started_at),
        "deadline": rfc3339(s.deadline),
        "remaining": round(max(0.0, s.deadline - now), 3),
        "channels": len(s.channels),
    }


def cmd_live(args: argparse.Namespace, config: Config) -> int:
    rows = asyncio.run(with_store(config, lambda s: s.list_sessions(SessionFilter(live=True))))
    now = time.time()
    if args.json:
        print_json([_live_json(r, now) for r in rows])
        return 0
    if not rows:
        print("no live sessions")
        return 0
    print(f"{'SESSION':12}  {'PERSON':14}  {'TARGET':12}  {'LOGIN':10}  {'SOURCE':15}  LEFT")
    for r in rows:
        left = format_duration(max(0, round(r.deadline - now)))
        print(
            f"{r.id:12}  {escape(r.person):14}  {escape(r.target):12}  {escape(r.login):10}  "
            f"{escape(r.source):15}  {left}"
        )
    return 0


async def _override(
    store: OverrideStore,
    override: events.OperatorKill | events.OperatorExtend,
    session_id: str,
    wait: float,
) -> tuple[str, SessionRow | None]:
    """Append the override; then wait (bounded) until the proxy has acted on it.
    Returns (outcome, the session as last seen): outcome is no_session, not_live, done
    or pending."""
    # The alert machinery is imported by the commands that raise alerts, so that every
    # other command starts without it.
    from proxy.alerts.payload import AlertContext, build
    from proxy.core import anomaly

    row = await store.get_session(session_id)
    if row is None:
        return "no_session", None
    if row.ended_at is not None:
        return "not_live", row
    now = time.time()
    event = NewEvent.of(override, now, session_id)
    ctx = AlertContext(
        session_id=row.id,
        person=row.person,
        source=row.source,
        target=row.target,
        login=row.login,
        justification=row.justification,
        credential_id=row.credential_id,
    )
    by = override.by if isinstance(override, events.OperatorExtend) else None
    extra = f" by {format_duration(by)}" if by is not None else ""
    firings = anomaly.on_operator(override.TYPE, override.operator, override.reason, extra)
    await store.append_with_alerts([event], [build(f, ctx, now) for f in firings])
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        seen = await store.get_session(session_id)
        if seen is not None and _acted(override.TYPE, row, seen):
            return "done", seen
        if time.monotonic() >= deadline:
            return "pending", seen
        await asyncio.sleep(WAIT_STEP)


def _acted(type_: str, before: SessionRow, now: SessionRow) -> bool:
    if type_ == KILL:
        return now.ended_at is not None
    return now.deadline > before.deadline or now.ended_at is not None


def _run_override(args: argparse.Namespace, config: Config, type_: str) -> int:
    override: events.OperatorKill | events.OperatorExtend = (
        events.OperatorExtend(operator(), args.reason, args.duration)
        if type_ == EXTEND
        else events.OperatorKill(operator(), args.reason)
    )
    outcome, row = asyncio.run(
        with_store(config, lambda s: _override(s, override, args.session, args.wait), WRITE)
    )
    sid = escape(args.session)
    if outcome == "no_session":
        print(f"breakglass: no session {sid}", file=sys.stderr)
        return 1
    if outcome == "not_live":
        print(f"breakglass: session {sid} has already ended", file=sys.stderr)
        return 1
    verb = "killed" if type_ == KILL else "extended"
    if args.json:
        print_json(
            {
                "session": args.session,
                "action": type_,
                "operator": override.operator,
                "reason": override.reason,
                "by": override.by if isinstance(override, events.OperatorExtend) else None,
                "applied": outcome == "done",
                "deadline": rfc3339(row.deadline) if row else None,
                "ended_at": rfc3339(row.ended_at) if row and row.ended_at else None,
            }
        )
    elif outcome == "done":
        tail = f"; deadline now {rfc3339(row.deadline)}" if row and type_ == EXTEND else ""
        print(f"session {sid} {verb}{tail}")
    if outcome == "done":
        return 0
    if args.wait > 0:
        print(
            f"breakglass: recorded, but the proxy has not {verb} session {sid} within "
            f"{args.wait:g}s (is it running?)",
            file=sys.stderr,
        )
        return 1
    if not args.json:
        print(f"{type_} recorded for session {sid}; the proxy acts on it within a second or two")
    return 0


def cmd_kill(args: argparse.Namespace, config: Config) -> int:
    return _run_override(args, config, KILL)


def cmd_extend(args: argparse.Namespace, config: Config) -> int:
    return _run_override(args, config, EXTEND)


async def _drill(config: Config) -> tuple[str, list[tuple[str, bool, str]], str | None]:
    from proxy.alerts.delivery import send_everywhere
    from proxy.alerts.payload import AlertContext, build
    from proxy.alerts.sinks import Outgoing, make_event_sinks, make_sinks
    from proxy.core import anomaly

    sinks = make_sinks(config.alerts.sinks)
    event_sinks = make_event_sinks(config.alerts.sinks)
    now = time.time()
    who = operator()
    alert = build(
        anomaly.Firing(
            anomaly.DRILL, f"test alert sent by {who} with breakglass drill", flag=False
        ),
        AlertContext(person=who),
        now,
    )
    outgoing = Outgoing.of(chain.canonical(alert.payload))
    # An events-all syslog sink is tried as well (the drill's events reach it by its
    # forwarder in the running proxy too); only the outbox's sinks record a delivery.
    results = await send_everywhere([*sinks, *event_sinks], outgoing)
    # Recorded after sending, so a running proxy does not deliver it a second time; a
    # sink that failed is retried from the outbox by the proxy like any other alert.
    problem = None
    try:
        store = await open_store(config, WRITE)
        try:
            event = NewEvent.of(events.Drill(who, alert.alert_id), now)
            await store.append_with_alerts([event], [alert])
            keys = [s.key for s in sinks]
            for r in results[: len(sinks)]:
                await store.record_delivery(
                    alert.alert_id, r.sink, time.time(), r.ok, r.detail, keys
                )
        finally:
            await store.close()
    except StoreError as exc:
        problem = exc.message
    return alert.alert_id, [(r.sink, r.ok, r.detail) for r in results], problem


def cmd_drill(args: argparse.Namespace, config: Config) -> int:
    if not config.alerts.sinks:
        print("breakglass: no alert sinks are configured (alerts.sinks)", file=sys.stderr)
        return 1
    alert_id, results, problem = asyncio.run(_drill(config))
    failed = [r for r in results if not r[1]]
    if args.json:
        print_json(
            {
                "alert_id": alert_id,
                "ok": not failed,
                "sinks": [{"sink": k, "ok": ok, "detail": d} for k, ok, d in results],
                "recorded": problem is None,
            }
        )
    else:
        for key, ok, detail in results:
            print(f"{'ok    ' if ok else 'FAILED'}  {escape(key)}  {escape(detail)}")
        print(f"drill alert {alert_id}: {len(results) - len(failed)}/{len(results)} sinks answered")
    if problem is not None:
        print(
            f"breakglass: the drill was not recorded in the audit store: {problem}", file=sys.stderr
        )
    return 1 if failed or problem is not None else 0


COMMANDS: tuple[Group | Command, ...] = (
    Command(path=("live",), help="sessions running now", arguments=json_only, run=cmd_live),
    Command(path=("kill",), help="close a live session", arguments=_kill_arguments, run=cmd_kill),
    Command(
        path=("extend",), help="move its deadline", arguments=_extend_arguments, run=cmd_extend
    ),
    Command(
        path=("drill",),
        help="a test alert through every sink",
        arguments=json_only,
        run=cmd_drill,
    ),
)
