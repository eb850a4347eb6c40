"""Read-only views: the provider status word and the chain snapshot."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from lasso.kernel import status as status_module
from lasso.kernel.breaker import BreakerConfig, CircuitBreaker
from lasso.kernel.chainstate import ChainState
from lasso.kernel.channel import Channel
from lasso.kernel.classify import Category
from lasso.kernel.clock import FakeClock
from lasso.kernel.faults import Fault
from lasso.kernel.status import (
    PROVIDER_STATUSES,
    chain_snapshot,
    connection_state,
    provider_status,
)

from kernel_router_support import HEAD, heights, make, provider, providers_of

# -- provider_status ---------------------------------------------------------------------


def test_provider_status_over_channels_most_severe_wins() -> None:
    """The word comes from the worst channel; lag counts only when nothing else does."""
    state = ChainState(12_000)
    for pid, h in (("a", HEAD - 10), ("b", HEAD), ("c", HEAD)):
        state.observe_height(pid, h, 0.0)
    rng = random.Random(0)
    http = Channel(provider("a"), "http", CircuitBreaker(BreakerConfig(), rng))
    ws = Channel(provider("a"), "ws", CircuitBreaker(BreakerConfig(), rng))
    assert provider_status([http, ws], state, "a", 20, 0.0) == "healthy"
    assert provider_status([http, ws], state, "a", 3, 0.0) == "lagging"
    assert provider_status([], state, "b", 3, 0.0) == "healthy"
    ws.probe_status = "degraded"
    assert provider_status([http, ws], state, "a", 3, 0.0) == "degraded"
    http.breaker.force_open(0.0)
    assert provider_status([http, ws], state, "a", 3, 0.0) == "circuit_open"
    ws.probe_status = "misconfigured"
    assert provider_status([http, ws], state, "a", 3, 0.0) == PROVIDER_STATUSES[-1]


def test_status_words_least_to_most_severe() -> None:
    """PROVIDER_STATUSES runs from healthy to misconfigured, without duplicates."""
    assert PROVIDER_STATUSES[0] == "healthy"
    assert PROVIDER_STATUSES[-1] == "misconfigured"
    assert len(set(PROVIDER_STATUSES)) == len(PROVIDER_STATUSES)


# -- snapshot ----------------------------------------------------------------------------


def test_snapshot_json_ready() -> None:
    """The snapshot serializes and holds per-provider channels, lag and method rows."""
    clock = FakeClock()
    router = make(
        [provider("a", ws_url="wss://a"), provider("b", archival=False)], max_lag_blocks=1
    )
    a_http, _a_ws, b = router.channels
    heights(router, clock.now(), a=HEAD, b=HEAD - 4)
    router.record_success(a_http, "eth_call", 0.02, clock.now())
    router.record_failure(b, "eth_call", Category.RATE_LIMIT, 0.1, clock.now(), 5.0)
    snap = router.snapshot(clock.now())
    json.dumps(snap)
    assert snap["consensus_height"] == HEAD
    assert snap["profile"] == "test"
    provs = {p["id"]: p for p in snap["providers"]}  # type: ignore[attr-defined]
    pa, pb = provs["a"], provs["b"]
    assert pa["channels"]["http"]["circuit"] == "closed"
    assert pa["channels"]["ws"]["connected"] is False
    assert pa["methods"][0]["method"] == "eth_call"
    assert pa["methods"][0]["p50_ms"] == pytest.approx(20.0)
    assert pb["lag"] == 4  # blocks behind
    assert pb["archival"] is False
    assert pb["channels"]["http"]["tier"] == 3
    assert pb["channels"]["http"]["rate_limited_remaining_s"] == 5.0


def test_provider_without_transports_listed_but_never_routed() -> None:
    """A provider with no URL has no channel but still shows in the snapshot."""
    router = make([provider("a", url=None), provider("b")])
    assert providers_of(router.candidates("eth_call", [], "priority", 0.0)) == ["b"]
    snap = router.snapshot(0.0)
    first = snap["providers"][0]  # type: ignore[index]
    assert first["id"] == "a"
    assert first["channels"] == {}


def test_chain_snapshot_is_the_router_snapshot() -> None:
    """ChainRouter.snapshot is chain_snapshot over the router's own state, unchanged."""
    router = make([provider("a", ws_url="wss://a"), provider("b"), provider("c", url=None)])
    heights(router, 1.0, a=HEAD, b=HEAD - 2)
    router.record_success(router.channels[0], "eth_call", 0.01, 1.0)
    by_provider = {p: [ch for ch in router.channels if ch.provider_id == p] for p in "abc"}
    direct = chain_snapshot(
        router.chain, router.state, by_provider, 2.0, profile="test", retry_after=None
    )
    assert direct == router.snapshot(2.0)


def test_snapshot_carries_last_errors_and_an_honest_connection_state() -> None:
    """Untried HTTP is not connected; a connect failure is down with its cause; the
    provider's last error is its channels' most recent, with the transport."""
    router = make([provider("a", ws_url="wss://a"), provider("b")])
    a_http, a_ws, b = router.channels
    snap = {p["id"]: p for p in router.snapshot(0.0)["providers"]}  # type: ignore[attr-defined]
    assert snap["a"]["channels"]["http"]["connected"] is False
    assert snap["a"]["channels"]["http"]["connection"] == "unknown"
    assert snap["a"]["channels"]["ws"]["connection"] == "unknown"
    assert snap["a"]["last_error"] is None
    dns = Fault(cause="dns", category="network_error", message="cannot resolve a")
    router.record_failure(a_http, "eth_call", Category.NETWORK_ERROR, 0.01, 1.0, fault=dns)
    lost = Fault(cause="disconnected", category="network_error", message="lost")
    a_ws.connected = True
    router.observe_reached(a_ws, 1.5)
    assert connection_state(a_ws) == "up"
    a_ws.connected = False
    router.observe_lost(a_ws, lost, 2.0)
    router.record_success(b, "eth_call", 0.01, 2.0)
    snap = {p["id"]: p for p in router.snapshot(3.0)["providers"]}  # type: ignore[attr-defined]
    http = snap["a"]["channels"]["http"]
    assert (http["connected"], http["connection"]) == (False, "down")
    assert http["last_error"] == {
        "category": "network_error",
        "cause": "dns",
        "message": "cannot resolve a",
        "age_s": 2.0,
    }
    assert snap["a"]["channels"]["ws"]["connection"] == "down"
    assert snap["a"]["last_error"]["transport"] == "ws"  # the most recent of the two
    assert snap["a"]["last_error"]["cause"] == "disconnected"
    assert snap["b"]["channels"]["http"]["connected"] is True
    assert snap["b"]["last_error"] is None
    json.dumps(router.snapshot(3.0))


def test_config_fault_is_misconfigured_and_outranks_upstream_errors() -> None:
    """A channel's configuration fault makes the provider misconfigured and is its last
    error, whatever the upstream failed with since."""
    router = make([provider("a", ws_url="wss://a")])
    a_http, a_ws = router.channels
    wrong = Fault(cause="wrong_chain", category="chain_error", message="wrong chain id 1")
    router.observe_config_fault(a_http, wrong, 1.0)
    lost = Fault(cause="disconnected", category="network_error", message="lost")
    router.observe_lost(a_ws, lost, 2.0)
    assert router.provider_status("a", 3.0) == "misconfigured"
    (snap,) = router.snapshot(3.0)["providers"]  # type: ignore[misc]
    assert snap["last_error"] == {"transport": "http", **wrong.to_dict(), "age_s": 2.0}
    assert snap["channels"]["http"]["last_error"]["cause"] == "wrong_chain"
    router.observe_config_fault(a_http, None, 4.0)
    assert router.provider_status("a", 4.0) != "misconfigured"
    (snap,) = router.snapshot(4.0)["providers"]  # type: ignore[misc]
    assert snap["last_error"]["cause"] == "disconnected"


# -- public surface ----------------------------------------------------------------------


def test_public_surface_and_standalone_import() -> None:
    """__all__ lists the views, all defined, and the module imports alone."""
    names = ["PROVIDER_STATUSES", "chain_snapshot", "connection_state", "provider_status"]
    assert sorted(status_module.__all__) == names
    assert all(hasattr(status_module, name) for name in names)
    subprocess.run([sys.executable, "-c", "import lasso.kernel.status"], check=True)
