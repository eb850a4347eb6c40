"""The per-node snapshot (``lasso.cluster.snapshot``): the merge of whole snapshots into
region and cluster figures, the wire message and its validation. The figures it carries
are tested on their own in ``test_figures.py``; the strategies are in
``cluster_snapshot_support``.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lasso.cluster.figures
import lasso.cluster.snapshot
from lasso.cluster.snapshot import (
    ChainSnap,
    Figures,
    NodeSnapshot,
    ProviderSnap,
    merge_snapshots,
)
from lasso.kernel.router import PROVIDER_STATUSES

from cluster_snapshot_support import N_BUCKETS, fleets, snapshots

REEXPORTED = ["CIRCUIT_STATES", "ChainSnap", "Figures", "ProviderSnap", "histogram_quantile"]


def test_exported_members() -> None:
    """__all__ is the public surface; the figure types are lasso.cluster.figures' objects."""
    assert sorted(lasso.cluster.snapshot.__all__) == sorted(
        [
            "MAX_METHOD_ROWS",
            "SCHEMA",
            "NodeSnapshot",
            "build_snapshot",
            "merge_snapshots",
            *REEXPORTED,
        ]
    )
    for name in lasso.cluster.snapshot.__all__:
        assert getattr(lasso.cluster.snapshot, name) is not None
    for name in REEXPORTED:
        assert getattr(lasso.cluster.snapshot, name) is getattr(lasso.cluster.figures, name)
    assert (lasso.cluster.snapshot.SCHEMA, lasso.cluster.snapshot.MAX_METHOD_ROWS) == (1, 64)


def test_module_imports_alone() -> None:
    """The snapshot module imports first in a fresh interpreter (no cycle with .figures)."""
    subprocess.run([sys.executable, "-c", "import lasso.cluster.snapshot"], check=True)


def worst(statuses: list[str | None]) -> str | None:
    known = [s for s in statuses if s is not None]
    return max(known, key=PROVIDER_STATUSES.index) if known else None


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
        cparts = [s.chains[ck] for s in snaps if ck in s.chains]
        assert chain.requests == sum(c.requests for c in cparts)
        assert chain.errors == sum(c.errors for c in cparts)
        assert chain.hist == [sum(c.hist[i] for c in cparts) for i in range(N_BUCKETS)]
        for pid, prov in chain.providers.items():
            pparts = [c.providers[pid] for c in cparts if pid in c.providers]
            assert prov.totals.calls == sum(p.totals.calls for p in pparts)
            assert sum(prov.circuits["http"]) == len(pparts)
            assert prov.height == max(
                (p.height for p in pparts if p.height is not None), default=None
            )
            assert prov.status == worst([p.status for p in pparts])
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
        with_avg = [(p.avg_ms, p.avg_w) for p in parts if p.avg_ms is not None and p.avg_w]
        if with_avg:
            expected = sum(a * w for a, w in with_avg) / sum(w for _, w in with_avg)
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
