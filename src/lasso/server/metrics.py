"""Request counters and the Prometheus exposition (CONTRACT §5).

The hot path only bumps plain dict counters and one histogram bucket per request; the
Prometheus text is built at scrape time from those counters and from the routers' own
per-(provider, method, transport) rows, so there is no metrics library work per request.
Method labels outside the method registry collapse to ``other`` so that clients cannot
explode the label space.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from time import monotonic
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from lasso.kernel.methods import KNOWN_METHODS
from lasso.kernel.router import PROVIDER_STATUSES
from lasso.kernel.stats import HISTOGRAM_BUCKETS_S
from lasso.kernel.status import connection_state

if TYPE_CHECKING:
    from lasso.kernel.router import Channel
    from lasso.server.node import NodeInfo
    from lasso.server.runtime import ChainRuntime, Runtime

__all__ = ["Collector", "Histogram", "Metrics"]

_BOUNDS = HISTOGRAM_BUCKETS_S[:-1]


class Histogram:
    """Fixed-bucket latency histogram in seconds (Prometheus default buckets)."""

    __slots__ = ("counts", "total", "count")

    def __init__(self) -> None:
        self.counts = [0] * len(HISTOGRAM_BUCKETS_S)
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(_BOUNDS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out = []
        acc = 0
        for le, c in zip(HISTOGRAM_BUCKETS_S, self.counts, strict=True):
            acc += c
            out.append(("+Inf" if le == float("inf") else repr(le), float(acc)))
        return out

    def quantile(self, q: float) -> float | None:
        """Bucket-interpolated quantile, as Prometheus' histogram_quantile does."""
        if not self.count:
            return None
        rank = q * self.count
        acc = 0
        lower = 0.0
        for le, c in zip(HISTOGRAM_BUCKETS_S, self.counts, strict=True):
            if acc + c >= rank and c:
                if le == float("inf"):
                    return lower
                return lower + (le - lower) * (rank - acc) / c
            acc += c
            if le != float("inf"):
                lower = le
        return lower


Collector = Callable[[str, float], Iterable[Metric]]
"""A component's Prometheus families: called with the node id and monotonic now at each
scrape (see :meth:`Metrics.register`)."""


class Metrics:
    """Per-node request metrics, and the registry of the other components' collectors.

    Args:
        node: this node (its id labels every series; its version is ``lasso_node_info``).
        runtime: the current runtime (reloads swap it): its routers are read at scrape
            time for the upstream, breaker and provider families.
        peer_snapshots: with ``--workers N``, the other workers' latest counter snapshots
            (:meth:`lasso.server.workers.WorkerSnapshots.peers`), merged into the
            exposition so that any worker serves node-wide counts.
    """

    def __init__(
        self,
        node: NodeInfo,
        runtime: Callable[[], Runtime],
        *,
        peer_snapshots: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.node = node
        self.node_id = node.node_id
        self.requests: dict[tuple[str, str, str, str, str], int] = {}
        self.durations: dict[tuple[str, str, str], Histogram] = {}
        self.failovers: dict[tuple[str, str], int] = {}
        self.ws_connections = 0
        self.subscriptions: dict[tuple[str, str], int] = {}
        self._runtime = runtime
        self._collectors: list[Collector] = []
        self._peer_snapshots = peer_snapshots

    def __repr__(self) -> str:
        return (
            f"<Metrics node={self.node_id} series={len(self.requests)} "
            f"collectors={len(self._collectors)}>"
        )

    def register(self, collector: Collector) -> None:
        """Add ``collector``'s families to every scrape (once, however often registered)."""
        if collector not in self._collectors:
            self._collectors.append(collector)

    def unregister(self, collector: Collector) -> None:
        """Stop scraping ``collector`` (no-op when it is not registered)."""
        if collector in self._collectors:
            self._collectors.remove(collector)

    def record_request(
        self,
        rt: ChainRuntime,
        method: str,
        strategy: str,
        status: str,
        seconds: float,
        retries: int,
    ) -> None:
        """Count one client-facing JSON-RPC item (hot path: two dict operations)."""
        m = method if method in KNOWN_METHODS else "other"
        key = (rt.profile, rt.key, m, strategy, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        hkey = (rt.profile, rt.key, m)
        hist = self.durations.get(hkey)
        if hist is None:
            hist = self.durations[hkey] = Histogram()
        hist.observe(seconds)
        if retries:
            fkey = (rt.profile, rt.key)
            self.failovers[fkey] = self.failovers.get(fkey, 0) + retries

    def chain_summary(self, profile: str, chain: str) -> dict[str, Any]:
        total = 0
        ok = 0
        for (p, c, _m, _s, status), n in self.requests.items():
            if p == profile and c == chain:
                total += n
                if status != "error":
                    ok += n
        merged = Histogram()
        for (p, c, _m), h in self.durations.items():
            if p == profile and c == chain:
                for i, n in enumerate(h.counts):
                    merged.counts[i] += n
                merged.total += h.total
                merged.count += h.count

        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000, 3)

        return {
            "total_calls": total,
            "success_rate": round(ok / total, 4) if total else None,
            "error_rate_percent": round(100 * (total - ok) / total, 3) if total else None,
            "p50_latency_ms": ms(merged.quantile(0.5)),
            "p95_latency_ms": ms(merged.quantile(0.95)),
            "p99_latency_ms": ms(merged.quantile(0.99)),
            "failovers": self.failovers.get((profile, chain), 0),
        }

    # -- exposition -------------------------------------------------------------------
    def render(self) -> bytes:
        """The Prometheus text exposition of this node (built now, from live state)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(self))
        return generate_latest(registry)


UpstreamKey = tuple[str, str, str, str, str]  # profile, chain, provider, transport, method


class _Collector:
    """One scrape: every family, built in steps from the counters, routers and collectors."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        self.node = metrics.node_id

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterable[Metric]:
        m = self.m
        now = monotonic()
        peers = m._peer_snapshots() if m._peer_snapshots is not None else []
        yield from self._client_families(peers)
        yield from self._routing_families(m._runtime(), peers, now)
        yield from self._node_families()
        for extra in list(m._collectors):
            yield from extra(self.node, now)

    def _client_families(self, peers: list[dict[str, Any]]) -> Iterable[Metric]:
        """Client requests, their durations and failovers, this worker's plus its peers'."""
        m, node = self.m, self.node
        requests = dict(m.requests)
        durations = {k: (list(h.counts), h.total) for k, h in m.durations.items()}
        failovers = dict(m.failovers)
        for snap in peers:
            _merge_requests(snap, requests, durations, failovers)
        req = CounterMetricFamily(
            "lasso_rpc_requests",
            "Client JSON-RPC requests by outcome",
            labels=["node_id", "profile", "chain", "method", "strategy", "status"],
        )
        for (profile, chain, method, strategy, status), n in sorted(requests.items()):
            req.add_metric([node, profile, chain, method, strategy, status], n)
        yield req
        dur = HistogramMetricFamily(
            "lasso_rpc_request_duration_seconds",
            "End-to-end duration of client JSON-RPC requests",
            labels=["node_id", "profile", "chain", "method"],
        )
        for (profile, chain, method), (counts, total) in sorted(durations.items()):
            dur.add_metric([node, profile, chain, method], _cumulative(counts), total)
        yield dur
        fo = CounterMetricFamily(
            "lasso_failovers",
            "Attempts retried on another provider",
            labels=["node_id", "profile", "chain"],
        )
        for (profile, chain), n in sorted(failovers.items()):
            fo.add_metric([node, profile, chain], n)
        yield fo

    def _routing_families(
        self, runtime: Runtime, peers: list[dict[str, Any]], now: float
    ) -> Iterable[Metric]:
        """Per channel (upstream attempts, breaker, rate limit) and per provider (height,
        lag, status) families, read from the routers of ``runtime``."""
        channel = _ChannelFamilies(self.node)
        provider = _ProviderFamilies(self.node)
        for rt in runtime.chains():
            for ch in rt.router.channels:
                channel.add(rt, ch, now)
            for p in rt.config.providers:
                provider.add(rt, p.id, now)
        for snap in peers:
            _merge_upstream(snap, channel.counts, channel.hists)
        yield from channel.families()
        yield from provider.families()

    def _node_families(self) -> Iterable[Metric]:
        """WebSocket connections, client subscriptions and the node's identity."""
        m, node = self.m, self.node
        ws = GaugeMetricFamily(
            "lasso_ws_connections", "Open client WebSocket connections", labels=["node_id"]
        )
        ws.add_metric([node], float(m.ws_connections))
        yield ws
        subs = GaugeMetricFamily(
            "lasso_subscriptions",
            "Active client subscriptions",
            labels=["node_id", "chain", "kind"],
        )
        for (chain, kind), n in sorted(m.subscriptions.items()):
            subs.add_metric([node, chain, kind], float(n))
        yield subs
        info = GaugeMetricFamily("lasso_node_info", "Node identity", labels=["node_id", "version"])
        info.add_metric([node, m.node.version], 1.0)
        yield info


class _ChannelFamilies:
    """Upstream attempts by outcome and latency, breaker state, rate limit, connection state
    and last error per channel."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.counts: dict[UpstreamKey, dict[str, int]] = {}
        self.hists: dict[UpstreamKey, tuple[list[int], float]] = {}
        self.breaker = GaugeMetricFamily(
            "lasso_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open",
            labels=["node_id", "profile", "chain", "provider", "transport"],
        )
        self.rate_limited = GaugeMetricFamily(
            "lasso_provider_rate_limited",
            "1 while the provider channel is rate-limited",
            labels=["node_id", "profile", "chain", "provider", "transport"],
        )
        self.connected = GaugeMetricFamily(
            "lasso_provider_connected",
            "1 while the provider channel's upstream can be reached (HTTP: it answered last; "
            "WS: its socket is open), 0 after connect failures; absent before any attempt",
            labels=["node_id", "profile", "chain", "provider", "transport"],
        )
        self.last_error = GaugeMetricFamily(
            "lasso_provider_last_error_timestamp_seconds",
            "Unix time of the provider channel's last error, labelled with its category, "
            "cause and message; absent before the first error",
            labels=[
                "node_id", "profile", "chain", "provider", "transport", "category", "cause",
                "message",
            ],
        )  # fmt: skip

    def add(self, rt: ChainRuntime, ch: Channel, now: float) -> None:
        pid = ch.provider.id
        labels = [self.node, rt.profile, rt.key, pid, ch.transport]
        self.breaker.add_metric(labels, float(int(ch.breaker.state(now))))
        self.rate_limited.add_metric(labels, 1.0 if ch.evidence.rate_limited(now) else 0.0)
        link = connection_state(ch)
        if link != "unknown":
            self.connected.add_metric(labels, 1.0 if link == "up" else 0.0)
        fault = ch.health.last
        if fault is not None and fault.ts is not None:
            self.last_error.add_metric(
                [*labels, fault.category, fault.cause, fault.message], fault.ts
            )
        for method, row in ch.methods.items():
            key: UpstreamKey = (rt.profile, rt.key, pid, ch.transport, method)
            counts = self.counts.setdefault(key, {})
            for outcome, n in row.outcomes.items():
                if n:
                    counts[outcome] = counts.get(outcome, 0) + n
            if row.hist_count:
                self.hists[key] = (list(row.bucket_counts), row.hist_sum_s)

    def families(self) -> Iterable[Metric]:
        node = self.node
        up = CounterMetricFamily(
            "lasso_upstream_requests",
            "Upstream attempts by outcome",
            labels=["node_id", "profile", "chain", "provider", "transport", "method", "outcome"],
        )
        for key, counts in sorted(self.counts.items()):
            for outcome, n in counts.items():
                up.add_metric([node, *key, outcome], n)
        up_dur = HistogramMetricFamily(
            "lasso_upstream_request_duration_seconds",
            "Upstream attempt latency",
            labels=["node_id", "profile", "chain", "provider", "transport", "method"],
        )
        for key, (bcounts, total) in sorted(self.hists.items()):
            up_dur.add_metric([node, *key], _cumulative(bcounts), total)
        yield up
        yield up_dur
        yield self.breaker
        yield self.rate_limited
        yield self.connected
        yield self.last_error


class _ProviderFamilies:
    """Block height, lag and status per provider."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.height = GaugeMetricFamily(
            "lasso_provider_block_height",
            "Last seen block height",
            labels=["node_id", "profile", "chain", "provider"],
        )
        self.lag = GaugeMetricFamily(
            "lasso_provider_lag_blocks",
            "Blocks behind the consensus height (0 at or above it)",
            labels=["node_id", "profile", "chain", "provider"],
        )
        self.status = GaugeMetricFamily(
            "lasso_provider_status",
            "1 for the provider's current status (healthy, lagging, degraded, recovering, "
            "rate_limited, circuit_open, misconfigured), 0 for the others",
            labels=["node_id", "profile", "chain", "provider", "status"],
        )

    def add(self, rt: ChainRuntime, pid: str, now: float) -> None:
        router, labels = rt.router, [self.node, rt.profile, rt.key, pid]
        current = router.provider_status(pid, now)
        for st in PROVIDER_STATUSES:
            self.status.add_metric([*labels, st], 1.0 if st == current else 0.0)
        head = router.state.height(pid)
        if head is not None:
            self.height.add_metric(labels, float(head))
            lag = router.state.optimistic_lag(pid, now)
            if lag is not None:
                self.lag.add_metric(labels, float(lag))

    def families(self) -> Iterable[Metric]:
        yield self.height
        yield self.lag
        yield self.status


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    out = []
    acc = 0
    for le, c in zip(HISTOGRAM_BUCKETS_S, counts, strict=True):
        acc += c
        out.append(("+Inf" if le == float("inf") else repr(le), float(acc)))
    return out


def _add_counts(into: list[int], more: list[int]) -> list[int]:
    return [a + b for a, b in zip(into, more, strict=True)]


def _merge_requests(
    snap: dict[str, Any],
    requests: dict[tuple[str, str, str, str, str], int],
    durations: dict[tuple[str, str, str], tuple[list[int], float]],
    failovers: dict[tuple[str, str], int],
) -> None:
    """Add one worker snapshot's client-request counters (see lasso.server.workers)."""
    for *k, n in snap.get("requests", ()):
        rkey = (k[0], k[1], k[2], k[3], k[4])
        requests[rkey] = requests.get(rkey, 0) + n
    for p, c, meth, counts, total in snap.get("durations", ()):
        old = durations.get((p, c, meth))
        if old is None:
            durations[(p, c, meth)] = (list(counts), total)
        else:
            durations[(p, c, meth)] = (_add_counts(old[0], counts), old[1] + total)
    for p, c, n in snap.get("failovers", ()):
        failovers[(p, c)] = failovers.get((p, c), 0) + n


def _merge_upstream(
    snap: dict[str, Any],
    up_counts: dict[tuple[str, str, str, str, str], dict[str, int]],
    up_hist: dict[tuple[str, str, str, str, str], tuple[list[int], float]],
) -> None:
    """Add one worker snapshot's upstream rows (outcome counts and histograms)."""
    for p, c, pid, tr, meth, outcomes, bcounts, total in snap.get("upstream", ()):
        ukey = (p, c, pid, tr, meth)
        counts = up_counts.setdefault(ukey, {})
        for outcome, n in outcomes.items():
            counts[outcome] = counts.get(outcome, 0) + n
        if bcounts:
            old = up_hist.get(ukey)
            up_hist[ukey] = (
                (list(bcounts), total)
                if old is None
                else (_add_counts(old[0], bcounts), old[1] + total)
            )
