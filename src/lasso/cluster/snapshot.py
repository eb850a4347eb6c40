"""The per-node metrics snapshot: building it, its wire message and its merge (CONTRACT §6).

A :class:`NodeSnapshot` is what a node publishes to the cluster every heartbeat: who sent
it (``node_id``, ``instance``, sequence number, heartbeat interval, version) and, for each
profile/chain, the figures of :mod:`lasso.cluster.figures`: the client-facing request
counts (with the end-to-end latency histogram), and for each provider its block height and
lag, its circuit-breaker and rate-limit state per transport, its status, and one
:class:`Figures` row per (method, transport) plus a provider total.

Snapshots merge into snapshots of the same shape (:func:`merge_snapshots`), so one function
builds the region view (every instance sharing a ``LASSO_NODE_ID``) and the cluster view
(every region), and the merge is associative and commutative (the inputs are sorted
first). The rules for the figures (counts add up; call-weighted success rate and average
latency; percentiles of the busiest node; highest height, worst lag; circuit counts per
state; the most severe provider status) are in :mod:`lasso.cluster.figures`. Of the
node's own fields, instances and WebSocket connections add up, uptime and the heartbeat
interval take the maximum, each version is listed once, and a merge is truncated when
any input was.

On the wire a snapshot is a JSON object tagged ``"v": SCHEMA, "type": "snapshot"``;
:meth:`NodeSnapshot.from_wire` rejects other versions, malformed fields and oversized
messages with :class:`ValueError`, and ignores keys it does not know.

Everything here is plain computation on values; :func:`build_snapshot` reads a live node's
routers and counters but does no IO. The figure types and :func:`histogram_quantile` are
defined in :mod:`lasso.cluster.figures` and re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lasso.cluster.figures import (
    CIRCUIT_STATES,
    ChainSnap,
    Figures,
    ProviderSnap,
    _count,
    _dict,
    _float,
    _str,
    histogram_quantile,
)

if TYPE_CHECKING:
    from lasso.server.metrics import Metrics
    from lasso.server.node import NodeInfo
    from lasso.server.runtime import Runtime

# The figure types live in lasso.cluster.figures; they are re-exported because the
# transport, the view and the tests meet them through the snapshot.
__all__ = [
    "CIRCUIT_STATES",
    "MAX_METHOD_ROWS",
    "SCHEMA",
    "ChainSnap",
    "Figures",
    "NodeSnapshot",
    "ProviderSnap",
    "build_snapshot",
    "histogram_quantile",
    "merge_snapshots",
]

SCHEMA = 1
"""Wire schema version; a node ignores snapshots of another version."""

MAX_METHOD_ROWS = 64
"""Method rows kept per provider channel in a snapshot; the rest fold into ``other``."""

_MAX_ITEMS = 100_000  # rows per snapshot accepted from the wire: bounds a hostile message


@dataclass(slots=True, kw_only=True)
class NodeSnapshot:
    """What one node (or a merge of several) reports.

    Attributes:
        node_id: ``LASSO_NODE_ID`` (the region); a merge is named by its caller.
        instance: the process's identity within the region; empty for a merge.
        seq: heartbeat sequence number of the sender.
        interval_s: the sender's heartbeat interval (it is unresponsive after 3 of them).
        instances: how many node snapshots this one merges (1 for a node).
        truncated: method rows were dropped to fit the transport's message size.
    """

    node_id: str
    instance: str = ""
    seq: int = 0
    version: str = ""
    interval_s: float = 1.0
    uptime_s: float = 0.0
    sent_at: float = 0.0  # sender's wall clock, informational only (skew is not trusted)
    ws_connections: int = 0
    instances: int = 1
    truncated: bool = False
    chains: dict[str, ChainSnap] = field(default_factory=dict)

    @property
    def identity(self) -> str:
        """``node_id/instance``: unique per process in a cluster."""
        return f"{self.node_id}/{self.instance}"

    def totals(self) -> dict[str, int]:
        """Node-wide client request and upstream call counts."""
        return {
            "requests": sum(c.requests for c in self.chains.values()),
            "errors": sum(c.errors for c in self.chains.values()),
            "failovers": sum(c.failovers for c in self.chains.values()),
            "upstream_calls": sum(
                p.totals.calls for c in self.chains.values() for p in c.providers.values()
            ),
        }

    def without_methods(self) -> NodeSnapshot:
        """A copy without per-method rows (for transports with a small message limit)."""
        chains: dict[str, ChainSnap] = {}
        for key, c in self.chains.items():
            providers = {
                pid: ProviderSnap(
                    id=p.id,
                    name=p.name,
                    height=p.height,
                    lag=p.lag,
                    circuits=p.circuits,
                    rate_limited=p.rate_limited,
                    status=p.status,
                    totals=p.totals,
                )
                for pid, p in c.providers.items()
            }
            chains[key] = ChainSnap(
                profile=c.profile,
                chain=c.chain,
                chain_id=c.chain_id,
                consensus_height=c.consensus_height,
                requests=c.requests,
                errors=c.errors,
                failovers=c.failovers,
                hist=c.hist,
                hist_sum_s=c.hist_sum_s,
                providers=providers,
            )
        return NodeSnapshot(
            node_id=self.node_id,
            instance=self.instance,
            seq=self.seq,
            version=self.version,
            interval_s=self.interval_s,
            uptime_s=self.uptime_s,
            sent_at=self.sent_at,
            ws_connections=self.ws_connections,
            instances=self.instances,
            truncated=True,
            chains=chains,
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "v": SCHEMA,
            "type": "snapshot",
            "node_id": self.node_id,
            "instance": self.instance,
            "seq": self.seq,
            "version": self.version,
            "interval_s": self.interval_s,
            "uptime_s": self.uptime_s,
            "sent_at": self.sent_at,
            "ws_connections": self.ws_connections,
            "truncated": self.truncated,
            "chains": [c.to_wire() for c in self.chains.values()],
        }

    @classmethod
    def from_wire(cls, raw: Any) -> NodeSnapshot:
        """Validate and build a snapshot from decoded JSON.

        Raises:
            ValueError: on any missing, mistyped or out-of-range field; the caller drops
                the message (a foreign or corrupt publisher must not break the view).
        """
        if not isinstance(raw, dict) or raw.get("v") != SCHEMA or raw.get("type") != "snapshot":
            raise ValueError("not a schema-1 snapshot")
        chains_raw = raw.get("chains")
        if not isinstance(chains_raw, list):
            raise ValueError("chains must be a list")
        rows = sum(
            len(p.get("methods", ())) + 1
            for c in chains_raw
            if isinstance(c, dict)
            for p in _dict(c.get("providers")).values()
            if isinstance(p, dict)
        )
        if rows > _MAX_ITEMS:
            raise ValueError("snapshot too large")
        chains = [ChainSnap.from_wire(c) for c in chains_raw]
        interval = _float(raw.get("interval_s"))
        if not 0.01 <= interval <= 3600:
            raise ValueError("interval_s out of range")
        return cls(
            node_id=_ident(raw.get("node_id")),
            instance=_ident(raw.get("instance")),
            seq=_count(raw.get("seq")),
            version=_str(raw.get("version", "")),
            interval_s=interval,
            uptime_s=_float(raw.get("uptime_s", 0.0)),
            sent_at=_float(raw.get("sent_at", 0.0)),
            ws_connections=_count(raw.get("ws_connections", 0)),
            truncated=bool(raw.get("truncated", False)),
            chains={c.key: c for c in chains},
        )


def merge_snapshots(snaps: Iterable[NodeSnapshot], *, node_id: str) -> NodeSnapshot:
    """Merge node (or already merged) snapshots into one named ``node_id``.

    The result does not alias its inputs. Inputs are merged in ``identity`` order so the
    result does not depend on the order they are given in.
    """
    out = NodeSnapshot(node_id=node_id, instances=0)
    ordered = sorted(snaps, key=lambda s: (s.node_id, s.instance))
    for snap in ordered:
        out.instances += snap.instances
        out.ws_connections += snap.ws_connections
        out.truncated = out.truncated or snap.truncated
        out.uptime_s = max(out.uptime_s, snap.uptime_s)
        if snap.version and snap.version not in out.version.split(","):
            out.version = f"{out.version},{snap.version}" if out.version else snap.version
        for key, chain in snap.chains.items():
            mine = out.chains.get(key)
            if mine is None:
                mine = out.chains[key] = ChainSnap(
                    profile=chain.profile, chain=chain.chain, chain_id=chain.chain_id
                )
            mine.add(chain)
    out.interval_s = max((s.interval_s for s in ordered), default=1.0)
    return out


# -- building from a live node ---------------------------------------------------------


def build_snapshot(
    node: NodeInfo,
    metrics: Metrics,
    runtime: Runtime,
    *,
    instance: str,
    seq: int,
    interval_s: float,
    now: float,
    wall: float,
) -> NodeSnapshot:
    """This node's snapshot, read from its routers and request counters.

    Args:
        node: this node's identity.
        metrics: its request counters.
        runtime: the runtime serving now (its routers).
        instance: the process identity within the region.
        seq: heartbeat sequence number.
        interval_s: the heartbeat interval (receivers use 3 of them as the silence limit).
        now: monotonic seconds (breaker and lag state are read at this time).
        wall: wall-clock seconds, informational.
    """
    per_chain: dict[tuple[str, str], list[int]] = {}  # requests, errors
    for (profile, chain, _m, _s, status), n in metrics.requests.items():
        acc = per_chain.setdefault((profile, chain), [0, 0])
        acc[0] += n
        if status == "error":
            acc[1] += n
    chains: dict[str, ChainSnap] = {}
    for rt in runtime.chains():
        router = rt.router
        state = router.state
        counts = per_chain.get((rt.profile, rt.key), [0, 0])
        cs = ChainSnap(
            profile=rt.profile,
            chain=rt.key,
            chain_id=rt.config.chain_id,
            consensus_height=state.consensus(now),
            requests=counts[0],
            errors=counts[1],
            failovers=metrics.failovers.get((rt.profile, rt.key), 0),
        )
        for (profile, chain, _m), h in metrics.durations.items():
            if profile == rt.profile and chain == rt.key:
                for i, n in enumerate(h.counts):
                    cs.hist[i] += n
                cs.hist_sum_s += h.total
        rings: dict[str, list[float]] = {}
        for ch in router.channels:
            pid = ch.provider_id
            ps = cs.providers.get(pid)
            if ps is None:
                ps = cs.providers[pid] = ProviderSnap(
                    id=pid,
                    name=ch.provider.name,
                    height=state.height(pid),
                    lag=state.optimistic_lag(pid, now),
                    status=router.provider_status(pid, now),
                )
            s = int(ch.breaker.state(now))
            ps.circuits[ch.transport] = [int(s == i) for i in range(3)]
            ps.rate_limited[ch.transport] = int(ch.evidence.rate_limited(now))
            ring = rings.setdefault(pid, [])
            rows = sorted(ch.methods.items(), key=lambda kv: -kv[1].calls)
            other: Figures | None = None
            for i, (method, row) in enumerate(rows):
                if not row.calls:
                    continue
                has_avg = row.usable_successes > 0
                p50, p95, p99 = row.percentiles()
                fig = Figures(
                    calls=row.calls,
                    successes=row.successes,
                    failures=row.failures,
                    rate_limited=row.outcomes.get("rate_limited", 0),
                    avg_ms=row.ewma_ms if has_avg else None,
                    avg_w=row.calls if has_avg else 0,
                    p50_ms=p50,
                    p95_ms=p95,
                    p99_ms=p99,
                    pct_calls=row.calls if p50 is not None else 0,
                )
                ps.totals.add(_no_pct(fig))
                ring.extend(row.recent_latencies())
                if i < MAX_METHOD_ROWS:
                    ps.methods[(method, ch.transport)] = fig
                else:  # fold the long tail; its percentiles are not kept
                    if other is None:
                        other = ps.methods.setdefault(("other", ch.transport), Figures())
                    other.add(_no_pct(fig))
        for pid, ring in rings.items():
            if ring:
                totals = cs.providers[pid].totals
                totals.p50_ms, totals.p95_ms, totals.p99_ms = _nearest_rank(ring)
                totals.pct_calls = totals.calls
        chains[cs.key] = cs
    return NodeSnapshot(
        node_id=node.node_id,
        instance=instance,
        seq=seq,
        version=node.version,
        interval_s=interval_s,
        uptime_s=round(node.uptime(), 3),
        sent_at=wall,
        ws_connections=metrics.ws_connections,
        chains=chains,
    )


def _nearest_rank(values: list[float]) -> tuple[float, float, float]:
    s = sorted(values)
    n = len(s)
    return (s[-(-n * 50 // 100) - 1], s[-(-n * 95 // 100) - 1], s[-(-n * 99 // 100) - 1])


def _no_pct(fig: Figures) -> Figures:
    return Figures(
        calls=fig.calls,
        successes=fig.successes,
        failures=fig.failures,
        rate_limited=fig.rate_limited,
        avg_ms=fig.avg_ms,
        avg_w=fig.avg_w,
    )


# -- wire validation (the helpers the figures share are in lasso.cluster.figures) ----------


def _ident(v: Any) -> str:
    s = _str(v)
    if not s or not s.isprintable():
        raise ValueError(f"expected a printable identifier, got {v!r}")
    return s
