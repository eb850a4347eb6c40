"""What a node knows about itself, and how it sees its cluster.

:class:`NodeInfo` is the node's identity (id, version, start time, worker index): a frozen
value the composition root (:mod:`lasso.app`) builds once and hands to every component
that reports it (the operations API, the metrics, the dashboard, the cluster heartbeat).

:class:`ClusterStatus` is the seam between the readers of cluster state (the operations
API, the dashboard) and the cluster package that feeds it
(:class:`lasso.cluster.view.ClusterView` implements it). A node that is not clustered gets
:class:`Standalone`, the null object: one node, always responding, no cluster figures. So
no reader asks "is there a cluster?" (``getattr(app, "cluster_view", None)``) and the
server core never imports :mod:`lasso.cluster`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ClusterStatus", "NodeInfo", "Standalone"]


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    """The identity of this node (one process).

    Attributes:
        node_id: the node id (``LASSO_NODE_ID``; the region in a cluster).
        version: the Lasso version it runs.
        started_wall: wall-clock seconds (Unix) at start, for the uptime.
        worker_index: with ``--workers N``, which worker process this is; else ``None``.
    """

    node_id: str
    version: str
    started_wall: float
    worker_index: int | None = None

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ValueError("node_id must not be empty")

    def uptime(self) -> float:
        """Seconds since :attr:`started_wall` (wall clock, informational)."""
        return time.time() - self.started_wall


class ClusterStatus(Protocol):
    """Cluster membership and merged figures, as the operations API and dashboard read them."""

    def summary(self) -> dict[str, Any]:
        """The ``cluster`` object of ``/api/health``: ``enabled``, ``status``, node counts,
        ``regions``."""
        ...

    def nodes(self) -> list[dict[str, Any]]:
        """Every known process, this one first (``node_id``, ``region``, ``status``,
        ``last_seen_s``, ``self``)."""
        ...

    def chain_metrics(
        self, profile: str, chain: str, node: str | None = None
    ) -> dict[str, Any] | None:
        """The cluster-wide (or one region's, ``node``) document of
        ``/api/metrics/:chain``, with an ``error`` key when it has none for that request;
        ``None`` when this node has no cluster figures at all (the caller answers from its
        own)."""
        ...


class Standalone:
    """The :class:`ClusterStatus` of a node outside any cluster: itself, responding."""

    __slots__ = ("node_id",)

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def summary(self) -> dict[str, Any]:
        return {
            "enabled": False,
            "status": "standalone",
            "nodes_total": 1,
            "nodes_responding": 1,
            "nodes_connected": 1,
            "regions": [self.node_id],
        }

    def nodes(self) -> list[dict[str, Any]]:
        return [
            {
                "node_id": self.node_id,
                "region": self.node_id,
                "status": "responding",
                "last_seen_s": 0.0,
                "self": True,
            }
        ]

    def chain_metrics(
        self, profile: str, chain: str, node: str | None = None
    ) -> dict[str, Any] | None:
        del profile, chain, node
        return None

    def __repr__(self) -> str:
        return f"<Standalone {self.node_id}>"
