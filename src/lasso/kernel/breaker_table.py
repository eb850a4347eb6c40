"""The circuit breaker's vocabulary: states, events, the transition table and the config.

Pure data and two pure functions: :func:`next_state` looks a move up in
:data:`TRANSITIONS` and :func:`transition_table_markdown` renders the table for
``docs/routing.md`` (a test keeps the doc's copy current). The state machine that walks
the table, and the rules of when each event fires, are
:class:`lasso.kernel.breaker.CircuitBreaker`; that module re-exports every name here, so
callers keep importing from :mod:`lasso.kernel.breaker`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from types import MappingProxyType

__all__ = [
    "TRANSITIONS",
    "BreakerConfig",
    "BreakerEvent",
    "BreakerState",
    "IllegalTransition",
    "Transition",
    "next_state",
    "transition_table_markdown",
]


class BreakerState(IntEnum):
    """Breaker states; the values are the ``lasso_circuit_breaker_state`` gauge values."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    def __str__(self) -> str:
        return self.name.lower()


class BreakerEvent(StrEnum):
    """Events the breaker feeds its table, after evaluating its counters.

    The values are the reasons published with each transition.
    """

    SUCCESS = "success"
    FAILURE = "failure"
    TRIP = "failure_threshold_exceeded"
    RECOVERY_DUE = "proactive_recovery"
    PROBE_RECOVERY = "probe_recovery"
    RECOVERED = "recovered"
    PROBE_FAILED = "reopen_due_to_failure"
    FORCE_OPEN = "manual_open"
    FORCE_CLOSE = "manual_close"


class IllegalTransition(RuntimeError):
    """An event arrived in a state whose table row does not allow it (a kernel bug)."""


_S = BreakerState
_E = BreakerEvent

TRANSITIONS: Mapping[tuple[BreakerState, BreakerEvent], tuple[BreakerState, str]] = (
    MappingProxyType(
        {
            (_S.CLOSED, _E.SUCCESS): (_S.CLOSED, "reset the consecutive failure count"),
            (_S.CLOSED, _E.FAILURE): (_S.CLOSED, "count a penalizing failure"),
            (_S.CLOSED, _E.TRIP): (_S.OPEN, "count reached the category threshold"),
            (_S.CLOSED, _E.FORCE_OPEN): (_S.OPEN, "manual open"),
            (_S.CLOSED, _E.FORCE_CLOSE): (_S.CLOSED, "manual close: reset counts"),
            (_S.OPEN, _E.SUCCESS): (_S.OPEN, "late success: ignored"),
            (_S.OPEN, _E.FAILURE): (_S.OPEN, "ignored; the deadline is not extended"),
            (_S.OPEN, _E.RECOVERY_DUE): (_S.HALF_OPEN, "recovery deadline passed"),
            (_S.OPEN, _E.PROBE_RECOVERY): (_S.HALF_OPEN, "health probes passed: early half-open"),
            (_S.OPEN, _E.FORCE_OPEN): (_S.OPEN, "manual open: new deadline"),
            (_S.OPEN, _E.FORCE_CLOSE): (_S.CLOSED, "manual close"),
            (_S.HALF_OPEN, _E.SUCCESS): (_S.HALF_OPEN, "probe success below threshold"),
            (_S.HALF_OPEN, _E.RECOVERED): (_S.CLOSED, "success threshold reached"),
            (_S.HALF_OPEN, _E.PROBE_FAILED): (_S.OPEN, "penalizing failure: reopen, backoff"),
            (_S.HALF_OPEN, _E.FORCE_OPEN): (_S.OPEN, "manual open"),
            (_S.HALF_OPEN, _E.FORCE_CLOSE): (_S.CLOSED, "manual close"),
        }
    )
)
"""``(state, event) → (next state, rule)``; a missing key is an illegal move."""


def next_state(state: BreakerState, event: BreakerEvent) -> BreakerState:
    """Look ``(state, event)`` up in :data:`TRANSITIONS`.

    Raises:
        IllegalTransition: the table has no such row.
    """
    try:
        return TRANSITIONS[state, event][0]
    except KeyError:
        raise IllegalTransition(f"{event.value!r} is illegal in state {state}") from None


def transition_table_markdown() -> str:
    """Render :data:`TRANSITIONS` as a Markdown table for the docs."""
    lines = ["| state | event | next state | rule |", "|---|---|---|---|"]
    for (state, event), (new, rule) in TRANSITIONS.items():
        lines.append(f"| {state} | `{event.value}` | {new} | {rule} |")
    return "\n".join(lines) + "\n"


def _frozen_map(value: Mapping[str, float]) -> Mapping[str, float]:
    return MappingProxyType(dict(value))


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """Breaker thresholds and timeouts (reference §4 and §13 defaults)."""

    failure_threshold: int = 5
    success_threshold: int = 2
    recovery_timeout_s: float = 30.0
    max_recovery_timeout_s: float = 600.0
    half_open_max_probes: int = 1
    category_thresholds: Mapping[str, int] = field(
        default_factory=lambda: MappingProxyType(
            {"server_error": 5, "network_error": 3, "timeout": 2, "auth_error": 3}
        )
    )
    category_recovery: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({"auth_error": 10.0})
    )

    def __post_init__(self) -> None:
        counts = [self.failure_threshold, self.success_threshold, self.half_open_max_probes]
        counts += self.category_thresholds.values()
        if any(n < 1 for n in counts):
            raise ValueError("breaker thresholds and probe limits must be at least 1")
        delays = [self.recovery_timeout_s, *self.category_recovery.values()]
        if any(not 0 <= d <= self.max_recovery_timeout_s for d in delays):
            raise ValueError("recovery timeouts must lie in [0, max_recovery_timeout_s]")
        # Copy caller-supplied dicts so the frozen config cannot change underneath us.
        object.__setattr__(self, "category_thresholds", _frozen_map(self.category_thresholds))
        object.__setattr__(self, "category_recovery", _frozen_map(self.category_recovery))

    @property
    def max_failure_threshold(self) -> int:
        """The largest threshold any category can need."""
        return max(self.failure_threshold, *self.category_thresholds.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """A change the caller should publish: from the last *reported* state to the new one.

    ``old == new`` only for OPEN → OPEN, when the call re-armed the deadline.
    """

    old: BreakerState
    new: BreakerState
    event: BreakerEvent
