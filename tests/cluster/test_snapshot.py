"""The pure parts of clustering: the snapshot model, its wire form and the merge."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.cluster.snapshot import (
    ChainSnap,
    Figures,
    NodeSnapshot,
    ProviderSnap,
    histogram_quantile,
    merge_snapshots,
)
from lasso.kernel.stats import HISTOGRAM_BUCKETS_S
from lasso.server.metrics import Histogram

N_BUCKETS = len(HISTOGRAM_BUCKETS_S)
counts = st.integers(min_value=0, max_value=10_000)
ms = st.one_of(st.none(), st.floats(min_value=0.1, max_value=5_000, allow_nan=False))


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
        lag=draw(st.one_of(st.none(), st.integers(-50, 0))),
        circuits={"http": [int(state == i) for i in range(3)]},
        rate_limited={"http": draw(st.integers(0, 1))},
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


def rows(snaps: list[NodeSnapshot]) -> dict[tuple[str, str, str, str], list[Figures]]:
    out: dict[tuple[str, str, str, str], list[Figures]] = {}
    for s in snaps:
        for ck, c in s.chains.items():
            for pid, p in c.providers.items():
                for (m, t), row in p.methods.items():
                    out.setdefault((ck, pid, m, t), []).append(row)
    return out


@settings(max_examples=60, deadline=None)
@given(fleets())
def test_aggregate_counts_are_the_sums_of_the_nodes(snaps: list[NodeSnapshot]) -> None:
    """Aggregate calls, successes, requests and histogram buckets equal the nodes' sums."""
    merged = merge_snapshots(snaps, node_id="cluster")
    assert merged.instances == len(snaps)
    for (ck, pid, m, t), parts in rows(snaps).items():
        row = merged.chains[ck].providers[pid].methods[(m, t)]
        assert row.calls == sum(p.calls for p in parts)
        assert row.successes == sum(p.successes for p in parts)
        assert row.failures == sum(p.failures for p in parts)
    for ck, chain in merged.chains.items():
        parts = [s.chains[ck] for s in snaps if ck in s.chains]
        assert chain.requests == sum(c.requests for c in parts)
        assert chain.errors == sum(c.errors for c in parts)
        assert chain.hist == [sum(c.hist[i] for c in parts) for i in range(N_BUCKETS)]
        for pid, prov in chain.providers.items():
            pparts = [c.providers[pid] for c in parts if pid in c.providers]
            assert prov.totals.calls == sum(p.totals.calls for p in pparts)
            assert sum(prov.circuits["http"]) == len(pparts)
            assert prov.height == max(
                (p.height for p in pparts if p.height is not None), default=None
            )
    assert merged.totals()["upstream_calls"] == sum(s.totals()["upstream_calls"] for s in snaps)


@settings(max_examples=60, deadline=None)
@given(fleets())
def test_rates_and_latency_are_call_weighted_and_percentiles_come_from_the_busiest_node(
    snaps: list[NodeSnapshot],
) -> None:
    """Success rate and average latency are call-weighted; percentiles are the busiest's."""
    merged = merge_snapshots(snaps, node_id="cluster")
    for (ck, pid, m, t), parts in rows(snaps).items():
        row = merged.chains[ck].providers[pid].methods[(m, t)]
        total = sum(p.calls for p in parts)
        if total:
            weighted = sum(p.success_rate * p.calls for p in parts if p.success_rate is not None)
            assert row.success_rate == pytest.approx(weighted / total)
        with_avg = [p for p in parts if p.avg_ms is not None and p.avg_w]
        if with_avg:
            expected = sum(p.avg_ms * p.avg_w for p in with_avg) / sum(p.avg_w for p in with_avg)
            assert row.avg_ms == pytest.approx(expected)
        else:
            assert row.avg_ms is None
        with_pct = [p for p in parts if p.pct_calls]
        if with_pct:
            busiest = max(p.pct_calls for p in with_pct)
            assert row.pct_calls == busiest
            assert (row.p50_ms, row.p95_ms, row.p99_ms) in [
                (p.p50_ms, p.p95_ms, p.p99_ms) for p in with_pct if p.pct_calls == busiest
            ]
        else:
            assert row.p50_ms is None


@settings(max_examples=100, deadline=None)
@given(fleets(), st.randoms(use_true_random=False))
def test_merge_ignores_order_and_regions_merge_to_the_same_cluster(
    snaps: list[NodeSnapshot], rnd: Any
) -> None:
    """Merging is order-free, and merging per region first gives the same cluster figures."""
    a = merge_snapshots(snaps, node_id="cluster")
    shuffled = list(snaps)
    rnd.shuffle(shuffled)
    b = merge_snapshots(shuffled, node_id="cluster")
    assert a.to_wire() == b.to_wire()
    regions: dict[str, list[NodeSnapshot]] = {}
    for s in snaps:
        regions.setdefault(s.node_id, []).append(s)
    two_level = merge_snapshots(
        [merge_snapshots(g, node_id=r) for r, g in regions.items()], node_id="cluster"
    )
    assert two_level.instances == a.instances
    for ck, chain in a.chains.items():
        other = two_level.chains[ck]
        assert other.requests == chain.requests and other.hist == chain.hist
        for pid, prov in chain.providers.items():
            for key, row in prov.methods.items():
                row2 = other.providers[pid].methods[key]
                assert (row2.calls, row2.successes, row2.pct_calls) == (
                    row.calls,
                    row.successes,
                    row.pct_calls,
                )
                if row.avg_ms is not None:
                    assert row2.avg_ms == pytest.approx(row.avg_ms)


@settings(max_examples=100, deadline=None)
@given(snapshots())
def test_wire_round_trip(snap: NodeSnapshot) -> None:
    """A snapshot survives JSON encoding unchanged."""
    back = NodeSnapshot.from_wire(orjson.loads(orjson.dumps(snap.to_wire())))
    assert back == snap


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_arbitrary_json_is_rejected_with_value_error(raw: Any) -> None:
    """Any JSON value is either a valid snapshot or a ValueError, never another exception."""
    try:
        NodeSnapshot.from_wire(raw)
    except ValueError:
        pass


@settings(max_examples=50, deadline=None)
@given(snapshots(), st.data())
def test_corrupted_fields_are_rejected(snap: NodeSnapshot, data: Any) -> None:
    """Replacing any one field of a valid snapshot with a wrong type raises ValueError."""
    wire = snap.to_wire()
    key = data.draw(st.sampled_from(sorted(k for k in wire if k not in ("truncated",))))
    wire[key] = data.draw(st.sampled_from([None, "x", -1, [1], {"a": 1}, 1e400]))
    try:
        back = NodeSnapshot.from_wire(wire)
    except ValueError:
        return
    assert isinstance(back, NodeSnapshot)  # some substitutions are valid (e.g. a string)


def test_without_methods_keeps_totals() -> None:
    """Dropping method rows for a small transport keeps provider totals and flags it."""
    fig = Figures(calls=5, successes=4, avg_ms=10.0, avg_w=5)
    prov = ProviderSnap(id="a", name="A", totals=fig, methods={("eth_call", "http"): fig})
    chain = ChainSnap(profile="p", chain="c", chain_id=1, providers={"a": prov})
    snap = NodeSnapshot(node_id="n", instance="i", chains={chain.key: chain})
    slim = snap.without_methods()
    assert slim.truncated and not slim.chains["p/c"].providers["a"].methods
    assert slim.chains["p/c"].providers["a"].totals.calls == 5


@given(st.lists(st.floats(min_value=0.0001, max_value=20.0), min_size=1, max_size=200))
def test_histogram_quantile_matches_the_metrics_histogram(samples: list[float]) -> None:
    """The merged-histogram quantile equals the exposition histogram's estimate."""
    h = Histogram()
    for v in samples:
        h.observe(v)
    for q in (0.5, 0.95, 0.99):
        mine = histogram_quantile(h.counts, q)
        theirs = h.quantile(q)
        assert mine is not None and theirs is not None
        assert math.isclose(mine, theirs, rel_tol=1e-9, abs_tol=1e-12)
    assert histogram_quantile([0] * N_BUCKETS, 0.5) is None
