"""Hedging's pure parts: the delay, the sliding-minute budget, a chain's settings."""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.config import ChainConfig, HedgeConfig, MethodOverride
from lasso.kernel.clock import FakeClock
from lasso.kernel.hedge import ChainHedging, HedgeBudget, hedge_delay_s
from lasso.kernel.stats import MethodStats


def row_of(latencies: list[float]) -> MethodStats:
    row = MethodStats()
    for ms in latencies:
        row.record_success(ms, 1.0)
    return row


def test_fixed_delay_ignores_the_row() -> None:
    """delay_ms is the delay, whatever the provider's latencies."""
    assert hedge_delay_s(HedgeConfig(delay_ms=40), row_of([500.0] * 50)) == 0.04
    assert hedge_delay_s(HedgeConfig(delay_ms=40), None) == 0.04


def test_quantile_delay_is_clamped() -> None:
    """The quantile of the row, clamped to min_delay_ms..max_delay_ms."""
    cfg = HedgeConfig(quantile=0.9, min_delay_ms=5, max_delay_ms=200)
    assert hedge_delay_s(cfg, row_of([float(v) for v in range(1, 101)])) == 0.09
    assert hedge_delay_s(cfg, row_of([1.0] * 20)) == 0.005
    assert hedge_delay_s(cfg, row_of([900.0] * 20)) == 0.2


def test_cold_quantile_waits_the_maximum() -> None:
    """Without enough samples the delay is max_delay_ms: a cold provider is not raced early."""
    cfg = HedgeConfig(quantile=0.5, max_delay_ms=300)
    assert hedge_delay_s(cfg, None) == 0.3
    assert hedge_delay_s(cfg, row_of([1.0] * 3)) == 0.3


def test_budget_allows_a_share_of_requests() -> None:
    """At 10 %, ten requests afford one hedge, twenty afford two."""
    clock = FakeClock()
    budget = HedgeBudget()
    assert not budget.try_spend(clock.now(), 10)  # no requests yet
    for _ in range(9):
        budget.note_request(clock.now())
    assert not budget.try_spend(clock.now(), 10)
    budget.note_request(clock.now())
    assert budget.try_spend(clock.now(), 10)
    assert not budget.try_spend(clock.now(), 10)
    for _ in range(10):
        budget.note_request(clock.now())
    assert budget.try_spend(clock.now(), 10)
    assert budget.counts(clock.now()) == (20, 2)


def test_budget_window_slides() -> None:
    """Requests and hedges older than the window stop counting, bucket by bucket."""
    clock = FakeClock(0.0)
    budget = HedgeBudget(window_s=60.0, buckets=60)
    for _ in range(10):
        budget.note_request(clock.now())
    assert budget.try_spend(clock.now(), 10)
    clock.advance(30.0)
    for _ in range(10):
        budget.note_request(clock.now())
    assert budget.counts(clock.now()) == (20, 1)
    clock.advance(30.0)  # the first second's bucket just left the window
    assert budget.counts(clock.now()) == (10, 0)
    clock.advance(3600.0)  # a long silence empties it
    assert budget.counts(clock.now()) == (0, 0)


def test_budget_refund_and_backward_clock() -> None:
    """A refunded hedge is given back; a clock stepping back counts into the newest bucket."""
    budget = HedgeBudget()
    for _ in range(10):
        budget.note_request(100.0)
    assert budget.try_spend(100.0, 10)
    budget.refund(100.0)
    budget.refund(100.0)  # nothing left to refund: no negative counts
    assert budget.counts(100.0) == (10, 0)
    budget.note_request(99.0)
    assert budget.counts(100.0) == (11, 0)
    assert "requests=11" in repr(budget)


def test_budget_rejects_bad_shapes() -> None:
    """A window or bucket count of zero is a programming error."""
    with pytest.raises(ValueError):
        HedgeBudget(window_s=0)
    with pytest.raises(ValueError):
        HedgeBudget(buckets=0)


@given(
    events=st.lists(
        st.tuples(st.sampled_from(["request", "hedge"]), st.floats(0.0, 5.0)), max_size=300
    ),
    percent=st.floats(0.5, 100.0),
)
def test_budget_never_exceeds_its_share(events: list[tuple[str, float]], percent: float) -> None:
    """Whatever the traffic, a hedge is taken only while the window's hedges stay within
    percent of its requests; a refused one changes nothing. (As old requests leave the
    window the share may drift above between hedges: the budget then refuses.)"""
    clock = FakeClock(0.0)
    budget = HedgeBudget()
    for kind, step in events:
        clock.advance(step)
        now = clock.now()
        if kind == "request":
            budget.note_request(now)
            continue
        before = budget.counts(now)
        if budget.try_spend(now, percent):
            requests, hedges = budget.counts(now)
            assert hedges == before[1] + 1
            assert hedges * 100.0 <= percent * requests + 1e-9
        else:
            assert budget.counts(now) == before
        assert min(budget.counts(now)) >= 0


def chain(hedge: HedgeConfig | None, overrides: dict[str, MethodOverride]) -> ChainConfig:
    return ChainConfig(
        key="eth", chain_id=1, name="eth", hedge=hedge, method_overrides=MappingProxyType(overrides)
    )


def test_chain_hedging_resolves_method_overrides() -> None:
    """A method's own hedge replaces the chain's; hedge: false turns it off; others inherit."""
    base, own = HedgeConfig(delay_ms=50), HedgeConfig(delay_ms=5)
    hedging = ChainHedging.from_chain(
        chain(
            base,
            {
                "eth_call": MethodOverride(hedge=own),
                "eth_getLogs": MethodOverride(hedge=False),
                "eth_getBalance": MethodOverride(strategy="fastest"),
            },
        )
    )
    assert hedging is not None
    assert hedging.config_for("eth_call") is own
    assert hedging.config_for("eth_getLogs") is None
    assert hedging.config_for("eth_getBalance") is base
    assert hedging.config_for("eth_blockNumber") is base
    assert "overrides=2" in repr(hedging)


def test_chain_without_hedging_has_none() -> None:
    """No chain hedge and no method hedge (false alone included): nothing to keep."""
    assert ChainHedging.from_chain(chain(None, {})) is None
    assert ChainHedging.from_chain(chain(None, {"x": MethodOverride(hedge=False)})) is None
    only = ChainHedging.from_chain(
        chain(None, {"x": MethodOverride(hedge=HedgeConfig(delay_ms=1))})
    )
    assert only is not None and only.config_for("y") is None
