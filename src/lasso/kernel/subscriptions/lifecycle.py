"""The stream lifecycle: states and the ``(state, fact) → (next state, rule)`` table.

Lifecycle (any other lifecycle fact is an :class:`IllegalMove`)::

    IDLE --start--> SUBSCRIBING --subscribed--> ACTIVE --upstream_lost(primary)--> SUBSCRIBING
                     |  ^   ^ subscribe_failed (exclude P, try the next)
          no_provider|  |retry (backoff or a WS connect)
                     v  |
                   DEGRADED                      any --close--> CLOSED (facts then ignored)
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

__all__ = [
    "LIFECYCLE_FACTS",
    "TRANSITIONS",
    "IllegalMove",
    "StreamState",
    "transition_table_markdown",
]


class StreamState(StrEnum):
    IDLE = "idle"
    SUBSCRIBING = "subscribing"
    ACTIVE = "active"
    DEGRADED = "degraded"
    CLOSED = "closed"


class IllegalMove(RuntimeError):
    """A lifecycle fact arrived in a state whose table row does not allow it (adapter bug)."""


_S = StreamState
TRANSITIONS: Mapping[tuple[StreamState, str], tuple[StreamState, str]] = MappingProxyType(
    {
        (_S.IDLE, "start"): (_S.SUBSCRIBING, "first client: pick a provider"),
        (_S.SUBSCRIBING, "subscribed"): (_S.ACTIVE, "primary set; catch up if a gap is open"),
        (_S.SUBSCRIBING, "subscribe_failed"): (_S.SUBSCRIBING, "exclude it, try the next"),
        (_S.SUBSCRIBING, "no_provider"): (_S.DEGRADED, "back off, retry on a timer or connect"),
        (_S.DEGRADED, "retry"): (_S.SUBSCRIBING, "try every provider again"),
        (_S.ACTIVE, "upstream_lost"): (_S.SUBSCRIBING, "primary lost: fail over, open a gap"),
        (_S.IDLE, "close"): (_S.CLOSED, "never started"),
        (_S.SUBSCRIBING, "close"): (_S.CLOSED, "last client left"),
        (_S.ACTIVE, "close"): (_S.CLOSED, "last client left"),
        (_S.DEGRADED, "close"): (_S.CLOSED, "last client left"),
    }
)
"""``(state, lifecycle fact) → (next state, rule)``; a missing row is an illegal move.

Data facts (heads, logs, transactions, backfills, markers) never change the state. An
``upstream_lost`` naming a provider other than the primary is stale and ignored, and every
fact is ignored once CLOSED (callbacks may race the teardown)."""

LIFECYCLE_FACTS = frozenset(fact for _, fact in TRANSITIONS)
"""The ``type`` tags of the facts that drive the table; every other fact is data."""


def transition_table_markdown() -> str:
    """Render :data:`TRANSITIONS` as a Markdown table for the docs."""
    lines = ["| state | fact | next state | rule |", "|---|---|---|---|"]
    for (state, fact), (new, rule) in TRANSITIONS.items():
        lines.append(f"| {state} | `{fact}` | {new} | {rule} |")
    return "\n".join(lines)
