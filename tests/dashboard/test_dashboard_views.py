"""The dashboard's data layer: statuses, rates, chain views and the region comparison."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.dashboard import views
from lasso.dashboard.views import UNKNOWN, Counters, RateTracker, provider_status
from lasso.kernel.router import PROVIDER_STATUSES


def chan(
    circuit: str = "closed",
    *,
    connected: bool = True,
    rate_limited: bool = False,
    consecutive_failures: int = 0,
) -> dict[str, Any]:
    return {
        "circuit": circuit,
        "connected": connected,
        "rate_limited": rate_limited,
        "rate_limited_remaining_s": 12.5 if rate_limited else 0.0,
        "retry_after_s": 30.0 if circuit == "open" else None,
        "evidence": {"consecutive_failures": consecutive_failures, "ewma_ms": 20.0},
    }


def prov(http: dict[str, Any] | None = None, ws: dict[str, Any] | None = None, **kw: Any) -> Any:
    channels = {}
    if http is not None:
        channels["http"] = http
    if ws is not None:
        channels["ws"] = ws
    return {"id": "p", "channels": channels, "lag": kw.pop("lag", 0), "methods": [], **kw}


@pytest.mark.parametrize("status", PROVIDER_STATUSES)
def test_status_is_the_routers_word(status: str) -> None:
    """A provider's status is the word its router snapshot carries, whatever its channels
    and lag look like: the dashboard computes no status of its own."""
    # Channels and lag that the old dashboard-only rules would have read differently.
    p = prov(chan("open"), chan(connected=False, consecutive_failures=5), lag=40, status=status)
    assert provider_status(p) == status


@pytest.mark.parametrize("status", [None, "", "disconnected", "exploded", 3, ["healthy"]])
def test_missing_or_foreign_status_is_unknown(status: Any) -> None:
    """No status, or a word this version does not know, reads ``unknown``."""
    entry = prov(chan()) if status is None else prov(chan(), status=status)
    assert provider_status(entry) == UNKNOWN


def test_statuses_are_the_routers_most_severe_first() -> None:
    """The view's status list is the router's, most severe first, then ``unknown``."""
    assert views.STATUSES == (*reversed(PROVIDER_STATUSES), UNKNOWN)


@given(
    status=st.one_of(st.none(), st.sampled_from(PROVIDER_STATUSES), st.text(max_size=12)),
    circuits=st.lists(st.sampled_from(["closed", "half_open", "open"]), max_size=2),
    lag=st.one_of(st.none(), st.integers(0, 50)),
)
def test_chain_view_keeps_every_status_and_counts_it(
    status: str | None, circuits: list[str], lag: int | None
) -> None:
    """Any entry gets a known status, equal to the router's when it has one, and the
    chain's status counts add up to its providers."""
    entry: dict[str, Any] = prov(*[chan(c) for c in circuits], lag=lag)
    if status is not None:
        entry["status"] = status
    snap = {"chain": "eth", "providers": [entry]}
    view = views.chain_view(
        snap, config=None, counters={}, tracker=RateTracker(), t=0.0, profile="public"
    )
    (p,) = view["providers"]
    assert p["status"] in views.STATUSES
    if status in PROVIDER_STATUSES:
        assert p["status"] == status
    assert sum(view["status_counts"].values()) == 1 and view["status_counts"][p["status"]] == 1


def test_rate_tracker_rates_and_windows() -> None:
    """calls/s over ~5 s, success and mean latency over the last minute, from deltas."""
    tr = RateTracker()
    assert tr.rates("k").calls_s is None
    for i in range(11):  # 10 calls/s, 90 % successes, 20 ms each, for 10 s
        tr.observe("k", float(i), Counters(10 * i, 9 * i, 200.0 * i, 10 * i))
    r = tr.rates("k")
    assert r.calls_s == pytest.approx(10.0)
    assert r.window_calls == 100
    assert r.success_rate == pytest.approx(0.9)
    assert r.avg_ms == pytest.approx(20.0)
    assert tr.last_interval_avg_ms("k") == pytest.approx(20.0)
    tr.observe("k", 11.0, Counters(100, 90, 2000.0, 100))  # no call in the last second
    assert tr.last_interval_avg_ms("k") is None
    assert tr.rates("k").calls_s == pytest.approx(40 / 5)  # from t=6 (the newest >= 5 s old)


def test_rate_tracker_forgets_old_samples_and_restarts_on_reset() -> None:
    """History is bounded in time, and a counter going backwards (reload) restarts it."""
    tr = RateTracker(keep_s=10.0)
    for i in range(100):
        tr.observe("k", float(i), Counters(i, i))
    assert len(tr._samples["k"]) <= 12
    tr.observe("k", 100.0, Counters(3, 3))
    assert tr.rates("k").calls_s is None
    tr.retain([])
    assert len(tr) == 0


def router_snapshot(calls: dict[str, int], lag: dict[str, int] | None = None) -> dict[str, Any]:
    return {
        "chain": "eth",
        "chain_id": 1,
        "consensus_height": 100,
        "block_time_ms": 12000.0,
        "providers": [
            {
                "id": pid,
                "name": pid.upper(),
                "priority": 10,
                "archival": True,
                "status": "lagging" if (lag or {}).get(pid, 0) > 3 else "healthy",
                "height": 100 - (lag or {}).get(pid, 0),
                "lag": (lag or {}).get(pid, 0),
                "channels": {"http": chan()},
                "methods": [
                    {
                        "method": "eth_call",
                        "transport": "http",
                        "calls": n,
                        "successes": n,
                        "p50_ms": 10.0,
                        "p95_ms": 20.0,
                        "p99_ms": 30.0,
                        "ewma_ms": 11.0,
                    },
                    {
                        "method": "eth_blockNumber",
                        "transport": "http",
                        "calls": n,
                        "successes": n - 1 if n else 0,
                        "p50_ms": 30.0,
                        "p95_ms": 40.0,
                        "p99_ms": 50.0,
                        "ewma_ms": 31.0,
                    },
                ],
            }
            for pid, n in calls.items()
        ],
    }


def test_chain_view_figures_share_and_rates() -> None:
    """Percentiles are call-weighted over methods; share and calls/s come from deltas."""
    tr = RateTracker()
    before = views.chain_view(
        router_snapshot({"a": 0, "b": 0}),
        config=None,
        counters={"a": Counters(), "b": Counters()},
        tracker=tr,
        t=0.0,
        profile="public",
    )
    assert before["providers"][0]["share"] is None
    after = views.chain_view(
        router_snapshot({"a": 30, "b": 10}, lag={"b": 5}),
        config=None,
        counters={"a": Counters(60, 58, 1200.0, 60), "b": Counters(20, 18, 400.0, 20)},
        tracker=tr,
        t=2.0,
        profile="public",
    )
    a, b = after["providers"]
    assert a["p50_ms"] == 20.0 and a["p99_ms"] == 40.0
    assert a["calls_s"] == 30.0 and b["calls_s"] == 10.0
    assert a["share"] == 0.75 and b["share"] == 0.25
    assert a["lat_ms"] == 20.0
    assert a["methods"]["eth_blockNumber"]["success_rate"] == round(29 / 30, 4)
    assert b["status"] == "lagging" and a["status"] == "healthy"
    assert after["status_counts"]["lagging"] == 1
    assert after["methods"] == ["eth_blockNumber", "eth_call"]
    assert after["endpoints"] == {
        "http": "/rpc/profile/public/eth",
        "ws": "/ws/rpc/profile/public/eth",
    }
    assert after["summary"]["calls_s"] == 40.0


def cluster_doc() -> dict[str, Any]:
    def brief(p50: float | None, circuit: str = "closed") -> dict[str, Any]:
        return {"p50_ms": p50, "avg_latency_ms": p50, "circuit": {"http": circuit}}

    return {
        "chain": "ethereum",
        "chain_id": "1",
        "consensus_height": 7,
        "providers": [
            {
                "id": "alpha",
                "name": "Alpha",
                "status": "circuit_open",  # the worst its nodes reported: open in "ap"
                "calls": 10,
                "successes": 9,
                "avg_latency_ms": 12.0,
                "p50_ms": 10.0,
                "p95_ms": 15.0,
                "p99_ms": 19.0,
                "height": 7,
                "lag": 0,
                "circuits": {"http": {"closed": 2, "half_open": 0, "open": 1}},
                "rate_limited": {"http": 0},
                "by_node": {"us": brief(5.0), "eu": brief(50.0), "ap": brief(None, "open")},
                "methods": [{"method": "eth_call", "transport": "http", "calls": 10}],
            },
            {
                "id": "charlie",
                "calls": 1,
                "successes": 0,
                "circuits": {
                    "http": {"closed": 0, "half_open": 0, "open": 1},
                    "ws": {"closed": 1, "half_open": 0, "open": 0},
                },
                "by_node": {},
                "methods": [],
            },
            {
                "id": "bravo",
                "name": "Bravo",
                "status": "misconfigured",
                "calls": 4,
                "successes": 4,
                "avg_latency_ms": None,
                "p50_ms": None,
                "height": 7,
                "lag": 0,
                "circuits": {"http": {"closed": 0, "half_open": 0, "open": 3}},
                "rate_limited": {"http": 1},
                "by_node": {"us": brief(40.0), "eu": brief(6.0)},
                "methods": [],
            },
        ],
    }


def test_cluster_documents_become_chain_views() -> None:
    """A cluster document reads like a router snapshot and keeps the nodes' status."""
    snap, counters = views.from_cluster_document(cluster_doc())
    assert counters["alpha"] == Counters(10, 9)
    view = views.chain_view(
        snap, config=None, counters=counters, tracker=RateTracker(), t=1.0, profile="demo"
    )
    alpha, charlie, bravo = view["providers"]
    assert alpha["status"] == "circuit_open"  # the document's word, not the circuit counts
    assert alpha["transports"]["http"]["circuit"] == "closed"  # open on 1 of 3 instances
    assert alpha["transports"]["http"]["open_instances"] == 1
    assert charlie["status"] == UNKNOWN  # no node reported a status
    assert charlie["transports"]["ws"]["connected"] is None  # not exchanged
    assert alpha["p50_ms"] == 10.0 and alpha["lat_ms"] == 12.0
    assert bravo["status"] == "misconfigured"
    assert view["status_counts"]["circuit_open"] == 1 and view["status_counts"][UNKNOWN] == 1


def test_fastest_provider_per_region() -> None:
    """Each region's fastest provider, skipping open circuits; regions without data listed."""
    [entry] = views.fastest_by_region([cluster_doc()], ["us", "eu", "ap", "sa"])
    assert entry["nodes"] == ["us", "eu", "ap", "sa"]
    assert entry["fastest"] == {"us": "alpha", "eu": "bravo", "ap": None, "sa": None}
    alpha, charlie, _ = entry["providers"]
    assert alpha["by_node"] == {"us": 5.0, "eu": 50.0, "ap": None}
    assert alpha["status"] == {"us": UNKNOWN, "eu": UNKNOWN, "ap": UNKNOWN}
    assert charlie["by_node"] == {}


def test_a_region_that_opened_a_circuit_has_no_fastest_there() -> None:
    """The region's router status decides: an open HTTP circuit beside a WebSocket that
    never connected (its breaker still closed) is not that region's fastest, though its
    figures are the lowest; it is again once the region reports it healthy."""
    doc = cluster_doc()
    alpha = doc["providers"][0]
    alpha["by_node"]["eu"] = {
        "status": "circuit_open",
        "p50_ms": 1.0,
        "avg_latency_ms": 1.0,
        "circuit": {"http": "open", "ws": "closed"},
    }
    [entry] = views.fastest_by_region([doc], ["us", "eu"])
    assert entry["fastest"]["eu"] == "bravo"
    assert entry["providers"][0]["by_node"]["eu"] is None
    assert entry["providers"][0]["status"]["eu"] == "circuit_open"
    alpha["by_node"]["eu"]["status"] = "healthy"
    [entry] = views.fastest_by_region([doc], ["us", "eu"])
    assert entry["fastest"]["eu"] == "alpha"
