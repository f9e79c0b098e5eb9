"""A model of the login rules (PRODUCT.md "Reaching a target", proxy/ssh/server.py) for
the property test of identity binding: given a script of attempts on one connection,
whose session must it end with? Pure; unit-tested in tests/unit/test_login_model.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hypothesis import strategies as st

MAX_FAILURES = 3  # failed checks before the proxy ends the connection
MAX_JUSTIFICATION_TRIES = 3  # tries per code before the attempt counts as one failure
PEOPLE = 2


@dataclass(frozen=True)
class Attempt:
    who: int  # index into the people; len(people) means an unparseable username
    code: str  # "own", "wrong" (own id, wrong secret), "other" (someone else's code)
    justification_ok: bool


attempts = st.lists(
    st.builds(
        Attempt,
        who=st.integers(0, PEOPLE),
        code=st.sampled_from(["own", "wrong", "other"]),
        justification_ok=st.booleans(),
    ),
    min_size=1,
    max_size=6,
)


def expected_person(script: Sequence[Attempt], people: Sequence[str]) -> str | None:
    """The person whose session the connection must end with, or None.

    The client answers a code+justification prompt with an attempt; asked for the
    justification again, it answers with the next attempt's justification if that
    attempt has the same name, else it starts over under the next name (the pending
    code is dropped). A code gets MAX_JUSTIFICATION_TRIES justifications; a failed
    check (or running out of tries) is one failure; MAX_FAILURES end the connection.
    """
    failures = 0
    i = 0
    while i < len(script) and failures < MAX_FAILURES:
        first = script[i]
        i += 1
        tries = 0
        justification_ok = first.justification_ok
        while True:
            if justification_ok:
                if first.who < len(people) and first.code == "own":
                    return people[first.who]
                failures += 1
                break
            tries += 1
            if tries >= MAX_JUSTIFICATION_TRIES:
                failures += 1
                break
            if i >= len(script) or script[i].who != first.who:
                break  # the client gives up, or starts over under another name
            justification_ok = script[i].justification_ok
            i += 1
    return None
