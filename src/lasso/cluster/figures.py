"""The figures a cluster snapshot carries per chain and provider, and their pure merge.

A :class:`ChainSnap` is one profile/chain of a node: its client-facing request counts with
the end-to-end latency histogram, and a :class:`ProviderSnap` per provider with its block
height and lag, its circuit-breaker and rate-limit state per transport, its status, and
one :class:`Figures` row per (method, transport) plus a provider total.
:mod:`lasso.cluster.snapshot` wraps them in the per-node message
(:class:`~lasso.cluster.snapshot.NodeSnapshot`), builds them from a live node and merges
whole snapshots (CONTRACT §6).

Each value merges into one of the same shape (``add``), so the figures of a region (every
instance sharing a ``LASSO_NODE_ID``) and of the cluster (every region) are computed the
same way, at any depth. The rules:

* counts (calls, successes, failures, rate-limited answers, requests, errors, failovers,
  histogram buckets) add up;
* success rate is ``successes / calls`` of the sums, which is the call-weighted mean of the
  nodes' success rates;
* the average latency is the mean of the nodes' EWMA latencies weighted by their calls
  (``avg_w`` carries the weight so merges of merges stay exact);
* p50/p95/p99 are **taken from the node with the most calls** for that row (reference
  §10.1): percentiles do not average, and the busiest node's are the best estimate.
  ``pct_calls`` records that node's calls so the rule holds across merge levels. The
  client-facing chain percentiles are exact instead: their histograms add up
  (:func:`histogram_quantile` reads them);
* height and consensus height take the maximum, lag the worst (the most blocks behind);
* circuit state becomes counts of instances per state, ``[closed, half_open, open]``
  (:data:`CIRCUIT_STATES`);
* the provider status (each node's ``ChainRouter.provider_status``, the word its
  ``/api/chains`` reports) takes the most severe of :data:`PROVIDER_STATUSES`; ``None``
  (a node of an older version, or a word this version does not know) adds nothing.

Each value also has its wire form: ``to_wire`` gives plain JSON values, and ``from_wire``
validates decoded JSON and raises :class:`ValueError` on any missing, mistyped or
out-of-range field (a status word this version does not know decodes as ``None``; other
keys it does not know are ignored). Plain computation on values: no IO.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lasso.kernel.router import PROVIDER_STATUSES
from lasso.kernel.stats import HISTOGRAM_BUCKETS_S

__all__ = [
    "CIRCUIT_STATES",
    "ChainSnap",
    "Figures",
    "ProviderSnap",
    "histogram_quantile",
]

_N_BUCKETS = len(HISTOGRAM_BUCKETS_S)
CIRCUIT_STATES = ("closed", "half_open", "open")
"""The order of a provider's per-transport circuit counts."""


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
        self.lag = _max_opt(self.lag, other.lag)
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
            lag=_lag(raw.get("lag")),
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


def _max_opt(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def _lag(v: Any) -> int | None:
    """A lag from the wire, in blocks behind (``lasso.kernel.chainstate.LAG_CONVENTION``).
    A negative one comes from a node of an earlier version, which counted blocks behind
    as negative: its magnitude is taken."""
    lag = _opt_int(v, signed=True)
    return None if lag is None else abs(lag)


def _worst_status(a: str | None, b: str | None) -> str | None:
    if a is None or b is None:
        return b if a is None else a
    return a if PROVIDER_STATUSES.index(a) >= PROVIDER_STATUSES.index(b) else b


# -- wire validation helpers (lasso.cluster.snapshot uses them too) ----------------------


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


def _dict(v: Any) -> Mapping[str, Any]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise ValueError(f"expected an object, got {type(v).__name__}")
    return v
