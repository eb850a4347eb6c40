"""Metrics: the hot-path counters, the collector registry and the Prometheus exposition."""

from __future__ import annotations

import random
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from lasso.kernel.breaker import BreakerConfig
from lasso.kernel.router import BreakerRegistry
from lasso.profiles import parse_profile
from lasso.server import metrics as metrics_module
from lasso.server.metrics import Metrics
from lasso.server.node import NodeInfo
from lasso.server.runtime import PoolRegistry, Runtime

PROFILE = """---
name: T
slug: public
---
chains:
  ethereum:
    chain_id: 1
    providers:
      - id: a
        url: http://127.0.0.1:1
      - id: b
        url: http://127.0.0.1:2
"""

NODE = NodeInfo(node_id="n1", version="9.9.9", started_wall=0.0)


def _runtime() -> Runtime:
    rng = random.Random(1)
    profiles = {"public": parse_profile(PROFILE, "public.yml", {})}
    return Runtime(
        profiles, pools=PoolRegistry(), breakers=BreakerRegistry(BreakerConfig(), rng), rng=rng
    )


def _extra(node: str, now: float) -> Iterable[Metric]:
    g = GaugeMetricFamily("lasso_test_extra", "a registered collector", labels=["node_id"])
    g.add_metric([node], 1.0)
    yield g


def test_exports() -> None:
    """__all__ names the metrics object, its histogram and the collector type."""
    assert sorted(metrics_module.__all__) == ["Collector", "Histogram", "Metrics"]
    for name in metrics_module.__all__:
        assert hasattr(metrics_module, name)


def test_render_reads_counters_routers_and_node_identity() -> None:
    """The exposition has client counters (unknown methods as other), per-channel and
    per-provider routing families of the current runtime, and the node's version."""
    runtime = _runtime()
    m = Metrics(NODE, lambda: runtime)
    rt = runtime.profiles["public"].chains["ethereum"]
    m.record_request(rt, "eth_blockNumber", "fastest", "success", 0.01, 0)
    m.record_request(rt, "made_up_method", "fastest", "error", 0.02, 2)
    text = m.render().decode()
    assert (
        'lasso_rpc_requests_total{chain="ethereum",method="eth_blockNumber",node_id="n1",'
        'profile="public",status="success",strategy="fastest"} 1.0' in text
    )
    assert 'method="other"' in text and "made_up_method" not in text
    assert 'lasso_failovers_total{chain="ethereum",node_id="n1",profile="public"} 2.0' in text
    assert (
        'lasso_circuit_breaker_state{chain="ethereum",node_id="n1",profile="public",'
        'provider="b",transport="http"} 0.0' in text
    )
    assert (
        'lasso_provider_status{chain="ethereum",node_id="n1",profile="public",'
        'provider="a",status="healthy"} 1.0' in text
    )
    assert 'lasso_node_info{node_id="n1",version="9.9.9"} 1.0' in text


def test_render_follows_the_current_runtime() -> None:
    """A runtime swapped in (a reload) is what the next scrape reads."""
    current = [_runtime()]
    m = Metrics(NODE, lambda: current[0])
    assert 'provider="b"' in m.render().decode()
    current[0] = Runtime(
        {}, pools=PoolRegistry(), breakers=BreakerRegistry(BreakerConfig(), random.Random()),
        rng=random.Random(),
    )  # fmt: skip
    assert 'provider="b"' not in m.render().decode()


def test_registered_collectors_are_scraped_once_until_unregistered() -> None:
    """register() is idempotent; unregister() removes the families; unknown is a no-op."""
    runtime = _runtime()
    m = Metrics(NODE, lambda: runtime)
    m.register(_extra)
    m.register(_extra)
    assert m.render().decode().count('lasso_test_extra{node_id="n1"} 1.0') == 1
    m.unregister(_extra)
    m.unregister(_extra)
    assert "lasso_test_extra" not in m.render().decode()


def test_peer_snapshots_are_merged_into_the_exposition() -> None:
    """With --workers N, the other workers' counters add to this worker's."""
    runtime = _runtime()
    peer = {
        "requests": [["public", "ethereum", "eth_call", "fastest", "success", 5]],
        "durations": [],
        "failovers": [["public", "ethereum", 3]],
        "upstream": [],
    }
    m = Metrics(NODE, lambda: runtime, peer_snapshots=lambda: [peer])
    rt = runtime.profiles["public"].chains["ethereum"]
    m.record_request(rt, "eth_call", "fastest", "success", 0.01, 1)
    text = m.render().decode()
    assert (
        'lasso_rpc_requests_total{chain="ethereum",method="eth_call",node_id="n1",'
        'profile="public",status="success",strategy="fastest"} 6.0' in text
    )
    assert 'lasso_failovers_total{chain="ethereum",node_id="n1",profile="public"} 4.0' in text


def test_repr_counts_series_and_collectors() -> None:
    """repr shows the node, the request series and the registered collectors."""
    runtime = _runtime()
    m = Metrics(NODE, lambda: runtime)
    m.register(_extra)
    assert repr(m) == "<Metrics node=n1 series=0 collectors=1>"
