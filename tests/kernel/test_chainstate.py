"""Chain state: consensus height, block-time EMA, optimistic lag (reference §6)."""

from __future__ import annotations

import pytest

from lasso.kernel.chainstate import (
    BLOCK_TIME_WARMUP,
    CONSENSUS_WINDOW_S,
    FALLBACK_BLOCK_TIME_MS,
    ChainState,
)
from lasso.kernel.clock import FakeClock


def feed(state: ChainState, heights: list[int], now: float) -> None:
    for i, h in enumerate(heights):
        state.observe_height(f"p{i}", h, now)


@pytest.mark.parametrize(
    ("n", "rank"),
    [(1, 1), (2, 1), (3, 1), (4, 2), (7, 2), (8, 3), (10, 3), (11, 3), (12, 4)],
)
def test_consensus_index_floor_quarter(n: int, rank: int) -> None:
    """1-3 providers: the max; 4-7: 2nd highest; 8-11: 3rd (index floor(n*0.25))."""
    state = ChainState(12_000)
    feed(state, [100 + i for i in range(n)], 10.0)
    assert state.consensus(10.0) == 100 + n - rank


def test_consensus_ignores_stale_heights() -> None:
    """Only heights observed within 30 s count; none fresh means no consensus."""
    clock = FakeClock(0.0)
    state = ChainState()
    assert state.consensus(clock.now()) is None
    state.observe_height("a", 500, clock.now())
    clock.advance(20)
    state.observe_height("b", 400, clock.now())
    assert state.consensus(clock.now()) == 500
    clock.advance(10)  # a is exactly 30 s old: still fresh
    assert state.consensus(clock.now()) == 500
    clock.advance(0.001)
    assert state.consensus(clock.now()) == 400
    clock.advance(CONSENSUS_WINDOW_S)
    assert state.consensus(clock.now()) is None


def test_consensus_cache_invalidated_by_observation() -> None:
    """A new height changes the consensus at once."""
    state = ChainState()
    state.observe_height("a", 10, 1.0)
    assert state.consensus(1.0) == 10
    state.observe_height("a", 11, 1.5)
    assert state.consensus(1.5) == 11
    state.forget("a")
    assert state.consensus(1.5) is None
    assert state.height("a") is None
    state.forget("a")  # unknown: no-op


def test_block_time_fallbacks() -> None:
    """Configured block time until the EMA is warm; 12 s when none is configured."""
    assert ChainState().block_time_ms == FALLBACK_BLOCK_TIME_MS
    assert ChainState(2_000).block_time_ms == 2_000
    assert ChainState(0).block_time_ms == FALLBACK_BLOCK_TIME_MS


def test_block_time_ema_trusted_after_five_samples() -> None:
    """The EMA (alpha 0.15) replaces the configured value after 5 samples."""
    clock = FakeClock(0.0)
    state = ChainState(12_000)
    state.observe_height("a", 100, clock.now())
    for i in range(1, BLOCK_TIME_WARMUP):
        clock.advance(2.0)
        state.observe_height("a", 100 + i, clock.now())
        assert state.block_time_ms == 12_000
    clock.advance(2.0)
    state.observe_height("a", 100 + BLOCK_TIME_WARMUP, clock.now())
    assert state.block_time_ms == pytest.approx(2_000)


def test_block_time_ema_math_and_multi_block_jumps() -> None:
    """interval = elapsed // blocks advanced; ema = ema*0.85 + interval*0.15."""
    state = ChainState()
    state.observe_height("a", 100, 0.0)
    state.observe_height("a", 101, 2.0)  # 2000 ms: first sample initializes
    state.observe_height("a", 104, 14.0)  # 12000 // 3 = 4000 ms
    expected = 2000 * 0.85 + 4000 * 0.15
    for h, t in ((105, 16.0), (106, 18.0), (107, 20.0)):
        state.observe_height("a", h, t)
        expected = expected * 0.85 + 2000 * 0.15
    assert state.block_time_ms == pytest.approx(expected)


def test_block_time_rejects_out_of_bounds_intervals() -> None:
    """Intervals outside 50..60,000 ms are ignored; non-increasing heights too."""
    state = ChainState(5_000)
    state.observe_height("a", 100, 0.0)
    state.observe_height("b", 200, 0.001)  # 1 ms per block: ignored
    state.observe_height("a", 201, 100.0)  # 99,999 ms: ignored
    state.observe_height("a", 150, 101.0)  # lower: ignored
    state.observe_height("b", 201, 102.0)  # equal: no sample, no timestamp refresh
    assert state.snapshot(102.0)["block_time_samples"] == 0
    assert state.max_height == 201
    assert state.block_time_ms == 5_000


def test_optimistic_lag_reference_formula() -> None:
    """lag = max(0, consensus - height - min(elapsed // bt, 30000 // bt)): blocks behind."""
    state = ChainState(12_000)
    state.observe_height("slow", 95, 0.0)
    state.observe_height("fast", 100, 30.0)
    # At t=30: slow has 30 s elapsed -> credit min(2, 2) = 2; consensus = 100.
    assert state.optimistic_lag("slow", 30.0) == 100 - 95 - 2
    assert state.raw_lag("slow", 30.0) == 5
    assert state.optimistic_lag("fast", 30.0) == 0
    assert state.optimistic_lag("fast", 54.0) == 0  # ahead by its credit: not behind
    assert state.raw_lag("fast", 54.0) == 0
    assert state.optimistic_lag("fast", 100.0) is None  # consensus gone stale
    assert state.optimistic_lag("nobody", 30.0) is None
    assert state.raw_lag("nobody", 30.0) is None
    assert state.raw_lag("fast", 100.0) is None
    assert state.optimistic_height("fast", 42.0) == 101
    assert state.optimistic_height("nobody", 42.0) is None


def test_credit_capped_at_thirty_seconds_of_blocks() -> None:
    """With 2 s blocks the credit tops out at 15 blocks."""
    state = ChainState(2_000)
    state.observe_height("a", 1000, 0.0)
    state.observe_height("b", 1000, 29.0)
    assert state.optimistic_height("a", 29.0) == 1014
    assert state.optimistic_height("a", 29.9) == 1014
    state.observe_height("b", 1020, 29.9)
    assert state.optimistic_lag("a", 29.9) == 1020 - 1000 - 14
    assert state.optimistic_height("a", 500.0) == 1015


def test_lagging_set_and_its_cache() -> None:
    """lagging() lists providers beyond the tolerance and refreshes as credit accrues."""
    state = ChainState(12_000)
    state.observe_height("a", 100, 0.0)
    state.observe_height("b", 97, 0.0)
    state.observe_height("c", 99, 0.0)
    assert state.lagging(0.0, 1) == {"b": 3}
    assert state.lagging(0.0, 3) == {}
    assert state.lagging(11.9, 1) == {"b": 3}
    assert state.lagging(12.0, 1) == {"b": 2}  # one block of credit
    assert state.lagging(24.0, 1) == {}  # two blocks: within tolerance
    state.observe_height("a", 110, 25.0)
    assert state.lagging(25.0, 1) == {"b": 11, "c": 9}
    assert not state.has_block("b", 105, 25.0)
    assert state.has_block("a", 105, 25.0)
    assert state.has_block("nobody", 105, 25.0)
    assert state.has_block("c", 101, 25.0)  # 99 + 2 blocks of credit
    # 50 s after their last report, the credit stays capped at 30 s worth (2 blocks).
    assert state.lagging(50.0, 1) == {"b": 11, "c": 9}


def test_lagging_without_consensus_is_empty() -> None:
    """No fresh height: nothing is lagging."""
    state = ChainState()
    assert state.lagging(0.0, 1) == {}
    state.observe_height("a", 100, 0.0)
    state.observe_height("b", 50, 0.0)
    assert state.lagging(0.0, 1) == {"b": 50}
    assert state.lagging(31.0, 1) == {}


def test_snapshot_and_repr() -> None:
    """The snapshot lists each provider's height, age and lags."""
    state = ChainState(12_000)
    state.observe_height("a", 100, 0.0)
    state.observe_height("b", 98, 1.0)
    snap = state.snapshot(2.0)
    assert snap["consensus_height"] == 100
    assert snap["block_time_ms"] == 12_000
    assert snap["block_time_trusted"] is False
    assert snap["providers"] == {
        "a": {"height": 100, "age_s": 2.0, "lag": 0, "raw_lag": 0},
        "b": {"height": 98, "age_s": 1.0, "lag": 2, "raw_lag": 2},
    }
    assert repr(state) == "<ChainState providers=2 max=100 block_time=12000ms>"


def test_observed_at_reports_the_last_observation_time() -> None:
    """observed_at gives the time of the provider's latest height, None before any."""
    state = ChainState(12_000)
    assert state.observed_at("a") is None
    state.observe_height("a", 10, 5.0)
    state.observe_height("a", 11, 7.5)
    assert state.observed_at("a") == 7.5
