"""The oracle of the identity-binding property test (tests/integration/login_model.py):
if it were wrong, the property test would pass or fail for the wrong reasons."""

from __future__ import annotations

import pytest

from tests.integration.login_model import Attempt, expected_person

PEOPLE = ["alice", "bob"]
BAD_NAME = len(PEOPLE)


def a(who: int, code: str = "own", ok: bool = True) -> Attempt:
    return Attempt(who=who, code=code, justification_ok=ok)


@pytest.mark.parametrize(
    ("script", "person"),
    [
        ([a(0)], "alice"),
        ([a(1, "other")], None),
        ([a(0, "wrong"), a(1)], "bob"),  # fail as one, succeed as another
        ([a(0, "wrong"), a(1, "wrong"), a(0, "other"), a(1)], None),  # cut after 3
        ([a(0, ok=False), a(0, "wrong", ok=True)], "alice"),  # the first code is kept
        ([a(0, "wrong", ok=False), a(0, "own", ok=True)], None),  # ...even a wrong one
        ([a(0, ok=False), a(1, "wrong", ok=True)], None),  # a new name drops the code
        ([a(0, ok=False), a(1, ok=True)], "bob"),  # and is asked for its own
        ([a(0, ok=False)] * 3 + [a(0)], "alice"),  # 3 bad tries = 1 failure, then in
        ([a(0, ok=False)] * 9 + [a(0)], None),  # 3 x 3 bad tries = 3 failures
        ([a(BAD_NAME)], None),
        ([a(BAD_NAME, ok=False), a(BAD_NAME)], None),
        ([a(0, ok=False)], None),  # gives up when asked again
    ],
)
def test_expected_person(script: list[Attempt], person: str | None) -> None:
    assert expected_person(script, PEOPLE) == person
