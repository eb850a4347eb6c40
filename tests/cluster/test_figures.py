"""The figures a snapshot carries (``lasso.cluster.figures``): each level's merge rules
(counts add up, call-weighted averages, the busiest node's percentiles, the most severe
status), each level's wire form and its validation, and the histogram quantile. Whole
snapshots are tested in ``test_snapshot.py``; the strategies are in
``cluster_snapshot_support``.
"""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lasso.cluster.figures
from lasso.cluster.figures import (
    CIRCUIT_STATES,
    ChainSnap,
    Figures,
    ProviderSnap,
    histogram_quantile,
)
from lasso.kernel.router import PROVIDER_STATUSES
from lasso.server.metrics import Histogram

from cluster_snapshot_support import N_BUCKETS, chains, figures, providers, statuses


def test_exported_members() -> None:
    """__all__ is the public surface of the figures module."""
    assert sorted(lasso.cluster.figures.__all__) == [
        "CIRCUIT_STATES",
        "ChainSnap",
        "Figures",
        "ProviderSnap",
        "histogram_quantile",
    ]
    for name in lasso.cluster.figures.__all__:
        assert getattr(lasso.cluster.figures, name) is not None
    assert CIRCUIT_STATES == ("closed", "half_open", "open")


def test_module_imports_alone() -> None:
    """The figures module imports first in a fresh interpreter (it needs no snapshot)."""
    subprocess.run([sys.executable, "-c", "import lasso.cluster.figures"], check=True)


# -- merge rules ------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.lists(figures(), min_size=1, max_size=6))
def test_figures_add_up_call_weighted_with_the_busiest_percentiles(
    parts: list[Figures],
) -> None:
    """Folded rows sum their counts, weight the average by calls and keep the percentiles
    of the row with the most calls."""
    merged = Figures()
    for row in parts:
        merged.add(row)
    assert merged.calls == sum(p.calls for p in parts)
    assert merged.successes == sum(p.successes for p in parts)
    assert merged.failures == sum(p.failures for p in parts)
    with_avg = [(p.avg_ms, p.avg_w) for p in parts if p.avg_ms is not None and p.avg_w]
    if with_avg:
        expected = sum(a * w for a, w in with_avg) / sum(w for _, w in with_avg)
        assert merged.avg_ms == pytest.approx(expected)
        assert merged.avg_w == sum(w for _, w in with_avg)
    else:
        assert merged.avg_ms is None
    busiest = max((p.pct_calls for p in parts), default=0)
    assert merged.pct_calls == busiest
    if busiest:
        assert (merged.p50_ms, merged.p95_ms, merged.p99_ms) in [
            (p.p50_ms, p.p95_ms, p.p99_ms) for p in parts if p.pct_calls == busiest
        ]
    else:
        assert merged.p50_ms is None
    if merged.calls:
        assert merged.success_rate == merged.successes / merged.calls
    else:
        assert merged.success_rate is None


@settings(max_examples=100, deadline=None)
@given(st.lists(statuses, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_provider_status_merge_keeps_the_most_severe(words: list[str | None], rnd: Any) -> None:
    """A merged provider's status is the most severe any part reported, in any order; a
    part that reported none adds nothing."""
    known = [w for w in words if w is not None]
    expected = max(known, key=PROVIDER_STATUSES.index) if known else None
    for order in (words, rnd.sample(words, len(words))):
        merged = ProviderSnap(id="a", name="A")
        for w in order:
            merged.add(ProviderSnap(id="a", name="A", status=w))
        assert merged.status == expected


def test_provider_merge_counts_circuits_and_keeps_height_and_worst_lag() -> None:
    """Circuit and rate-limit states become instance counts; height is the highest and
    lag the most blocks behind, with an unknown value adding nothing."""
    merged = ProviderSnap(id="a", name="A")
    for state, height, lag in ((0, 100, 1), (2, None, 7), (2, 104, None)):
        merged.add(
            ProviderSnap(
                id="a",
                name="A",
                height=height,
                lag=lag,
                circuits={"http": [int(state == i) for i in range(3)], "ws": [1, 0, 0]},
                rate_limited={"http": int(state == 2)},
            )
        )
    assert merged.circuits == {"http": [1, 0, 2], "ws": [3, 0, 0]}
    assert merged.rate_limited == {"http": 2}
    assert (merged.height, merged.lag) == (104, 7)


def test_negative_lag_from_an_older_node_reads_as_blocks_behind() -> None:
    """Earlier versions sent lag negative when behind: the wire form takes its magnitude."""
    wire = ProviderSnap(id="a", name="A", lag=6).to_wire()
    assert ProviderSnap.from_wire("a", {**wire, "lag": -6}).lag == 6
    assert ProviderSnap.from_wire("a", wire).lag == 6


@settings(max_examples=60, deadline=None)
@given(chains(("public", "ethereum")), chains(("public", "ethereum")))
def test_chain_merge_adds_requests_and_histograms(a: ChainSnap, b: ChainSnap) -> None:
    """Chain figures add up bucket by bucket and take the highest consensus height; each
    provider of either side is in the merge."""
    merged = ChainSnap(profile="public", chain="ethereum", chain_id=1)
    merged.add(a)
    merged.add(b)
    assert merged.key == "public/ethereum"
    assert (merged.requests, merged.errors, merged.failovers) == (
        a.requests + b.requests,
        a.errors + b.errors,
        a.failovers + b.failovers,
    )
    assert merged.hist == [x + y for x, y in zip(a.hist, b.hist, strict=True)]
    heights = [h for h in (a.consensus_height, b.consensus_height) if h is not None]
    assert merged.consensus_height == max(heights, default=None)
    assert set(merged.providers) == set(a.providers) | set(b.providers)


# -- wire form ---------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(chains(("public", "base")))
def test_chain_wire_round_trip(chain: ChainSnap) -> None:
    """A chain, its providers and their rows survive JSON encoding unchanged."""
    assert ChainSnap.from_wire(orjson.loads(orjson.dumps(chain.to_wire()))) == chain


@settings(max_examples=60, deadline=None)
@given(providers("alpha"))
def test_an_unknown_status_word_decodes_as_none(prov: ProviderSnap) -> None:
    """A status word of another version counts as none; a status that is not a string is
    rejected."""
    wire = orjson.loads(orjson.dumps(prov.to_wire()))
    assert ProviderSnap.from_wire("alpha", wire) == prov
    wire["status"] = "a-future-word"
    assert ProviderSnap.from_wire("alpha", wire).status is None
    wire["status"] = 5
    with pytest.raises(ValueError):
        ProviderSnap.from_wire("alpha", wire)


def test_unknown_keys_are_ignored() -> None:
    """Keys this version does not know (a newer sender's) are ignored at every level."""
    prov = ProviderSnap(id="a", name="A", totals=Figures(calls=1, successes=1))
    chain = ChainSnap(profile="p", chain="c", chain_id=1, providers={"a": prov})
    wire = chain.to_wire()
    wire["future"] = [1, 2]
    wire["providers"]["a"]["future"] = {"x": 1}
    assert ChainSnap.from_wire(wire) == chain


def _chain_wire() -> dict[str, Any]:
    fig = Figures(calls=2, successes=2)
    prov = ProviderSnap(
        id="a",
        name="A",
        circuits={"http": [1, 0, 0]},
        totals=fig,
        methods={("eth_call", "http"): fig},
    )
    return ChainSnap(profile="p", chain="c", chain_id=1, providers={"a": prov}).to_wire()


MALFORMED = {
    "short hist": lambda w: w.update(hist=[0] * (N_BUCKETS - 1)),
    "negative requests": lambda w: w.update(requests=-1),
    "providers not an object": lambda w: w.update(providers=[1]),
    "provider not an object": lambda w: w["providers"].update(a=[]),
    "two circuit counts": lambda w: w["providers"]["a"].update(circuits={"http": [1, 0]}),
    "totals of 9 figures": lambda w: w["providers"]["a"].update(totals=[0] * 9),
    "method row of 11": lambda w: w["providers"]["a"].update(methods=[["m", "http"] + [0] * 9]),
    "methods not a list": lambda w: w["providers"]["a"].update(methods={}),
    "infinite latency": lambda w: w["providers"]["a"]["totals"].__setitem__(4, math.inf),
    "fractional calls": lambda w: w["providers"]["a"]["totals"].__setitem__(0, 1.5),
    "long name": lambda w: w["providers"]["a"].update(name="x" * 257),
}


@pytest.mark.parametrize("corrupt", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_chains_are_rejected(corrupt: Any) -> None:
    """Each malformed field of a chain, provider or figures row raises ValueError."""
    wire = _chain_wire()
    assert ChainSnap.from_wire(wire).key == "p/c"
    corrupt(wire)
    with pytest.raises(ValueError):
        ChainSnap.from_wire(wire)


# -- client latency from merged histograms -----------------------------------------------


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
