"""Hypothesis strategies of the cluster snapshot tests (``tests/cluster/test_figures.py``
and ``tests/cluster/test_snapshot.py``): figure rows, providers, chains, node snapshots
and fleets of them, with counts, latencies and statuses a real node could report.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from lasso.cluster.figures import ChainSnap, Figures, ProviderSnap
from lasso.cluster.snapshot import NodeSnapshot
from lasso.kernel.router import PROVIDER_STATUSES
from lasso.kernel.stats import HISTOGRAM_BUCKETS_S

__all__ = [
    "N_BUCKETS",
    "chains",
    "counts",
    "figures",
    "fleets",
    "ms",
    "providers",
    "snapshots",
    "statuses",
]

N_BUCKETS = len(HISTOGRAM_BUCKETS_S)
counts = st.integers(min_value=0, max_value=10_000)
ms = st.one_of(st.none(), st.floats(min_value=0.1, max_value=5_000, allow_nan=False))
statuses = st.one_of(st.none(), st.sampled_from(PROVIDER_STATUSES))


@st.composite
def figures(draw: Any) -> Figures:
    calls = draw(counts)
    successes = draw(st.integers(min_value=0, max_value=calls))
    avg = draw(ms) if successes else None
    pct = draw(st.booleans()) and successes > 0
    p = sorted(draw(st.lists(st.floats(0.1, 5_000), min_size=3, max_size=3)))
    return Figures(
        calls=calls,
        successes=successes,
        failures=draw(st.integers(0, calls - successes)),
        rate_limited=0,
        avg_ms=avg,
        avg_w=calls if avg is not None else 0,
        p50_ms=p[0] if pct else None,
        p95_ms=p[1] if pct else None,
        p99_ms=p[2] if pct else None,
        pct_calls=calls if pct else 0,
    )


@st.composite
def providers(draw: Any, pid: str) -> ProviderSnap:
    methods = draw(
        st.dictionaries(
            st.tuples(
                st.sampled_from(["eth_call", "eth_blockNumber", "eth_getLogs"]),
                st.sampled_from(["http", "ws"]),
            ),
            figures(),
            max_size=4,
        )
    )
    totals = Figures()
    for row in methods.values():
        totals.add(Figures(calls=row.calls, successes=row.successes, failures=row.failures))
    state = draw(st.integers(0, 2))
    return ProviderSnap(
        id=pid,
        name=pid.upper(),
        height=draw(st.one_of(st.none(), st.integers(0, 10**8))),
        lag=draw(st.one_of(st.none(), st.integers(0, 50))),
        circuits={"http": [int(state == i) for i in range(3)]},
        rate_limited={"http": draw(st.integers(0, 1))},
        status=draw(statuses),
        totals=totals,
        methods=methods,
    )


@st.composite
def chains(draw: Any, key: tuple[str, str]) -> ChainSnap:
    pids = draw(st.sets(st.sampled_from(["alpha", "bravo", "charlie"]), max_size=3))
    requests = draw(counts)
    return ChainSnap(
        profile=key[0],
        chain=key[1],
        chain_id=1 if key[1] == "ethereum" else 8453,
        consensus_height=draw(st.one_of(st.none(), st.integers(0, 10**8))),
        requests=requests,
        errors=draw(st.integers(0, requests)),
        failovers=draw(counts),
        hist=draw(st.lists(counts, min_size=N_BUCKETS, max_size=N_BUCKETS)),
        hist_sum_s=draw(st.floats(0, 1e6)),
        providers={pid: draw(providers(pid)) for pid in sorted(pids)},
    )


@st.composite
def snapshots(draw: Any, node_id: str | None = None) -> NodeSnapshot:
    keys = draw(st.sets(st.sampled_from([("public", "ethereum"), ("public", "base")])))
    cs = [draw(chains(k)) for k in sorted(keys)]
    return NodeSnapshot(
        node_id=node_id or draw(st.sampled_from(["us-east-1", "eu-west-1", "ap-southeast-1"])),
        instance=draw(st.text("abcdef0123456789", min_size=4, max_size=8)),
        seq=draw(counts),
        version="0.1.0",
        interval_s=draw(st.sampled_from([0.2, 1.0, 2.0])),
        uptime_s=draw(st.floats(0, 1e6)),
        sent_at=1.7e9,
        ws_connections=draw(st.integers(0, 50)),
        chains={c.key: c for c in cs},
    )


def fleets() -> Any:
    return st.lists(snapshots(), min_size=1, max_size=5, unique_by=lambda s: s.identity)
