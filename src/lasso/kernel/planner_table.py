"""The attempt planner's phases and the ``(phase, fact) → rule`` table.

Lifecycle of one request (any pair missing from :data:`TRANSITIONS` is an
:class:`IllegalMove`)::

    READY --Dispatch--> WAITING --answer / error--> DONE
      ^                   |  ^
      | nothing in flight |  | a hedge Dispatch, or a failure with another attempt in flight
      +--- a failure -----+--+

Decisions by phase: READY dispatches the next candidate or fails; WAITING waits, hedges
when due, or cancels everything and fails at the deadline; DONE cancels the losers, then
repeats the terminal ``Answer`` or ``Fail``. The docs render the table
(``docs/routing.md``, checked by a test).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

__all__ = ["TRANSITIONS", "IllegalMove", "Phase", "transition_table_markdown"]


class Phase(StrEnum):
    READY = "ready"  # nothing in flight: the next decision dispatches or ends the request
    WAITING = "waiting"  # attempts in flight: wait, hedge, or give up at the deadline
    DONE = "done"  # answered or failed: losers are cancelled, late facts are discarded


class IllegalMove(RuntimeError):
    """A fact the planner cannot take in its phase, or about an unknown attempt (adapter bug)."""


_P = Phase
TRANSITIONS: Mapping[tuple[Phase, str], str] = MappingProxyType(
    {
        (_P.WAITING, "refused"): "not sent: its dispatch is given back; READY if none in flight",
        (_P.WAITING, "answered"): (
            "a result or the caller's error: DONE (answer); quota or capability: fail over; "
            "a provider failure: fail over when replay-safe, else DONE (indeterminate)"
        ),
        (_P.WAITING, "failed"): ("before dispatch: fail over; after: as a provider failure"),
        (_P.WAITING, "timed_out"): "as a provider failure after dispatch",
        (_P.WAITING, "cancelled"): "cancelled from outside: as a failure after dispatch",
        (_P.DONE, "answered"): "a loser's late answer: discarded (neither success nor failure)",
        (_P.DONE, "failed"): "a loser's late failure: discarded",
        (_P.DONE, "timed_out"): "a loser's late timeout: discarded",
        (_P.DONE, "cancelled"): "a loser's cancellation: discarded",
    }
)
"""``(phase, fact kind) → rule``; a missing row is an illegal move (in READY nothing is in
flight, so no fact about an attempt can arrive)."""


def transition_table_markdown() -> str:
    """Render :data:`TRANSITIONS` as a Markdown table for the docs."""
    lines = ["| phase | fact | rule |", "|---|---|---|"]
    for (phase, fact), rule in TRANSITIONS.items():
        lines.append(f"| {phase} | `{fact}` | {rule} |")
    return "\n".join(lines)
