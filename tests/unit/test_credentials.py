"""Tests for proxy.core.credentials: code format, parsing, hashing, state and use rules."""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections import Counter
from collections.abc import Callable

import pytest
from argon2 import PasswordHasher, extract_parameters

from proxy.core.credentials import (
    ALPHABET,
    ID_LEN,
    MAX_CODE_INPUT,
    SECRET_BITS,
    SECRET_LEN,
    STATES,
    USE_REASONS,
    CodeHasher,
    Credential,
    NewCode,
    UseDecision,
    check_use,
    credential_state,
    format_code,
    generate_code,
    parse_code,
    parse_target_globs,
    target_allowed,
    validate_person,
)

CHEAP = {"time_cost": 1, "memory_cost": 8, "parallelism": 1}
CODE_RE = re.compile(r"BG-[0-9A-HJKMNP-TV-Z]{6}(-[0-9A-HJKMNP-TV-Z]{4}){6}")
EXAMPLE = "BG-7KQ2MX-ABCD-EFGH-JKMN-PQRS-TVWX-YZ12"
EXAMPLE_PARTS = ("7KQ2MX", "ABCDEFGHJKMNPQRSTVWXYZ12")


def counting_source(start: int = 0) -> Callable[[int], bytes]:
    """Deterministic random source: consecutive byte values."""
    state = {"next": start}

    def source(n: int) -> bytes:
        first = state["next"]
        state["next"] = first + n
        return bytes((first + i) % 256 for i in range(n))

    return source


@pytest.fixture(scope="module")
def hasher() -> CodeHasher:
    return CodeHasher(**CHEAP)


# ---------------------------------------------------------------- alphabet and format


def test_alphabet_is_crockford() -> None:
    assert len(ALPHABET) == 32
    assert len(set(ALPHABET)) == 32
    assert not set("ILOU") & set(ALPHABET)
    assert "".join(sorted(ALPHABET)) == ALPHABET
    assert SECRET_BITS == SECRET_LEN * 5 == 120
    assert SECRET_BITS >= 100


def test_format_code_matches_the_documented_example() -> None:
    assert format_code(*EXAMPLE_PARTS) == EXAMPLE


def test_generate_code_is_deterministic_given_the_source() -> None:
    new = generate_code(counting_source())
    assert new == NewCode(
        cred_id="012345",
        secret="6789ABCDEFGHJKMNPQRSTVWX",
        code="BG-012345-6789-ABCD-EFGH-JKMN-PQRS-TVWX",
    )
    assert CODE_RE.fullmatch(new.code)
    assert len(new.code) == 2 + 1 + ID_LEN + 6 * 5


def test_generate_code_asks_for_exactly_thirty_bytes() -> None:
    asked: list[int] = []

    def source(n: int) -> bytes:
        asked.append(n)
        return bytes(n)

    new = generate_code(source)
    assert asked == [ID_LEN + SECRET_LEN]
    assert new.cred_id == "000000"
    assert new.secret == "0" * SECRET_LEN


def test_generate_code_has_no_modulo_bias() -> None:
    # Feed every byte value equally often: every character must come out equally often.
    source = counting_source()
    counts: Counter[str] = Counter()
    for _ in range(256):  # 256 codes * 30 bytes = 30 full cycles of 0..255
        new = generate_code(source)
        counts.update(new.cred_id + new.secret)
    assert set(counts) == set(ALPHABET)
    assert len(set(counts.values())) == 1, counts


def test_generate_code_uses_high_bytes_too() -> None:
    new = generate_code(lambda n: bytes([0xFF]) * n)
    assert new.cred_id == "ZZZZZZ"
    assert new.secret == "Z" * SECRET_LEN


@pytest.mark.parametrize("short", [0, 29, 31])
def test_generate_code_rejects_a_wrong_length_source(short: int) -> None:
    with pytest.raises(ValueError, match="expected 30"):
        generate_code(lambda n: bytes(short))


def test_real_codes_are_well_formed_and_distinct() -> None:
    codes = {generate_code(secrets.token_bytes).code for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert CODE_RE.fullmatch(code)
        parsed = parse_code(code)
        assert parsed is not None
        assert format_code(*parsed) == code


def test_new_code_repr_hides_the_secret() -> None:
    new = generate_code(counting_source())
    assert new.secret not in repr(new)
    assert new.cred_id in repr(new)


# ---------------------------------------------------------------- parse_code


@pytest.mark.parametrize(
    "typed",
    [
        EXAMPLE,
        EXAMPLE.lower(),
        "bg-7kq2mx-abcd-efgh-jkmn-pqrs-tvwx-yz12",
        "  " + EXAMPLE + "\n",
        "\t" + EXAMPLE + "\r\n",
        EXAMPLE.replace("-", ""),
        EXAMPLE.replace("-", " "),
        "BG 7KQ2MX ABCDEFGH JKMNPQRS TVWXYZ12",
        "B-G-7-K-Q-2-M-X-A-B-C-D-E-F-G-H-J-K-M-N-P-Q-R-S-T-V-W-X-Y-Z-1-2",
        "BG--7KQ2MX--ABCD---EFGH-JKMN-PQRS-TVWX-YZ12-",
        "-BG-7KQ2MX-ABCD-EFGH-JKMN-PQRS-TVWX-YZ12",
        "Bg-7Kq2Mx-AbCd-EfGh-JkMn-PqRs-TvWx-Yz12",
        "BG-7KQ2MX-ABCD-EFGH-JKMN-PQRS-TVWX-YZ\x0b12\x0c",
        EXAMPLE[3:],  # no prefix
        EXAMPLE[3:].lower().replace("-", " "),
        EXAMPLE[2:],
    ],
)
def test_parse_code_tolerates_typing(typed: str) -> None:
    assert parse_code(typed) == EXAMPLE_PARTS


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("BG-OOOOOO-OOOO-OOOO-OOOO-OOOO-OOOO-OOOO", ("000000", "0" * 24)),
        ("BG-ilIL11-0000-0000-0000-0000-0000-0000", ("111111", "0" * 24)),
        ("bg-o1lio0-abcd-efgh-jkmn-pqrs-tvwx-yz12", ("011100", "ABCDEFGHJKMNPQRSTVWXYZ12")),
    ],
)
def test_parse_code_maps_crockford_confusables(typed: str, expected: tuple[str, str]) -> None:
    assert parse_code(typed) == expected


def test_an_id_beginning_with_bg_is_read_with_or_without_the_prefix() -> None:
    parts = ("BG7KQ2", "ABCDEFGHJKMNPQRSTVWXYZ12")
    assert parse_code("BG-BG7KQ2-ABCD-EFGH-JKMN-PQRS-TVWX-YZ12") == parts
    assert parse_code("BG7KQ2-ABCD-EFGH-JKMN-PQRS-TVWX-YZ12") == parts


@pytest.mark.parametrize(
    "typed",
    [
        "",
        " ",
        "-",
        "BG",
        "BG-",
        "XG" + EXAMPLE[2:],
        "BH" + EXAMPLE[2:],
        "B" + EXAMPLE[2:],
        "GB" + EXAMPLE[2:],
        "BGBG" + EXAMPLE[2:],
        EXAMPLE[:-1],  # one char short
        EXAMPLE + "3",  # one char long
        EXAMPLE + "-ABCD",
        EXAMPLE.replace("YZ12", "YZU2"),  # U is not in the alphabet
        EXAMPLE.replace("YZ12", "YZ_2"),
        EXAMPLE.replace("YZ12", "YZ.2"),
        EXAMPLE.replace("-", "_"),
        EXAMPLE.replace("-", ":"),
        EXAMPLE.replace("-", "\x00"),
        EXAMPLE + "\x00",
        "\x00" + EXAMPLE,
        EXAMPLE.replace("-", "\x1c"),  # str.split() would treat this as whitespace
        EXAMPLE.replace("-", "\u00a0"),  # non-breaking space: non-ASCII
        EXAMPLE.replace("-", "\u2010"),  # Unicode hyphen
        EXAMPLE.replace("A", "\uff21"),  # fullwidth A
        EXAMPLE.replace("1", "\u0661"),  # Arabic-Indic one (a decimal digit)
        EXAMPLE.replace("J", "\u0131"),  # dotless i: upper() gives "I" -> would map to 1
        EXAMPLE.replace("BG", "\u0432g"),  # Cyrillic ve
        "bg-7kq2mx-abcd-efgh-jkmn-pqrs-tvwx-yz1\u00df",  # sharp s: upper() gives "SS"
        "\ufb00" + EXAMPLE,  # ligature ff: upper() gives "FF"
        EXAMPLE + "\ud800",  # lone surrogate
        EXAMPLE + "🎉",
        "BG-" + "7" * 30 + "\u202e",
        "BG-0000000000000000000000000000000000",
        "BG-7KQ2MX-ABCD-EFGH-JKMN-PQRS-TVWX-YZ12 BG-7KQ2MX-ABCD-EFGH-JKMN-PQRS-TVWX-YZ12",
    ],
)
def test_parse_code_refuses(typed: str) -> None:
    assert parse_code(typed) is None


def test_parse_code_length_cap() -> None:
    padded = EXAMPLE.center(MAX_CODE_INPUT)
    assert len(padded) == MAX_CODE_INPUT
    assert parse_code(padded) == EXAMPLE_PARTS
    assert parse_code(padded + " ") is None


@pytest.mark.parametrize(
    "hostile",
    [
        "A" * 10_000_000,
        " " * 10_000_000 + EXAMPLE,
        "-" * 10_000_000,
        "\x00" * 1_000_000,
        "\U0010ffff" * 1_000_000,
        "BG" + "0" * 5_000_000,
    ],
)
def test_parse_code_is_cheap_on_huge_input(hostile: str) -> None:
    assert parse_code(hostile) is None


def test_parse_code_never_raises_on_any_short_string() -> None:
    for cp in range(0, 0x110000, 97):
        for text in (chr(cp), f"BG{chr(cp)}", EXAMPLE + chr(cp), EXAMPLE[:20] + chr(cp)):
            result = parse_code(text)
            assert result is None or result == EXAMPLE_PARTS


def test_parse_code_rejects_non_str_without_raising() -> None:
    assert parse_code(EXAMPLE.encode()) is None  # type: ignore[arg-type]
    assert parse_code(None) is None  # type: ignore[arg-type]


# ---------------------------------------------------------------- CodeHasher


def test_hash_is_argon2id_with_the_configured_parameters(hasher: CodeHasher) -> None:
    encoded = hasher.hash(*EXAMPLE_PARTS)
    assert encoded.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert EXAMPLE_PARTS[1] not in encoded
    # Salted: two hashes of the same code differ, both verify.
    again = hasher.hash(*EXAMPLE_PARTS)
    assert again != encoded
    assert hasher.verify(again, *EXAMPLE_PARTS)


def test_verify_outcomes(hasher: CodeHasher) -> None:
    cred_id, secret = EXAMPLE_PARTS
    encoded = hasher.hash(cred_id, secret)
    assert hasher.verify(encoded, cred_id, secret) is True
    assert hasher.verify(encoded, cred_id, secret[:-1] + "3") is False
    assert hasher.verify(encoded, cred_id, "") is False
    # The hash binds the secret to its id: same secret under another id fails.
    assert hasher.verify(encoded, "000000", secret) is False
    assert hasher.verify(None, cred_id, secret) is False


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not a hash",
        "$argon2id$",
        "$argon2id$v=19$m=8,t=1,p=1$",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$!!!!",
        "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43,  # valid form, wrong hash
        "$2b$12$abcdefghijklmnopqrstuuABCDEFGHIJKLMNOPQRSTUVWXYZ01234",  # bcrypt
        "\x00",
        "\ud800",
        "$argon2id$v=19$m=8,t=1,p=1$\u00e9\u00e9$\u00e9",
    ],
)
def test_verify_never_raises_on_a_bad_stored_hash(hasher: CodeHasher, bad: str) -> None:
    assert hasher.verify(bad, *EXAMPLE_PARTS) is False


@pytest.mark.parametrize(
    ("cred_id", "secret"),
    [("\ud800", "x"), ("a", "\x00" * 1000), ("", ""), ("é", "🎉" * 100)],
)
def test_verify_never_raises_on_hostile_candidates(
    hasher: CodeHasher, cred_id: str, secret: str
) -> None:
    encoded = hasher.hash(cred_id, secret)
    assert hasher.verify(encoded, cred_id, secret) is True
    assert hasher.verify(encoded, *EXAMPLE_PARTS) is False
    assert hasher.verify(None, cred_id, secret) is False


@pytest.fixture
def argon2_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the encoded hash of every real argon2 verify call."""
    calls: list[str] = []
    original = PasswordHasher.verify

    def spy(self: PasswordHasher, encoded: str, password: str | bytes) -> bool:
        calls.append(encoded)
        return bool(original(self, encoded, password))

    monkeypatch.setattr(PasswordHasher, "verify", spy)
    return calls


def test_every_outcome_costs_exactly_one_argon2_check(
    hasher: CodeHasher, argon2_calls: list[str]
) -> None:
    cred_id, secret = EXAMPLE_PARTS
    encoded = hasher.hash(cred_id, secret)
    own_params = extract_parameters(encoded)
    cases: list[tuple[str | None, str]] = [
        (encoded, secret),  # right secret
        (encoded, "0" * SECRET_LEN),  # wrong secret
        (None, secret),  # unknown id
        ("garbage", secret),  # corrupt stored hash
    ]
    for stored, candidate in cases:
        before_checks, before_calls = hasher.checks, len(argon2_calls)
        hasher.verify(stored, cred_id, candidate)
        assert hasher.checks == before_checks + 1
        assert len(argon2_calls) == before_calls + 1, stored
        # ...and that check uses the same parameters as a real hash, so it costs the same.
        assert extract_parameters(argon2_calls[-1]) == own_params


def test_checks_counter_counts_each_verify(hasher: CodeHasher) -> None:
    fresh = CodeHasher(**CHEAP)
    assert fresh.checks == 0
    encoded = fresh.hash(*EXAMPLE_PARTS)
    assert fresh.checks == 0  # hashing is not a check
    fresh.verify(encoded, *EXAMPLE_PARTS)
    fresh.verify(None, *EXAMPLE_PARTS)
    fresh.verify("junk", *EXAMPLE_PARTS)
    assert fresh.checks == 3


def test_unknown_id_with_the_dummy_code_is_still_refused() -> None:
    fresh = CodeHasher(**CHEAP)
    assert fresh.verify(None, "000000", "0" * SECRET_LEN) is False


def test_needs_rehash(hasher: CodeHasher) -> None:
    encoded = hasher.hash(*EXAMPLE_PARTS)
    assert hasher.needs_rehash(encoded) is False
    stronger = CodeHasher(time_cost=2, memory_cost=16, parallelism=1)
    assert stronger.needs_rehash(encoded) is True
    assert hasher.needs_rehash("garbage") is True


def test_production_parameters_and_constant_cost() -> None:
    prod = CodeHasher()
    assert (prod.TIME_COST, prod.MEMORY_COST, prod.PARALLELISM) == (2, 19456, 1)
    cred_id, secret = EXAMPLE_PARTS
    encoded = prod.hash(cred_id, secret)
    assert encoded.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert prod.verify(encoded, cred_id, secret) is True

    # Constant cost is proven by counting argon2 checks (tests elsewhere in this file);
    # timings are measured by benchmarks, never asserted in tests.


# ---------------------------------------------------------------- states

T0 = 1_700_000_000.0
DAY = 86_400.0
HOUR = 3_600.0


def cred(**changes: object) -> Credential:
    base = Credential(
        cred_id="7KQ2MX",
        person="alice",
        issued_by="root",
        issued_at=T0,
        valid_until=T0 + 90 * DAY,
        window=4 * HOUR,
        max_uses=0,
        uses=0,
        targets=("*",),
        max_session=None,
        activated_at=None,
        revoked_at=None,
        revoke_reason=None,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


ACT = T0 + 10 * DAY  # activation time used below


@pytest.mark.parametrize(
    ("c", "now", "state"),
    [
        (cred(), T0, "sealed"),
        (cred(), T0 + 90 * DAY - 0.001, "sealed"),
        (cred(), T0 + 90 * DAY, "expired"),
        (cred(), T0 + 365 * DAY, "expired"),
        (cred(activated_at=ACT, uses=1), ACT, "active"),
        (cred(activated_at=ACT, uses=1), ACT + 4 * HOUR - 0.001, "active"),
        (cred(activated_at=ACT, uses=1), ACT + 4 * HOUR, "burnt"),
        (cred(activated_at=ACT, uses=1), ACT + 30 * DAY, "burnt"),
        # Activated just before valid_until: the window still runs past it.
        (cred(activated_at=T0 + 90 * DAY - 1, uses=1), T0 + 90 * DAY + HOUR, "active"),
        (cred(activated_at=T0 + 90 * DAY - 1, uses=1), T0 + 90 * DAY - 1 + 4 * HOUR, "burnt"),
        # Use caps.
        (cred(activated_at=ACT, uses=2, max_uses=3), ACT + 1, "active"),
        (cred(activated_at=ACT, uses=3, max_uses=3), ACT + 1, "spent"),
        (cred(activated_at=ACT, uses=4, max_uses=3), ACT + 1, "spent"),
        (cred(activated_at=ACT, uses=1, max_uses=1), ACT, "spent"),
        (cred(activated_at=ACT, uses=10**6, max_uses=0), ACT + 1, "active"),  # 0 = no cap
        # Revocation (any time, any other state).
        (cred(revoked_at=T0 + 1, revoke_reason="rotated"), T0 + 2, "revoked"),
        (cred(revoked_at=T0 + 1), T0 + 365 * DAY, "revoked"),  # beats expired
        (cred(revoked_at=ACT + 1, activated_at=ACT), ACT + 30 * DAY, "revoked"),  # beats burnt
        (cred(revoked_at=ACT + 1, activated_at=ACT, uses=1, max_uses=1), ACT + 2, "revoked"),
        # Precedence among the others.
        (cred(uses=5, max_uses=1), T0 + 90 * DAY, "expired"),  # expired beats spent
        (cred(activated_at=ACT, uses=5, max_uses=1), ACT + 4 * HOUR, "burnt"),  # burnt > spent
        (cred(uses=1, max_uses=1), T0, "spent"),  # spent beats sealed
        (cred(window=0.0, activated_at=ACT), ACT, "burnt"),
    ],
)
def test_credential_state(c: Credential, now: float, state: str) -> None:
    assert credential_state(c, now) == state


def test_every_state_is_reachable() -> None:
    seen = {
        credential_state(cred(), T0),
        credential_state(cred(), T0 + 100 * DAY),
        credential_state(cred(activated_at=T0), T0),
        credential_state(cred(activated_at=T0), T0 + DAY),
        credential_state(cred(activated_at=T0, uses=1, max_uses=1), T0),
        credential_state(cred(revoked_at=T0), T0),
    }
    assert seen == set(STATES)


# ---------------------------------------------------------------- check_use


@pytest.mark.parametrize(
    ("c", "person", "target", "now", "reason"),
    [
        (None, "alice", "db1", T0, "unknown_code"),
        (cred(), "alice", "db1", T0, "ok"),
        (cred(activated_at=ACT, uses=1), "alice", "db1", ACT + 1, "ok"),
        (cred(), "bob", "db1", T0, "wrong_person"),
        (cred(), "Alice", "db1", T0, "wrong_person"),  # names compare exactly
        (cred(revoked_at=T0), "bob", "nope", T0, "wrong_person"),  # person before state
        (cred(revoked_at=T0), "alice", "db1", T0, "revoked"),
        (cred(), "alice", "db1", T0 + 90 * DAY, "expired"),
        (cred(activated_at=ACT), "alice", "db1", ACT + 4 * HOUR, "burnt"),
        (cred(activated_at=ACT, uses=2, max_uses=2), "alice", "db1", ACT + 1, "spent"),
        (cred(targets=("db*",)), "alice", "web01", T0, "target_not_allowed"),
        (cred(targets=("db*",)), "alice", "DB1", T0, "target_not_allowed"),
        (cred(targets=()), "alice", "db1", T0, "target_not_allowed"),
        (cred(targets=("db*", "web01")), "alice", "web01", T0, "ok"),
        (cred(targets=("db*",), revoked_at=T0), "alice", "web01", T0, "revoked"),  # state first
        (cred(targets=("db*",)), "alice", "db1", T0 + 90 * DAY, "expired"),
    ],
)
def test_check_use(c: Credential | None, person: str, target: str, now: float, reason: str) -> None:
    decision = check_use(c, person, target, now)
    assert decision == UseDecision(ok=reason == "ok", reason=reason)
    assert decision.reason in USE_REASONS


# ---------------------------------------------------------------- target globs


@pytest.mark.parametrize(
    ("text", "globs"),
    [
        ("db*,web01", ("db*", "web01")),
        ("db*, web01", ("db*", "web01")),
        ("  db*  ,\tweb01 ", ("db*", "web01")),
        ("", ("*",)),
        ("   ", ("*",)),
        ("*", ("*",)),
        (" * ", ("*",)),
        ("web01", ("web01",)),
        ("db*,db*,web01,db*", ("db*", "web01")),
        ("db[0-9],cache-?", ("db[0-9]", "cache-?")),
        ("*,db1", ("*", "db1")),
    ],
)
def test_parse_target_globs(text: str, globs: tuple[str, ...]) -> None:
    assert parse_target_globs(text) == globs


@pytest.mark.parametrize(
    "text",
    [
        ",",
        "db*,",
        ",db*",
        "db*,,web01",
        "db*, ,web01",
        "db 01",
        "db*,web 01",
        "db\x1b,web",
        "a\u202eb",
    ],
)
def test_parse_target_globs_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="target"):
        parse_target_globs(text)


def test_parse_target_globs_error_is_escaped() -> None:
    with pytest.raises(ValueError, match=re.escape("\\x1b")) as info:
        parse_target_globs("ok,bad\x1bglob")
    assert "\x1b" not in str(info.value)


@pytest.mark.parametrize(
    ("globs", "target", "allowed"),
    [
        (("*",), "anything", True),
        (("*",), "", True),
        (("db*",), "db", True),
        (("db*",), "db01", True),
        (("db*",), "DB01", False),
        (("db*",), "xdb01", False),
        (("web01",), "web01", True),
        (("web01",), "web011", False),
        (("web01",), "Web01", False),
        (("db?",), "db1", True),
        (("db?",), "db12", False),
        (("db[12]",), "db2", True),
        (("db[12]",), "db3", False),
        (("db*", "web01"), "web01", True),
        (("db*", "web01"), "cache", False),
        ((), "db01", False),
    ],
)
def test_target_allowed(globs: tuple[str, ...], target: str, allowed: bool) -> None:
    assert target_allowed(globs, target) is allowed


# ---------------------------------------------------------------- person names


@pytest.mark.parametrize(
    "name", ["alice", "a", "0", "bob.smith", "j_doe", "ops-1", "a" * 64, "9lives", "a..b", "x-"]
)
def test_valid_person_names(name: str) -> None:
    assert validate_person(name) is True


@pytest.mark.parametrize(
    "name",
    [
        "",
        "a" * 65,
        "Alice",
        ".alice",
        "-alice",
        "_alice",
        "alice\n",
        "ali ce",
        "alice@example",
        "al/ice",
        "álice",
        "alice\x00",
        "\uff41lice",  # fullwidth a
        "\u0430lice",  # Cyrillic a
    ],
)
def test_invalid_person_names(name: str) -> None:
    assert validate_person(name) is False
