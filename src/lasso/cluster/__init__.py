"""Regions and clusters: per-node metric snapshots shared over NATS (observability only).

* :mod:`lasso.cluster.snapshot`: the per-node snapshot, building it, its wire message and
  the merge of whole snapshots;
* :mod:`lasso.cluster.figures`: the per-chain and per-provider figures it carries, their
  merge rules and wire form;
* :mod:`lasso.cluster.view`: this node's view of the cluster (membership, status, the
  aggregate and per-region documents of the operations API);
* :mod:`lasso.cluster.transport`: the heartbeat task and its exchanges (NATS, in-process).

``lasso demo --nodes N`` (:mod:`lasso.demo_cluster`) builds whole nodes, so it sits above
the composition root, outside this package.

See ``docs/deployment.md``.
"""

from lasso.cluster.snapshot import NodeSnapshot, build_snapshot, merge_snapshots
from lasso.cluster.transport import SUBJECT, ClusterNode, MemoryHub, NatsExchange
from lasso.cluster.view import ClusterView

__all__ = [
    "SUBJECT",
    "ClusterNode",
    "ClusterView",
    "MemoryHub",
    "NatsExchange",
    "NodeSnapshot",
    "build_snapshot",
    "merge_snapshots",
]
