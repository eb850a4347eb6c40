"""The per-node metrics snapshot and its pure merge (CONTRACT §6).

A :class:`NodeSnapshot` is what a node publishes to the cluster every heartbeat: for each
profile/chain, the client-facing request counts (with the end-to-end latency histogram),
and for each provider its block height and lag, its circuit-breaker and rate-limit state
per transport, and one :class:`Figures` row per (method, transport) plus a provider total.

Snapshots merge into snapshots of the same shape, so one function builds the region view
(every instance sharing a ``LASSO_NODE_ID``) and the cluster view (every region), and the
merge is associative and commutative (the inputs are sorted first). The rules:

* counts (calls, successes, failures, rate-limited answers, requests, errors, failovers,
  histogram buckets) add up;
* success rate is ``successes / calls`` of the sums, which is the call-weighted mean of the
  nodes' success rates;
* the average latency is the mean of the nodes' EWMA latencies weighted by their calls
  (``avg_w`` carries the weight so merges of merges stay exact);
* p50/p95/p99 are **taken from the node with the most calls** for that row (reference
  §10.1): percentiles do not average, and the busiest node's are the best estimate.
  ``pct_calls`` records that node's calls so the rule holds across merge levels. The
  client-facing chain percentiles are exact instead: their histograms add up;
* height and consensus height take the maximum, lag the worst (most negative);
* circuit state becomes counts of instances per state, ``[closed, half_open, open]``;
* the provider status (each node's ``ChainRouter.provider_status``, the word its
  ``/api/chains`` reports) takes the most severe of :data:`PROVIDER_STATUSES`; ``None``
  (a node of an older version, or a word this version does not know) adds nothing.

Everything here is plain computation on values; :func:`build_snapshot` reads a live app's
routers and counters but does no IO.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lasso.kernel.router import PROVIDER_STATUSES
from lasso.kernel.stats import HISTOGRAM_BUCKETS_S

if TYPE_CHECKING:
    from lasso.server.app import LassoApp

__all__ = [
    "SCHEMA",
    "MAX_METHOD_ROWS",
    "ChainSnap",
    "Figures",
    "NodeSnapshot",
    "ProviderSnap",
    "build_snapshot",
    "merge_snapshots",
]

SCHEMA = 1
"""Wire schema version; a node ignores snapshots of another version."""

MAX_METHOD_ROWS = 64
"""Method rows kept per provider channel in a snapshot; the rest fold into ``other``."""

_N_BUCKETS = len(HISTOGRAM_BUCKETS_S)
_MAX_ITEMS = 100_000  # rows per snapshot accepted from the wire: bounds a hostile message
CIRCUIT_STATES = ("closed", "half_open", "open")


@dataclass(slots=True, kw_only=True)
class Figures:
    """Call counts and latency of one (provider, method, transport) row or provider total.

    Attributes:
        calls: recorded upstream attempts.
        successes: usable results.
        failures: provider-attributable failures (errors and timeouts).
        rate_limited: quota answers.
        avg_ms: EWMA latency of successes on one node; call-weighted mean when merged.
        avg_w: the weight behind ``avg_ms`` (calls of the nodes that had one).
        p50_ms, p95_ms, p99_ms: recent-success percentiles of the busiest node.
        pct_calls: that node's calls (0 when there are no percentiles).
    """

    calls: int = 0
    successes: int = 0
    failures: int = 0
    rate_limited: int = 0
    avg_ms: float | None = None
    avg_w: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    pct_calls: int = 0

    def add(self, other: Figures) -> None:
        """Fold ``other`` into this row (see the module docstring for the rules)."""
        self.calls += other.calls
        self.successes += other.successes
        self.failures += other.failures
        self.rate_limited += other.rate_limited
        if other.avg_ms is not None and other.avg_w > 0:
            if self.avg_ms is None or self.avg_w <= 0:
                self.avg_ms, self.avg_w = other.avg_ms, other.avg_w
            else:
                w = self.avg_w + other.avg_w
                self.avg_ms = (self.avg_ms * self.avg_w + other.avg_ms * other.avg_w) / w
                self.avg_w = w
        if other.pct_calls > self.pct_calls:
            self.p50_ms, self.p95_ms, self.p99_ms = other.p50_ms, other.p95_ms, other.p99_ms
            self.pct_calls = other.pct_calls

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.calls if self.calls else None

    def to_wire(self) -> list[Any]:
        return [
            self.calls,
            self.successes,
            self.failures,
            self.rate_limited,
            self.avg_ms,
            self.avg_w,
            self.p50_ms,
            self.p95_ms,
            self.p99_ms,
            self.pct_calls,
        ]

    @classmethod
    def from_wire(cls, raw: Any) -> Figures:
        if not isinstance(raw, list) or len(raw) != 10:
            raise ValueError("figures must be a list of 10 values")
        return cls(
            calls=_count(raw[0]),
            successes=_count(raw[1]),
            failures=_count(raw[2]),
            rate_limited=_count(raw[3]),
            avg_ms=_opt_ms(raw[4]),
            avg_w=_count(raw[5]),
            p50_ms=_opt_ms(raw[6]),
            p95_ms=_opt_ms(raw[7]),
            p99_ms=_opt_ms(raw[8]),
            pct_calls=_count(raw[9]),
        )


@dataclass(slots=True, kw_only=True)
class ProviderSnap:
    """One provider of one chain: state per transport, totals and method rows."""

    id: str
    name: str
    height: int | None = None
    lag: int | None = None
    circuits: dict[str, list[int]] = field(default_factory=dict)  # transport -> 3 counts
    rate_limited: dict[str, int] = field(default_factory=dict)  # transport -> instances
    status: str | None = None  # the router's provider_status; merges keep the most severe
    totals: Figures = field(default_factory=Figures)
    methods: dict[tuple[str, str], Figures] = field(default_factory=dict)

    def add(self, other: ProviderSnap) -> None:
        self.height = _max_opt(self.height, other.height)
        self.lag = _min_opt(self.lag, other.lag)
        for transport, counts in other.circuits.items():
            mine = self.circuits.setdefault(transport, [0, 0, 0])
            for i in range(3):
                mine[i] += counts[i]
        for transport, n in other.rate_limited.items():
            self.rate_limited[transport] = self.rate_limited.get(transport, 0) + n
        self.status = _worst_status(self.status, other.status)
        self.totals.add(other.totals)
        for key, row in other.methods.items():
            mine_row = self.methods.get(key)
            if mine_row is None:
                mine_row = self.methods[key] = Figures()
            mine_row.add(row)

    def to_wire(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "height": self.height,
            "lag": self.lag,
            "circuits": self.circuits,
            "rate_limited": self.rate_limited,
            "status": self.status,
            "totals": self.totals.to_wire(),
            "methods": [[m, t, *row.to_wire()] for (m, t), row in self.methods.items()],
        }

    @classmethod
    def from_wire(cls, pid: str, raw: Any) -> ProviderSnap:
        if not isinstance(raw, dict):
            raise ValueError(f"provider {pid!r} must be an object")
        circuits: dict[str, list[int]] = {}
        for transport, counts in _dict(raw.get("circuits")).items():
            if not isinstance(counts, list) or len(counts) != 3:
                raise ValueError("circuit counts must be a list of 3 integers")
            circuits[_str(transport)] = [_count(c) for c in counts]
        methods: dict[tuple[str, str], Figures] = {}
        rows = raw.get("methods", [])
        if not isinstance(rows, list):
            raise ValueError("methods must be a list")
        for row in rows:
            if not isinstance(row, list) or len(row) != 12:
                raise ValueError("a method row must be [method, transport, 10 figures]")
            methods[(_str(row[0]), _str(row[1]))] = Figures.from_wire(row[2:])
        return cls(
            id=pid,
            name=_str(raw.get("name", pid)),
            height=_opt_int(raw.get("height")),
            lag=_opt_int(raw.get("lag"), signed=True),
            circuits=circuits,
            rate_limited={_str(t): _count(n) for t, n in _dict(raw.get("rate_limited")).items()},
            status=_status(raw.get("status")),
            totals=Figures.from_wire(raw.get("totals")),
            methods=methods,
        )


@dataclass(slots=True, kw_only=True)
class ChainSnap:
    """One chain of one profile: client-facing request counts and its providers."""

    profile: str
    chain: str
    chain_id: int
    consensus_height: int | None = None
    requests: int = 0
    errors: int = 0
    failovers: int = 0
    hist: list[int] = field(default_factory=lambda: [0] * _N_BUCKETS)  # not cumulative
    hist_sum_s: float = 0.0
    providers: dict[str, ProviderSnap] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.profile}/{self.chain}"

    def add(self, other: ChainSnap) -> None:
        self.consensus_height = _max_opt(self.consensus_height, other.consensus_height)
        self.requests += other.requests
        self.errors += other.errors
        self.failovers += other.failovers
        for i, n in enumerate(other.hist):
            self.hist[i] += n
        self.hist_sum_s += other.hist_sum_s
        for pid, prov in other.providers.items():
            mine = self.providers.get(pid)
            if mine is None:
                mine = self.providers[pid] = ProviderSnap(id=pid, name=prov.name)
            mine.add(prov)

    def to_wire(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "chain": self.chain,
            "chain_id": self.chain_id,
            "consensus_height": self.consensus_height,
            "requests": self.requests,
            "errors": self.errors,
            "failovers": self.failovers,
            "hist": self.hist,
            "hist_sum_s": self.hist_sum_s,
            "providers": {pid: p.to_wire() for pid, p in self.providers.items()},
        }

    @classmethod
    def from_wire(cls, raw: Any) -> ChainSnap:
        if not isinstance(raw, dict):
            raise ValueError("a chain must be an object")
        hist = raw.get("hist")
        if not isinstance(hist, list) or len(hist) != _N_BUCKETS:
            raise ValueError(f"hist must be a list of {_N_BUCKETS} counts")
        return cls(
            profile=_str(raw.get("profile")),
            chain=_str(raw.get("chain")),
            chain_id=_count(raw.get("chain_id")),
            consensus_height=_opt_int(raw.get("consensus_height")),
            requests=_count(raw.get("requests")),
            errors=_count(raw.get("errors")),
            failovers=_count(raw.get("failovers")),
            hist=[_count(n) for n in hist],
            hist_sum_s=_float(raw.get("hist_sum_s")),
            providers={
                _str(pid): ProviderSnap.from_wire(pid, p)
                for pid, p in _dict(raw.get("providers")).items()
            },
        )


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
    app: LassoApp, *, instance: str, seq: int, interval_s: float, now: float, wall: float
) -> NodeSnapshot:
    """This node's snapshot, read from its routers and request counters.

    Args:
        app: the node.
        instance: the process identity within the region.
        seq: heartbeat sequence number.
        interval_s: the heartbeat interval (receivers use 3 of them as the silence limit).
        now: monotonic seconds (breaker and lag state are read at this time).
        wall: wall-clock seconds, informational.
    """
    metrics = app.metrics
    per_chain: dict[tuple[str, str], list[int]] = {}  # requests, errors
    for (profile, chain, _m, _s, status), n in metrics.requests.items():
        acc = per_chain.setdefault((profile, chain), [0, 0])
        acc[0] += n
        if status == "error":
            acc[1] += n
    chains: dict[str, ChainSnap] = {}
    for rt in app.runtime.chains():
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
        node_id=app.node_id,
        instance=instance,
        seq=seq,
        version=app.version,
        interval_s=interval_s,
        uptime_s=round(app.uptime(), 3),
        sent_at=wall,
        ws_connections=metrics.ws_connections,
        chains=chains,
    )


def histogram_quantile(counts: list[int], q: float) -> float | None:
    """Bucket-interpolated quantile in seconds of non-cumulative bucket ``counts`` (the
    same estimate as Prometheus' ``histogram_quantile``); ``None`` when empty."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    acc = 0
    lower = 0.0
    for le, c in zip(HISTOGRAM_BUCKETS_S, counts, strict=True):
        if c and acc + c >= rank:
            if math.isinf(le):
                return lower
            return lower + (le - lower) * (rank - acc) / c
        acc += c
        if not math.isinf(le):
            lower = le
    return lower  # pragma: no cover - rank <= total always lands in a bucket


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


def _max_opt(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _min_opt(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _worst_status(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return b if a is None else a
    return a if PROVIDER_STATUSES.index(a) >= PROVIDER_STATUSES.index(b) else b


# -- wire validation helpers -------------------------------------------------------------


def _count(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise ValueError(f"expected a non-negative integer, got {v!r}")
    return v


def _opt_int(v: Any, *, signed: bool = False) -> int | None:
    if v is None:
        return None
    if type(v) is not int or (v < 0 and not signed):
        raise ValueError(f"expected an integer or null, got {v!r}")
    return v


def _float(v: Any) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
        raise ValueError(f"expected a non-negative number, got {v!r}")
    return float(v)


def _opt_ms(v: Any) -> float | None:
    return None if v is None else _float(v)


def _str(v: Any) -> str:
    if not isinstance(v, str) or len(v) > 256:
        raise ValueError(f"expected a short string, got {v!r}")
    return v


def _status(v: Any) -> str | None:
    """A provider status from the wire: a word of another version counts as none."""
    if v is None:
        return None
    return v if _str(v) in PROVIDER_STATUSES else None


def _ident(v: Any) -> str:
    s = _str(v)
    if not s or not s.isprintable():
        raise ValueError(f"expected a printable identifier, got {v!r}")
    return s


def _dict(v: Any) -> Mapping[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"expected an object, got {type(v).__name__}")
    return v
