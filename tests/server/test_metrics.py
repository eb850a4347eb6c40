"""The hedge counter: lasso_hedges_total{chain,outcome} from outcomes and worker snapshots."""

from __future__ import annotations

import random
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from lasso.config import ChainConfig
from lasso.kernel.breaker import BreakerConfig
from lasso.kernel.router import BreakerRegistry, ChainRouter
from lasso.server.events import EventBus
from lasso.server.metrics import Metrics
from lasso.server.pipeline import Outcome
from lasso.server.runtime import ChainRuntime


def chain_runtime() -> ChainRuntime:
    chain = ChainConfig(key="eth", chain_id=1, name="eth")
    rng = random.Random(1)
    router = ChainRouter(chain, BreakerRegistry(BreakerConfig(), rng), rng, profile="p")
    return ChainRuntime("p", chain, router, {}, EventBus("n"))


def outcome(hedges: int, winner: str | None, skipped: bool = False) -> Outcome:
    out = Outcome([])
    out.hedges, out.hedge_winner, out.hedge_skipped = hedges, winner, skipped
    return out


def exposition(metrics: Metrics) -> list[str]:
    class Collector:
        def collect(self) -> Any:
            for extra in metrics.extra_collectors:
                yield from extra("n", 0.0)

        def describe(self) -> list[Any]:
            return []

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith("lasso_hedges_total")]


def test_hedges_counted_by_outcome() -> None:
    """A winning hedge is won, a beaten one lost, a refused one skipped_budget."""
    metrics = Metrics("n")
    rt = chain_runtime()
    metrics.record_hedges(rt, outcome(1, "hedge"))
    metrics.record_hedges(rt, outcome(1, "primary"))
    metrics.record_hedges(rt, outcome(2, "hedge"))
    metrics.record_hedges(rt, outcome(0, None, skipped=True))
    assert metrics.hedges == {
        ("p", "eth", "won"): 2,
        ("p", "eth", "lost"): 2,
        ("p", "eth", "skipped_budget"): 1,
    }
    assert 'lasso_hedges_total{chain="eth",node_id="n",outcome="won",profile="p"} 2.0' in (
        exposition(metrics)
    )


def test_other_workers_hedges_are_added() -> None:
    """With --workers the exposition sums every worker's snapshot."""
    metrics = Metrics("n")
    metrics.record_hedges(chain_runtime(), outcome(1, "hedge"))
    metrics.peer_snapshots = lambda: [{"hedges": [["p", "eth", "won", 4], ["p", "eth", "lost", 1]]}]
    assert exposition(metrics) == [
        'lasso_hedges_total{chain="eth",node_id="n",outcome="lost",profile="p"} 1.0',
        'lasso_hedges_total{chain="eth",node_id="n",outcome="won",profile="p"} 5.0',
    ]
