"""Circuit breaker: transitions, thresholds, backoff, probes and generated invariants.

The table, its Markdown rendering and the config are tested in test_breaker_table.
"""

from __future__ import annotations

import math
import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.kernel import breaker as breaker_module
from lasso.kernel import breaker_table
from lasso.kernel.breaker import (
    BreakerConfig,
    BreakerEvent,
    BreakerState,
    CircuitBreaker,
    Transition,
)
from lasso.kernel.classify import Category
from lasso.kernel.clock import FakeClock

CLOSED, HALF_OPEN, OPEN = BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.OPEN
E = BreakerEvent


class FixedRng:
    """An Rng that always returns the same value, for exact deadlines."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def make(rng_value: float = 0.0, **config: object) -> tuple[CircuitBreaker, FakeClock]:
    cfg = BreakerConfig(**config)  # type: ignore[arg-type]
    return CircuitBreaker(cfg, FixedRng(rng_value)), FakeClock()


def trip(b: CircuitBreaker, clock: FakeClock, n: int = 5, category: str = "server_error") -> None:
    for _ in range(n):
        b.on_failure(clock.now(), category)
    assert b.state(clock.now()) is OPEN


# --- closed ---------------------------------------------------------------------------


def test_new_breaker_is_closed_and_admits() -> None:
    """A fresh breaker is closed, admits and says so in its repr."""
    b, clock = make()
    assert b.state(clock.now()) is CLOSED
    assert b.admit(clock.now())
    assert b.retry_after(clock.now()) is None
    assert b.recovery_deadline is None
    assert repr(b) == "<CircuitBreaker closed failures=0/5>"


def test_failures_below_threshold_stay_closed() -> None:
    """Four server errors count but do not open; the repr shows the count."""
    b, clock = make()
    for _ in range(4):
        assert b.on_failure(clock.now(), "server_error") is None
    assert b.state(clock.now()) is CLOSED
    assert b.consecutive_failures == 4
    assert repr(b) == "<CircuitBreaker closed failures=4/5>"


def test_success_resets_consecutive_failures() -> None:
    """Only consecutive failures count: a success resets the count."""
    b, clock = make()
    for _ in range(4):
        b.on_failure(clock.now(), "server_error")
    assert b.on_success(clock.now()) is None
    assert b.consecutive_failures == 0
    for _ in range(4):
        b.on_failure(clock.now(), "server_error")
    assert b.state(clock.now()) is CLOSED


def test_threshold_trips_open() -> None:
    """The fifth consecutive server error opens the circuit for the base timeout (30 s)."""
    b, clock = make()
    for _ in range(4):
        b.on_failure(clock.now(), "server_error")
    t = b.on_failure(clock.now(), "server_error")
    assert t == Transition(old=CLOSED, new=OPEN, event=E.TRIP)
    assert b.opens == 1
    assert not b.admit(clock.now())
    assert b.retry_after(clock.now()) == 30.0
    assert b.recovery_deadline == clock.now() + 30.0
    assert b.opened_at == clock.now()


@pytest.mark.parametrize(
    ("category", "threshold"),
    [
        ("timeout", 2),
        ("network_error", 3),
        ("auth_error", 3),
        ("server_error", 5),
        ("internal_error", 5),
        ("protocol_error", 5),
        ("unknown_error", 5),
    ],
)
def test_category_thresholds(category: str, threshold: int) -> None:
    """Each category opens at its own threshold, others at failure_threshold."""
    b, clock = make()
    for _ in range(threshold - 1):
        b.on_failure(clock.now(), category)
    assert b.state(clock.now()) is CLOSED
    b.on_failure(clock.now(), category)
    assert b.state(clock.now()) is OPEN


def test_current_failure_category_picks_threshold() -> None:
    """The running count is compared with the threshold of the failure just seen."""
    b, clock = make()
    for _ in range(4):
        b.on_failure(clock.now(), "server_error")
    assert b.state(clock.now()) is CLOSED
    b.on_failure(clock.now(), "timeout")  # count 5 >= 2
    assert b.state(clock.now()) is OPEN

    b, clock = make()
    b.on_failure(clock.now(), "timeout")
    b.on_failure(clock.now(), "server_error")  # count 2 < 5
    assert b.state(clock.now()) is CLOSED


@pytest.mark.parametrize(
    "category",
    [
        "rate_limit",
        "execution_revert",
        "invalid_params",
        "capability_violation",
        "block_not_available",
        "method_not_found",
        "method_error",
        "unclassified_server_error",
        "something_else",
    ],
)
def test_non_penalizing_failures_are_ignored(category: str) -> None:
    """Non-penalizing categories neither count nor reset the count."""
    b, clock = make()
    for _ in range(4):
        b.on_failure(clock.now(), "server_error")
    for _ in range(20):
        assert b.on_failure(clock.now(), category, retry_after_s=5.0) is None
    assert b.consecutive_failures == 4
    assert b.state(clock.now()) is CLOSED
    b.on_failure(clock.now(), "server_error")
    assert b.state(clock.now()) is OPEN


def test_category_enum_is_accepted() -> None:
    """Category members work as the category argument."""
    b, clock = make()
    b.on_failure(clock.now(), Category.TIMEOUT)
    b.on_failure(clock.now(), Category.TIMEOUT)
    assert b.state(clock.now()) is OPEN


# --- open -----------------------------------------------------------------------------


def test_auth_error_recovers_after_ten_seconds() -> None:
    """auth_error opens for its own 10 s recovery."""
    b, clock = make()
    trip(b, clock, 3, "auth_error")
    assert b.retry_after(clock.now()) == 10.0


def test_jitter_is_up_to_five_percent() -> None:
    """Jitter adds up to delay/20 on top of the delay."""
    b, clock = make(rng_value=0.999)
    trip(b, clock)
    assert 30.0 < b.retry_after(clock.now()) < 31.5  # type: ignore[operator]


def test_failures_while_open_do_not_extend_deadline() -> None:
    """Failures while open are ignored; the deadline stays put."""
    b, clock = make()
    trip(b, clock)
    deadline = b.recovery_deadline
    clock.advance(20)
    assert b.on_failure(clock.now(), "server_error") is None
    assert b.recovery_deadline == deadline
    assert b.opens == 1


def test_late_success_while_open_is_ignored() -> None:
    """A success from a call admitted before the trip does not close the circuit."""
    b, clock = make()
    trip(b, clock)
    clock.advance(1)
    assert b.on_success(clock.now()) is None
    assert b.state(clock.now()) is OPEN


def test_open_rejects_until_deadline() -> None:
    """OPEN never admits before its deadline."""
    b, clock = make()
    trip(b, clock)
    clock.advance(29.999)
    assert not b.admit(clock.now())
    assert b.state(clock.now()) is OPEN
    assert b.retry_after(clock.now()) == pytest.approx(0.001)


def test_open_repr() -> None:
    """The repr of an open breaker shows its counts and deadline."""
    b, clock = make()
    trip(b, clock)
    assert repr(b) == "<CircuitBreaker open opens=1 reopens=0 until=1030.000>"


# --- half-open ------------------------------------------------------------------------


def test_deadline_reports_half_open_lazily() -> None:
    """Past the deadline state() says half-open at once; tick() materializes it."""
    b, clock = make()
    trip(b, clock)
    clock.advance(60)
    assert b.state(clock.now()) is HALF_OPEN
    assert b.retry_after(clock.now()) is None
    assert b.recovery_deadline is not None  # not materialized yet
    assert b.tick(clock.now()) == Transition(old=OPEN, new=HALF_OPEN, event=E.RECOVERY_DUE)
    assert b.recovery_deadline is None
    assert b.tick(clock.now()) is None


def test_half_open_admits_one_probe() -> None:
    """Half-open admits max probes at a time; a neutral outcome frees the slot."""
    b, clock = make()
    trip(b, clock)
    clock.advance(61)
    assert b.admit(clock.now())
    assert b.in_flight_probes == 1
    assert not b.admit(clock.now())
    assert repr(b) == "<CircuitBreaker half_open probes=1/1 successes=0/2>"
    b.on_neutral(clock.now())
    assert b.in_flight_probes == 0
    assert b.admit(clock.now())
    b.on_failure(clock.now(), "rate_limit")  # non-penalizing: frees the slot too
    assert b.in_flight_probes == 0
    assert b.state(clock.now()) is HALF_OPEN


def test_half_open_probe_limit_is_configurable() -> None:
    """half_open_max_probes bounds concurrent probes."""
    b, clock = make(half_open_max_probes=3)
    trip(b, clock)
    clock.advance(61)
    assert [b.admit(clock.now()) for _ in range(4)] == [True, True, True, False]


def test_admit_after_deadline_is_reported_on_next_call() -> None:
    """admit() moves to half-open silently; the next mutating call reports it."""
    b, clock = make()
    trip(b, clock)
    clock.advance(61)
    assert b.admit(clock.now())
    t = b.on_success(clock.now())
    assert t == Transition(old=OPEN, new=HALF_OPEN, event=E.RECOVERY_DUE)
    assert b.admit(clock.now())
    t = b.on_success(clock.now())
    assert t == Transition(old=HALF_OPEN, new=CLOSED, event=E.RECOVERED)


def test_two_probe_successes_close() -> None:
    """success_threshold probe successes close and reset every count."""
    b, clock = make()
    trip(b, clock)
    clock.advance(61)
    b.tick(clock.now())
    assert b.admit(clock.now())
    assert b.on_success(clock.now()) is None
    assert b.state(clock.now()) is HALF_OPEN
    assert b.admit(clock.now())
    assert b.on_success(clock.now()) == Transition(old=HALF_OPEN, new=CLOSED, event=E.RECOVERED)
    assert b.consecutive_failures == 0
    assert b.reopens == 0
    assert b.in_flight_probes == 0
    assert b.opens == 1


def test_probe_failure_reopens_with_exponential_backoff() -> None:
    """Each half-open failure reopens: 30 → 60 → 120 → 240 → 480 → 480 s (2^min(n, 4))."""
    b, clock = make()
    trip(b, clock)
    delays = [b.retry_after(clock.now())]
    for _ in range(5):
        clock.advance(delays[-1])  # type: ignore[arg-type]
        assert b.admit(clock.now())
        t = b.on_failure(clock.now(), "network_error")
        assert t is not None and t.new is OPEN and t.event is E.PROBE_FAILED
        delays.append(b.retry_after(clock.now()))
    assert delays == [30.0, 60.0, 120.0, 240.0, 480.0, 480.0]
    assert b.reopens == 5
    assert b.opens == 6


def test_backoff_resets_after_recovery() -> None:
    """After closing, the next trip starts from the base timeout again."""
    b, clock = make()
    trip(b, clock)
    clock.advance(30)
    b.admit(clock.now())
    b.on_failure(clock.now(), "server_error")  # reopen: 60 s
    clock.advance(60)
    for _ in range(2):
        assert b.admit(clock.now())
        b.on_success(clock.now())
    assert b.state(clock.now()) is CLOSED
    trip(b, clock)
    assert b.retry_after(clock.now()) == 30.0


def test_auth_reopen_uses_its_own_base() -> None:
    """A half-open auth failure backs off from the 10 s auth recovery."""
    b, clock = make()
    trip(b, clock, 3, "auth_error")
    clock.advance(10)
    b.admit(clock.now())
    b.on_failure(clock.now(), "auth_error")
    assert b.retry_after(clock.now()) == 20.0


def test_failure_after_deadline_without_admit_reopens() -> None:
    """A penalizing failure once the deadline passed is a half-open failure."""
    b, clock = make()
    trip(b, clock)
    clock.advance(30)
    t = b.on_failure(clock.now(), "timeout")
    assert t == Transition(old=OPEN, new=OPEN, event=E.PROBE_FAILED)
    assert b.retry_after(clock.now()) == 60.0


# --- retry-after and manual control ---------------------------------------------------


def test_retry_after_replaces_delay_and_is_capped() -> None:
    """A failure's retry-after sets the open delay, capped at the maximum."""
    b, clock = make()
    for _ in range(4):
        b.on_failure(clock.now(), "server_error")
    b.on_failure(clock.now(), "server_error", retry_after_s=7.0)
    assert b.retry_after(clock.now()) == 7.0

    b, clock = make()
    for _ in range(4):
        b.on_failure(clock.now(), "server_error")
    b.on_failure(clock.now(), "server_error", retry_after_s=1e9)
    assert b.retry_after(clock.now()) == 600.0


@pytest.mark.parametrize("bad", [-1.0, math.nan])
def test_invalid_retry_after_is_ignored(bad: float) -> None:
    """Negative or NaN retry-after falls back to the computed delay."""
    b, clock = make()
    for _ in range(5):
        b.on_failure(clock.now(), "server_error", retry_after_s=bad)
    assert b.retry_after(clock.now()) == 30.0
    b, clock = make()
    b.force_open(clock.now(), retry_after_s=bad)
    assert b.retry_after(clock.now()) == 30.0


def test_zero_retry_after_goes_half_open_at_once() -> None:
    """A zero delay is due immediately."""
    b, clock = make()
    b.force_open(clock.now(), retry_after_s=0.0)
    assert b.state(clock.now()) is HALF_OPEN
    assert b.admit(clock.now())


def test_force_open_with_retry_after_is_a_quota_open() -> None:
    """A manual open with a retry-after closes after a single success."""
    b, clock = make()
    t = b.force_open(clock.now(), retry_after_s=30.0)
    assert t == Transition(old=CLOSED, new=OPEN, event=E.FORCE_OPEN)
    assert b.retry_after(clock.now()) == 30.0
    clock.advance(30)
    assert b.admit(clock.now())
    assert repr(b) == "<CircuitBreaker half_open probes=1/1 successes=0/1>"
    b.on_success(clock.now())
    assert b.state(clock.now()) is CLOSED


def test_quota_open_reopen_needs_normal_threshold() -> None:
    """A probe failure after a quota open reopens with the normal success threshold."""
    b, clock = make()
    b.force_open(clock.now(), retry_after_s=5.0)
    clock.advance(5)
    b.admit(clock.now())
    b.on_failure(clock.now(), "server_error")
    clock.advance(600)
    b.admit(clock.now())
    b.on_success(clock.now())
    assert b.state(clock.now()) is HALF_OPEN


def test_force_open_rearms_an_open_breaker() -> None:
    """force_open on an open breaker sets a new deadline and reports OPEN → OPEN."""
    b, clock = make()
    trip(b, clock)
    clock.advance(20)
    t = b.force_open(clock.now())
    assert t == Transition(old=OPEN, new=OPEN, event=E.FORCE_OPEN)
    assert b.retry_after(clock.now()) == 30.0
    assert b.opens == 2


def test_force_close() -> None:
    """force_close closes from any state and resets counts; closed → closed is silent."""
    b, clock = make()
    for _ in range(3):
        b.on_failure(clock.now(), "server_error")
    assert b.force_close(clock.now()) is None
    assert b.consecutive_failures == 0
    trip(b, clock)
    assert b.force_close(clock.now()) == Transition(old=OPEN, new=CLOSED, event=E.FORCE_CLOSE)
    assert b.admit(clock.now())
    trip(b, clock)
    clock.advance(60)
    b.admit(clock.now())
    t = b.force_close(clock.now())
    assert t == Transition(old=OPEN, new=CLOSED, event=E.FORCE_CLOSE)
    assert b.in_flight_probes == 0


def test_neutral_is_silent_when_closed() -> None:
    """on_neutral on a closed breaker changes nothing."""
    b, clock = make()
    b.on_failure(clock.now(), "server_error")
    assert b.on_neutral(clock.now()) is None
    assert b.consecutive_failures == 1


def test_reopen_backoff_is_capped_at_the_maximum() -> None:
    """With a 60 s base the doubling reaches the 600 s cap: 60 → 120 → 240 → 480 → 600."""
    b, clock = make(recovery_timeout_s=60.0)
    trip(b, clock)
    delays = [b.retry_after(clock.now())]
    for _ in range(5):
        clock.advance(delays[-1])  # type: ignore[arg-type]
        b.admit(clock.now())
        b.on_failure(clock.now(), "server_error")
        delays.append(b.retry_after(clock.now()))
    assert delays == [60.0, 120.0, 240.0, 480.0, 600.0, 600.0]


# --- probe-assisted recovery ----------------------------------------------------------


def probe_recover(b: CircuitBreaker, clock: FakeClock) -> Transition | None:
    """Two successful probes of an open circuit, 2 s apart, as the prober sends them."""
    clock.advance(2)
    assert b.on_probe_success(clock.now()) is None
    clock.advance(2)
    return b.on_probe_success(clock.now())


def test_probe_successes_move_open_to_half_open_early() -> None:
    """success_threshold probe successes in a row end a health open before its deadline."""
    b, clock = make()
    trip(b, clock, 3, "network_error")
    assert b.probe_assisted(clock.now())
    deadline = b.recovery_deadline
    clock.advance(2)
    assert b.on_probe_success(clock.now()) is None
    assert b.probe_streak == 1
    assert repr(b) == "<CircuitBreaker open opens=1 reopens=0 until=1030.000 probe_streak=1/2>"
    clock.advance(2)
    t = b.on_probe_success(clock.now())
    assert t == Transition(old=OPEN, new=HALF_OPEN, event=E.PROBE_RECOVERY)
    assert deadline is not None and clock.now() < deadline
    assert b.state(clock.now()) is HALF_OPEN
    assert b.recovery_deadline is None and b.opened_at is None
    assert not b.probe_assisted(clock.now())
    assert b.on_probation and b.probe_streak == 0
    assert b.opens == 1 and b.consecutive_failures == 3
    assert repr(b) == "<CircuitBreaker half_open probes=0/1 successes=0/2 probation>"


def test_half_open_after_probe_recovery_follows_the_usual_rules() -> None:
    """After a probe recovery: one trial at a time, two successes close; a real success
    while closed ends the probation."""
    b, clock = make()
    trip(b, clock)
    probe_recover(b, clock)
    assert b.admit(clock.now())
    assert not b.admit(clock.now())
    assert b.on_success(clock.now()) is None
    assert b.admit(clock.now())
    t = b.on_success(clock.now())
    assert t == Transition(old=HALF_OPEN, new=CLOSED, event=E.RECOVERED)
    assert b.on_probation  # the trials may have been probes: real traffic must vouch
    assert repr(b) == "<CircuitBreaker closed failures=0/5 probation>"
    assert b.on_success(clock.now()) is None
    assert not b.on_probation and b.reopens == 0
    trip(b, clock)
    assert b.probe_assisted(clock.now()) and b.retry_after(clock.now()) == 30.0


def test_failed_probe_resets_the_streak_and_nothing_else() -> None:
    """A failed probe while open is not a failure: no count, no new deadline, no event."""
    b, clock = make()
    trip(b, clock, 2, "timeout")
    deadline, opens = b.recovery_deadline, b.opens
    clock.advance(2)
    b.on_probe_success(clock.now())
    clock.advance(2)
    assert b.on_probe_failure(clock.now()) is None
    assert b.probe_streak == 0
    assert (b.recovery_deadline, b.opens, b.consecutive_failures) == (deadline, opens, 2)
    clock.advance(2)
    assert b.on_probe_success(clock.now()) is None  # the streak starts again
    assert b.state(clock.now()) is OPEN
    clock.advance(2)
    assert b.on_probe_success(clock.now()) is not None
    assert b.state(clock.now()) is HALF_OPEN


@pytest.mark.parametrize(
    "category",
    ["network_error", "server_error", "timeout", "protocol_error", "unknown_error"],
)
def test_health_opens_are_probe_assisted(category: str) -> None:
    """Trips by health categories may end early on probes."""
    b, clock = make()
    trip(b, clock, 5, category)
    assert b.probe_assisted(clock.now())
    assert probe_recover(b, clock) is not None


def open_by(how: str) -> tuple[CircuitBreaker, FakeClock]:
    b, clock = make()
    if how == "quota":
        b.force_open(clock.now(), retry_after_s=20.0)
    elif how == "manual":
        b.force_open(clock.now())
    elif how == "retry_after":
        for _ in range(4):
            b.on_failure(clock.now(), "server_error")
        b.on_failure(clock.now(), "server_error", retry_after_s=20.0)
    else:
        trip(b, clock, 3, "auth_error")
    return b, clock


@pytest.mark.parametrize("how", ["quota", "manual", "retry_after", "auth"])
def test_quota_forced_and_auth_opens_are_never_probe_assisted(how: str) -> None:
    """Probes cannot cut short a retry-after, a manual or misconfiguration open, or an
    auth failure: those wait for their deadline."""
    b, clock = open_by(how)
    assert b.state(clock.now()) is OPEN
    assert not b.probe_assisted(clock.now())
    for _ in range(3):
        clock.advance(1)
        assert b.on_probe_success(clock.now()) is None
    assert b.probe_streak == 0
    assert b.probe_recovered(clock.now()) is None
    assert b.state(clock.now()) is OPEN


def test_failed_trial_after_probe_recovery_disables_assistance_until_closed() -> None:
    """Anti-flap: the half-open trial that follows a probe recovery fails, so the circuit
    waits its timed backoff (60 s, then 120 s) whatever the probes say, until it closes."""
    b, clock = make()
    trip(b, clock)
    probe_recover(b, clock)
    assert b.admit(clock.now())
    t = b.on_failure(clock.now(), "server_error")
    assert t == Transition(old=HALF_OPEN, new=OPEN, event=E.PROBE_FAILED)
    assert b.retry_after(clock.now()) == 60.0 and b.reopens == 1
    assert b.probe_assist_disabled and not b.on_probation
    assert not b.probe_assisted(clock.now())
    assert repr(b).endswith("reopens=1 until=1064.000 probe_assist=off>")
    for _ in range(5):
        clock.advance(2)
        assert b.on_probe_success(clock.now()) is None
        assert b.probe_recovered(clock.now()) is None
    clock.advance(50)
    assert b.admit(clock.now())  # timed recovery; its trial fails too
    b.on_failure(clock.now(), "server_error")
    assert b.retry_after(clock.now()) == 120.0
    assert not b.probe_assisted(clock.now())
    clock.advance(120)
    for _ in range(2):
        assert b.admit(clock.now())
        b.on_success(clock.now())
    assert b.state(clock.now()) is CLOSED
    assert not b.probe_assist_disabled and b.reopens == 0
    trip(b, clock)
    assert b.probe_assisted(clock.now())


def test_real_traffic_failing_after_a_probe_close_is_a_failed_trial() -> None:
    """A circuit closed on the probes' word that trips before any real success counts as a
    failed trial: backoff doubles and probe assistance is off."""
    b, clock = make()
    trip(b, clock, 3, "network_error")
    probe_recover(b, clock)
    for _ in range(2):
        assert b.admit(clock.now())
        b.on_success(clock.now())  # the prober's trials: eth_blockNumber answers
    assert b.state(clock.now()) is CLOSED and b.on_probation
    for _ in range(3):
        t = b.on_failure(clock.now(), "network_error")
    assert t == Transition(old=CLOSED, new=OPEN, event=E.TRIP)
    assert b.retry_after(clock.now()) == 60.0 and b.reopens == 1
    assert not b.probe_assisted(clock.now()) and b.probe_assist_disabled


def test_probation_keeps_the_backoff_growing() -> None:
    """Probe closes keep the reopen count, so repeated failed trials double the delay."""
    b, clock = make()
    trip(b, clock)
    clock.advance(30)
    b.admit(clock.now())
    b.on_failure(clock.now(), "server_error")  # timed trial failed: 60 s, still assisted
    assert b.probe_assisted(clock.now()) and b.reopens == 1
    probe_recover(b, clock)
    for _ in range(2):
        b.admit(clock.now())
        b.on_success(clock.now())
    assert b.state(clock.now()) is CLOSED and b.reopens == 1
    trip(b, clock)
    assert b.retry_after(clock.now()) == 120.0 and b.reopens == 2


def test_manual_open_during_probation_is_not_a_failed_trial() -> None:
    """force_open ends the probation without turning probe assistance off."""
    b, clock = make()
    trip(b, clock)
    probe_recover(b, clock)
    b.force_open(clock.now(), retry_after_s=5.0)
    assert not b.on_probation and not b.probe_assist_disabled
    assert not b.probe_assisted(clock.now())
    b.force_close(clock.now())
    trip(b, clock)
    probe_recover(b, clock)
    assert b.force_close(clock.now()) == Transition(old=HALF_OPEN, new=CLOSED, event=E.FORCE_CLOSE)
    assert not b.on_probation


def test_probe_outcomes_outside_an_assisted_open_change_nothing() -> None:
    """Probe reports to a closed or half-open breaker are no-ops; past the deadline they
    only report the due timed recovery."""
    b, clock = make()
    assert b.on_probe_success(clock.now()) is None
    assert b.on_probe_failure(clock.now()) is None
    assert b.probe_recovered(clock.now()) is None
    assert b.state(clock.now()) is CLOSED and b.opened_at is None
    trip(b, clock)
    clock.advance(30)
    assert not b.probe_assisted(clock.now())
    t = b.on_probe_success(clock.now())
    assert t == Transition(old=OPEN, new=HALF_OPEN, event=E.RECOVERY_DUE)
    assert b.probe_streak == 0 and not b.on_probation
    assert b.on_probe_failure(clock.now()) is None
    assert b.probe_recovered(clock.now()) is None
    assert b.state(clock.now()) is HALF_OPEN


def test_each_open_period_starts_a_new_streak() -> None:
    """A reopen forgets the previous period's probe successes."""
    b, clock = make()
    trip(b, clock)
    clock.advance(2)
    b.on_probe_success(clock.now())
    clock.advance(28)
    b.admit(clock.now())
    b.on_failure(clock.now(), "server_error")
    assert b.probe_streak == 0 and b.opened_at == clock.now()
    assert b.on_probe_success(clock.now()) is None


# --- module surface -------------------------------------------------------------------


def test_public_surface() -> None:
    """__all__ is the breaker plus the re-exported vocabulary, the very same objects."""
    assert sorted(breaker_module.__all__) == sorted(
        ["CircuitBreaker", "UNASSISTED_CATEGORIES", *breaker_table.__all__]
    )
    for name in breaker_table.__all__:
        assert getattr(breaker_module, name) is getattr(breaker_table, name), name


def test_module_imports_alone() -> None:
    """The breaker imports first in a fresh interpreter (no cycle with .breaker_table)."""
    subprocess.run([sys.executable, "-c", "import lasso.kernel.breaker"], check=True)


# --- generated sequences --------------------------------------------------------------

CATEGORIES = [c.value for c in Category] + ["bogus"]
PENALIZING = ["server_error", "network_error", "timeout", "auth_error", "internal_error"]
RETRY = st.one_of(
    st.none(), st.sampled_from([0.0, 1.0, 5.0]), st.floats(0, 2000), st.just(math.nan)
)
STEP = st.one_of(st.sampled_from([0.0, 0.5, 10.0, 60.0, 61.0, 700.0]), st.floats(0, 700))

# Each op kind is listed as often as it should be drawn: enough penalizing failures to
# trip, enough clock movement to recover, and bursts of admits to fill half-open.
OPS = st.one_of(
    st.tuples(st.just("advance"), STEP),
    st.tuples(st.just("advance"), STEP),
    st.tuples(st.just("admit")),
    st.tuples(st.just("admit")),
    st.tuples(st.just("admit")),
    st.tuples(st.just("success")),
    st.tuples(st.just("success")),
    st.tuples(st.just("failure"), st.sampled_from(PENALIZING), RETRY),
    st.tuples(st.just("failure"), st.sampled_from(PENALIZING), RETRY),
    st.tuples(st.just("failure"), st.sampled_from(CATEGORIES), RETRY),
    st.tuples(st.just("neutral")),
    st.tuples(st.just("tick")),
    st.tuples(st.just("force_open"), RETRY),
    st.tuples(st.just("force_close")),
    st.tuples(st.just("probe_ok")),
    st.tuples(st.just("probe_ok")),
    st.tuples(st.just("probe_fail")),
    st.tuples(st.just("probe_recovered")),
)

CONFIGS = st.builds(
    BreakerConfig,
    failure_threshold=st.integers(1, 6),
    success_threshold=st.integers(1, 3),
    half_open_max_probes=st.integers(1, 3),
)


def _valid_retry(value: object) -> bool:
    return isinstance(value, float) and not math.isnan(value) and value >= 0


@settings(max_examples=300, deadline=None)
@given(
    cfg=CONFIGS,
    seed=st.integers(0, 2**32),
    ops=st.lists(OPS, min_size=40, max_size=150),
)
def test_breaker_invariants(cfg: BreakerConfig, seed: int, ops: list[tuple[object, ...]]) -> None:
    """Any event sequence keeps the breaker in a possible state (habit 11)."""
    check_sequence(cfg, seed, ops)


# Probe-heavy sequences: health trips, probe reports at the prober's cadence, trials.
PROBE_OPS = st.one_of(
    st.tuples(st.just("advance"), st.sampled_from([0.2, 1.0, 2.0, 2.4])),
    st.tuples(st.just("advance"), STEP),
    st.tuples(st.just("probe_ok")),
    st.tuples(st.just("probe_ok")),
    st.tuples(st.just("probe_ok")),
    st.tuples(st.just("probe_fail")),
    st.tuples(st.just("probe_recovered")),
    st.tuples(st.just("admit")),
    st.tuples(st.just("admit")),
    st.tuples(st.just("success")),
    st.tuples(st.just("success")),
    st.tuples(st.just("failure"), st.sampled_from(PENALIZING), st.none()),
    st.tuples(st.just("failure"), st.sampled_from(PENALIZING), st.none()),
    st.tuples(st.just("failure"), st.sampled_from(PENALIZING), RETRY),
    st.tuples(st.just("neutral")),
    st.tuples(st.just("force_open"), RETRY),
    st.tuples(st.just("force_close")),
)


@settings(max_examples=300, deadline=None)
@given(
    cfg=CONFIGS,
    seed=st.integers(0, 2**32),
    ops=st.lists(PROBE_OPS, min_size=40, max_size=150),
)
def test_probe_recovery_invariants(
    cfg: BreakerConfig, seed: int, ops: list[tuple[object, ...]]
) -> None:
    """Probe recovery only ever moves OPEN → HALF_OPEN, never for a quota, manual or auth
    open, and never again after a failed post-probe trial until the circuit closes."""
    check_sequence(cfg, seed, ops)


def check_sequence(cfg: BreakerConfig, seed: int, ops: list[tuple[object, ...]]) -> None:
    """Run ``ops`` against a breaker and a model of it, checking invariants at each step."""
    b = CircuitBreaker(cfg, random.Random(seed))
    assert b.config is cfg
    clock = FakeClock()
    bound = cfg.max_recovery_timeout_s * 1.05
    announced = CLOSED
    opens_seen = 0
    streak = 0  # consecutive successes while half-open
    required = cfg.success_threshold
    deadline = b.recovery_deadline
    # The model of probe assistance: may this open period end on probes?
    assisted = False
    probation = False  # re-admitted by probes, no real success since
    latched = False  # a post-probe trial failed: no assistance until closed

    for op in ops:
        now = clock.now()
        before = b.state(now)
        if before is not HALF_OPEN:
            streak = 0
        counts = (b.opens, b.consecutive_failures, b.recovery_deadline)
        t: Transition | None = None
        kind = op[0]
        if kind == "advance":
            clock.advance(op[1])  # type: ignore[arg-type]
        elif kind == "admit":
            probes = (
                b.in_flight_probes if before is HALF_OPEN and b.recovery_deadline is None else 0
            )
            admitted = b.admit(now)
            if before is OPEN:
                assert not admitted, "OPEN admitted before its deadline"
            elif before is CLOSED:
                assert admitted
            else:
                assert admitted == (probes < cfg.half_open_max_probes)
        elif kind == "success":
            t = b.on_success(now)
            if before is CLOSED:
                assert b.consecutive_failures == 0
                probation = False
            if before is HALF_OPEN:
                streak += 1
                expected = CLOSED if streak >= required else HALF_OPEN
                assert b.state(now) is expected
        elif kind == "failure":
            t = b.on_failure(now, op[1], op[2])  # type: ignore[arg-type]
        elif kind == "neutral":
            t = b.on_neutral(now)
        elif kind == "tick":
            t = b.tick(now)
        elif kind == "force_open":
            t = b.force_open(now, retry_after_s=op[1])  # type: ignore[arg-type]
            assert t is not None
        elif kind == "force_close":
            t = b.force_close(now)
            assert b.state(now) is CLOSED
            probation = False
        else:
            assert b.probe_assisted(now) == (before is OPEN and assisted)
            if kind == "probe_ok":
                t = b.on_probe_success(now)
            elif kind == "probe_fail":
                t = b.on_probe_failure(now)
                assert b.probe_streak == 0
            else:
                t = b.probe_recovered(now)
            # Probes never count, re-arm or move anything but OPEN → HALF_OPEN.
            assert (b.opens, b.consecutive_failures) == counts[:2]
            assert t is None or (t.old is OPEN and t.new is HALF_OPEN)
            if t is None or t.event is not E.PROBE_RECOVERY:
                assert b.state(clock.now()) is before
                if before is OPEN:
                    assert b.recovery_deadline == counts[2]

        now = clock.now()
        state = b.state(now)
        # Transitions chain from the last announced state; only OPEN → OPEN repeats.
        if t is not None:
            assert t.old is announced
            assert t.old is not t.new or t.new is OPEN
            announced = t.new
            if t.event is E.PROBE_RECOVERY:
                assert kind in ("probe_ok", "probe_recovered")
                assert assisted and not latched, "probe recovery of an unassisted open"
                probation = True
            if t.new is OPEN:
                opens_seen += 1
                streak = 0  # every open, even one due at once, restarts the count
                ra = op[-1] if kind == "force_open" else None
                ok = isinstance(ra, float) and not math.isnan(ra)
                required = 1 if ok else cfg.success_threshold
                if kind == "failure" and probation:
                    latched = True
                probation = False
                assisted = (
                    kind == "failure"
                    and op[1] != "auth_error"
                    and not _valid_retry(op[2])
                    and not latched
                )
            if t.new is CLOSED:
                latched = False
        assert b.opens == opens_seen
        assert b.on_probation == probation
        assert b.probe_assist_disabled == latched
        assert b.probe_assisted(now) == (state is OPEN and assisted)
        # Deadlines: armed in [now, now + max × 1.05], never moved while open.
        if b.recovery_deadline != deadline and b.recovery_deadline is not None:
            assert now <= b.recovery_deadline <= now + bound
        deadline = b.recovery_deadline
        # retry_after only while OPEN, and bounded.
        ra_now = b.retry_after(now)
        assert (ra_now is not None) == (state is OPEN)
        if ra_now is not None:
            assert 0 < ra_now <= bound
        # Probes only in half-open, never more than the limit.
        assert 0 <= b.in_flight_probes <= cfg.half_open_max_probes
        if b.in_flight_probes:
            assert state is HALF_OPEN
        # Counts.
        assert b.reopens >= 0
        if state is CLOSED:
            assert 0 <= b.consecutive_failures < cfg.max_failure_threshold
            assert b.reopens == 0 or b.on_probation
        if b.recovery_deadline is None:  # a streak lives only in a (stored) open period
            assert b.probe_streak == 0
