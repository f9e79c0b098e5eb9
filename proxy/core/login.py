"""The login decision: one connection's keyboard-interactive logins as a state machine.

Modelled on h11's ``Connection`` and its ``_state.py`` tables: the SSH adapter
(proxy/ssh/server.py) feeds ``LoginMachine`` events (a new challenge, the prompts'
answers, the credential row with argon2's verdict, the commit's outcome) and does what
each answer says: show prompts, sleep, read the row, run argon2, commit, audit. Which
events are valid in which phase is the table ``TRANSITIONS``; anything else is a bug in
the caller and raises ``LoginStateError``.

Owns: the prompts and their instruction texts, the justification's re-prompts, the
order in which refusal reasons are decided and what the client may be told of each, the
per-connection failure count with its growing delay and its cut-off, the cross-
connection throttles' bookkeeping (``LoginThrottle``), the capacity refusals and the
plan of the session a successful login starts.

The constant-cost rule lives here: an answer whose justification passes always yields
exactly one ``NeedCredential`` (input that is no code at all asks for the id nothing
has), and only the ``credential`` event that follows may refuse it. So one row read and
one argon2 check happen whatever is wrong, and the answer does not tell a wrong person
from a wrong code from an unknown target.

Must never: do I/O, read the clock (``now`` is passed in, unix seconds), sleep (waits
are returned for the caller to do), or hold a secret longer than one attempt.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from proxy.core import answers as words
from proxy.core.credentials import Credential, UseDecision, check_use, parse_code
from proxy.core.credstate import MISMATCH
from proxy.core.fleetuse import (
    REFUSE,
    UNREACHABLE,
    SpendOutcome,
    ledger_refusal,
    refuse_message,
)
from proxy.core.policy import (
    check_justification,
    describe_rule,
    failure_delay,
    login_for,
    parse_username,
    session_deadline,
    source_allowed,
)
from proxy.core.preauth import kept_code_id, kept_text
from proxy.core.settings import IPNetwork, PolicyConfig, TargetConfig
from proxy.core.text import escape
from proxy.core.throttle import LoginThrottle

TITLE = "Break-glass access"
WELCOME = "All activity is recorded and every use raises an alert."
CODE_PROMPT = "Break-glass code for {person}: "
JUSTIFICATION_PROMPT = "Justification (ticket and reason): "
MAX_FAILURES = 3  # failed attempts before the connection is ended
MAX_JUSTIFICATION_TRIES = 3  # justifications per code before the attempt is one failure

Prompt = tuple[str, bool]  # (text, echo)


class LoginStateError(Exception):
    """An event the current phase does not accept: a bug in the caller, never input."""


class Phase(enum.Enum):
    ASKING = "asking"  # the code and justification prompts are out
    REASKING = "reasking"  # the justification prompt again; the code is kept
    CHECKING = "checking"  # waiting for the credential row and argon2's verdict
    SPENDING = "spending"  # waiting for the fleet's ledger to spend the code's use
    COMMITTING = "committing"  # waiting for the session start's commit
    ADMITTED = "admitted"  # authentication succeeds (a session, or a refusal it is told)
    CLOSED = "closed"  # too many failures: the connection is ended


_ANSWERED = frozenset({Phase.REASKING, Phase.CHECKING, Phase.ASKING, Phase.CLOSED})
# A new keyboard-interactive request (under any name) starts over: nothing typed before
# carries over, only the failure count does. An "error" (something broke in the caller)
# fails closed, as one failure.
_RESTART: Mapping[str, frozenset[Phase]] = {
    "challenge": frozenset({Phase.ASKING}),
    "error": frozenset({Phase.ASKING, Phase.CLOSED}),
}

TRANSITIONS: Mapping[Phase, Mapping[str, frozenset[Phase]]] = {
    Phase.ASKING: {**_RESTART, "answers": _ANSWERED},
    Phase.REASKING: {**_RESTART, "answers": _ANSWERED},
    Phase.CHECKING: {
        **_RESTART,
        "credential": frozenset(
            {Phase.SPENDING, Phase.COMMITTING, Phase.ADMITTED, Phase.ASKING, Phase.CLOSED}
        ),
    },
    Phase.SPENDING: {
        **_RESTART,
        "spent": frozenset({Phase.COMMITTING, Phase.ADMITTED, Phase.ASKING, Phase.CLOSED}),
        # The pending use could not be recorded: the audit trail cannot be written.
        "commit_failed": frozenset({Phase.ADMITTED}),
    },
    Phase.COMMITTING: {
        **_RESTART,
        "committed": frozenset({Phase.ADMITTED, Phase.ASKING, Phase.CLOSED}),
        "commit_failed": frozenset({Phase.ADMITTED}),
    },
    Phase.ADMITTED: _RESTART,
    # The connection is being ended; whatever still arrives is refused again.
    Phase.CLOSED: {
        "challenge": frozenset({Phase.CLOSED}),
        "answers": frozenset({Phase.CLOSED}),
        "error": frozenset({Phase.CLOSED}),
    },
}
"""Phase -> event -> the phases it may lead to (which one depends on the event's data)."""


# -- answers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Ask:
    """Show these prompts (a new challenge, or the justification again)."""

    instruction: str
    prompts: tuple[Prompt, ...]
    name: str = ""
    failure: Failure | None = None  # audited (not counted) before asking again


@dataclass(frozen=True)
class NeedCredential:
    """Wait ``wait`` seconds (the throttles), read the row of ``cred_id`` (``""`` reads as
    nothing found) and run argon2 on ``secret``, then send ``credential``."""

    cred_id: str
    secret: str = field(repr=False)
    wait: float = 0.0
    notice: str = ""  # what the client is told before the wait (why it is slowed)


@dataclass(frozen=True)
class Failure:
    """What one ``login_failed`` event says. Build it with ``Failure.of``: the text kept
    is what proxy.core.preauth allows (cut to the policy maximum, any code in it reduced
    to its public id), so no typed secret outlives the attempt, not even in the audit."""

    reason: str
    justification: str | None
    cred_id: str = ""
    # The typed secret verified against the row read: whoever typed it holds the code,
    # so enumeration protection no longer applies to what they are told. Such failures
    # are never summarised.
    verified: bool = False
    justification_length: int | None = None  # as typed, before the cut

    @classmethod
    def of(
        cls,
        reason: str,
        justification: str | None,
        max_bytes: int,
        cred_id: str = "",
        verified: bool = False,
    ) -> Failure:
        code_id = kept_code_id(cred_id) or ""
        if justification is None:
            return cls(reason, None, code_id, verified)
        kept, length = kept_text(justification, max_bytes)
        return cls(reason, kept, code_id, verified, length)


@dataclass(frozen=True)
class Refuse:
    """Audit ``failure``. Unless ``served``, authentication fails: wait ``wait`` seconds,
    then end the connection if ``disconnect``. When ``served`` (the proxy's state, not
    the engineer's input, is why), authentication succeeds so that every channel can say
    ``message``, and nothing is counted. ``message`` is what the client may be told; an
    empty one means the neutral answer."""

    failure: Failure
    message: str = ""
    wait: float = 0.0
    disconnect: bool = False
    served: bool = False


@dataclass(frozen=True)
class SessionPlan:
    """The session a login may start, once its start is committed."""

    person: str
    credential: Credential
    target: TargetConfig
    login: str
    justification: str
    started_at: float
    deadline: float
    # The fleet's ledger did not answer and ``fleet.unreachable: serve`` let the session
    # start on this node's copy of the code: it is flagged and alerted.
    ledger_unreachable: bool = False


@dataclass(frozen=True)
class Spend:
    """Spend one use of ``plan``'s code in the fleet's ledger (after recording the
    pending use locally), then send ``spent``."""

    plan: SessionPlan


@dataclass(frozen=True)
class Commit:
    """Commit the start of ``plan`` (the store counts the code's use under its lock),
    then send ``committed`` or ``commit_failed``."""

    plan: SessionPlan


@dataclass(frozen=True)
class Admit:
    """Authentication succeeds: ``plan``'s session starts."""

    plan: SessionPlan


Answer = Ask | NeedCredential | Refuse | Spend | Commit | Admit


# -- inputs that are not events --------------------------------------------------------


@dataclass(frozen=True)
class LoginRules:
    """The config a connection's logins are decided by (the one in force when it came)."""

    policy: PolicyConfig
    targets: Mapping[str, TargetConfig]
    min_free: int  # bytes the store and recordings need free for a session to start
    failure_delay_base: float = 1.0
    max_failures: int = MAX_FAILURES
    max_justification_tries: int = MAX_JUSTIFICATION_TRIES
    # With a fleet: ``fleet.unreachable`` ("serve" or "refuse"), and every use is spent
    # in the ledger before the session starts. None: a node on its own.
    unreachable: str | None = None


@dataclass(frozen=True)
class ProxyState:
    """The proxy's state when a login is checked (read by the caller)."""

    live_sessions: int
    free_bytes: int
    # From the config in force now, not the connection's: a reload that narrows the
    # allowed sources applies to logins already in progress.
    allowed_sources: tuple[IPNetwork, ...]


# -- the machine -----------------------------------------------------------------------


@dataclass
class _Attempt:
    """One code being tried: what was typed under one username."""

    username: str
    code: str = field(default="", repr=False)
    justification: str = ""
    tries: int = 0  # bad justifications so far
    cred_id: str = ""  # the public id of what was typed ("" when it is no code)


class LoginMachine:
    """The logins of one connection from ``source``."""

    def __init__(self, rules: LoginRules, throttle: LoginThrottle, source: str) -> None:
        self.rules = rules
        self.throttle = throttle
        self.source = source
        self.phase = Phase.ASKING
        self.failures = 0
        self._attempt: _Attempt | None = None
        self._plan: SessionPlan | None = None

    def _enter(self, event: str, phase: Phase) -> None:
        allowed = TRANSITIONS[self.phase].get(event)
        if allowed is None:
            raise LoginStateError(f"{event} is not expected while {self.phase.value}")
        if phase not in allowed:
            raise LoginStateError(f"{event} cannot lead from {self.phase.value} to {phase.value}")
        self.phase = phase

    def _expect(self, event: str) -> None:
        if event not in TRANSITIONS[self.phase]:
            raise LoginStateError(f"{event} is not expected while {self.phase.value}")

    # -- events --------------------------------------------------------------------------

    def challenge(self, username: str) -> Ask:
        """A keyboard-interactive request for ``username``: the code and the
        justification are asked for, whatever was typed before."""
        self._enter("challenge", Phase.CLOSED if self.phase is Phase.CLOSED else Phase.ASKING)
        self._attempt = None
        self._plan = None
        parsed = parse_username(username)
        person = parsed.person if parsed else escape(username[:64])
        prompts = ((CODE_PROMPT.format(person=person), False), (JUSTIFICATION_PROMPT, True))
        rule = words.justification_rule(self.rules.policy.justification)
        return Ask(f"{WELCOME} {rule}", prompts, name=TITLE)

    def answers(self, username: str, responses: Sequence[str], now: float) -> Answer:
        """The client's answers to the last ``Ask``: code and justification, or the
        justification alone when it was asked again under the same name."""
        self._expect("answers")
        pending = self._attempt if self.phase is Phase.REASKING else None
        if pending is not None and pending.username != username:
            pending = None
        if pending is not None and len(responses) == 1:
            attempt = pending
        elif pending is None and len(responses) == 2 and self.phase is not Phase.CLOSED:
            attempt = _Attempt(username, code=responses[0])
        else:
            return self._fail("answers", username, self._failure("bad_response", None), now)
        attempt.justification = responses[-1]
        self._attempt = attempt

        rule = self.rules.policy.justification
        problem = check_justification(attempt.justification, rule)
        if problem is not None:
            attempt.tries += 1
            failure = self._failure(problem, attempt.justification)
            if attempt.tries >= self.rules.max_justification_tries:
                return self._fail("answers", username, failure, now)
            self._enter("answers", Phase.REASKING)
            instruction = f"Justification rejected: it must have {describe_rule(rule)}."
            return Ask(instruction, ((JUSTIFICATION_PROMPT, True),), failure=failure)

        self._enter("answers", Phase.CHECKING)
        parsed = parse_username(username)
        person = parsed.person if parsed else None
        by_source, by_person = self.throttle.delays(self.source, person, now)
        wait = max(by_source, by_person)
        notice = words.slowed(wait, by_source >= by_person, person) if wait > 0 else ""
        # Input that is no code at all is looked up too (as an id nothing has), so it is
        # not the one answer that skips the store's read and argon2.
        attempt.cred_id, secret = parse_code(attempt.code) or ("", "")
        attempt.code = ""  # the secret goes to argon2 once and is not kept
        return NeedCredential(attempt.cred_id, secret, wait, notice)

    def credential(
        self,
        cred: Credential | None,
        verified: bool,
        state: ProxyState,
        now: float,
        *,
        tampered: bool = False,
    ) -> Refuse | Spend | Commit:
        """The row read for the last ``NeedCredential`` (None: no such id, or the store
        could not be read), whether argon2 verified the secret against it, and whether
        the row disagrees with its events in the chain (``proxy.core.credstate``): such
        a row is never trusted, whatever the secret."""
        self._expect("credential")
        attempt = self._attempt
        assert attempt is not None  # set by the answers that led to CHECKING
        username, justification, cred_id = attempt.username, attempt.justification, attempt.cred_id
        parsed = parse_username(username)
        target = self.rules.targets.get(parsed.target) if parsed else None
        login = login_for(parsed.login, target.login, target.logins) if parsed and target else None
        reason: str | None
        # An address outside the allowed networks is told so whatever was typed; the
        # check comes after the read and argon2 all the same (one cost for every answer).
        if not source_allowed(self.source, state.allowed_sources):
            reason = "source_not_allowed"
        elif parsed is None:
            reason = "bad_username"
        elif cred is None or not cred_id:
            reason = "unknown_code"
        elif tampered:
            reason = MISMATCH
        elif not verified:
            reason = "wrong_code"
        elif target is None:
            reason = "unknown_target"
        elif login is None:
            reason = "login_not_allowed"
        else:
            # What the commit would refuse (wrong person, revoked, expired, spent, target
            # not allowed) is refused here, from the row already read: such an answer
            # then costs what a wrong code costs instead of a transaction more
            # (benchmarks/login_timing.py). The commit checks again under its lock.
            early = check_use(cred, parsed.person, target.name, now)
            reason = None if early.ok else early.reason
        proven = verified and cred is not None and bool(cred_id) and not tampered
        if reason is not None or not (parsed and cred and target and login):
            failure = self._failure(reason or "denied", justification, cred_id, proven)
            message = words.refusal(
                failure.reason,
                username=username,
                parsed=parsed,
                cred=cred,
                verified=proven,
                targets=self.rules.targets,
                source=self.source,
                now=now,
            )
            return self._fail("credential", username, failure, now, message)

        refusal = self._capacity_refusal(state)
        if refusal is not None:
            # Not the engineer's fault: no throttling, no failure counted, and they are told.
            self._enter("credential", Phase.ADMITTED)
            reason, message = refusal
            failure = self._failure(reason, justification, cred_id, verified=True)
            return Refuse(failure, message, served=True)

        fleet = self.rules.unreachable is not None
        self._enter("credential", Phase.SPENDING if fleet else Phase.COMMITTING)
        policy = self.rules.policy
        self._plan = SessionPlan(
            person=parsed.person,
            credential=cred,
            target=target,
            login=login,
            justification=justification,
            started_at=now,
            deadline=session_deadline(
                now, policy.max_session, target.max_session, cred.max_session
            ),
        )
        return Spend(self._plan) if fleet else Commit(self._plan)

    def spent(self, outcome: SpendOutcome, now: float) -> Refuse | Commit:
        """What the fleet's ledger said to spending the use (proxy/core/fleetuse.py)."""
        self._expect("spent")
        plan, attempt = self._plan, self._attempt
        assert plan is not None  # both set by the credential that led to the Spend
        assert attempt is not None
        if outcome.kind == "spent":
            self._enter("spent", Phase.COMMITTING)
            return Commit(plan)
        if outcome.kind == "refused":
            # Another node took the last use, or revoked the code, or the ledger's clock
            # says its window is over: the engineer holds the code and is told which.
            failure = self._failure(
                outcome.reason, plan.justification, plan.credential.cred_id, verified=True
            )
            message = ledger_refusal(outcome.reason, plan.credential.max_uses)
            return self._fail("spent", attempt.username, failure, now, message)
        if self.rules.unreachable == REFUSE:
            # Not the engineer's fault: nothing counted, and they are told why.
            self._enter("spent", Phase.ADMITTED)
            failure = self._failure(
                UNREACHABLE, plan.justification, plan.credential.cred_id, verified=True
            )
            return Refuse(failure, refuse_message(outcome.detail), served=True)
        self._enter("spent", Phase.COMMITTING)
        self._plan = replace(plan, ledger_unreachable=True)
        return Commit(self._plan)

    def committed(self, decision: UseDecision, now: float) -> Refuse | Admit:
        """What the store said when it committed the session start under its lock."""
        self._expect("committed")
        plan, attempt = self._plan, self._attempt
        # Both set by the answers and the credential that led to the Commit.
        assert plan is not None
        assert attempt is not None
        if not decision.ok:
            failure = self._failure(
                decision.reason, plan.justification, plan.credential.cred_id, verified=True
            )
            message = words.refusal(
                decision.reason,
                username=attempt.username,
                parsed=parse_username(attempt.username),
                cred=plan.credential,
                verified=True,
                targets=self.rules.targets,
                source=self.source,
                now=now,
            )
            return self._fail("committed", attempt.username, failure, now, message)
        self._enter("committed", Phase.ADMITTED)
        return Admit(plan)

    def commit_failed(self) -> Refuse:
        """The store could not commit the session start (it cannot be written)."""
        self._expect("commit_failed")
        plan = self._plan
        assert plan is not None  # set by the Commit
        self._enter("commit_failed", Phase.ADMITTED)
        return Refuse(
            self._failure(
                "store_unavailable", plan.justification, plan.credential.cred_id, verified=True
            ),
            "the audit trail cannot be written, so break-glass access is refused; "
            "tell the proxy's operators",
            served=True,
        )

    def error(self, username: str, now: float) -> Refuse:
        """The caller failed unexpectedly while checking: fail closed, as one failure."""
        return self._fail("error", username, self._failure("internal_error", None), now)

    # -- helpers -------------------------------------------------------------------------

    def _failure(
        self,
        reason: str,
        justification: str | None,
        cred_id: str = "",
        verified: bool = False,
    ) -> Failure:
        limit = self.rules.policy.justification.max_bytes
        return Failure.of(reason, justification, limit, cred_id, verified)

    def _fail(
        self, event: str, username: str, failure: Failure, now: float, message: str = ""
    ) -> Refuse:
        """One failed attempt: counted for this connection and by the throttles."""
        self._expect(event)
        self.failures += 1
        closed = self.failures >= self.rules.max_failures
        self._enter(event, Phase.CLOSED if closed else Phase.ASKING)
        self._attempt = None
        self._plan = None
        parsed = parse_username(username)
        self.throttle.record(self.source, parsed.person if parsed else None, now)
        wait = failure_delay(self.failures, base=self.rules.failure_delay_base)
        return Refuse(failure, message, wait=wait, disconnect=closed)

    def _capacity_refusal(self, state: ProxyState) -> tuple[str, str] | None:
        """A reason to refuse that is the proxy's state, not the engineer's input."""
        limit = self.rules.policy.max_live_sessions
        if state.live_sessions >= limit:
            return (
                "too_many_sessions",
                f"the proxy is at its limit of {limit} live sessions; "
                "try again in a moment or tell the proxy's operators",
            )
        if state.free_bytes < self.rules.min_free:
            return (
                "disk_full",
                "the proxy's disk is almost full, so the session could not be recorded "
                "and break-glass access is refused; tell the proxy's operators",
            )
        return None
