"""What the store keeps of unauthenticated text: codes lose their secret, text is cut."""

from __future__ import annotations

import secrets

import pytest

from proxy.core.credentials import generate_code
from proxy.core.login import Failure
from proxy.core.preauth import (
    MAX_CODE_ID,
    MAX_USERNAME,
    REDACTED,
    cut_utf8,
    kept_code_id,
    kept_text,
    redact_codes,
)


def a_code() -> tuple[str, str, str]:
    new = generate_code(secrets.token_bytes)
    return new.code, new.cred_id, new.secret


@pytest.mark.parametrize(
    "shape",
    [
        lambda c: c,
        lambda c: c.lower(),
        lambda c: c.replace("-", ""),
        lambda c: c.replace("-", " "),
        lambda c: f"INC-1 restart db, my code is {c} sorry",
        lambda c: c[:-4],  # cut short: still mostly the secret
        lambda c: c[:-1] + ("X" if c[-1] != "X" else "Y"),  # a typo
        # Without its "BG-" (the login accepts that), as printed, run together, lower.
        lambda c: c[3:],
        lambda c: c[3:].replace("-", ""),
        lambda c: f"code {c[3:].lower()} sorry",
        lambda c: c[3:-5],  # cut short
    ],
)
def test_every_shape_of_a_typed_code_loses_its_secret(shape: object) -> None:
    code, _, secret = a_code()
    text = shape(code)  # type: ignore[operator]
    kept = redact_codes(text)
    assert REDACTED in kept
    for i in range(0, len(secret) - 8):
        assert secret[i : i + 8] not in kept.upper().replace("-", "").replace(" ", "")


def test_the_public_id_of_a_valid_code_is_kept() -> None:
    code, cred_id, _ = a_code()
    assert redact_codes(f"x {code} y") == f"x BG-{cred_id}-{REDACTED} y"


@pytest.mark.parametrize(
    "text",
    [
        "INC-4411 BGP routing table flapping on the core router, clearing sessions",
        "bg job stuck, see BG-12 and INC-99",
        # Without "BG", only a code's shape: a UUID, a git hash, words, short runs.
        "see 123e4567-e89b-12d3-a456-426614174000 in the logs",
        "deploy 9fceb02d0ae598e95dc970b74767f19372d61af8 broke it",
        "reboot this node asap dear team",
        "restart-the-node-asap-dear-team",
        "",
        "é" * 30,
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_codes(text) == text


def test_text_is_cut_to_its_limit_with_its_full_length_kept() -> None:
    text = "INC-1 " + "é" * 100_000
    kept, length = kept_text(text, 2048)
    assert len(kept.encode()) <= 2048
    assert text.startswith(kept)
    assert length == len(text)
    assert cut_utf8("abc", 2) == "ab"
    assert cut_utf8("éé", 3) == "é"  # never half a character


def test_a_code_at_the_cut_is_redacted_before_it_is_cut() -> None:
    code, _, secret = a_code()
    text = "x" * 2030 + code  # the cut would leave part of the secret
    kept, _ = kept_text(text, 2048)
    assert secret[:6] not in kept.replace("-", "")


def test_a_long_hostile_answer_costs_linear_time() -> None:
    # "BG" runs that almost match, 256 KiB of them: a regex that backtracks would not
    # finish in any reasonable time.
    text = ("BG-" + "A" * 20 + " ") * 10_000
    assert REDACTED not in redact_codes(text)
    assert len(redact_codes("BG" * 100_000)) < 200_000


def test_code_ids_and_usernames_have_caps() -> None:
    assert kept_code_id("A" * 100) == "A" * MAX_CODE_ID
    assert kept_code_id("") is None
    assert MAX_USERNAME == 194


def test_the_login_machines_failures_keep_no_secret_and_no_more_than_the_policy() -> None:
    code, cred_id, secret = a_code()
    swapped = Failure.of("unknown_code", f"INC-1 {code}", 2048)
    assert swapped.justification == f"INC-1 BG-{cred_id}-{REDACTED}"
    assert secret not in repr(swapped)
    huge = Failure.of("justification_too_long", "x" * 200_000, 2048, cred_id="Z" * 40)
    assert huge.justification == "x" * 2048
    assert huge.justification_length == 200_000
    assert huge.cred_id == "Z" * MAX_CODE_ID
    assert Failure.of("bad_response", None, 2048).justification_length is None
