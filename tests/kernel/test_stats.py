"""Routing evidence and benchmark rows: EWMA maths, qualification, percentiles, histogram."""

from __future__ import annotations

import math

import pytest

from lasso.kernel.classify import MAX_RETRY_AFTER_S
from lasso.kernel.clock import FakeClock
from lasso.kernel.stats import (
    DEFAULT_RETRY_AFTER_S,
    HISTOGRAM_BUCKETS_S,
    OUTCOMES,
    QUANTILE_MIN_SAMPLES,
    RING_SIZE,
    ChannelEvidence,
    MethodStats,
)


def qualified_evidence(clock: FakeClock, latency_ms: float = 100.0) -> ChannelEvidence:
    ev = ChannelEvidence()
    for _ in range(3):
        ev.record_success(latency_ms, clock.now())
    return ev


# -- ChannelEvidence ---------------------------------------------------------------------


def test_first_success_initializes_ewma_and_probability() -> None:
    """The first success sets the mean to its latency and the probability to 1.0."""
    ev = ChannelEvidence()
    ev.record_success(80.0, 1.0)
    assert ev.ewma_ms == 80.0
    assert ev.success_prob == 1.0
    assert ev.usable_successes == 1
    assert ev.comparable_attempts == 1
    assert ev.last_observed == 1.0


def test_ewma_moves_one_eighth_toward_each_sample() -> None:
    """mean = prev + (lat - prev) / 8 after the first sample."""
    ev = ChannelEvidence()
    ev.record_success(100.0, 1.0)
    ev.record_success(180.0, 2.0)
    assert ev.ewma_ms == pytest.approx(110.0)
    ev.record_success(30.0, 3.0)
    assert ev.ewma_ms == pytest.approx(110.0 + (30.0 - 110.0) / 8)


def test_first_failure_initializes_probability_to_zero() -> None:
    """A failure before any success sets the probability to 0.0, then successes raise it."""
    ev = ChannelEvidence()
    ev.record_failure(1.0)
    assert ev.success_prob == 0.0
    assert (ev.total_failures, ev.consecutive_failures) == (1, 1)
    ev.record_success(50.0, 2.0)
    assert ev.success_prob == pytest.approx(1 / 8)
    assert ev.consecutive_failures == 0
    assert ev.total_failures == 1


def test_failure_pushes_probability_down_by_an_eighth() -> None:
    """p = p + (0 - p) / 8 on each reliability failure."""
    ev = ChannelEvidence()
    ev.record_success(50.0, 1.0)
    ev.record_failure(2.0)
    assert ev.success_prob == pytest.approx(7 / 8)
    ev.record_failure(3.0)
    assert ev.success_prob == pytest.approx(49 / 64)


def test_out_of_order_success_only_bumps_counts() -> None:
    """A success older than the last observation leaves the mean alone (reference §3.1)."""
    ev = ChannelEvidence()
    ev.record_success(100.0, 10.0)
    ev.record_success(900.0, 5.0)
    assert ev.ewma_ms == 100.0
    assert ev.usable_successes == 2
    assert ev.last_observed == 10.0


def test_qualified_needs_three_successes() -> None:
    """Two successes are provisional; the third qualifies."""
    clock = FakeClock()
    ev = ChannelEvidence()
    ev.record_success(10.0, clock.now())
    ev.record_success(10.0, clock.now())
    assert not ev.qualified(clock.now())
    assert ev.state(clock.now()) == "provisional"
    ev.record_success(10.0, clock.now())
    assert ev.qualified(clock.now())
    assert ev.state(clock.now()) == "qualified"


def test_qualification_expires_at_300_seconds() -> None:
    """The last observation must be strictly less than 300 s old; then the row is stale."""
    clock = FakeClock()
    ev = qualified_evidence(clock)
    clock.advance(299.999)
    assert ev.qualified(clock.now())
    clock.advance(0.001)
    assert not ev.qualified(clock.now())
    assert ev.state(clock.now()) == "stale"
    assert ev.prior_ms(clock.now()) == math.inf


def test_three_consecutive_failures_disqualify() -> None:
    """consecutive_failures must stay below 3."""
    clock = FakeClock()
    ev = ChannelEvidence()
    for _ in range(20):
        ev.record_success(10.0, clock.now())
    ev.record_failure(clock.now())
    ev.record_failure(clock.now())
    assert ev.qualified(clock.now())
    ev.record_failure(clock.now())
    assert not ev.qualified(clock.now())
    assert ev.state(clock.now()) == "provisional"


def test_success_probability_below_threshold_disqualifies() -> None:
    """A probability under 0.75 disqualifies even with few consecutive failures."""
    clock = FakeClock()
    ev = ChannelEvidence()
    for _ in range(3):
        ev.record_success(10.0, clock.now())
    # 1.0 -> 0.875 -> 0.765625: still qualified; one more push goes under 0.75.
    ev.record_failure(clock.now())
    ev.record_failure(clock.now())
    ev.record_success(10.0, clock.now())  # resets consecutive failures, p -> 0.7949
    assert ev.qualified(clock.now())
    ev.record_rate_limit(clock.now(), 1.0)  # p -> 0.6956
    assert ev.consecutive_failures == 0
    assert not ev.qualified(clock.now())


def test_state_unqualified_without_observations() -> None:
    """A fresh row is unqualified with an infinite prior."""
    ev = ChannelEvidence()
    assert ev.state(0.0) == "unqualified"
    assert ev.prior_ms(0.0) == math.inf
    assert ev.p95_ms() is None


def test_neutral_counts_an_attempt_and_refreshes() -> None:
    """A neutral outcome bumps comparable attempts and the observation time only."""
    ev = ChannelEvidence()
    ev.record_neutral(5.0)
    assert ev.comparable_attempts == 1
    assert ev.last_observed == 5.0
    assert ev.success_prob is None
    assert ev.state(5.0) == "provisional"
    ev.record_neutral(4.0)  # never moves the observation time backwards
    assert ev.last_observed == 5.0


def test_rate_limit_default_and_explicit_expiry() -> None:
    """retry_after defaults to 30 s; an earlier expiry never shortens a later one."""
    ev = ChannelEvidence()
    ev.record_rate_limit(100.0, None)
    assert ev.rate_limited_until == 100.0 + DEFAULT_RETRY_AFTER_S
    ev.record_rate_limit(101.0, 2.0)
    assert ev.rate_limited_until == 130.0
    ev.record_rate_limit(102.0, 60.0)
    assert ev.rate_limited_until == 162.0
    assert ev.rate_limited(161.9)
    assert not ev.rate_limited(162.0)
    assert ev.rate_limit_remaining(150.0) == pytest.approx(12.0)
    assert ev.rate_limit_remaining(170.0) == 0.0
    assert ev.total_rate_limits == 3
    assert ev.success_prob == pytest.approx(0.0)


def test_negative_retry_after_counts_as_zero() -> None:
    """A negative retry-after does not rate-limit at all."""
    ev = ChannelEvidence()
    ev.record_rate_limit(10.0, -5.0)
    assert not ev.rate_limited(10.0)


def test_rate_limit_expiry_is_bounded() -> None:
    """An absurd retry-after rate-limits for MAX_RETRY_AFTER_S at most; NaN means unknown."""
    ev = ChannelEvidence()
    ev.record_rate_limit(10.0, 1e308)
    assert ev.rate_limited_until == 10.0 + MAX_RETRY_AFTER_S
    nan = ChannelEvidence()
    nan.record_rate_limit(10.0, float("nan"))
    assert nan.rate_limited_until == 10.0 + DEFAULT_RETRY_AFTER_S


def test_channel_summary_is_json_ready() -> None:
    """The summary carries state, mean, probability and the rate limit."""
    clock = FakeClock()
    ev = qualified_evidence(clock, 42.0)
    ev.record_rate_limit(clock.now(), 10.0)
    out = ev.summary(clock.now())
    assert out["state"] == "qualified"
    assert out["ewma_ms"] == 42.0
    assert out["rate_limited_remaining_s"] == 10.0
    assert out["total_rate_limits"] == 1
    assert "ewma=42.0ms" in repr(ev)


# -- MethodStats -------------------------------------------------------------------------


def test_method_stats_counts_outcomes() -> None:
    """Each outcome is counted; failures and timeouts are provider failures."""
    row = MethodStats()
    row.record_success(10.0, 1.0)
    row.record_outcome("error", 2.0, 5.0)
    row.record_outcome("capability", 3.0)
    row.record_outcome("rate_limited", 4.0)
    row.record_outcome("failure", 5.0)
    row.record_outcome("timeout", 6.0, 2000.0)
    assert row.calls == 6
    assert row.successes == 1
    assert row.failures == 2
    assert row.outcomes == dict.fromkeys(OUTCOMES, 1)
    assert row.success_rate == pytest.approx(1 / 6)
    assert row.consecutive_failures == 2
    assert row.comparable_attempts == 6
    assert row.last_updated == 6.0
    assert row.hist_count == 3  # latencies were known for three of them


def test_method_stats_rejects_success_outcome() -> None:
    """A success must come with its latency through record_success."""
    with pytest.raises(ValueError):
        MethodStats().record_outcome("success", 1.0)


def test_percentiles_nearest_rank() -> None:
    """p50/p95/p99 are sorted[ceil(n*q) - 1]."""
    row = MethodStats()
    assert row.percentiles() == (None, None, None)
    assert row.success_rate is None
    for v in range(1, 101):  # 1..100 ms, shuffled order should not matter
        row.record_success(float((v * 37) % 100 + 1), 1.0)
    assert row.percentiles() == (50.0, 95.0, 99.0)
    small = MethodStats()
    for ms in (30.0, 10.0, 20.0):
        small.record_success(ms, 1.0)
    # n=3: ceil(1.5)=2 -> 20, ceil(2.85)=3 -> 30, ceil(2.97)=3 -> 30
    assert small.percentiles() == (20.0, 30.0, 30.0)
    assert small.p95_ms() == 30.0


def test_percentile_cache_refreshes_on_success() -> None:
    """Percentiles are recomputed after a new success."""
    row = MethodStats()
    row.record_success(10.0, 1.0)
    assert row.percentiles() == (10.0, 10.0, 10.0)
    row.record_success(20.0, 2.0)
    assert row.percentiles() == (10.0, 20.0, 20.0)


def test_ring_keeps_last_hundred() -> None:
    """Only the last 100 successful latencies are kept, oldest first."""
    row = MethodStats()
    for v in range(250):
        row.record_success(float(v), 1.0)
    recent = row.recent_latencies()
    assert len(recent) == RING_SIZE
    assert recent == [float(v) for v in range(150, 250)]
    assert row.percentiles()[0] == 199.0


def test_latency_quantile_needs_samples_and_uses_nearest_rank() -> None:
    """latency_quantile(q) is None below the minimum, then sorted[ceil(n*q) - 1]."""
    row = MethodStats()
    for v in range(1, QUANTILE_MIN_SAMPLES):
        row.record_success(float(v), 1.0)
    assert row.latency_quantile(0.9) is None
    for v in range(QUANTILE_MIN_SAMPLES, 101):
        row.record_success(float(v), 1.0)
    assert row.latency_quantile(0.9) == 90.0
    assert row.latency_quantile(0.5) == 50.0  # another q is computed afresh


def test_latency_quantile_is_cached_for_a_few_writes() -> None:
    """The cached quantile is reused for up to seven writes, then recomputed."""
    row = MethodStats()
    for _ in range(20):
        row.record_success(10.0, 1.0)
    assert row.latency_quantile(0.5) == 10.0
    for _ in range(7):
        row.record_success(1000.0, 1.0)
    assert row.latency_quantile(0.5) == 10.0
    for _ in range(20):
        row.record_success(1000.0, 1.0)
    assert row.latency_quantile(0.5) == 1000.0


def test_lower_bound_enters_the_window_only() -> None:
    """A hedged-away attempt's elapsed time joins the percentiles, not the counts or EWMA."""
    row = MethodStats()
    row.record_success(10.0, 1.0)
    row.record_lower_bound(500.0)
    assert row.percentiles() == (10.0, 500.0, 500.0)
    assert row.calls == 1 and row.successes == 1 and row.hist_count == 1
    assert row.ewma_ms == 10.0


def test_histogram_buckets_use_le_semantics() -> None:
    """A latency equal to a bound lands in that bucket; huge ones go to +Inf."""
    row = MethodStats()
    for ms in (5.0, 5.0001, 100.0, 10_000.0, 99_000.0):
        row.record_success(ms, 1.0)
    idx = {le: i for i, le in enumerate(HISTOGRAM_BUCKETS_S)}
    assert row.bucket_counts[idx[0.005]] == 1
    assert row.bucket_counts[idx[0.01]] == 1
    assert row.bucket_counts[idx[0.1]] == 1
    assert row.bucket_counts[idx[10.0]] == 1
    assert row.bucket_counts[idx[math.inf]] == 1
    assert row.hist_sum_s == pytest.approx((5 + 5.0001 + 100 + 10_000 + 99_000) / 1000)
    cumulative = row.cumulative_buckets()
    assert cumulative[-1] == (math.inf, 5)
    assert [c for _, c in cumulative] == sorted(c for _, c in cumulative)
    assert cumulative[idx[0.1]] == (0.1, 3)


def test_method_stats_rate_limit_pushes_probability() -> None:
    """A rate-limited outcome lowers the row's probability without a failure count."""
    row = MethodStats()
    row.record_success(10.0, 1.0)
    row.record_outcome("rate_limited", 2.0)
    assert row.success_prob == pytest.approx(7 / 8)
    assert row.failures == 0
    assert row.consecutive_failures == 0


def test_method_summary_is_json_ready() -> None:
    """The summary has counts, success rate, percentiles and state."""
    row = MethodStats()
    for v in (10.0, 20.0, 30.0):
        row.record_success(v, 1.0)
    out = row.summary(2.0)
    assert out["calls"] == 3
    assert out["success_rate"] == 1.0
    assert (out["p50_ms"], out["p95_ms"], out["p99_ms"]) == (20.0, 30.0, 30.0)
    assert out["state"] == "qualified"
    assert out["last_updated_age_s"] == 1.0
    assert "calls=3" in repr(row)
    assert MethodStats().summary(0.0)["last_updated_age_s"] is None


def test_clearing_the_failure_streak_makes_a_recovered_channel_explorable_again() -> None:
    ev = ChannelEvidence()
    for t in range(5):
        ev.record_success(10.0, float(t))
    for t in range(5, 8):
        ev.record_failure(float(t))
    assert ev.consecutive_failures == 3 and not ev.qualified(8.0)
    prob = ev.success_prob
    ev.clear_failure_streak()
    assert ev.consecutive_failures == 0
    assert ev.success_prob == prob and ev.total_failures == 3  # history is kept
    assert not ev.qualified(8.0)  # below 0.75: it must be re-measured first
    for t in (9.0, 10.0, 11.0):  # 0.67 -> 0.71 -> 0.75 -> 0.78
        ev.record_success(10.0, t)
    assert ev.qualified(11.0)
