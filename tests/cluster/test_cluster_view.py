"""ClusterView membership and status rules, with a fake clock and no network."""

from __future__ import annotations

from lasso.cluster.snapshot import ChainSnap, Figures, NodeSnapshot, ProviderSnap
from lasso.cluster.view import ClusterView


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def snap(node_id: str, instance: str, calls: int = 0, interval_s: float = 1.0) -> NodeSnapshot:
    fig = Figures(calls=calls, successes=calls, avg_ms=10.0 if calls else None, avg_w=calls)
    prov = ProviderSnap(
        id="alpha",
        name="Alpha",
        circuits={"http": [1, 0, 0]},
        totals=fig,
        methods={("eth_call", "http"): fig},
    )
    chain = ChainSnap(profile="public", chain="ethereum", chain_id=1, requests=calls,
                      providers={"alpha": prov})  # fmt: skip
    return NodeSnapshot(
        node_id=node_id, instance=instance, interval_s=interval_s, chains={chain.key: chain}
    )


def make_view(clock: Clock) -> ClusterView:
    view = ClusterView(
        lambda: snap("us-east-1", "self", calls=1),
        node_id="us-east-1",
        instance="self",
        exchange="memory",
        interval_s=1.0,
        clock=clock,
        forget_after_s=60.0,
    )
    view.connected = True
    return view


def test_status_follows_the_share_of_responding_members() -> None:
    """healthy → degraded → critical as members go silent (reference §1.4 thresholds)."""
    clock = Clock()
    view = make_view(clock)
    for i in range(4):
        view.observe(snap("eu-west-1", f"pod-{i}", interval_s=1.0 + i))
    assert view.summary()["status"] == "healthy"
    assert view.summary()["nodes_total"] == 5
    clock.now += 2.99  # pod-0 (1 s interval) is silent for 3 intervals at 3.0 s
    assert view.summary()["nodes_responding"] == 5
    clock.now += 0.02
    assert view.summary()["status"] == "degraded"  # 4 of 5 respond
    clock.now += 6.0  # pod-1 (2 s) and pod-2 (3 s) go silent too
    summary = view.summary()
    assert summary["nodes_responding"] == 2 and summary["status"] == "degraded"  # 2 >= 5 // 2
    clock.now += 3.0  # pod-3 (4 s interval, silent 12 s) goes too
    assert view.summary()["status"] == "critical"  # 1 < 5 // 2


def test_departed_members_are_dropped_at_once_and_may_come_back() -> None:
    """A leave notice drops the member at once; its replacement (same node id, same or new
    instance) joins with its first snapshot; silent members are forgotten later."""
    clock = Clock()
    view = make_view(clock)
    view.observe(snap("eu-west-1", "pod-a"))
    view.observe(snap("eu-west-1", "pod-b"))
    assert view.leave("eu-west-1", "pod-a") and not view.leave("eu-west-1", "pod-a")
    assert [n["instance"] for n in view.nodes()] == ["self", "pod-b"]
    summary = view.summary()
    assert summary["status"] == "healthy" and summary["nodes_total"] == 2
    assert view.counts() == {"responding": 2, "unresponsive": 0}
    assert view.region_counts() == {("us-east-1", "responding"): 1, ("eu-west-1", "responding"): 1}
    view.observe(snap("eu-west-1", "pod-a"))  # restarted with the same instance name
    assert [n["status"] for n in view.nodes()] == ["responding"] * 3
    assert view.departed == 1
    clock.now += 59.0
    assert view.expire() == []
    clock.now += 1.0
    assert sorted(view.expire()) == ["eu-west-1/pod-a", "eu-west-1/pod-b"]
    assert [n["instance"] for n in view.nodes()] == ["self"]


def test_exchange_down_means_degraded_and_local_figures_only() -> None:
    """Without the exchange the aggregate holds only this node's figures."""
    clock = Clock()
    view = make_view(clock)
    view.observe(snap("eu-west-1", "pod-a", calls=5))
    doc = view.chain_metrics("public", "ethereum")
    assert doc["providers"][0]["calls"] == 6 and doc["coverage"]["instances"] == 2
    view.connected = False
    view.last_error = "OSError: refused"
    summary = view.summary()
    assert summary["status"] == "degraded" and summary["exchange_error"] == "OSError: refused"
    doc = view.chain_metrics("public", "ethereum")
    assert doc["providers"][0]["calls"] == 1 and doc["coverage"]["instances"] == 1


def test_drill_down_by_region_instance_and_stale_data() -> None:
    """?node= selects a region or one instance; a silent region's last data is flagged."""
    clock = Clock()
    view = make_view(clock)
    view.observe(snap("eu-west-1", "pod-a", calls=5))
    view.observe(snap("eu-west-1", "pod-b", calls=7))
    region = view.chain_metrics("public", "ethereum", node="eu-west-1")
    assert region["providers"][0]["calls"] == 12 and region["scope"] == "node"
    assert list(region["providers"][0]["by_node"]) == ["eu-west-1"]
    one = view.chain_metrics("public", "ethereum", node="eu-west-1/pod-b")
    assert one["providers"][0]["calls"] == 7 and not one["coverage"]["stale"]
    clock.now += 10.0
    stale = view.chain_metrics("public", "ethereum", node="eu-west-1")
    assert stale["coverage"]["stale"] and stale["providers"][0]["calls"] == 12
    missing = view.chain_metrics("public", "ethereum", node="mars-1")
    assert missing["error"] == "Node not found"
    assert missing["available_nodes"] == ["eu-west-1", "us-east-1"]


def test_package_exports_its_public_api() -> None:
    """lasso.cluster re-exports exactly what its __all__ names."""
    import lasso.cluster as cluster

    assert sorted(cluster.__all__) == sorted(set(cluster.__all__))
    for name in cluster.__all__:
        assert getattr(cluster, name) is not None
