"""The per-chain consistency state: one object per (profile, chain) for the process's life,
its counters and the metrics it exposes."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest

from lasso.kernel.filters import Binding
from lasso.server.consistency_state import ChainConsistency, NodeConsistency
from server_pipeline_support import settled


def scrape(node: NodeConsistency) -> str:
    class _One:
        def collect(self):  # type: ignore[no-untyped-def]
            return node.collect("n1", 0.0)

    registry = CollectorRegistry()
    registry.register(_One())
    return generate_latest(registry).decode()


def test_one_state_per_chain_until_dropped() -> None:
    """chain() returns the same object every time; retain() drops the others."""
    node = NodeConsistency(max_log_chunks=7)
    a = node.chain("public", "eth")
    assert node.chain("public", "eth") is a and node.chain("other", "eth") is not a
    assert a.logs_slots is node.logs_slots
    node.retain([("public", "eth")])
    assert node.chain("public", "eth") is a and repr(node) == "<NodeConsistency chains=1>"


def test_metrics() -> None:
    """Served heads per tag, filters and every counter, labelled by node, profile, chain."""
    node = NodeConsistency()
    state = node.chain("public", "eth")
    state.head.serve_head(100)
    state.head.observe_tag("finalized", 90)
    state.filters.bind("0x1", Binding("a", "0x9", "eth_newBlockFilter"), 0.0)
    state.count("retries", "behind")
    state.count("retries", "behind")
    state.count("legs", "accepted", 3)
    state.count("splits")
    text = scrape(node)

    def series(name: str, value: float, **extra: str) -> str:
        labels = {"chain": "eth", "node_id": "n1", "profile": "public", **extra}
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        return f"{name}{{{inner}}} {value}"

    assert series("lasso_served_head", 100.0, tag="latest") in text
    assert series("lasso_served_head", 90.0, tag="finalized") in text
    assert series("lasso_filters", 1.0) in text
    assert series("lasso_consistency_retries_total", 2.0, reason="behind") in text
    assert series("lasso_broadcast_legs_total", 3.0, outcome="accepted") in text
    assert series("lasso_get_logs_splits_total", 1.0) in text
    assert "# TYPE lasso_filter_not_found_total counter" in text


async def test_kept_legs_are_held_until_they_end() -> None:
    """A broadcast leg kept after the answer is referenced until it finishes."""
    state = ChainConsistency()
    gate = asyncio.Event()
    task = asyncio.get_running_loop().create_task(gate.wait())
    state.keep(task)
    assert state.legs_out == 1 and "legs_out=1" in repr(state)
    gate.set()
    await task
    await settled(lambda: state.legs_out == 0)  # the done callback runs on a later turn
