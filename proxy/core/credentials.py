"""Break-glass codes: their format, parsing, hashing, and the state machine of a credential.

A code looks like ``BG-7KQ2MX-ABCD-EFGH-JKMN-PQRS-TVWX-YZ12``: the prefix ``BG``, a public
6-character id (so one argon2 check decides a login: look the id up, verify that one
hash) and a 24-character secret (120 bits), both in Crockford base32, which has no
I/L/O/U so it survives being read aloud or copied from paper.

Owns: code generation and parsing, the argon2id ``CodeHasher``, ``Credential`` and the
rules that decide whether a code may be used now (``credential_state``, ``check_use``),
target glob lists and person-name validation.

Must never: do I/O or read the clock (time is passed in as ``now``, unix seconds; the
randomness source is passed in), put a secret or a hash into an exception message, or
raise on hostile input to ``parse_code``/``CodeHasher.verify``. argon2 CPU work (and
argon2's own salt generation) is the one allowed side effect.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher, Type, extract_parameters
from argon2.exceptions import Argon2Error

from proxy.core.text import escape

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
"""Crockford base32: 32 symbols, no I, L, O, U."""
PREFIX = "BG"
ID_LEN = 6
SECRET_LEN = 24
SECRET_BITS = SECRET_LEN * 5  # 120
GROUP = 4  # the secret is shown in groups of this many characters

MAX_CODE_INPUT = 200
"""``parse_code`` refuses longer input before doing any work (a real code is 37 chars)."""

_ALPHABET_SET = frozenset(ALPHABET)
# What a human types for what they read: Crockford decodes O as 0 and I/L as 1.
_CONFUSABLES = str.maketrans({"O": "0", "I": "1", "L": "1"})
# Separators a human may put anywhere (or a password manager may add): dropped.
_SEPARATORS = str.maketrans(dict.fromkeys(" \t\r\n\v\f-"))


@dataclass(frozen=True)
class NewCode:
    """A freshly generated code. ``code`` is shown once; only a hash is stored."""

    cred_id: str
    secret: str
    code: str

    def __repr__(self) -> str:
        # Keep the secret out of logs and tracebacks that print this object.
        return f"NewCode(cred_id={self.cred_id!r}, secret=<hidden>, code=<hidden>)"


def format_code(cred_id: str, secret: str) -> str:
    """``BG-<id>-<secret in groups of 4>``, e.g. ``BG-7KQ2MX-ABCD-EFGH-JKMN-PQRS-TVWX-YZ12``."""
    groups = [secret[i : i + GROUP] for i in range(0, len(secret), GROUP)]
    return "-".join([PREFIX, cred_id, *groups])


def generate_code(random_bytes: Callable[[int], bytes]) -> NewCode:
    """Make a new code from ``random_bytes`` (``secrets.token_bytes`` in production).

    Each character takes the low 5 bits of one random byte: 256 is a multiple of 32, so
    every character is exactly uniform (no modulo bias).
    """
    need = ID_LEN + SECRET_LEN
    raw = random_bytes(need)
    if len(raw) != need:
        raise ValueError(f"random source returned {len(raw)} bytes, expected {need}")
    chars = "".join(ALPHABET[b & 0x1F] for b in raw)
    cred_id, secret = chars[:ID_LEN], chars[ID_LEN:]
    return NewCode(cred_id=cred_id, secret=secret, code=format_code(cred_id, secret))


def parse_code(text: str) -> tuple[str, str] | None:
    """Return ``(cred_id, secret)`` in canonical upper case, or None if ``text`` is no code.

    Tolerant of typing: surrounding or embedded whitespace and dashes anywhere, any case,
    O read as 0 and I/L read as 1, the ``BG`` prefix left out. Strict about everything
    else: exactly 6 + 24 alphabet characters, after the prefix when there is one. Never
    raises; input over ``MAX_CODE_INPUT`` characters or with any non-ASCII character is
    refused before any other work (this also stops ``upper()`` tricks such as U+0131
    dotless i becoming "I").
    """
    if not isinstance(text, str) or len(text) > MAX_CODE_INPUT or not text.isascii():
        return None
    cleaned = text.translate(_SEPARATORS).upper()
    # The prefix may be left out: its length tells (an id may itself begin with "BG").
    if len(cleaned) == len(PREFIX) + ID_LEN + SECRET_LEN and cleaned.startswith(PREFIX):
        cleaned = cleaned[len(PREFIX) :]
    body = cleaned.translate(_CONFUSABLES)
    if len(body) != ID_LEN + SECRET_LEN or not _ALPHABET_SET.issuperset(body):
        return None
    return body[:ID_LEN], body[ID_LEN:]


def _password(cred_id: str, secret: str) -> bytes:
    # Hashing "id:secret" binds a secret to its id: a stored hash cannot be reused
    # under another id. surrogatepass: never raise on a hostile str, same bytes both ways.
    return f"{cred_id}:{secret}".encode("utf-8", "surrogatepass")


class CodeHasher:
    """argon2id hashing of codes, with the same cost for every verify outcome.

    ``verify`` costs exactly one argon2 computation whether the id is unknown (a dummy
    hash with the same parameters is checked), the secret is wrong, or it is right; the
    ``checks`` counter counts verifies so tests can prove it.
    """

    # OWASP's argon2id baseline (m=19 MiB, t=2, p=1): ~20 ms here. The memory-hard cost
    # exists to slow guessing of *human* passwords; a code's secret is 120 random bits,
    # so an offline guess is hopeless at any per-guess cost, and online guessing is
    # bounded by the throttles. RFC 9106's 64 MiB/t=3/p=4 took ~150 ms of each login
    # (the bulk of the proxy's login time, benchmarks/) and tied up both cores per try.
    # Stored hashes carry their own parameters, so codes issued before still verify.
    TIME_COST = 2
    MEMORY_COST = 19456  # KiB = 19 MiB
    PARALLELISM = 1
    HASH_LEN = 32
    SALT_LEN = 16

    def __init__(
        self,
        *,
        time_cost: int = TIME_COST,
        memory_cost: int = MEMORY_COST,
        parallelism: int = PARALLELISM,
    ) -> None:
        self._ph = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost,
            parallelism=parallelism,
            hash_len=self.HASH_LEN,
            salt_len=self.SALT_LEN,
            type=Type.ID,
        )
        # Made now, not on first use, so the first unknown-id login is not slower.
        self._dummy: str = self._ph.hash(_password("000000", "0" * SECRET_LEN))
        self.checks: int = 0

    def hash(self, cred_id: str, secret: str) -> str:
        """The encoded argon2id hash (``$argon2id$v=19$m=...``) of ``cred_id:secret``."""
        return str(self._ph.hash(_password(cred_id, secret)))

    def verify(self, encoded: str | None, cred_id: str, secret: str) -> bool:
        """True only if ``encoded`` is the hash of ``cred_id:secret``. Never raises.

        ``encoded`` is None for an unknown id; a malformed stored hash is treated the
        same way. Both then check the dummy hash so the time spent does not tell an
        unknown id from a wrong secret.
        """
        self.checks += 1
        target = encoded
        known = True
        if target is None or not _well_formed(target):
            target, known = self._dummy, False
        try:
            ok = bool(self._ph.verify(target, _password(cred_id, secret)))
        except (Argon2Error, ValueError, TypeError):
            # VerifyMismatchError, VerificationError, InvalidHashError (a ValueError),
            # UnsupportedParametersError: all mean "no".
            return False
        return ok and known

    def needs_rehash(self, encoded: str) -> bool:
        """True if ``encoded`` was made with other parameters (or is not a valid hash)."""
        try:
            return bool(self._ph.check_needs_rehash(encoded))
        except (Argon2Error, ValueError, TypeError):
            return True


def _well_formed(encoded: str) -> bool:
    try:
        extract_parameters(encoded)
    except (Argon2Error, ValueError, TypeError, IndexError):
        return False
    return True


@dataclass(frozen=True)
class Credential:
    """A stored break-glass credential (never the secret, only facts about it).

    Times are unix seconds. ``window`` is how long the code works after its first use;
    ``max_uses`` 0 means no cap inside the window; ``targets`` are case-sensitive
    fnmatch globs; ``max_session`` caps each session's length (None: no extra cap).
    """

    cred_id: str
    person: str
    issued_by: str
    issued_at: float
    valid_until: float
    window: float
    max_uses: int
    uses: int
    targets: tuple[str, ...]
    max_session: float | None
    activated_at: float | None
    revoked_at: float | None
    revoke_reason: str | None


STATES = ("revoked", "expired", "burnt", "spent", "active", "sealed")


def credential_state(c: Credential, now: float) -> str:
    """One of ``STATES``, checked in that order of precedence.

    - revoked: ``revoked_at`` is set
    - expired: never activated and ``now >= valid_until``
    - burnt:   activated and ``now >= activated_at + window``
    - spent:   ``max_uses`` > 0 and ``uses >= max_uses``
    - active:  activated and usable; sealed: not activated and usable.

    ``valid_until`` only limits activation: an activated code lives for its window even
    if that runs past ``valid_until``.
    """
    if c.revoked_at is not None:
        return "revoked"
    if c.activated_at is None and now >= c.valid_until:
        return "expired"
    if c.activated_at is not None and now >= c.activated_at + c.window:
        return "burnt"
    if c.max_uses > 0 and c.uses >= c.max_uses:
        return "spent"
    return "active" if c.activated_at is not None else "sealed"


@dataclass(frozen=True)
class UseDecision:
    ok: bool
    reason: str


USE_REASONS = (
    "ok",
    "unknown_code",
    "wrong_person",
    "revoked",
    "expired",
    "burnt",
    "spent",
    "target_not_allowed",
)


def check_use(c: Credential | None, person: str, target: str, now: float) -> UseDecision:
    """May ``person`` log in to ``target`` with credential ``c`` at ``now``?

    Call it only after ``CodeHasher.verify`` said yes (or with None when it said no /
    the id is unknown): this decides policy, not authenticity. Order: unknown_code,
    wrong_person, the state (revoked/expired/burnt/spent), then target_not_allowed.
    """
    if c is None:
        return UseDecision(False, "unknown_code")
    if c.person != person:
        return UseDecision(False, "wrong_person")
    state = credential_state(c, now)
    if state not in ("active", "sealed"):
        return UseDecision(False, state)
    if not target_allowed(c.targets, target):
        return UseDecision(False, "target_not_allowed")
    return UseDecision(True, "ok")


def parse_target_globs(text: str) -> tuple[str, ...]:
    """Parse ``--targets``: comma-separated fnmatch globs, e.g. ``"db*,web01"``.

    Empty text or ``"*"`` means every target: ``("*",)``. Whitespace around an item is
    dropped; an empty item, whitespace inside an item or a non-printable character is a
    ValueError. Duplicates are removed, order kept.
    """
    stripped = text.strip()
    if stripped in ("", "*"):
        return ("*",)
    globs: list[str] = []
    for raw in stripped.split(","):
        item = raw.strip()
        if not item:
            raise ValueError(f"empty item in target list {escape(text)!r}")
        if any(ch.isspace() for ch in item) or not item.isprintable():
            raise ValueError(f"bad target glob {escape(item)!r}: no spaces or control characters")
        if item not in globs:
            globs.append(item)
    return tuple(globs)


def target_allowed(globs: Iterable[str], target: str) -> bool:
    """True if ``target`` matches any glob (case-sensitive). An empty list allows nothing."""
    return any(fnmatch.fnmatchcase(target, g) for g in globs)


_PERSON_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def validate_person(name: str) -> bool:
    """True for ``[a-z0-9._-]{1,64}`` starting with a letter or digit.

    Only lower case is valid: callers lower-case what a human typed (``name.lower()``)
    before validating, so ``Alice`` and ``alice`` are one person.
    """
    return _PERSON_RE.fullmatch(name) is not None
