"""This node's view of the cluster: who is there, who answers, and the merged metrics.

The view is fed by :class:`lasso.cluster.transport.ClusterNode` (remote snapshots and
leave notices, plus whether the exchange works) and read by the operations API
(``/api/health``, ``/api/cluster``, ``/api/metrics/:chain?scope=cluster|node=``). It never
takes part in routing.

Membership rules:

* a member is one process, ``node_id/instance``; its region is its ``node_id``, and
  every instance of a region is merged into one region figure;
* a member is ``responding`` while its last snapshot arrived less than
  :data:`MISSED_HEARTBEATS` of *its own* heartbeat intervals ago, else ``unresponsive``
  (reason ``silent``);
* a member that announced its shutdown (a leave notice, sent on SIGTERM) is dropped from
  the view at once: a rolling restart is not an outage, and the process that replaces it
  (same ``node_id``, same or new instance) joins as a new member with its first snapshot;
* a member silent for ``forget_after_s`` (5 minutes) is dropped from the view;
* this node is always ``responding`` and its figures are read fresh on every call.

Cluster status (reference §1.4): ``healthy`` when every connected member responds,
``degraded`` when at least half of them (integer division) do, else ``critical``; and
``degraded`` whenever the exchange is down, in which case every figure is local only.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic
from typing import Any

from lasso.cluster.snapshot import (
    CIRCUIT_STATES,
    ChainSnap,
    Figures,
    NodeSnapshot,
    ProviderSnap,
    histogram_quantile,
    merge_snapshots,
)

__all__ = ["MISSED_HEARTBEATS", "ClusterView", "Member"]

MISSED_HEARTBEATS = 3
FORGET_AFTER_S = 300.0


@dataclass(slots=True)
class Member:
    """One remote process as last heard from."""

    snapshot: NodeSnapshot
    last_seen: float  # our monotonic clock at receipt (never the sender's clock)
    first_seen: float

    def responding(self, now: float) -> bool:
        return now - self.last_seen < MISSED_HEARTBEATS * self.snapshot.interval_s


class ClusterView:
    """Membership and merged metrics as seen from this node.

    Args:
        local: builds this node's current snapshot (called on every read).
        exchange: the transport's name for the API (``nats`` or ``memory``).
        interval_s: this node's heartbeat interval.
        clock: monotonic seconds.
        forget_after_s: how long a silent member stays listed.
    """

    def __init__(
        self,
        local: Callable[[], NodeSnapshot],
        *,
        node_id: str,
        instance: str,
        exchange: str,
        interval_s: float,
        clock: Callable[[], float] = monotonic,
        forget_after_s: float = FORGET_AFTER_S,
    ) -> None:
        self.node_id = node_id
        self.instance = instance
        self.exchange = exchange
        self.interval_s = interval_s
        self._local = local
        self._clock = clock
        self.forget_after_s = forget_after_s
        self.members: dict[str, Member] = {}
        self.departed = 0  # members dropped on a leave notice
        self.connected = False  # the exchange is up and our own heartbeats come back
        self.last_error: str | None = None

    # -- feeding --------------------------------------------------------------------------
    def observe(self, snap: NodeSnapshot) -> None:
        """A snapshot from another process (our own echoes are filtered by the caller)."""
        now = self._clock()
        member = self.members.get(snap.identity)
        if member is None:
            self.members[snap.identity] = Member(snap, now, now)
        else:
            member.snapshot, member.last_seen = snap, now

    def leave(self, node_id: str, instance: str) -> bool:
        """A process announced its shutdown: forget it now. Returns whether it was known."""
        if self.members.pop(f"{node_id}/{instance}", None) is None:
            return False
        self.departed += 1
        return True

    def expire(self) -> list[str]:
        """Drop members silent for ``forget_after_s``; returns their identities."""
        now = self._clock()
        gone = [k for k, m in self.members.items() if now - m.last_seen >= self.forget_after_s]
        for key in gone:
            del self.members[key]
        return gone

    # -- reading --------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Members by status, this node included: responding, unresponsive."""
        now = self._clock()
        out = {"responding": 1, "unresponsive": 0}
        for m in self.members.values():
            out["responding" if m.responding(now) else "unresponsive"] += 1
        return out

    def region_counts(self) -> dict[tuple[str, str], int]:
        """(region, status) → members, status being responding or unresponsive."""
        now = self._clock()
        out = {(self.node_id, "responding"): 1}
        for m in self.members.values():
            status = "responding" if m.responding(now) else "unresponsive"
            key = (m.snapshot.node_id, status)
            out[key] = out.get(key, 0) + 1
        return out

    def regions(self) -> list[str]:
        return sorted({self.node_id} | {m.snapshot.node_id for m in self.members.values()})

    def summary(self) -> dict[str, Any]:
        """The ``cluster`` object of ``/api/health``."""
        c = self.counts()
        connected = c["responding"] + c["unresponsive"]
        if not self.connected:
            status = "degraded"
        elif c["responding"] >= connected:
            status = "healthy"
        elif c["responding"] >= connected // 2:
            status = "degraded"
        else:
            status = "critical"
        out: dict[str, Any] = {
            "enabled": True,
            "status": status,
            "nodes_total": connected,
            "nodes_responding": c["responding"],
            "nodes_connected": connected,
            "regions": self.regions(),
            "exchange": self.exchange,
            "exchange_connected": self.connected,
        }
        if self.last_error and not self.connected:
            out["exchange_error"] = self.last_error
        return out

    def nodes(self) -> list[dict[str, Any]]:
        """Every known process, this one first, then by region and instance."""
        now = self._clock()
        out = [self._node_entry(self._local(), "responding", None, 0.0, True)]
        for key in sorted(self.members):
            m = self.members[key]
            status = "responding" if m.responding(now) else "unresponsive"
            reason = None if status == "responding" else "silent"
            out.append(self._node_entry(m.snapshot, status, reason, now - m.last_seen, False))
        return out

    @staticmethod
    def _node_entry(
        snap: NodeSnapshot, status: str, reason: str | None, age: float, is_self: bool
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "node_id": snap.node_id,
            "region": snap.node_id,
            "instance": snap.instance,
            "status": status,
            "last_seen_s": round(age, 3),
            "self": is_self,
            "version": snap.version,
            "uptime_s": round(snap.uptime_s, 1),
            "heartbeat_interval_s": snap.interval_s,
            "chains": sorted(snap.chains),
            **snap.totals(),
        }
        if reason is not None:
            entry["reason"] = reason
        if snap.truncated:
            entry["truncated"] = True
        return entry

    def _pool(self) -> list[NodeSnapshot]:
        """Snapshots that count: ours, plus responding members while the exchange works."""
        now = self._clock()
        snaps = [self._local()]
        if self.connected:
            snaps.extend(m.snapshot for m in self.members.values() if m.responding(now))
        return snaps

    def by_region(self, node: str | None = None) -> tuple[dict[str, NodeSnapshot], bool]:
        """Region name → merge of its counted instances, and whether that is stale data.

        ``node`` keeps one region, or one instance given as ``node_id/instance``; when
        none of its instances responds, their last snapshots are used (stale).
        """
        snaps = self._pool()
        stale = False
        if node is not None:
            chosen = [s for s in snaps if node in (s.node_id, s.identity)]
            if not chosen:
                chosen = [
                    m.snapshot
                    for m in self.members.values()
                    if node in (m.snapshot.node_id, m.snapshot.identity)
                ]
                stale = bool(chosen)
            snaps = chosen
        groups: dict[str, list[NodeSnapshot]] = {}
        for s in snaps:
            groups.setdefault(s.node_id, []).append(s)
        return {r: merge_snapshots(g, node_id=r) for r, g in sorted(groups.items())}, stale

    def chain_metrics(self, profile: str, chain: str, node: str | None = None) -> dict[str, Any]:
        """The ``/api/metrics/:chain`` document for the cluster (or one node's region).

        Returns a document with an ``error`` key when ``node`` is unknown.
        """
        regions, stale = self.by_region(node)
        if node is not None and not regions:
            return {
                "error": "Node not found",
                "node": node,
                "available_nodes": self.regions(),
            }
        merged = merge_snapshots(regions.values(), node_id="cluster")
        key = f"{profile}/{chain}"
        total = merged.chains.get(key) or ChainSnap(profile=profile, chain=chain, chain_id=0)
        region_chains = {r: s.chains[key] for r, s in regions.items() if key in s.chains}
        doc = chain_document(total, region_chains)
        c = self.counts()
        doc.update(
            {
                "node_id": self.node_id,
                "scope": "cluster" if node is None else "node",
                "node": node,
                "timestamp": _iso_now(),
                "coverage": {
                    "instances": merged.instances,
                    "regions": sorted(regions),
                    "responding": c["responding"],
                    "total": c["responding"] + c["unresponsive"],
                    "exchange_connected": self.connected,
                    "stale": stale,
                },
            }
        )
        return doc


# -- documents ----------------------------------------------------------------------------


def chain_document(total: ChainSnap, regions: dict[str, ChainSnap]) -> dict[str, Any]:
    """Render a merged chain with its per-region drill-down (``by_node``)."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 3)

    providers = []
    for pid in sorted(total.providers):
        p = total.providers[pid]
        entry = {
            "id": pid,
            "name": p.name,
            "status": p.status,
            **_figures(p.totals),
            "height": p.height,
            "lag": p.lag,
            "circuits": {
                t: dict(zip(CIRCUIT_STATES, counts, strict=True))
                for t, counts in sorted(p.circuits.items())
            },
            "rate_limited": dict(sorted(p.rate_limited.items())),
            "by_node": {r: _provider_brief(c.providers[pid]) for r, c in _having(regions, pid)},
            "methods": [
                {
                    "method": m,
                    "transport": t,
                    **_figures(row),
                    "by_node": {
                        r: _figures(c.providers[pid].methods[(m, t)])
                        for r, c in _having(regions, pid)
                        if (m, t) in c.providers[pid].methods
                    },
                }
                for (m, t), row in sorted(p.methods.items(), key=lambda kv: -kv[1].calls)
            ],
        }
        providers.append(entry)
    req = total.requests
    return {
        "chain": total.chain,
        "chain_id": str(total.chain_id),
        "profile": total.profile,
        "consensus_height": total.consensus_height,
        "chain_performance": {
            "total_calls": req,
            "success_rate": round((req - total.errors) / req, 4) if req else None,
            "error_rate_percent": round(100 * total.errors / req, 3) if req else None,
            "p50_latency_ms": ms(histogram_quantile(total.hist, 0.5)),
            "p95_latency_ms": ms(histogram_quantile(total.hist, 0.95)),
            "p99_latency_ms": ms(histogram_quantile(total.hist, 0.99)),
            "failovers": total.failovers,
            "by_node": {
                r: {
                    "total_calls": c.requests,
                    "errors": c.errors,
                    "p50_latency_ms": ms(histogram_quantile(c.hist, 0.5)),
                    "p95_latency_ms": ms(histogram_quantile(c.hist, 0.95)),
                }
                for r, c in regions.items()
            },
        },
        "providers": providers,
    }


def _having(regions: dict[str, ChainSnap], pid: str) -> list[tuple[str, ChainSnap]]:
    return [(r, c) for r, c in regions.items() if pid in c.providers]


def _figures(f: Figures) -> dict[str, Any]:
    rate = f.success_rate
    return {
        "calls": f.calls,
        "successes": f.successes,
        "failures": f.failures,
        "rate_limited_calls": f.rate_limited,
        "success_rate": None if rate is None else round(rate, 4),
        "avg_latency_ms": None if f.avg_ms is None else round(f.avg_ms, 3),
        "p50_ms": f.p50_ms,
        "p95_ms": f.p95_ms,
        "p99_ms": f.p99_ms,
    }


def _provider_brief(p: ProviderSnap) -> dict[str, Any]:
    """A region's figures for one provider; ``circuit`` is the worst state per transport."""
    return {
        "status": p.status,
        **_figures(p.totals),
        "height": p.height,
        "lag": p.lag,
        "circuit": {
            t: next(CIRCUIT_STATES[i] for i in (2, 1, 0) if counts[i] or i == 0)
            for t, counts in sorted(p.circuits.items())
        },
        "rate_limited": dict(sorted(p.rate_limited.items())),
    }


def _iso_now() -> str:
    return (
        datetime.datetime.now(datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
