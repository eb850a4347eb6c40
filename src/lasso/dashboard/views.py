"""Read-only views for the dashboard: router snapshots and metrics into page-ready JSON.

Nothing here touches the request path. The hub (:mod:`lasso.dashboard.hub`) calls
:func:`chain_view` once per tick per chain of each watched profile and shares the encoded
result with every viewer, so the cost is one pass over the profile's routers per second,
whatever the number of open dashboards.

A provider's status is the router's word, :meth:`ChainRouter.provider_status
<lasso.kernel.router.ChainRouter.provider_status>`, exactly as ``/api/chains``,
``/api/metrics/:chain`` and ``lasso_provider_status`` report it (the ``status`` of each
``ChainRouter.snapshot()`` provider): ``misconfigured``, ``circuit_open``,
``rate_limited``, ``recovering``, ``degraded``, ``lagging`` or ``healthy``. The views
never compute a status of their own; they add per-transport detail (breaker, WebSocket
connection, rate-limit window) beside it. In the cluster views the status comes from the
nodes' snapshots, where each node publishes its router's word and a merge keeps the most
severe (:mod:`lasso.cluster.snapshot`); ``unknown`` marks a provider that no reporting
node gave a status for (a node of an older version).

Rates (calls/s, windowed success and latency, traffic share) come from counter deltas
between ticks, kept by a :class:`RateTracker` per feed: cumulative counters in, per-second
figures out, so a provider that stops answering shows it at once rather than after its
lifetime averages move.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lasso.kernel.router import PROVIDER_STATUSES

if TYPE_CHECKING:
    from lasso.config import ChainConfig
    from lasso.server.runtime import ChainRuntime

__all__ = [
    "STATUSES",
    "UNKNOWN",
    "UNUSABLE",
    "HISTORY_POINTS",
    "RATE_WINDOW_S",
    "QUALITY_WINDOW_S",
    "Counters",
    "RateTracker",
    "provider_status",
    "chain_view",
    "local_chain_view",
    "fastest_by_region",
    "from_cluster_document",
    "region_p50",
    "router_counters",
    "snapshot_counters",
]

UNKNOWN = "unknown"
"""A cluster view's status for a provider no reporting node gave a status for."""
STATUSES: tuple[str, ...] = (*reversed(PROVIDER_STATUSES), UNKNOWN)
"""The statuses a view can carry, most severe first: the router's, then :data:`UNKNOWN`."""

HISTORY_POINTS = 120
"""Latency chart points kept per provider (one per tick: two minutes at 1 s)."""
RATE_WINDOW_S = 5.0
"""calls/s is averaged over this many seconds of ticks."""
QUALITY_WINDOW_S = 60.0
"""Windowed success rate and mean latency cover this many seconds (reference §10.3)."""


@dataclass(frozen=True, slots=True)
class Counters:
    """Cumulative counters of one provider (or chain) at one instant."""

    calls: int = 0
    successes: int = 0
    latency_sum_ms: float = 0.0
    latency_count: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            self.calls + other.calls,
            self.successes + other.successes,
            self.latency_sum_ms + other.latency_sum_ms,
            self.latency_count + other.latency_count,
        )


@dataclass(frozen=True, slots=True)
class Rates:
    """Figures derived from two samples of :class:`Counters`."""

    calls_s: float | None
    window_calls: int
    success_rate: float | None
    avg_ms: float | None


class RateTracker:
    """Cumulative counters sampled once per tick, turned into rates.

    Keys are opaque (``(chain, provider)`` in practice). A counter that goes backwards (a
    reload rebuilt the router) restarts the key's history.

    Args:
        keep_s: how much history to keep per key.
    """

    def __init__(self, keep_s: float = QUALITY_WINDOW_S + 5.0) -> None:
        self.keep_s = keep_s
        self._samples: dict[Any, deque[tuple[float, Counters]]] = {}

    def observe(self, key: Any, t: float, counters: Counters) -> None:
        """Record ``counters`` of ``key`` at time ``t`` (seconds, any monotonic clock)."""
        ring = self._samples.get(key)
        if ring is None:
            ring = self._samples[key] = deque()
        elif ring and counters.calls < ring[-1][1].calls:
            ring.clear()
        ring.append((t, counters))
        while len(ring) > 2 and t - ring[1][0] >= self.keep_s:
            ring.popleft()

    def rates(self, key: Any) -> Rates:
        """calls/s over :data:`RATE_WINDOW_S`; success and latency over
        :data:`QUALITY_WINDOW_S` (or what history there is)."""
        ring = self._samples.get(key)
        if not ring or len(ring) < 2:
            return Rates(None, 0, None, None)
        t1, c1 = ring[-1]
        # calls/s: from the newest sample at least RATE_WINDOW_S old (else the oldest).
        base = ring[0]
        for sample in reversed(ring):
            if t1 - sample[0] >= RATE_WINDOW_S:
                base = sample
                break
        t0, c0 = base
        calls_s = (c1.calls - c0.calls) / (t1 - t0) if t1 > t0 else None
        # quality: from the oldest sample inside QUALITY_WINDOW_S.
        q0 = c1
        for t, c in ring:
            if t1 - t <= QUALITY_WINDOW_S:
                q0 = c
                break
        n = c1.calls - q0.calls
        lat_n = c1.latency_count - q0.latency_count
        return Rates(
            calls_s=calls_s,
            window_calls=n,
            success_rate=(c1.successes - q0.successes) / n if n > 0 else None,
            avg_ms=(c1.latency_sum_ms - q0.latency_sum_ms) / lat_n if lat_n > 0 else None,
        )

    def last_interval_avg_ms(self, key: Any) -> float | None:
        """Mean latency of the calls between the last two samples (the chart point)."""
        ring = self._samples.get(key)
        if not ring or len(ring) < 2:
            return None
        c0, c1 = ring[-2][1], ring[-1][1]
        n = c1.latency_count - c0.latency_count
        return (c1.latency_sum_ms - c0.latency_sum_ms) / n if n > 0 else None

    def retain(self, keys: Iterable[Any]) -> None:
        """Forget keys not in ``keys`` (providers removed by a reload)."""
        live = set(keys)
        for key in [k for k in self._samples if k not in live]:
            del self._samples[key]

    def __len__(self) -> int:
        return len(self._samples)

    def __repr__(self) -> str:
        return f"<RateTracker keys={len(self._samples)}>"


def provider_status(provider: Mapping[str, Any]) -> str:
    """The status word of one provider entry, as the router reported it.

    Args:
        provider: an entry of ``ChainRouter.snapshot()["providers"]`` (its ``status`` is
            ``ChainRouter.provider_status`` at the snapshot's instant), or of a cluster
            document (the most severe status its nodes reported).

    Returns:
        One of :data:`lasso.kernel.router.PROVIDER_STATUSES`, or :data:`UNKNOWN` when the
        entry carries none (or a word this version does not know).
    """
    status = provider.get("status")
    return status if isinstance(status, str) and status in PROVIDER_STATUSES else UNKNOWN


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _round(v: float | None, nd: int = 2) -> float | None:
    return None if v is None else round(v, nd)


def _weighted(rows: list[dict[str, Any]], field: str) -> float | None:
    """Call-weighted mean of a per-method figure (provider-level percentiles are
    approximated this way: the rings behind them are per method)."""
    total = 0.0
    weight = 0
    for row in rows:
        v = _num(row.get(field))
        n = int(row.get("calls") or 0)
        if v is not None and n > 0:
            total += v * n
            weight += n
    return total / weight if weight else None


def _figure(provider: Mapping[str, Any], rows: list[dict[str, Any]], field: str) -> float | None:
    """A provider-level figure: the document's own when it has one (cluster documents),
    else the call-weighted mean over its method rows (router snapshots)."""
    if field in provider:
        return _num(provider[field])
    return _weighted(rows, field)


def _transport(ch: Mapping[str, Any]) -> dict[str, Any]:
    ev = ch.get("evidence") or {}
    return {
        "circuit": ch.get("circuit", "closed"),
        "connected": ch.get("connected", True),
        "connection": ch.get("connection"),
        "last_error": ch.get("last_error"),
        "rate_limited": bool(ch.get("rate_limited")),
        "rate_limit_s": _num(ch.get("rate_limited_remaining_s")) or 0.0,
        "retry_after_s": _round(_num(ch.get("retry_after_s")), 1),
        "tier": ch.get("tier"),
        "ewma_ms": _round(_num(ev.get("ewma_ms"))),
        "consecutive_failures": ev.get("consecutive_failures", 0),
        "instances": ch.get("instances", 1),
        "open_instances": ch.get("open_instances", 1 if ch.get("circuit") == "open" else 0),
    }


def _methods(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-method figures of one provider, transports merged (call-weighted)."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(str(row.get("method")), []).append(row)
    out: dict[str, dict[str, Any]] = {}
    for method, group in by_method.items():
        calls = sum(int(r.get("calls") or 0) for r in group)
        ok = sum(int(r.get("successes") or 0) for r in group)
        out[method] = {
            "calls": calls,
            "success_rate": _round(ok / calls, 4) if calls else None,
            "p50_ms": _round(_weighted(group, "p50_ms")),
            "p95_ms": _round(_weighted(group, "p95_ms")),
            "ewma_ms": _round(_weighted(group, "ewma_ms")),
        }
    return out


def snapshot_counters(provider: Mapping[str, Any]) -> Counters:
    """Counters of a snapshot provider entry when the router's own sums are unavailable
    (remote nodes): latency sums approximated by calls × EWMA."""
    c = Counters()
    for row in provider.get("methods") or ():
        calls = int(row.get("calls") or 0)
        ewma = _num(row.get("ewma_ms"))
        ok = int(row.get("successes") or 0)
        c = c + Counters(calls, ok, (ewma or 0.0) * ok if ewma else 0.0, ok if ewma else 0)
    return c


def router_counters(rt: ChainRuntime) -> dict[str, Counters]:
    """Exact cumulative counters per provider from the router's method rows."""
    out: dict[str, Counters] = {}
    for ch in rt.router.channels:
        c = out.get(ch.provider_id, Counters())
        for row in ch.methods.values():
            c = c + Counters(row.calls, row.successes, row.hist_sum_s * 1000.0, row.hist_count)
        out[ch.provider_id] = c
    return out


def chain_view(
    snap: Mapping[str, Any],
    *,
    config: ChainConfig | None,
    counters: Mapping[str, Counters],
    tracker: RateTracker,
    t: float,
    profile: str,
    requests: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One chain of the page: providers with status, figures and rates.

    Args:
        snap: ``ChainRouter.snapshot()`` or a document with the same ``providers`` shape.
        config: the chain's configuration (names, endpoints), when known.
        counters: cumulative counters per provider id (see :func:`router_counters`).
        tracker: the feed's rate tracker; ``counters`` are recorded into it at ``t``.
        t: monotonic seconds of this tick.
        profile: the profile slug (endpoint paths).
        requests: client-side request summary (``Metrics.chain_summary``), if any.
    """
    key = str(snap.get("chain") or (config.key if config else "?"))
    providers: list[dict[str, Any]] = []
    total = Counters()
    for p in snap.get("providers") or ():
        pid = str(p.get("id"))
        c = counters.get(pid) or snapshot_counters(p)
        total = total + c
        tracker.observe((key, pid), t, c)
        rates = tracker.rates((key, pid))
        rows = list(p.get("methods") or ())
        chans = p.get("channels") or {}
        pconf = config.provider(pid) if config is not None else None
        lat = p["lat_ms"] if "lat_ms" in p else tracker.last_interval_avg_ms((key, pid))
        providers.append(
            {
                "id": pid,
                "name": p.get("name") or (pconf.name if pconf else None) or pid,
                "priority": p.get("priority", pconf.priority if pconf else None),
                "archival": p.get("archival", pconf.archival if pconf else True),
                "status": provider_status(p),
                "height": p.get("height"),
                "lag": p.get("lag"),
                "last_error": p.get("last_error"),
                "calls": c.calls,
                "success_rate": _round(c.successes / c.calls, 4) if c.calls else None,
                "window_success_rate": _round(rates.success_rate, 4),
                "window_calls": rates.window_calls,
                "calls_s": _round(rates.calls_s),
                "avg_ms": _round(rates.avg_ms),
                "lat_ms": _round(_num(lat)),
                "p50_ms": _round(_figure(p, rows, "p50_ms")),
                "p95_ms": _round(_figure(p, rows, "p95_ms")),
                "p99_ms": _round(_figure(p, rows, "p99_ms")),
                "ewma_ms": _round(_figure(p, rows, "ewma_ms")),
                "transports": {
                    name: _transport(ch) for name, ch in chans.items() if isinstance(ch, Mapping)
                },
                "methods": _methods(rows),
            }
        )
    tracker.observe((key, None), t, total)
    chain_rates = tracker.rates((key, None))
    window_total = sum(p["window_calls"] for p in providers)
    for p in providers:
        if window_total > 0:
            p["share"] = round(p["window_calls"] / window_total, 4)
        else:
            p["share"] = round(p["calls"] / total.calls, 4) if total.calls else None
    methods = sorted({m for p in providers for m in p["methods"]})
    counts = dict.fromkeys(STATUSES, 0)
    for p in providers:
        counts[p["status"]] += 1
    summary: dict[str, Any] = {
        "calls_s": _round(chain_rates.calls_s),
        "window_success_rate": _round(chain_rates.success_rate, 4),
        "avg_ms": _round(chain_rates.avg_ms),
    }
    if requests:
        summary.update(requests)
    return {
        "chain": key,
        "chain_id": str(snap.get("chain_id") or (config.chain_id if config else "")),
        "name": (config.name if config else None) or key,
        "default_strategy": config.default_strategy if config else None,
        "consensus_height": snap.get("consensus_height"),
        "block_time_ms": snap.get("block_time_ms"),
        "retry_after_s": _round(_num(snap.get("retry_after_s")), 1),
        "endpoints": {
            "http": f"/rpc/profile/{profile}/{key}",
            "ws": f"/ws/rpc/profile/{profile}/{key}",
        },
        "summary": summary,
        "status_counts": counts,
        "providers": providers,
        "methods": methods,
    }


def local_chain_view(
    rt: ChainRuntime,
    *,
    tracker: RateTracker,
    t: float,
    requests: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`chain_view` of a chain served by this node (exact counters)."""
    return chain_view(
        rt.router.snapshot(t),
        config=rt.config,
        counters=router_counters(rt),
        tracker=tracker,
        t=t,
        profile=rt.profile,
        requests=requests,
    )


def from_cluster_document(doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Counters]]:
    """A ``ClusterView.chain_metrics`` document in the router-snapshot shape
    :func:`chain_view` reads, with the providers' cumulative counters.

    The provider's ``status`` is the document's (the most severe its nodes reported). A
    transport's circuit, shown beside it, is ``open`` when it is open on every instance
    and ``half_open`` when one is probing, with the instance counts; the WebSocket
    connection state is not exchanged (``connected`` is ``None``). The chart point is the
    document's mean latency (latency sums are not exchanged).
    """
    providers: list[dict[str, Any]] = []
    counters: dict[str, Counters] = {}
    for p in doc.get("providers") or ():
        pid = str(p.get("id"))
        limited = p.get("rate_limited") or {}
        circuits = p.get("circuits") or {}
        chans: dict[str, Any] = {}
        for transport, counts in circuits.items():
            total = sum(int(v or 0) for v in counts.values())
            n_open = int(counts.get("open") or 0)
            n_half = int(counts.get("half_open") or 0)
            circuit = "open" if total and n_open >= total else "half_open" if n_half else "closed"
            chans[transport] = {
                "circuit": circuit,
                "connected": True if transport == "http" else None,
                "rate_limited": bool(limited.get(transport)),
                "instances": total,
                "open_instances": n_open,
            }
        rows = [{**m, "ewma_ms": m.get("avg_latency_ms")} for m in p.get("methods") or ()]
        providers.append(
            {
                "id": pid,
                "name": p.get("name"),
                "status": p.get("status"),
                "height": p.get("height"),
                "lag": p.get("lag"),
                "channels": chans,
                "methods": rows,
                "p50_ms": p.get("p50_ms"),
                "p95_ms": p.get("p95_ms"),
                "p99_ms": p.get("p99_ms"),
                "ewma_ms": p.get("avg_latency_ms"),
                "lat_ms": p.get("avg_latency_ms"),
            }
        )
        counters[pid] = Counters(int(p.get("calls") or 0), int(p.get("successes") or 0))
    snap = {
        "chain": doc.get("chain"),
        "chain_id": doc.get("chain_id"),
        "consensus_height": doc.get("consensus_height"),
        "providers": providers,
    }
    return snap, counters


UNUSABLE = frozenset({"circuit_open", "misconfigured"})
"""Statuses of a provider that a region does not route to: never its fastest there."""


def region_p50(brief: Mapping[str, Any]) -> float | None:
    """One region's typical latency of a provider (``by_node`` entry of a cluster
    document): its p50, else its mean; ``None`` while that region's router does not use
    it (its status there is in :data:`UNUSABLE`, e.g. an open HTTP circuit beside a
    WebSocket that never connected), or, for a node that sends no status, while every
    circuit there is open."""
    status = brief.get("status")
    if status in UNUSABLE:
        return None
    circuits = brief.get("circuit") or {}
    if status is None and circuits and all(v == "open" for v in circuits.values()):
        return None
    value = _num(brief.get("p50_ms"))
    if value is None:
        value = _num(brief.get("avg_latency_ms"))
    return _round(value)


def fastest_by_region(
    docs: Iterable[Mapping[str, Any]], nodes: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """The "which provider is fastest where" comparison, from cluster documents.

    Args:
        docs: one aggregate ``ClusterView.chain_metrics`` document per chain (each provider
            carries ``by_node``: its figures per region).
        nodes: regions to list even without figures yet (in this order, first).

    Returns:
        One entry per chain: ``{"chain", "nodes", "providers": [{"id", "by_node": {node:
        p50_ms}, "status": {node: status}}], "fastest": {node: provider id or None}}``
        (see :func:`region_p50`; ``status`` is each region's router status, ``unknown``
        when the node sent none).
    """
    out = []
    for doc in docs:
        order = list(dict.fromkeys(nodes))
        rows: list[dict[str, Any]] = []
        for p in doc.get("providers") or ():
            briefs = {
                str(r): brief
                for r, brief in (p.get("by_node") or {}).items()
                if isinstance(brief, Mapping)
            }
            by_node = {r: region_p50(brief) for r, brief in briefs.items()}
            status = {r: provider_status(brief) for r, brief in briefs.items()}
            for r in by_node:
                if r not in order:
                    order.append(r)
            rows.append({"id": str(p.get("id")), "by_node": by_node, "status": status})
        fastest: dict[str, str | None] = {}
        for node in order:
            best: tuple[float, str] | None = None
            for row in rows:
                v = row["by_node"].get(node)
                if v is not None and (best is None or v < best[0]):
                    best = (v, row["id"])
            fastest[node] = best[1] if best else None
        out.append(
            {"chain": doc.get("chain"), "nodes": order, "providers": rows, "fastest": fastest}
        )
    return out
