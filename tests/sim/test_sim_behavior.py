"""Tests of Behavior validation, latency sampling, the token bucket and the counters."""

from __future__ import annotations

import random
import statistics

import pytest

from lasso.sim import Behavior, ProviderStats, TokenBucket
from lasso.sim.behavior import sample_latency_s


def test_defaults_are_healthy_and_instant() -> None:
    """A default behaviour injects nothing."""
    b = Behavior()
    assert (b.latency_ms, b.error_rate, b.lag_blocks, b.rate_limit_rps) == (0.0, 0.0, 0, None)
    assert not (b.hang or b.down or b.drop or b.malformed) and b.archival


@pytest.mark.parametrize(
    "fields",
    [
        {"latency_ms": -1},
        {"error_rate": 1.5},
        {"error_mode": "http503"},
        {"rate_limit_mode": "close"},
        {"rate_limit_rps": 0},
        {"lag_blocks": 1.5},
        {"lag_blocks": -2},
        {"hang": "yes"},
        {"max_block_range": 10.5},
        {"unsupported_methods": "eth_getLogs"},
        {"method_latency_ms": {"eth_call": -5}},
        {"no_such_field": 1},
    ],
)
def test_bad_fields_are_rejected(fields: dict[str, object]) -> None:
    """Unknown fields and out-of-range values raise ValueError naming the field."""
    with pytest.raises(ValueError, match=next(iter(fields))):
        Behavior.from_mapping(fields)


def test_replace_and_round_trip() -> None:
    """replace validates and coerces; to_dict feeds from_mapping back to an equal value."""
    b = Behavior().replace(latency_ms=10, unsupported_methods=["a", "b"], max_block_range=500.0)
    assert b.latency_ms == 10.0 and b.unsupported_methods == frozenset({"a", "b"})
    assert b.max_block_range == 500 and isinstance(b.max_block_range, int)
    assert Behavior.from_mapping(b.to_dict()) == b


def test_latency_median_jitter_and_overrides() -> None:
    """The sampled delay has the configured median; per-method overrides win."""
    rng = random.Random(7)
    steady = Behavior(latency_ms=40)
    assert sample_latency_s(steady, ["eth_call"], rng) == pytest.approx(0.040)
    jittery = Behavior(latency_ms=40, jitter=0.5)
    samples = [sample_latency_s(jittery, [], rng) for _ in range(2001)]
    assert statistics.median(samples) == pytest.approx(0.040, rel=0.1)
    assert max(samples) > 0.1  # a long right tail
    slow_logs = Behavior(latency_ms=5, method_latency_ms={"eth_getLogs": 80})
    assert sample_latency_s(slow_logs, ["eth_chainId", "eth_getLogs"], rng) == 0.080
    assert sample_latency_s(Behavior(), ["x"], rng) == 0.0


def test_late_tail() -> None:
    """A tail_rate share of answers is tail_ms late; the rest keep their median."""
    rng = random.Random(3)
    tailed = Behavior(latency_ms=5, tail_rate=0.08, tail_ms=500)
    samples = [sample_latency_s(tailed, [], rng) for _ in range(5000)]
    late = sum(1 for d in samples if d > 0.4)
    assert 0.06 < late / len(samples) < 0.10
    assert statistics.median(samples) == pytest.approx(0.005)
    assert max(samples) == pytest.approx(0.505)
    with pytest.raises(ValueError, match="tail_rate"):
        Behavior(tail_rate=1.5)


def test_token_bucket_refills_over_time() -> None:
    """A bucket passes a burst, refuses more, and refills at its rate."""
    bucket = TokenBucket(rate=2.0, burst=2.0, now=0.0)
    assert bucket.take(0.0) and bucket.take(0.0)
    assert not bucket.take(0.0)
    assert not bucket.take(0.4)
    assert bucket.take(0.5)
    assert bucket.take(10.0, cost=50)  # a cost above the burst is capped, not starved


def test_stats_reset_keeps_the_connection_gauge() -> None:
    """reset() zeroes counters but not the open WebSocket connection count."""
    stats = ProviderStats(requests=3, calls=4, ws_connections=2)
    stats.methods["eth_call"] += 4
    stats.statuses["200"] += 3
    stats.reset()
    assert stats.to_dict()["requests"] == 0 and not stats.methods and not stats.statuses
    assert stats.ws_connections == 2
