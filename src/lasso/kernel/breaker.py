"""Circuit breaker: one per (provider, transport), as an enum plus a transition table.

Rules (reference §4, with the per-node decisions of :mod:`lasso.kernel.classify`):

* CLOSED admits everything. Each penalizing failure adds to a *consecutive* count and any
  success resets it. When the count reaches the threshold of the **current** failure's
  category (``category_thresholds``, else ``failure_threshold``) the breaker trips OPEN.
* OPEN rejects until its recovery deadline ``now + delay + jitter`` (jitter uniform in
  ``[0, delay/20)``). Failures while open are ignored and never extend the deadline; a late
  success (from a call admitted before the trip) is ignored too.
* Once the deadline passes, the breaker *is* HALF_OPEN: :meth:`CircuitBreaker.state`
  reports it at once ("proactive recovery"), and the next call that mutates the breaker
  materializes it. HALF_OPEN admits at most ``half_open_max_probes`` concurrent probes.
* In HALF_OPEN, ``success_threshold`` successes close the circuit and reset every count;
  any penalizing failure reopens it with backoff ``base × 2^min(reopens, 4)``, capped at
  ``max_recovery_timeout_s`` (30 → 60 → 120 → 240 → 480 s with the default 30 s base,
  the documented value of reference §14 item 2; the reference's code used 60 s).
* **Probe-assisted recovery** (beyond the reference, like eRPC's and dshackle's active
  health checks). An open for a *health* reason (a trip or reopen by a penalizing
  category other than ``auth_error``, without a retry-after) may end early: the health
  prober probes the open circuit and reports each answer with
  :meth:`CircuitBreaker.on_probe_success` / :meth:`CircuitBreaker.on_probe_failure`.
  ``success_threshold`` successes in a row move OPEN → HALF_OPEN with the event
  ``probe_recovery`` (:meth:`CircuitBreaker.probe_recovered`); a failed probe only resets
  that streak: it never counts as a failure nor moves the deadline. Quota opens (a
  retry-after), manual and misconfiguration opens (``force_open``) and ``auth_error``
  opens are never probe-assisted.
* **Probation and anti-flap.** A circuit re-admitted by probes is *on probation* until
  it serves a real success while CLOSED (the prober never reports successes to a closed
  breaker, so those come from client traffic). A penalizing open while on probation (the
  half-open trial failed, or real traffic tripped it again right after a probe-assisted
  close) is a failed trial: it counts as a reopen for the backoff (closing on probation
  keeps ``reopens``) and turns probe assistance off until the circuit next closes. So a
  provider that answers ``eth_blockNumber`` but fails real calls cannot flap faster than
  the timed backoff schedule.
* A failure carrying a retry-after uses it as the delay (capped). A manual open with a
  retry-after is a *quota* open: one success closes it (the reference's rate-limit open;
  rate limits themselves never penalize, so this is the router's explicit choice).
* Manual open and close are legal from every state.
* Non-penalizing categories never count: :meth:`CircuitBreaker.on_failure` treats them as
  :meth:`CircuitBreaker.on_neutral`, which only releases a half-open probe slot.

Mutating calls decide synchronously and return a :class:`Transition` (or ``None``) for
the adapter to log, publish and export as a metric afterwards. A transition runs from the
last *reported* state, so none is lost: :meth:`CircuitBreaker.admit` returns a bool and
may silently materialize OPEN → HALF_OPEN, which the next ``on_*``/``force_*`` call or a
timer's :meth:`CircuitBreaker.tick` then reports.

The states, events, transition table, :class:`BreakerConfig` and :class:`Transition`
live in :mod:`lasso.kernel.breaker_table` and are re-exported here.
"""

from __future__ import annotations

import math
from typing import TypeGuard

from lasso.kernel.breaker_table import (
    TRANSITIONS,
    BreakerConfig,
    BreakerEvent,
    BreakerState,
    IllegalTransition,
    Transition,
    next_state,
    transition_table_markdown,
)
from lasso.kernel.classify import penalizes_breaker
from lasso.kernel.clock import Rng

__all__ = [
    "TRANSITIONS",
    "UNASSISTED_CATEGORIES",
    "BreakerConfig",
    "BreakerEvent",
    "BreakerState",
    "CircuitBreaker",
    "IllegalTransition",
    "Transition",
    "next_state",
    "transition_table_markdown",
]

# Enum members read through their class cost a lookup each (~0.2 µs on CPython 3.11, and
# the breaker runs several times per request): the hot paths read these constants instead.
_CLOSED, _HALF_OPEN, _OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN
_FAILURE = BreakerEvent.FAILURE
_FORCE_CLOSE = BreakerEvent.FORCE_CLOSE
_FORCE_OPEN = BreakerEvent.FORCE_OPEN
_PROBE_FAILED = BreakerEvent.PROBE_FAILED
_PROBE_RECOVERY = BreakerEvent.PROBE_RECOVERY
_RECOVERED = BreakerEvent.RECOVERED
_RECOVERY_DUE = BreakerEvent.RECOVERY_DUE
_SUCCESS = BreakerEvent.SUCCESS
_TRIP = BreakerEvent.TRIP
_ARMING = frozenset({_TRIP, _PROBE_FAILED, _FORCE_OPEN})  # set a new deadline

UNASSISTED_CATEGORIES = frozenset({"auth_error"})
"""Penalizing categories whose opens are never probe-assisted: a health probe answering
says nothing about a key the provider refuses for real calls."""


class CircuitBreaker:
    """The breaker state machine. Time comes in as ``now``; jitter from ``rng``."""

    __slots__ = (
        "_config",
        "_rng",
        "_state",
        "_reported",
        "_dirty",
        "_last_edge",
        "_deadline",
        "_opened_at",
        "_failures",
        "_successes",
        "_success_threshold",
        "_in_flight",
        "_opens",
        "_reopens",
        "_assisted",
        "_assist_off",
        "_probation",
        "_probe_streak",
    )

    def __init__(self, config: BreakerConfig, rng: Rng) -> None:
        self._config = config
        self._rng = rng
        self._state = _CLOSED
        self._reported = _CLOSED  # the state the last Transition announced
        self._dirty = False
        self._last_edge = BreakerEvent.FORCE_CLOSE
        self._deadline = 0.0  # meaningful only while OPEN
        self._opened_at = 0.0  # likewise
        self._failures = 0
        self._successes = 0
        self._success_threshold = config.success_threshold
        self._in_flight = 0
        self._opens = 0
        self._reopens = 0
        self._assisted = False  # this open period may end early on probes
        self._assist_off = False  # a post-probe trial failed: timed backoff until closed
        self._probation = False  # re-admitted by probes, no real success since
        self._probe_streak = 0  # consecutive successful probes of this open period

    # --- read side -----------------------------------------------------------------

    @property
    def config(self) -> BreakerConfig:
        return self._config

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    @property
    def opens(self) -> int:
        """How many times the breaker entered OPEN (trips, reopens and manual opens)."""
        return self._opens

    @property
    def reopens(self) -> int:
        """Consecutive failed half-open trials since the circuit last closed (a close on
        probation keeps the count until real traffic succeeds)."""
        return self._reopens

    @property
    def in_flight_probes(self) -> int:
        return self._in_flight

    @property
    def recovery_deadline(self) -> float | None:
        """The monotonic time the current OPEN period ends, or ``None`` unless OPEN."""
        return self._deadline if self._state is _OPEN else None

    @property
    def opened_at(self) -> float | None:
        """The monotonic time the current OPEN period began, or ``None`` unless OPEN."""
        return self._opened_at if self._state is _OPEN else None

    @property
    def probe_streak(self) -> int:
        """Consecutive successful probes counted in this open period."""
        return self._probe_streak

    @property
    def on_probation(self) -> bool:
        """Whether probes re-admitted the circuit and real traffic has not succeeded since."""
        return self._probation

    @property
    def probe_assist_disabled(self) -> bool:
        """Whether a failed post-probe trial turned probe assistance off until a close."""
        return self._assist_off

    def state(self, now: float) -> BreakerState:
        """Return the state as of ``now``: an OPEN breaker past its deadline is HALF_OPEN."""
        if self._state is _OPEN and now >= self._deadline:
            return _HALF_OPEN
        return self._state

    def retry_after(self, now: float) -> float | None:
        """Seconds until an OPEN breaker starts admitting probes; ``None`` otherwise."""
        if self._state is _OPEN and now < self._deadline:
            return self._deadline - now
        return None

    def probe_assisted(self, now: float) -> bool:
        """Whether the circuit is OPEN as of ``now`` and health probes may end it early.

        False for quota, manual and ``auth_error`` opens and after a failed post-probe
        trial (see the module docstring); the prober sends nothing to such a circuit.
        """
        return self._assisted and self._state is _OPEN and now < self._deadline

    def __repr__(self) -> str:
        cfg = self._config
        if self._state is _CLOSED:
            detail = f"failures={self._failures}/{cfg.failure_threshold}"
        elif self._state is _OPEN:
            detail = f"opens={self._opens} reopens={self._reopens} until={self._deadline:.3f}"
            if self._probe_streak:
                detail += f" probe_streak={self._probe_streak}/{cfg.success_threshold}"
        else:
            detail = (
                f"probes={self._in_flight}/{cfg.half_open_max_probes} "
                f"successes={self._successes}/{self._success_threshold}"
            )
        if self._probation:
            detail += " probation"
        if self._assist_off:
            detail += " probe_assist=off"
        return f"<CircuitBreaker {self._state} {detail}>"

    # --- write side ----------------------------------------------------------------

    def admit(self, now: float) -> bool:
        """Return whether a request may be dispatched now.

        In HALF_OPEN a true answer takes a probe slot: the caller must report the
        outcome with :meth:`on_success`, :meth:`on_failure` or :meth:`on_neutral`.
        """
        self._advance(now)
        if self._state is _CLOSED:
            return True
        if self._state is _OPEN:
            return False
        if self._in_flight < self._config.half_open_max_probes:
            self._in_flight += 1
            return True
        return False

    def tick(self, now: float) -> Transition | None:
        """Apply a due recovery and report any change not yet announced (timer hook)."""
        self._advance(now)
        return self._report()

    def on_success(self, now: float) -> Transition | None:
        """Record a successful call."""
        self._advance(now)
        if self._state is _CLOSED:
            self._failures = 0
            if self._probation:  # real traffic vouched for the probes: probation over
                self._probation = False
                self._reopens = 0
            if not self._dirty:
                # (CLOSED, success) -> CLOSED changes nothing and arms nothing: the table's
                # no-op row, skipped on the path every successful request takes.
                return None
            self._fire(_SUCCESS)
        elif self._state is _OPEN:
            self._fire(_SUCCESS)
        else:
            self._release_probe()
            self._successes += 1
            if self._successes >= self._success_threshold:
                self._fire(_RECOVERED)
                self._reset()
            else:
                self._fire(_SUCCESS)
        return self._report()

    def on_failure(
        self, now: float, category: str, retry_after_s: float | None = None
    ) -> Transition | None:
        """Record a failed call of ``category`` (a :class:`~lasso.kernel.classify.Category`).

        Categories that do not penalize the breaker are handled as :meth:`on_neutral`.
        ``retry_after_s``, when the provider sent one, replaces the computed delay if
        this failure opens the circuit (capped at ``max_recovery_timeout_s``).
        """
        if not penalizes_breaker(category):
            return self.on_neutral(now)
        self._advance(now)
        cfg = self._config
        base = cfg.category_recovery.get(category, cfg.recovery_timeout_s)
        if self._state is _CLOSED:
            self._failures += 1
            if self._failures >= cfg.category_thresholds.get(category, cfg.failure_threshold):
                delay = base
                if self._probation:  # real traffic failed right after a probe recovery
                    self._reopens += 1
                    delay = base * 2 ** min(self._reopens, 4)
                self._open(now, _TRIP, delay, retry_after_s, category)
            else:
                self._fire(_FAILURE)
        elif self._state is _OPEN:
            self._fire(_FAILURE)
        else:
            self._reopens += 1
            delay = base * 2 ** min(self._reopens, 4)
            self._open(now, _PROBE_FAILED, delay, retry_after_s, category)
        return self._report()

    def on_neutral(self, now: float) -> Transition | None:
        """Record an outcome that says nothing about health; frees a half-open probe slot."""
        self._advance(now)
        if self._state is _HALF_OPEN:
            self._release_probe()
        return self._report()

    def on_probe_success(self, now: float) -> Transition | None:
        """Record a successful health probe sent to the circuit while it was OPEN.

        Counts towards ``success_threshold`` consecutive successes, which end a
        probe-assisted open early (:meth:`probe_recovered`). Ignored unless
        :meth:`probe_assisted`; never a breaker success of its own.

        Returns:
            The ``probe_recovery`` transition, or any change not yet reported.
        """
        self._advance(now)
        if self._state is _OPEN and self._assisted:
            self._probe_streak += 1
            if self._probe_streak >= self._config.success_threshold:
                return self.probe_recovered(now)
        return self._report()

    def on_probe_failure(self, now: float) -> Transition | None:
        """Record a failed (or rate-limited) health probe sent while OPEN.

        Resets the probe-success streak and nothing else: the failure is not counted
        and the recovery deadline does not move.
        """
        self._advance(now)
        if self._state is _OPEN:
            self._probe_streak = 0
        return self._report()

    def probe_recovered(self, now: float) -> Transition | None:
        """Move a probe-assisted OPEN circuit to HALF_OPEN before its deadline.

        The caller vouches that health probes passed (:meth:`on_probe_success` calls this
        after ``success_threshold`` in a row). From HALF_OPEN the usual rules apply, and
        the circuit is on probation until real traffic succeeds while it is closed.
        Refused (nothing changes) unless :meth:`probe_assisted`: quota, manual and
        ``auth_error`` opens, and any open after a failed post-probe trial, wait for
        their deadline.

        Returns:
            OPEN → HALF_OPEN with ``probe_recovery``, or any change not yet reported
            (a due timed recovery), or ``None``.
        """
        self._advance(now)
        if self._state is _OPEN and self._assisted:
            self._fire(_PROBE_RECOVERY)
            self._probation = True
            self._probe_streak = 0
            self._successes = 0
            self._in_flight = 0
        return self._report()

    def force_open(self, now: float, *, retry_after_s: float | None = None) -> Transition | None:
        """Open the circuit by hand, for ``retry_after_s`` or the base recovery timeout.

        With a usable ``retry_after_s`` this is a quota open: a single success closes it.
        A manual open is never probe-assisted.
        Always returns a transition (every open arms a new deadline).
        """
        self._advance(now)
        self._open(now, _FORCE_OPEN, self._config.recovery_timeout_s, retry_after_s)
        if _valid_delay(retry_after_s):
            self._success_threshold = 1
        return self._report()

    def force_close(self, now: float) -> Transition | None:
        """Close the circuit by hand and reset every count."""
        self._advance(now)
        self._fire(_FORCE_CLOSE)
        self._probation = False
        self._reset()
        return self._report()

    # --- internals -----------------------------------------------------------------

    def _fire(self, event: BreakerEvent) -> None:
        new = next_state(self._state, event)
        if new is not self._state or event in _ARMING:
            self._last_edge = event
            self._dirty = True
        self._state = new

    def _report(self) -> Transition | None:
        if not self._dirty:
            return None
        self._dirty = False
        old, self._reported = self._reported, self._state
        return Transition(old=old, new=self._state, event=self._last_edge)

    def _advance(self, now: float) -> None:
        if self._state is _OPEN and now >= self._deadline:
            self._fire(_RECOVERY_DUE)  # probe counts were zeroed when it opened
            self._probe_streak = 0

    def _open(
        self,
        now: float,
        event: BreakerEvent,
        delay: float,
        retry_after_s: float | None,
        category: str | None = None,
    ) -> None:
        quota = False
        if _valid_delay(retry_after_s):
            delay, quota = retry_after_s, True
        delay = min(delay, self._config.max_recovery_timeout_s)
        self._deadline = now + delay + self._rng.random() * delay / 20
        self._opened_at = now
        self._fire(event)
        self._opens += 1
        self._successes = 0
        self._in_flight = 0
        self._success_threshold = self._config.success_threshold
        if self._probation and event is not _FORCE_OPEN:
            self._assist_off = True  # a failed trial after a probe recovery
        self._probation = False
        self._probe_streak = 0
        self._assisted = (
            category is not None
            and category not in UNASSISTED_CATEGORIES
            and not quota
            and not self._assist_off
        )

    def _release_probe(self) -> None:
        if self._in_flight:
            self._in_flight -= 1

    def _reset(self) -> None:
        """Counts after a close. Closing on probation keeps ``reopens`` (and probation)
        until real traffic succeeds; every close turns probe assistance back on."""
        self._failures = 0
        self._successes = 0
        self._in_flight = 0
        if not self._probation:
            self._reopens = 0
        self._assist_off = False
        self._probe_streak = 0
        self._success_threshold = self._config.success_threshold


def _valid_delay(value: float | None) -> TypeGuard[float]:
    return value is not None and not math.isnan(value) and value >= 0
