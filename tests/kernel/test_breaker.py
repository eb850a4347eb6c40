"""Circuit breaker: transitions, thresholds, backoff, probes and generated invariants."""

from __future__ import annotations

import math
import random
from dataclasses import FrozenInstanceError

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.kernel.breaker import (
    TRANSITIONS,
    BreakerConfig,
    BreakerEvent,
    BreakerState,
    CircuitBreaker,
    IllegalTransition,
    Transition,
    next_state,
    transition_table_markdown,
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
    """The fifth consecutive server error opens the circuit for the base timeout."""
    b, clock = make()
    for _ in range(4):
        b.on_failure(clock.now(), "server_error")
    t = b.on_failure(clock.now(), "server_error")
    assert t == Transition(old=CLOSED, new=OPEN, event=E.TRIP)
    assert b.opens == 1
    assert not b.admit(clock.now())
    assert b.retry_after(clock.now()) == 60.0
    assert b.recovery_deadline == clock.now() + 60.0


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
    assert 60.0 < b.retry_after(clock.now()) < 63.0  # type: ignore[operator]


def test_failures_while_open_do_not_extend_deadline() -> None:
    """Failures while open are ignored; the deadline stays put."""
    b, clock = make()
    trip(b, clock)
    deadline = b.recovery_deadline
    clock.advance(30)
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
    clock.advance(59.999)
    assert not b.admit(clock.now())
    assert b.state(clock.now()) is OPEN
    assert b.retry_after(clock.now()) == pytest.approx(0.001)


def test_open_repr() -> None:
    """The repr of an open breaker shows its counts and deadline."""
    b, clock = make()
    trip(b, clock)
    assert repr(b) == "<CircuitBreaker open opens=1 reopens=0 until=1060.000>"


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
    """Each half-open failure reopens: 60 → 120 → 240 → 480 → 600 → 600 s."""
    b, clock = make()
    trip(b, clock)
    delays = [b.retry_after(clock.now())]
    for _ in range(5):
        clock.advance(delays[-1])  # type: ignore[arg-type]
        assert b.admit(clock.now())
        t = b.on_failure(clock.now(), "network_error")
        assert t is not None and t.new is OPEN and t.event is E.PROBE_FAILED
        delays.append(b.retry_after(clock.now()))
    assert delays == [60.0, 120.0, 240.0, 480.0, 600.0, 600.0]
    assert b.reopens == 5
    assert b.opens == 6


def test_backoff_resets_after_recovery() -> None:
    """After closing, the next trip starts from the base timeout again."""
    b, clock = make()
    trip(b, clock)
    clock.advance(60)
    b.admit(clock.now())
    b.on_failure(clock.now(), "server_error")  # reopen: 120 s
    clock.advance(120)
    for _ in range(2):
        assert b.admit(clock.now())
        b.on_success(clock.now())
    assert b.state(clock.now()) is CLOSED
    trip(b, clock)
    assert b.retry_after(clock.now()) == 60.0


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
    clock.advance(60)
    t = b.on_failure(clock.now(), "timeout")
    assert t == Transition(old=OPEN, new=OPEN, event=E.PROBE_FAILED)
    assert b.retry_after(clock.now()) == 120.0


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
    assert b.retry_after(clock.now()) == 60.0
    b, clock = make()
    b.force_open(clock.now(), retry_after_s=bad)
    assert b.retry_after(clock.now()) == 60.0


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
    clock.advance(50)
    t = b.force_open(clock.now())
    assert t == Transition(old=OPEN, new=OPEN, event=E.FORCE_OPEN)
    assert b.retry_after(clock.now()) == 60.0
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


# --- table and config -----------------------------------------------------------------


def test_state_values_are_metric_values() -> None:
    """0 closed, 1 half-open, 2 open; str() gives the lower-case name."""
    assert [int(s) for s in (CLOSED, HALF_OPEN, OPEN)] == [0, 1, 2]
    assert str(HALF_OPEN) == "half_open"


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (CLOSED, E.RECOVERY_DUE),
        (CLOSED, E.RECOVERED),
        (CLOSED, E.PROBE_FAILED),
        (OPEN, E.TRIP),
        (OPEN, E.RECOVERED),
        (OPEN, E.PROBE_FAILED),
        (HALF_OPEN, E.TRIP),
        (HALF_OPEN, E.FAILURE),
        (HALF_OPEN, E.RECOVERY_DUE),
    ],
)
def test_illegal_transitions_raise(state: BreakerState, event: BreakerEvent) -> None:
    """Rows missing from the table are illegal moves."""
    with pytest.raises(IllegalTransition, match=event.value):
        next_state(state, event)


def test_table_is_complete_over_states_and_events() -> None:
    """Every (state, event) pair is either a table row or illegal, never anything else."""
    for state in BreakerState:
        for event in BreakerEvent:
            if (state, event) in TRANSITIONS:
                assert next_state(state, event) is TRANSITIONS[state, event][0]
            else:
                with pytest.raises(IllegalTransition):
                    next_state(state, event)
    manual = {(s, e) for s in BreakerState for e in (E.FORCE_OPEN, E.FORCE_CLOSE)}
    assert manual <= set(TRANSITIONS)


def test_transition_table_markdown() -> None:
    """The docs table has a header and one row per transition."""
    text = transition_table_markdown()
    lines = text.strip().splitlines()
    assert lines[0] == "| state | event | next state | rule |"
    assert len(lines) == 2 + len(TRANSITIONS)
    assert "| half_open | `recovered` | closed | success threshold reached |" in lines


def test_config_defaults() -> None:
    """Defaults follow reference §13."""
    cfg = BreakerConfig()
    assert (cfg.failure_threshold, cfg.success_threshold) == (5, 2)
    assert (cfg.recovery_timeout_s, cfg.max_recovery_timeout_s) == (60.0, 600.0)
    assert cfg.half_open_max_probes == 1
    assert dict(cfg.category_thresholds) == {
        "server_error": 5,
        "network_error": 3,
        "timeout": 2,
        "auth_error": 3,
    }
    assert dict(cfg.category_recovery) == {"auth_error": 10.0}
    assert cfg.max_failure_threshold == 5


def test_config_is_frozen_and_copies_mappings() -> None:
    """A config cannot change after construction, even through the caller's dict."""
    thresholds = {"timeout": 7}
    cfg = BreakerConfig(category_thresholds=thresholds)
    thresholds["timeout"] = 1
    assert cfg.category_thresholds["timeout"] == 7
    assert cfg.max_failure_threshold == 7
    with pytest.raises(FrozenInstanceError):
        cfg.failure_threshold = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        cfg.category_thresholds["timeout"] = 1  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"success_threshold": 0},
        {"half_open_max_probes": 0},
        {"category_thresholds": {"timeout": 0}},
        {"recovery_timeout_s": -1.0},
        {"recovery_timeout_s": 700.0},
        {"category_recovery": {"auth_error": 601.0}},
    ],
)
def test_config_validation(kwargs: dict[str, object]) -> None:
    """Nonsensical thresholds and timeouts are rejected."""
    with pytest.raises(ValueError):
        BreakerConfig(**kwargs)  # type: ignore[arg-type]


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
)

CONFIGS = st.builds(
    BreakerConfig,
    failure_threshold=st.integers(1, 6),
    success_threshold=st.integers(1, 3),
    half_open_max_probes=st.integers(1, 3),
)


@settings(max_examples=300, deadline=None)
@given(
    cfg=CONFIGS,
    seed=st.integers(0, 2**32),
    ops=st.lists(OPS, min_size=40, max_size=150),
)
def test_breaker_invariants(cfg: BreakerConfig, seed: int, ops: list[tuple[object, ...]]) -> None:
    """Any event sequence keeps the breaker in a possible state (habit 11)."""
    b = CircuitBreaker(cfg, random.Random(seed))
    assert b.config is cfg
    clock = FakeClock()
    bound = cfg.max_recovery_timeout_s * 1.05
    announced = CLOSED
    opens_seen = 0
    streak = 0  # consecutive successes while half-open
    required = cfg.success_threshold
    deadline = b.recovery_deadline

    for op in ops:
        now = clock.now()
        before = b.state(now)
        if before is not HALF_OPEN:
            streak = 0
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
        else:
            t = b.force_close(now)
            assert b.state(now) is CLOSED

        now = clock.now()
        state = b.state(now)
        # Transitions chain from the last announced state; only OPEN → OPEN repeats.
        if t is not None:
            assert t.old is announced
            assert t.old is not t.new or t.new is OPEN
            announced = t.new
            if t.new is OPEN:
                opens_seen += 1
                streak = 0  # every open, even one due at once, restarts the count
                ra = op[-1] if kind == "force_open" else None
                ok = isinstance(ra, float) and not math.isnan(ra)
                required = 1 if ok else cfg.success_threshold
        assert b.opens == opens_seen
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
            assert b.reopens == 0
