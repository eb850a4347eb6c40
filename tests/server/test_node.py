"""NodeInfo (the node's identity) and Standalone (the cluster status of a lone node)."""

from __future__ import annotations

import dataclasses
import time

import pytest

from lasso.server import node as node_module
from lasso.server.node import ClusterStatus, NodeInfo, Standalone


def test_exports() -> None:
    """__all__ names the identity, the cluster seam and its null object."""
    assert sorted(node_module.__all__) == ["ClusterStatus", "NodeInfo", "Standalone"]


def test_node_info_is_frozen_and_counts_uptime() -> None:
    """NodeInfo cannot be changed after construction and measures uptime from its start."""
    info = NodeInfo(node_id="eu", version="1.2.3", started_wall=time.time() - 5.0, worker_index=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.node_id = "us"  # type: ignore[misc]
    assert 4.9 < info.uptime() < 60.0
    assert info.worker_index == 2


def test_node_info_needs_an_id() -> None:
    """An empty node id is refused at construction."""
    with pytest.raises(ValueError, match="node_id"):
        NodeInfo(node_id="", version="1", started_wall=0.0)


def test_standalone_is_one_responding_node_without_cluster_figures() -> None:
    """The null cluster status: not enabled, itself as the only node, no chain metrics."""
    status: ClusterStatus = Standalone("local")
    assert status.summary() == {
        "enabled": False,
        "status": "standalone",
        "nodes_total": 1,
        "nodes_responding": 1,
        "nodes_connected": 1,
        "regions": ["local"],
    }
    assert status.nodes() == [
        {
            "node_id": "local",
            "region": "local",
            "status": "responding",
            "last_seen_s": 0.0,
            "self": True,
        }
    ]
    assert status.chain_metrics("public", "ethereum") is None
    assert status.chain_metrics("public", "ethereum", node="other") is None
    assert repr(status) == "<Standalone local>"
