"""A client and a credential store around proxy.core.login's machine, in memory.

``drive`` plays a script of answers against a ``LoginMachine`` the way
tests/integration/inproc.py's ``ScriptedClient`` plays it against the real proxy, and
``Codes`` does what the proxy's adapter (proxy/ssh/server.py) does around it: one read
of the code from the store, one check of the secret, and the store's commit of the use.
The store is the real in-memory one (proxy/store/memory.py: the row checked against its
chain, the use re-checked and counted by the rule every store shares); only argon2 is
stood in for, by a plain comparison, and reads and checks are counted. The unit tests
use both to drive the machine; the identity property test uses them to say whose
session a script must end with, so the rules have one home (the machine and the store)
and no second copy.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from proxy.config.model import PolicyConfig, TargetConfig, all_sources
from proxy.core import events
from proxy.core.credentials import Credential, format_code
from proxy.core.login import (
    Admit,
    Answer,
    Ask,
    Commit,
    LoginMachine,
    LoginRules,
    NeedCredential,
    ProxyState,
    Refuse,
    Spend,
)
from proxy.core.throttle import FailureCounter, LoginThrottle, ThrottleRule
from proxy.store.base import NewEvent
from proxy.store.memory import MemoryStore

T = TypeVar("T")

NOW = 1_800_000_000.0
ROOMY = ProxyState(live_sessions=0, free_bytes=1 << 40, allowed_sources=all_sources())
THROTTLE_RULE = ThrottleRule(count=5, window=600.0)


def target(name: str, login: str = "root", logins: tuple[str, ...] = ()) -> TargetConfig:
    return TargetConfig(
        name=name,
        host="127.0.0.1",
        login=login,
        logins=logins,
        identity_file=Path("/nonexistent"),
        host_keys=("ssh-ed25519 AAAA",),
    )


TARGETS: Mapping[str, TargetConfig] = types.MappingProxyType(
    {"db01": target("db01", logins=("root", "postgres")), "web01": target("web01")}
)


def rules(
    policy: PolicyConfig | None = None,
    targets: Mapping[str, TargetConfig] = TARGETS,
    min_free: int = 1 << 20,
    **limits: float,
) -> LoginRules:
    return LoginRules(
        policy=policy or PolicyConfig(),
        targets=targets,
        min_free=min_free,
        **limits,  # type: ignore[arg-type]
    )


def throttle(rule: ThrottleRule = THROTTLE_RULE) -> LoginThrottle:
    return LoginThrottle(FailureCounter(rule), FailureCounter(rule))


def machine(
    login_rules: LoginRules | None = None,
    login_throttle: LoginThrottle | None = None,
    source: str = "127.0.0.1",
) -> LoginMachine:
    return LoginMachine(login_rules or rules(), login_throttle or throttle(), source)


def credential(cred_id: str, person: str, **changes: object) -> Credential:
    base = Credential(
        cred_id=cred_id,
        person=person,
        issued_by="test",
        issued_at=NOW - 60,
        valid_until=NOW + 86400,
        window=4 * 3600.0,
        max_uses=0,
        uses=0,
        targets=("*",),
        max_session=None,
        activated_at=None,
        revoked_at=None,
        revoke_reason=None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def at_once(call: Coroutine[Any, Any, T]) -> T:
    """Run an in-memory store call to its end here: it does no I/O, and in this
    single-threaded simulation its one lock is always free, so it never waits (if it
    did, this fails rather than hang). The machine is driven synchronously, as the
    property tests need."""
    try:
        call.send(None)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    call.close()
    raise AssertionError("an in-memory store call waited")


def _hash(secret: str) -> str:
    """What stands in for the argon2 hash of ``secret``."""
    return f"plain:{secret}"


@dataclass
class Codes:
    """The codes in an in-memory store, and what the adapter does with them."""

    store: MemoryStore = field(default_factory=MemoryStore)
    reads: int = 0
    checks: int = 0
    commits: int = 0

    def add(self, cred: Credential, secret: str) -> str:
        """Issue ``cred`` (in whatever state it is) with ``secret``; the code to type."""
        issued = events.CredIssued(person=cred.person, credential_id=cred.cred_id)
        at_once(self.store.issue_credential(cred, _hash(secret), NewEvent.of(issued, NOW)))
        return format_code(cred.cred_id, secret)

    def row(self, cred_id: str) -> Credential:
        found = at_once(self.store.get_credential(cred_id))
        assert found is not None, cred_id
        return found.cred

    def answer(
        self, m: LoginMachine, need: NeedCredential, state: ProxyState = ROOMY, now: float = NOW
    ) -> Refuse | Spend | Commit:
        """What the adapter does for a NeedCredential: one read, one check."""
        self.reads += 1
        found = at_once(self.store.get_credential(need.cred_id))
        self.checks += 1
        verified = found is not None and found.hash == _hash(need.secret)
        tampered = found is not None and found.mismatch is not None
        return m.credential(found.cred if found else None, verified, state, now, tampered=tampered)

    def commit(self, m: LoginMachine, step: Commit, now: float = NOW) -> Refuse | Admit:
        """The store's commit: the use re-checked and counted in one transaction."""
        plan = step.plan
        self.commits += 1
        start = events.SessionStart(
            plan.person,
            plan.credential.cred_id,
            "127.0.0.1",
            "SSH-2.0-loginsim",
            plan.target.name,
            plan.login,
            plan.justification,
            plan.deadline,
        )
        decision = at_once(
            self.store.start_session(
                plan.credential.cred_id,
                plan.person,
                plan.target.name,
                now,
                NewEvent.of(start, now, f"sim{self.commits}"),
            )
        )
        return m.committed(decision, now)


@dataclass(frozen=True)
class Step:
    """One answer, as tests/integration/inproc.py's Step: a code of None answers with
    the justification only, whatever was asked."""

    username: str
    code: str | None
    justification: str


@dataclass
class Outcome:
    person: str | None = None  # whose session started
    answers: list[Answer] = field(default_factory=list)  # every answer of the machine
    challenges: list[tuple[str, int]] = field(default_factory=list)  # (username, prompts)
    refusals: list[Refuse] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [r.failure.reason for r in self.refusals] + [
            a.failure.reason for a in self.answers if isinstance(a, Ask) and a.failure
        ]


def drive(
    m: LoginMachine,
    steps: Sequence[Step],
    codes: Codes,
    *,
    state: ProxyState = ROOMY,
    now: float = NOW,
) -> Outcome:
    """Play ``steps`` as ScriptedClient does: each keyboard-interactive request is under
    the next step's name; a code+justification challenge takes the next step; asked for
    the justification again, the next step answers it if its name is the one in force,
    else the client starts over under that name; out of steps, it gives up."""
    out = Outcome()
    i = 0
    while i < len(steps):
        username = steps[i].username
        answer: Answer = m.challenge(username)
        while isinstance(answer, Ask):
            out.answers.append(answer)
            out.challenges.append((username, len(answer.prompts)))
            if i >= len(steps):
                return out  # gives up
            step = steps[i]
            if len(answer.prompts) == 1 and step.username != username:
                break  # starts over under the next name
            i += 1
            if len(answer.prompts) == 2 and step.code is not None:
                responses = [step.code, step.justification]
            else:
                responses = [step.justification]
            answer = m.answers(username, responses, now)
        if isinstance(answer, Ask):
            continue
        result = _settle(m, answer, codes, state, now, out)
        if isinstance(result, Admit):
            out.person = result.plan.person
            return out
        if result is None or result.served or result.disconnect:
            return out
    return out


def _settle(
    m: LoginMachine,
    answer: Answer,
    codes: Codes,
    state: ProxyState,
    now: float,
    out: Outcome,
) -> Refuse | Admit | None:
    """Follow the machine's answers to an attempt's end."""
    while True:
        out.answers.append(answer)
        if isinstance(answer, NeedCredential):
            answer = codes.answer(m, answer, state, now)
        elif isinstance(answer, Commit):
            answer = codes.commit(m, answer, now)
        elif isinstance(answer, Refuse):
            out.refusals.append(answer)
            return answer
        elif isinstance(answer, Admit):
            return answer
        else:
            return None
