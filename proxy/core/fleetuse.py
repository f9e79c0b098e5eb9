"""Spending a code's use in the fleet's ledger: what the ledger said, and what a login
does with it.

With a ``fleet:`` section a login that passed every local check spends one use in the
ledger (proxy/fleet/codes.py does the I/O) before its session starts. The ledger answers
``spent``, ``refused`` (with the rule that refused: revoked, expired, burnt, spent), or
nothing within the bound (``unreachable``); ``fleet.unreachable`` then decides: ``serve``
goes on on this node's copy of the code, flagged; ``refuse`` fails closed and says why.

Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SERVE = "serve"
REFUSE = "refuse"
UNREACHABLE = "ledger_unreachable"  # the login_failed reason under ``refuse``

# What the ledger's ``ledger_spend`` answers besides 'ok' / 'again': the rules it
# re-checked against its own clock, as check_use names them.
LEDGER_REFUSALS = frozenset({"revoked", "expired", "burnt", "spent"})


@dataclass(frozen=True)
class SpendOutcome:
    """What became of one attempt to spend a use in the ledger."""

    kind: Literal["spent", "refused", "unreachable"]
    reason: str = ""  # refused: the rule (LEDGER_REFUSALS)
    detail: str = ""  # unreachable: why (names the ledger, never a secret)

    @classmethod
    def of_answer(cls, answer: str) -> SpendOutcome:
        """The outcome of ``ledger_spend``'s answer. A row that disagrees with this
        node's verified copy ('mismatch') is trusted no more than a silent ledger."""
        if answer in ("ok", "again"):
            return cls("spent")
        if answer in LEDGER_REFUSALS:
            return cls("refused", answer)
        if answer == "mismatch":
            detail = "the ledger's row for this code differs from its origin's"
            return cls("unreachable", detail=detail)
        return cls("unreachable", detail=f"the ledger answered {answer[:40]!r}")


def refuse_message(detail: str) -> str:
    """What an engineer is told when ``fleet.unreachable: refuse`` fails a login."""
    return (
        "this proxy could not count the code's use in the fleet's ledger"
        f" ({detail}), and it is set to refuse codes it cannot count fleet-wide"
        " (fleet.unreachable: refuse): try another proxy of the fleet, or tell its operators"
    )


def ledger_refusal(reason: str, max_uses: int) -> str:
    """What an engineer holding the right code is told when the ledger refused its use
    (this node's copy may not know yet what another node did)."""
    if reason == "revoked":
        return "this code was revoked (the fleet's ledger says so)"
    if reason == "expired":
        return "this code expired unused (by the fleet ledger's clock)"
    if reason == "burnt":
        return "this code's window is over (by the fleet ledger's clock)"
    if reason == "spent":
        return f"this code has been used for all of its {max_uses} logins across the fleet"
    return ""
