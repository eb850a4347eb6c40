"""Health-probe verdicts, back-off and breaker effects (lasso.probes.health), no IO."""

from __future__ import annotations

import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.kernel.breaker import BreakerConfig, BreakerState, CircuitBreaker
from lasso.kernel.classify import Category
from lasso.kernel.clock import FakeClock
from lasso.probes.health import (
    AUTH_BACKOFF_S,
    RATE_LIMIT_BACKOFF_S,
    ProbeKind,
    ProbeResult,
    ProbeState,
    apply_recovery_probe,
    apply_to_breaker,
    failure_backoff,
    judge_error,
    judge_probe,
    parse_quantity,
    probe_result_fault,
    recovery_gap,
)


def rpc_result(value: object) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": "lasso-probe", "result": value})


def rpc_error(code: object, message: str, data: object = None) -> bytes:
    err: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return orjson.dumps({"jsonrpc": "2.0", "id": "lasso-probe", "error": err})


class MaxRng:
    """An rng stuck just below 1: the largest jitter."""

    def random(self) -> float:
        return 0.999999


class MinRng:
    def random(self) -> float:
        return 0.0


# -- judge_probe ----------------------------------------------------------------------


def test_height_answer_is_ok_with_the_height() -> None:
    """A 200 with a hex result is ok and carries the number."""
    r = judge_probe(200, rpc_result("0x10"))
    assert r == ProbeResult(ProbeKind.OK, value=16)


def test_expected_chain_id_is_ok_and_a_wrong_one_is_misconfigured() -> None:
    """eth_chainId is checked against the configured chain id."""
    assert judge_probe(200, rpc_result("0x1"), expect_chain_id=1).kind is ProbeKind.OK
    wrong = judge_probe(200, rpc_result("0x2105"), expect_chain_id=1)
    assert wrong.kind is ProbeKind.MISCONFIGURED
    assert wrong.value == 8453 and "wrong chain id 8453" in wrong.detail


@pytest.mark.parametrize("status", [401, 402])
def test_401_and_402_are_misconfigured(status: int) -> None:
    """Bad credentials or an unpaid plan: misconfigured, whatever the body."""
    r = judge_probe(status, rpc_error(-32000, "rate limit"))
    assert r.kind is ProbeKind.MISCONFIGURED and str(status) in r.detail


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, b""),
        (429, rpc_error(-32000, "slow down")),
        (403, b"<html>Forbidden</html>"),
        (403, rpc_error(-32000, "forbidden")),
        (503, b"Rate limit exceeded, try later"),
        (502, b"429 Too Many Requests"),
        (200, rpc_error(-32005, "limit")),
        (200, rpc_error(-32007, "request rate exceeded")),
        (200, rpc_error(-32029, "x")),
        (200, rpc_error(-32000, "Too many requests, please slow down")),
        (200, rpc_error(30, "whatever")),  # provider table: code 30 is a rate limit
    ],
)
def test_quota_answers_are_rate_limited(status: int, body: bytes) -> None:
    """HTTP 429/403, 5xx rate-limit bodies and JSON-RPC quota errors are rate limits."""
    r = judge_probe(status, body, retry_after_s=7.0)
    assert r.kind is ProbeKind.RATE_LIMITED
    assert r.retry_after_s == 7.0


@pytest.mark.parametrize(
    ("status", "body", "category"),
    [
        (500, b"oops", "server_error"),
        (404, b"not here", "server_error"),
        (500, rpc_error(-32603, "internal error"), "internal_error"),
        (200, rpc_error(-32603, "internal error"), "internal_error"),
        (200, rpc_error(-32601, "the method does not exist"), "unknown_error"),
        (200, rpc_error(3, "execution reverted"), "unknown_error"),
        (200, b"<html>", "protocol_error"),
        (200, b"[]", "protocol_error"),
        (200, rpc_result(None), "protocol_error"),
        (200, rpc_result("12"), "protocol_error"),
        (200, rpc_result("0xzz"), "protocol_error"),
        (200, rpc_error(True, "bool code"), "protocol_error"),
        (200, b"", "protocol_error"),
    ],
)
def test_other_answers_are_failures_with_a_penalizing_category(
    status: int, body: bytes, category: str
) -> None:
    """Anything else is a failure, always in a category the breaker counts."""
    r = judge_probe(status, body)
    assert r.kind is ProbeKind.FAILURE
    assert r.category == category


def test_auth_message_on_200_is_misconfigured() -> None:
    """An 'invalid API key' error object means the credentials are wrong."""
    r = judge_probe(200, rpc_error(-32000, "Invalid API key"))
    assert r.kind is ProbeKind.MISCONFIGURED


def test_judge_error_keeps_the_transport_category() -> None:
    """A refused or timed-out probe is a failure of the transport's category."""
    r = judge_error("network_error", "cannot connect" * 100)
    assert r.kind is ProbeKind.FAILURE and r.category == "network_error"
    assert len(r.detail) == 200


@settings(max_examples=300, deadline=None)
@given(status=st.integers(100, 599), body=st.binary(max_size=200))
def test_any_answer_yields_a_verdict(status: int, body: bytes) -> None:
    """No status and body make the judge raise; failures always carry a category."""
    r = judge_probe(status, body, expect_chain_id=1)
    assert isinstance(r.kind, ProbeKind)
    if r.kind is ProbeKind.FAILURE:
        assert r.category is not None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0x0", 0), ("0X1f", 31), ("0x", None), ("12", None), (12, None), ("0x" + "f" * 65, None)],
)
def test_parse_quantity(value: object, expected: int | None) -> None:
    """Only 0x hex strings of sane length parse."""
    assert parse_quantity(value) == expected


# -- back-off and schedule ------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "base"), [(1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (9, 30.0), (0, 2.0)]
)
def test_failure_backoff_doubles_to_30s_with_20pct_jitter(n: int, base: float) -> None:
    """2 s, 4 s, 8 s, 16 s, then 30 s; jitter stays within ±20 %."""
    assert failure_backoff(n, MinRng()) == pytest.approx(base * 0.8)
    assert failure_backoff(n, MaxRng()) == pytest.approx(base * 1.2, rel=1e-5)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 50), seed=st.integers(0, 2**32))
def test_failure_backoff_bounds(n: int, seed: int) -> None:
    """Every back-off lies in [1.6 s, 36 s)."""
    b = failure_backoff(n, random.Random(seed))
    assert 1.6 <= b < 36.0


def test_state_walks_through_degraded_unhealthy_and_back() -> None:
    """Failures degrade then mark unhealthy with growing waits; one ok resets it all."""
    clock = FakeClock()
    s = ProbeState()
    assert s.status == "unknown" and s.due(clock.now())
    fail = ProbeResult(ProbeKind.FAILURE, category="network_error", detail="refused")
    waits = []
    for expected in ("degraded", "degraded", "unhealthy", "unhealthy"):
        s.record(fail, clock.now(), 1.0, MinRng())
        assert s.status == expected
        waits.append(s.next_due - clock.now())
        clock.advance(100)
    assert waits == pytest.approx([1.6, 3.2, 6.4, 12.8])
    s.record(ProbeResult(ProbeKind.OK, value=5), clock.now(), 1.0, MinRng())
    assert s.status == "healthy" and s.failures == 0
    assert s.next_due == clock.now() + 1.0
    assert s.counts == {"ok": 1, "failure": 4, "rate_limited": 0, "misconfigured": 0}


def test_interval_bounds_the_backoff_from_below() -> None:
    """A long probe interval is never shortened by a small back-off."""
    s = ProbeState()
    s.record(ProbeResult(ProbeKind.FAILURE, category="timeout"), 10.0, 12.0, MaxRng())
    assert s.next_due == 22.0


def test_rate_limit_and_misconfiguration_back_off_long() -> None:
    """A quota answer waits 30 s, a misconfiguration 120 s."""
    s = ProbeState()
    s.record(ProbeResult(ProbeKind.RATE_LIMITED), 0.0, 1.0, MinRng())
    assert (s.status, s.next_due) == ("rate_limited", RATE_LIMIT_BACKOFF_S)
    s.record(ProbeResult(ProbeKind.MISCONFIGURED, detail="HTTP 401"), 0.0, 1.0, MinRng())
    assert (s.status, s.next_due) == ("misconfigured", AUTH_BACKOFF_S)
    snap = s.snapshot(10.0)
    assert snap["status"] == "misconfigured" and snap["detail"] == "HTTP 401"
    assert snap["next_in_s"] == 110.0 and snap["last_probe_age_s"] == 10.0
    assert "misconfigured" in repr(s)


@settings(max_examples=200, deadline=None)
@given(kinds=st.lists(st.sampled_from(list(ProbeKind)), max_size=30))
def test_status_always_matches_the_last_verdict(kinds: list[ProbeKind]) -> None:
    """Whatever the sequence, the status follows the last verdict and the next probe is
    at least one interval away."""
    clock = FakeClock()
    s = ProbeState()
    rng = random.Random(1)
    run = 0
    for kind in kinds:
        s.record(ProbeResult(kind, category="server_error"), clock.now(), 0.5, rng)
        assert s.next_due >= clock.now() + 0.5
        if kind is ProbeKind.FAILURE:
            run += 1
            assert s.status == ("unhealthy" if run >= 3 else "degraded")
        else:
            run = 0 if kind is ProbeKind.OK else run
            expected = {"ok": "healthy", "rate_limited": "rate_limited"}.get(kind, "misconfigured")
            assert s.status == expected
        clock.advance(1)
    assert sum(s.counts.values()) == len(kinds)


# -- breaker effects ------------------------------------------------------------------


def breaker() -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(recovery_timeout_s=10.0), random.Random(0))


def test_ok_without_the_slot_does_not_reset_client_failures() -> None:
    """An idle probe's success leaves a closed breaker's failure count alone."""
    b = breaker()
    b.on_failure(0.0, "server_error")
    assert apply_to_breaker(ProbeResult(ProbeKind.OK), b, 1.0, holds_slot=False) is None
    assert b.consecutive_failures == 1


def test_failures_count_with_their_category() -> None:
    """Three refused probes open the circuit (network threshold)."""
    b = breaker()
    fail = ProbeResult(ProbeKind.FAILURE, category="network_error")
    assert apply_to_breaker(fail, b, 0.0, holds_slot=False) is None
    apply_to_breaker(fail, b, 1.0, holds_slot=False)
    tr = apply_to_breaker(fail, b, 2.0, holds_slot=False)
    assert tr is not None and tr.new is BreakerState.OPEN


def test_failure_without_category_is_unknown_error() -> None:
    """A failure with no category still penalizes (unknown_error)."""
    b = breaker()
    apply_to_breaker(ProbeResult(ProbeKind.FAILURE), b, 0.0, holds_slot=False)
    assert b.consecutive_failures == 1


def test_half_open_probe_successes_close_through_the_normal_path() -> None:
    """Holding the half-open slot, two probe successes close the circuit."""
    b = breaker()
    b.force_open(0.0)
    now = 20.0
    assert b.state(now) is BreakerState.HALF_OPEN
    assert b.admit(now)
    tr = apply_to_breaker(ProbeResult(ProbeKind.OK), b, now, holds_slot=True)
    assert tr is not None and tr.new is BreakerState.HALF_OPEN  # the due recovery, reported
    assert b.in_flight_probes == 0
    assert b.admit(now)
    tr = apply_to_breaker(ProbeResult(ProbeKind.OK), b, now, holds_slot=True)
    assert tr is not None and tr.new is BreakerState.CLOSED


def test_half_open_probe_failure_reopens_with_backoff() -> None:
    """A failed half-open probe reopens the circuit for twice the base timeout."""
    b = breaker()
    b.force_open(0.0)
    assert b.admit(20.0)
    tr = apply_to_breaker(
        ProbeResult(ProbeKind.FAILURE, category="server_error"), b, 20.0, holds_slot=True
    )
    assert tr is not None and tr.new is BreakerState.OPEN
    assert 20.0 <= (b.retry_after(20.0) or 0) <= 21.0


def test_misconfiguration_opens_for_the_auth_backoff_and_one_success_closes() -> None:
    """401 opens the circuit for 120 s as a quota open: one success heals it."""
    b = breaker()
    tr = apply_to_breaker(ProbeResult(ProbeKind.MISCONFIGURED), b, 0.0, holds_slot=False)
    assert tr is not None and tr.new is BreakerState.OPEN
    assert AUTH_BACKOFF_S <= (b.retry_after(0.0) or 0) <= AUTH_BACKOFF_S * 1.05
    later = AUTH_BACKOFF_S * 1.06
    assert b.admit(later)
    tr = apply_to_breaker(ProbeResult(ProbeKind.OK), b, later, holds_slot=True)
    assert tr is not None and tr.new is BreakerState.CLOSED


def test_misconfiguration_while_holding_the_slot_reopens_and_frees_it() -> None:
    """A half-open probe that finds a bad key reopens the circuit; no slot leaks."""
    b = breaker()
    b.force_open(0.0)
    assert b.admit(20.0)
    apply_to_breaker(ProbeResult(ProbeKind.MISCONFIGURED), b, 20.0, holds_slot=True)
    assert b.state(20.0) is BreakerState.OPEN and b.in_flight_probes == 0


def test_wrong_chain_never_touches_the_shared_breaker() -> None:
    """A wrong chain id is the chain's configuration: no open, a held slot released."""
    wrong = judge_probe(200, rpc_result("0x7a69"), expect_chain_id=5)
    assert wrong.wrong_chain and not ProbeResult(ProbeKind.MISCONFIGURED).wrong_chain
    b = breaker()
    assert apply_to_breaker(wrong, b, 0.0, holds_slot=False) is None
    assert b.state(0.0) is BreakerState.CLOSED and b.consecutive_failures == 0
    b.force_open(0.0)
    assert b.admit(20.0)
    apply_to_breaker(wrong, b, 20.0, holds_slot=True)
    assert b.state(20.0) is BreakerState.HALF_OPEN and b.in_flight_probes == 0
    opened = open_breaker()
    at = opened.opened_at
    assert at is not None
    assert apply_recovery_probe(wrong, opened, 4.0, opened_at=at) is None
    assert opened.probe_assisted(4.0) and opened.opened_at == at


def test_rate_limit_is_neutral_and_releases_the_slot() -> None:
    """A quota answer never penalizes; a held half-open slot is released."""
    b = breaker()
    assert apply_to_breaker(ProbeResult(ProbeKind.RATE_LIMITED), b, 0.0, holds_slot=False) is None
    assert b.consecutive_failures == 0
    b.force_open(0.0)
    assert b.admit(20.0)
    apply_to_breaker(ProbeResult(ProbeKind.RATE_LIMITED), b, 20.0, holds_slot=True)
    assert b.in_flight_probes == 0 and b.state(20.0) is BreakerState.HALF_OPEN


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(list(ProbeKind)), st.booleans(), st.floats(0, 30)),
        max_size=40,
    )
)
def test_probe_reports_never_leave_the_breaker_impossible(
    steps: list[tuple[ProbeKind, bool, float]],
) -> None:
    """Probes admitted or not, in any order: probe slots never leak or go negative, and an
    open breaker always has a future deadline."""
    b = breaker()
    now = 0.0
    for kind, try_slot, dt in steps:
        now += dt
        holds = try_slot and b.state(now) is BreakerState.HALF_OPEN and b.admit(now)
        apply_to_breaker(
            ProbeResult(kind, category=Category.SERVER_ERROR), b, now, holds_slot=holds
        )
        assert 0 <= b.in_flight_probes <= b.config.half_open_max_probes
        if holds:
            assert b.in_flight_probes == 0
        if b.state(now) is BreakerState.OPEN:
            assert (b.retry_after(now) or 0) > 0


# -- probe-assisted recovery ----------------------------------------------------------


def test_recovery_gap_is_the_interval_plus_up_to_20_percent() -> None:
    """The jitter only lengthens the gap: never more often than the interval."""
    assert recovery_gap(2.0, MinRng()) == 2.0
    assert recovery_gap(2.0, MaxRng()) == pytest.approx(2.4, rel=1e-5)


@settings(max_examples=100, deadline=None)
@given(interval=st.floats(0.1, 60), seed=st.integers(0, 2**32))
def test_recovery_gap_bounds(interval: float, seed: int) -> None:
    """Every gap lies in [interval, 1.2 × interval)."""
    gap = recovery_gap(interval, random.Random(seed))
    assert interval <= gap < interval * 1.2


def test_first_recovery_probe_waits_a_gap_after_the_open() -> None:
    """A new open period schedules its first probe one gap after it began; each probe
    sent pushes the next one a gap away; a new period starts over."""
    s = ProbeState()
    opened = 100.0
    assert not s.recovery_probe_due(opened, opened, 2.0, MinRng())
    assert not s.recovery_probe_due(opened, opened + 1.999, 2.0, MinRng())
    assert s.recovery_probe_due(opened, opened + 2.0, 2.0, MinRng())
    s.recovery_sent(opened + 2.0, 2.0, MinRng())
    assert not s.recovery_probe_due(opened, opened + 3.9, 2.0, MinRng())
    assert s.recovery_probe_due(opened, opened + 4.0, 2.0, MinRng())
    assert not s.recovery_probe_due(150.0, 150.5, 2.0, MinRng())  # reopened at 150
    assert s.snapshot(0.0)["recovery_counts"] == {
        "ok": 0,
        "failure": 0,
        "rate_limited": 0,
        "misconfigured": 0,
    }


def open_breaker() -> CircuitBreaker:
    b = breaker()
    for t in range(3):
        b.on_failure(float(t), "network_error")
    assert b.probe_assisted(2.0)
    return b


def test_two_good_recovery_probes_move_the_circuit_to_half_open() -> None:
    """ok, ok → probe_recovery, well before the 10 s deadline."""
    b = open_breaker()
    opened = b.opened_at
    assert opened is not None
    ok = ProbeResult(ProbeKind.OK, value=7)
    assert apply_recovery_probe(ok, b, 4.0, opened_at=opened) is None
    tr = apply_recovery_probe(ok, b, 6.0, opened_at=opened)
    assert tr is not None and (tr.old, tr.new) == (BreakerState.OPEN, BreakerState.HALF_OPEN)
    assert tr.event == "probe_recovery"


@pytest.mark.parametrize("kind", [ProbeKind.FAILURE, ProbeKind.RATE_LIMITED])
def test_bad_recovery_probe_restarts_the_streak_without_penalty(kind: ProbeKind) -> None:
    """A failed or quota answer neither counts as a failure nor moves the deadline."""
    b = open_breaker()
    opened, deadline = b.opened_at, b.recovery_deadline
    assert opened is not None
    apply_recovery_probe(ProbeResult(ProbeKind.OK), b, 4.0, opened_at=opened)
    bad = ProbeResult(kind, category="network_error")
    assert apply_recovery_probe(bad, b, 5.0, opened_at=opened) is None
    assert b.probe_streak == 0 and b.recovery_deadline == deadline
    assert b.consecutive_failures == 3 and b.opens == 1
    assert apply_recovery_probe(ProbeResult(ProbeKind.OK), b, 6.0, opened_at=opened) is None
    assert b.state(6.0) is BreakerState.OPEN


def test_misconfigured_recovery_probe_opens_for_the_auth_backoff() -> None:
    """A 401 to a recovery probe turns the open into a misconfiguration open: unassisted."""
    b = open_breaker()
    opened = b.opened_at
    assert opened is not None
    tr = apply_recovery_probe(ProbeResult(ProbeKind.MISCONFIGURED), b, 4.0, opened_at=opened)
    assert tr is not None and tr.event == "manual_open"
    assert (b.retry_after(4.0) or 0) >= AUTH_BACKOFF_S
    assert not b.probe_assisted(4.0)


def test_answer_from_a_past_open_period_counts_for_nothing() -> None:
    """A probe sent before the circuit reopened (or recovered) does not feed the streak."""
    b = open_breaker()
    ok = ProbeResult(ProbeKind.OK)
    assert apply_recovery_probe(ok, b, 4.0, opened_at=1.0) is None
    assert b.probe_streak == 0
    tr = apply_recovery_probe(ok, b, 50.0, opened_at=1.0)  # deadline passed meanwhile
    assert tr is not None and tr.event == "proactive_recovery"


def test_probe_result_faults() -> None:
    """Probe verdicts as the channel's last error: good is no fault; 401, wrong chain, 5xx,
    429 and junk each say so."""
    assert probe_result_fault(judge_probe(200, b'{"result":"0x10"}'), 200) is None
    f = probe_result_fault(judge_probe(401, b""), 401)
    assert f is not None and (f.cause, f.category, f.status) == ("http_status", "auth_error", 401)
    wrong = judge_probe(200, b'{"result":"0x2105"}', expect_chain_id=1)
    f = probe_result_fault(wrong, 200)
    assert f is not None and (f.cause, f.category) == ("wrong_chain", "chain_error")
    assert "wrong chain id 8453" in f.message
    f = probe_result_fault(judge_probe(502, b"bad gateway"), 502)
    assert f is not None and (f.cause, f.category, f.status) == ("http_status", "server_error", 502)
    f = probe_result_fault(judge_probe(429, b""), 429)
    assert f is not None and (f.category, f.status) == ("rate_limit", 429)
    f = probe_result_fault(judge_probe(200, b"<html>"), 200)
    assert f is not None and f.cause == "protocol"
    in_500 = judge_probe(500, b'{"error":{"code":-32603,"message":"internal error"}}')
    f = probe_result_fault(in_500, 500)
    assert f is not None and f.message == "HTTP 500: -32603: internal error"
    err = judge_probe(200, b'{"error":{"code":-32603,"message":"db down"}}')
    f = probe_result_fault(err, 200)
    assert f is not None and (f.cause, f.message) == ("rpc_error", "-32603: db down")
