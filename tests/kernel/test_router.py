"""The routing facade: filters, tiers, overrides and recording (snapshots: test_status)."""

from __future__ import annotations

import importlib
import random
import subprocess
import sys
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.config import Capabilities, ChainConfig, Limits, MethodOverride
from lasso.kernel import router as router_module
from lasso.kernel.breaker import BreakerConfig, BreakerState
from lasso.kernel.classify import Category
from lasso.kernel.clock import FakeClock
from lasso.kernel.faults import Fault
from lasso.kernel.router import (
    MAX_CANDIDATES,
    MAX_METHOD_ROWS,
    BreakerRegistry,
    ChainRouter,
)

from kernel_router_support import (
    ADDR,
    HEAD,
    half_open,
    heights,
    ids,
    make,
    provider,
    providers_of,
    trip,
)

# -- construction ------------------------------------------------------------------------


def test_channels_per_transport_ws_starts_disconnected() -> None:
    """url gives an HTTP channel, ws_url a WS one that starts disconnected."""
    router = make(
        [provider("a", ws_url="wss://a.example/ws"), provider("b", url=None, ws_url="wss://b")]
    )
    assert ids(router.channels) == ["a:http", "a:ws", "b:ws"]
    assert [ch.connected for ch in router.channels] == [True, False, False]
    assert router.candidates("eth_call", [], "priority", 0.0) == [router.channels[0]]
    router.set_connected("b", True)
    router.set_connected("nobody", True)
    assert ids(router.candidates("eth_call", [], "priority", 0.0)) == ["a:http", "b:ws"]
    assert router.channel("a", "ws") is router.channels[1]
    assert router.channel("b", "http") is None
    assert "a:ws" in repr(router.channels[1])


# -- circuit and rate-limit tiers --------------------------------------------------------


def test_open_breaker_excluded_and_retry_after() -> None:
    """An open channel is never a candidate; retry_after is its remaining open time."""
    clock = FakeClock()
    router = make([provider("a"), provider("b")])
    a = router.channels[0]
    assert router.retry_after(clock.now()) is None
    trip(router, a, clock.now())
    assert providers_of(router.candidates("eth_call", [], "priority", clock.now())) == ["b"]
    clock.advance(10)
    ra = router.retry_after(clock.now())
    assert ra is not None and 20 <= ra <= 21.5  # 30 s (+≤5 %) minus 10 s
    trip(router, router.channels[1], clock.now())
    assert router.candidates("eth_call", [], "priority", clock.now()) == []
    assert router.retry_after(clock.now()) == pytest.approx(ra)


def test_half_open_demoted_to_tier_two() -> None:
    """A half-open channel comes after every closed one, whatever the strategy says."""
    clock = FakeClock()
    router = make([provider("a", priority=1), provider("b", priority=2), provider("c", priority=3)])
    half_open(router, router.channels[0], clock)
    assert providers_of(router.candidates("eth_call", [], "priority", clock.now())) == [
        "b",
        "c",
        "a",
    ]


def test_rate_limited_demoted_to_tier_three() -> None:
    """Rate-limited comes after half-open; a rate-limited half-open channel is last."""
    clock = FakeClock()
    router = make([provider(p, priority=i) for i, p in enumerate("abcd")])
    a, b, c, _ = router.channels
    half_open(router, c, clock)
    now = clock.now()
    router.record_failure(a, "eth_call", Category.RATE_LIMIT, 0.01, now, retry_after_s=5.0)
    out = router.candidates("eth_call", [], "priority", now)
    assert providers_of(out) == ["b", "d", "c", "a"]
    assert a.evidence.rate_limited(now)
    router.record_failure(c, "eth_call", Category.RATE_LIMIT, 0.01, now)
    assert providers_of(router.candidates("eth_call", [], "priority", now)) == ["b", "d", "a", "c"]
    clock.advance(6)  # a's limit expired; c is still limited for 30 s
    assert providers_of(router.candidates("eth_call", [], "priority", clock.now())) == [
        "a",
        "b",
        "d",
        "c",
    ]


def test_admit_takes_half_open_probe_and_neutral_releases_it() -> None:
    """Half-open admits one probe; record_neutral frees the slot."""
    clock = FakeClock()
    router = make([provider("a")])
    a = router.channels[0]
    half_open(router, a, clock)
    now = clock.now()
    assert router.admit(a, now)
    assert not router.admit(a, now)
    router.record_neutral(a, "eth_call", now)
    assert router.admit(a, now)
    assert a.evidence.comparable_attempts == 3  # the trip's failures only
    router.record_neutral(a, "eth_call", now, dispatched=True)
    assert a.evidence.comparable_attempts == 4


def test_cancelled_attempt_is_neutral_and_may_leave_a_lower_bound() -> None:
    """A cancelled loser frees the probe slot and counts nothing; an overdue one leaves its
    elapsed time in the method row's latency window."""
    clock = FakeClock()
    router = make([provider("a")])
    a = router.channels[0]
    half_open(router, a, clock)
    now = clock.now()
    assert router.admit(a, now)
    router.record_cancelled(a, "eth_call", now)
    assert router.admit(a, now)
    assert "eth_call" not in a.methods or a.methods["eth_call"].recent_latencies() == []
    router.record_cancelled(a, "eth_getBalance", now, elapsed_s=0.5)
    row = a.methods["eth_getBalance"]
    assert row.recent_latencies() == [500.0] and row.calls == 0
    assert a.breaker.state(now) is BreakerState.HALF_OPEN


# -- lag ---------------------------------------------------------------------------------


def test_lagging_provider_excluded() -> None:
    """With max_lag_blocks set, a provider further behind is dropped."""
    router = make([provider("a"), provider("b"), provider("c")], max_lag_blocks=1)
    heights(router, 0.0, a=HEAD, b=HEAD - 1, c=HEAD - 5)
    assert providers_of(router.candidates("eth_call", [], "priority", 0.0)) == ["a", "b"]


def test_lag_filter_off_without_setting_or_consensus() -> None:
    """No max_lag_blocks, or no fresh heights: nothing is filtered; unknown heights kept."""
    router = make([provider("a"), provider("b")])
    heights(router, 0.0, a=HEAD, b=HEAD - 50)
    assert len(router.candidates("eth_call", [], "priority", 0.0)) == 2
    router = make([provider("a"), provider("b"), provider("c")], max_lag_blocks=1)
    assert len(router.candidates("eth_call", [], "priority", 0.0)) == 3
    heights(router, 0.0, a=HEAD, b=HEAD - 50)
    assert providers_of(router.candidates("eth_call", [], "priority", 0.0)) == ["a", "c"]
    assert len(router.candidates("eth_call", [], "priority", 100.0)) == 3  # stale heights


def test_all_lagging_readmits_the_least_lagging() -> None:
    """If the lag filter would drop every live provider, the best of them come back."""
    clock = FakeClock()
    router = make([provider("top"), provider("b"), provider("c"), provider("d")], max_lag_blocks=2)
    heights(router, clock.now(), top=HEAD, b=HEAD - 10, c=HEAD - 11, d=HEAD - 20)
    trip(router, router.channels[0], clock.now())  # the provider at the head is down
    out = router.candidates("eth_call", [], "priority", clock.now())
    assert providers_of(out) == ["b", "c"]  # within 2 blocks of the best lagging one
    # Excluding them leaves d alone, which then comes back too.
    out = router.candidates("eth_call", [], "priority", clock.now(), exclude={"b", "c"})
    assert providers_of(out) == ["d"]


# -- archival, min block and limits -------------------------------------------------------


def test_archival_request_puts_non_archival_last() -> None:
    """An old block, earliest, or a number without consensus demotes archival:false."""
    router = make(
        [provider("pruned", priority=1, archival=False), provider("archive", priority=2)],
    )
    call = [{"to": ADDR}, hex(HEAD - 1000)]
    # No consensus yet: any numeric block is treated as archival.
    assert providers_of(router.candidates("eth_call", call, "priority", 0.0)) == [
        "archive",
        "pruned",
    ]
    heights(router, 0.0, pruned=HEAD, archive=HEAD)
    assert providers_of(router.candidates("eth_call", call, "priority", 0.0)) == [
        "archive",
        "pruned",
    ]
    recent = [{"to": ADDR}, hex(HEAD - 10)]
    assert providers_of(router.candidates("eth_call", recent, "priority", 0.0)) == [
        "pruned",
        "archive",
    ]
    latest = [{"to": ADDR}, "latest"]
    assert providers_of(router.candidates("eth_call", latest, "priority", 0.0))[0] == "pruned"
    earliest = ["earliest", False]
    assert providers_of(router.candidates("eth_getBlockByNumber", earliest, "priority", 0.0)) == [
        "archive",
        "pruned",
    ]
    logs = [{"fromBlock": hex(HEAD - 129), "toBlock": "latest"}]
    assert providers_of(router.candidates("eth_getLogs", logs, "priority", 0.0))[0] == "archive"


def test_archival_demotion_outranks_health_tiers() -> None:
    """A healthy non-archival provider still comes after a half-open archival one."""
    clock = FakeClock()
    router = make([provider("pruned", priority=1, archival=False), provider("archive")])
    half_open(router, router.channels[1], clock)
    out = router.candidates("eth_getBalance", [ADDR, "0x1"], "priority", clock.now())
    assert providers_of(out) == ["archive", "pruned"]


def test_min_block_preference() -> None:
    """Providers that have not reached the requested block are ordered after."""
    router = make(
        [provider("behind", priority=1), provider("head", priority=2)], block_time_ms=2_000
    )
    heights(router, 0.0, behind=HEAD - 3, head=HEAD)
    req = [hex(HEAD), False]
    assert providers_of(router.candidates("eth_getBlockByNumber", req, "priority", 0.0)) == [
        "head",
        "behind",
    ]
    old = [hex(HEAD - 5), False]
    assert providers_of(router.candidates("eth_getBlockByNumber", old, "priority", 0.0)) == [
        "behind",
        "head",
    ]
    # 6 s later the laggard has 3 blocks of credit: it probably has the block now.
    assert providers_of(router.candidates("eth_getBlockByNumber", req, "priority", 6.0)) == [
        "behind",
        "head",
    ]


def test_min_block_constraint_for_latest_reads() -> None:
    """A caller's min_block (the served head) puts providers below it last, without making
    the request an archival one."""
    router = make(
        [
            provider("behind", priority=1),
            provider("pruned", priority=2, archival=False),
            provider("head", priority=3),
        ],
        block_time_ms=2_000,
    )
    heights(router, 0.0, behind=HEAD - 3, pruned=HEAD, head=HEAD)
    out = router.candidates("eth_blockNumber", [], "priority", 0.0, min_block=HEAD)
    assert providers_of(out) == ["pruned", "head", "behind"]
    out = router.candidates("eth_blockNumber", [], "priority", 0.0)
    assert providers_of(out) == ["behind", "pruned", "head"]


def test_observe_block_raises_heights_only() -> None:
    """A block in an answer raises the provider's height; an older one changes nothing."""
    router = make([provider("a")])
    router.observe_block("a", 100, 0.0)
    router.observe_block("a", 90, 1.0)
    assert router.state.height("a") == 100 and router.state.observed_at("a") == 0.0
    router.observe_block("a", 101, 2.0)
    assert router.state.height("a") == 101
    assert router.state.known_to_have("a", 101) and not router.state.known_to_have("a", 102)
    assert not router.state.known_to_have("b", 1)
    assert router.head.head is None  # provider heights are not served heads


def test_learned_logs_range_limits() -> None:
    """A limit learned from a provider's error lowers its limit and feeds the filter."""
    small = Capabilities(limits=Limits(max_block_range=500))
    router = make([provider("a", priority=1, capabilities=small), provider("b", priority=2)])
    heights(router, 0.0, a=HEAD, b=HEAD)
    assert router.logs_range_limit("a") == 500 and router.logs_range_limit("b") is None
    assert router.logs_range_limit("nobody") is None
    router.learn_logs_range_limit("b", 100)
    router.learn_logs_range_limit("a", 1000)  # never raised
    router.learn_logs_range_limit("nobody", 1)
    assert router.logs_range_limit("a") == 500 and router.logs_range_limit("b") == 100
    wide = [{"fromBlock": hex(HEAD - 299), "toBlock": hex(HEAD)}]
    assert providers_of(router.candidates("eth_getLogs", wide, "priority", 0.0)) == ["a"]


def test_get_logs_range_limit_routes_around_small_limits() -> None:
    """A range over a provider's max_block_range skips it unless every provider is limited."""
    small = Capabilities(limits=Limits(max_block_range=100))
    router = make([provider("small", priority=1, capabilities=small), provider("big", priority=2)])
    heights(router, 0.0, small=HEAD, big=HEAD)
    wide = [{"fromBlock": hex(HEAD - 500), "toBlock": "latest"}]
    narrow = [{"fromBlock": hex(HEAD - 99), "toBlock": hex(HEAD)}]
    edge = [{"fromBlock": hex(HEAD - 100), "toBlock": hex(HEAD)}]  # 101 blocks
    assert providers_of(router.candidates("eth_getLogs", wide, "priority", 0.0)) == ["big"]
    assert providers_of(router.candidates("eth_getLogs", narrow, "priority", 0.0)) == [
        "small",
        "big",
    ]
    assert providers_of(router.candidates("eth_getLogs", edge, "priority", 0.0)) == ["big"]
    by_hash = [{"blockHash": "0x" + "11" * 32}]
    assert len(router.candidates("eth_getLogs", by_hash, "priority", 0.0)) == 2
    # Every provider limited: fail open, in order.
    only_small = make([provider("s1", capabilities=small), provider("s2", capabilities=small)])
    heights(only_small, 0.0, s1=HEAD)
    assert providers_of(only_small.candidates("eth_getLogs", wide, "priority", 0.0)) == [
        "s1",
        "s2",
    ]


def test_get_logs_range_with_latest_needs_consensus() -> None:
    """'latest' resolves to the consensus; without one the range is unknown: no filter."""
    small = Capabilities(limits=Limits(max_block_range=100))
    router = make([provider("small", capabilities=small), provider("big")])
    wide = [{"fromBlock": hex(HEAD - 500), "toBlock": "latest"}]
    assert len(router.candidates("eth_getLogs", wide, "priority", 0.0)) == 2
    from_earliest = [{"fromBlock": "earliest", "toBlock": hex(500)}]
    assert providers_of(router.candidates("eth_getLogs", from_earliest, "priority", 0.0)) == ["big"]


def test_block_age_limit() -> None:
    """max_block_age holds back providers for old state reads of the listed methods."""
    young = Capabilities(limits=Limits(max_block_age=64, block_age_methods=("eth_getBalance",)))
    default_methods = Capabilities(limits=Limits(max_block_age=64))
    router = make(
        [
            provider("young", priority=1, capabilities=young),
            provider("young2", priority=2, capabilities=default_methods),
            provider("any", priority=3),
        ]
    )
    heights(router, 0.0, young=HEAD, any=HEAD)
    old = [ADDR, hex(HEAD - 100)]
    assert providers_of(router.candidates("eth_getBalance", old, "priority", 0.0)) == ["any"]
    assert providers_of(router.candidates("eth_getCode", old, "priority", 0.0)) == [
        "young",
        "any",
    ]
    fresh = [ADDR, hex(HEAD - 10)]
    assert len(router.candidates("eth_getBalance", fresh, "priority", 0.0)) == 3


# -- capabilities, overrides, exclude ----------------------------------------------------


def test_unsupported_methods_fail_open() -> None:
    """Unsupporting providers are skipped while another supports the method."""
    no_trace = Capabilities(unsupported_categories=frozenset({"trace", "debug"}))
    no_logs = Capabilities(unsupported_methods=frozenset({"eth_getLogs"}))
    router = make(
        [
            provider("a", priority=1, capabilities=no_trace),
            provider("b", priority=2, capabilities=no_logs),
        ]
    )
    assert providers_of(router.candidates("trace_block", ["0x1"], "priority", 0.0)) == ["b"]
    assert providers_of(router.candidates("eth_getLogs", [{}], "priority", 0.0)) == ["a"]
    assert providers_of(router.candidates("eth_call", [], "priority", 0.0)) == ["a", "b"]
    assert providers_of(router.candidates("made_up", [], "priority", 0.0)) == ["a", "b"]
    # Nobody supports it: every channel is returned (fail-open).
    both = make([provider("a", capabilities=no_trace), provider("b", capabilities=no_trace)])
    assert providers_of(both.candidates("trace_block", ["0x1"], "priority", 0.0)) == ["a", "b"]


def test_config_fault_keeps_the_channel_out_without_touching_the_breaker() -> None:
    """A channel with a configuration fault is no candidate, even pinned; clearing it
    brings the channel back. Its shared breaker never hears of it."""
    router = make([provider("a"), provider("b")])
    a = router.channels[0]
    wrong = Fault(cause="wrong_chain", category="chain_error", message="wrong chain id 5")
    router.observe_config_fault(a, wrong, 1.0)
    assert (a.config_fault, a.config_fault_at) == (wrong, 1.0)
    assert providers_of(router.candidates("eth_call", [], "priority", 2.0)) == ["b"]
    assert router.candidates("eth_call", [], "priority", 2.0, provider_id="a") == []
    assert router.retry_after(2.0) is None and a.breaker.state(2.0) is BreakerState.CLOSED
    router.observe_config_fault(a, None, 3.0)
    assert (a.config_fault, a.config_fault_at) == (None, None)
    assert providers_of(router.candidates("eth_call", [], "priority", 3.0)) == ["a", "b"]


def test_provider_override_and_exclude() -> None:
    """provider_id keeps only that provider; exclude drops provider ids."""
    router = make([provider("a", ws_url="wss://a"), provider("b"), provider("c")])
    router.set_connected("a", True)
    assert ids(router.candidates("eth_call", [], "priority", 0.0, provider_id="a")) == [
        "a:http",
        "a:ws",
    ]
    assert router.candidates("eth_call", [], "fastest", 0.0, provider_id="zzz") == []
    out = router.candidates("eth_call", [], "load-balanced", 0.0, exclude=("a", "c"))
    assert providers_of(out) == ["b"]


def test_method_overrides_strategy_and_allow_list() -> None:
    """method_overrides may set a strategy and/or restrict to listed providers in order."""
    overrides = {
        "eth_getLogs": MethodOverride(providers=("c", "a", "ghost")),
        "eth_call": MethodOverride(strategy="priority"),
        "eth_estimateGas": MethodOverride(strategy="round-robin", providers=("b", "c")),
    }
    router = make(
        [provider("a", priority=3), provider("b", priority=1), provider("c", priority=2)],
        method_overrides=overrides,
    )
    assert providers_of(router.candidates("eth_getLogs", [{}], "priority", 0.0)) == ["c", "a"]
    for _ in range(5):
        out = router.candidates("eth_call", [], "load-balanced", 0.0)
        assert providers_of(out) == ["b", "c", "a"]
    seen = {
        tuple(providers_of(router.candidates("eth_estimateGas", [], "priority", 0.0)))
        for _ in range(50)
    }
    assert seen == {("b", "c"), ("c", "b")}
    # An explicit provider override beats the allow-list.
    assert providers_of(
        router.candidates("eth_getLogs", [{}], "priority", 0.0, provider_id="b")
    ) == ["b"]


def test_truncated_to_ten() -> None:
    """At most MAX_CANDIDATES channels come back."""
    router = make([provider(f"p{i:02}", priority=i) for i in range(14)])
    out = router.candidates("eth_call", [], "priority", 0.0)
    assert len(out) == MAX_CANDIDATES
    assert providers_of(out) == [f"p{i:02}" for i in range(10)]


def test_unknown_strategy_raises() -> None:
    """An unknown strategy name is a caller bug."""
    router = make([provider("a"), provider("b")])
    with pytest.raises(ValueError):
        router.candidates("eth_call", [], "nope", 0.0)


# -- strategies through the router --------------------------------------------------------


def test_fastest_through_router_uses_recorded_latency() -> None:
    """Recorded successes drive the fastest order."""
    router = make([provider("a"), provider("b"), provider("c")])
    for ch, lat in zip(router.channels, (0.3, 0.05, 0.1), strict=True):
        for _ in range(3):
            router.record_success(ch, "eth_call", lat, 1.0)
    out = router.candidates("eth_call", [], "fastest", 1.0)
    assert providers_of(out) == ["b", "c", "a"]
    assert providers_of(router.candidates("eth_call", [], "latency-weighted", 1.0))[0] in "abc"


def test_fastest_exploration_only_for_replay_safe_methods() -> None:
    """A cold channel may lead an eth_call, never an eth_sendRawTransaction."""

    class Low:
        def random(self) -> float:
            return 0.0  # always below the exploration probability

    chain = ChainConfig(
        key="e", chain_id=1, name="E", providers=(provider("fast"), provider("cold"))
    )
    router = ChainRouter(chain, BreakerRegistry(BreakerConfig(), Low()), Low(), profile="t")
    for _ in range(3):
        router.record_success(router.channels[0], "eth_call", 0.01, 1.0)
        router.record_success(router.channels[0], "eth_sendRawTransaction", 0.01, 1.0)
    assert providers_of(router.candidates("eth_call", [], "fastest", 1.0)) == ["cold", "fast"]
    assert providers_of(router.candidates("eth_sendRawTransaction", ["0x"], "fastest", 1.0)) == [
        "fast",
        "cold",
    ]


# -- recording ---------------------------------------------------------------------------


def test_record_success_updates_evidence_rows_and_breaker() -> None:
    """A success feeds channel evidence, the method row, and closes a half-open breaker."""
    clock = FakeClock()
    router = make([provider("a")])
    a = router.channels[0]
    half_open(router, a, clock)
    assert router.admit(a, clock.now())
    assert router.record_success(a, "eth_call", 0.02, clock.now()) is not None  # materialized
    assert router.admit(a, clock.now())
    t = router.record_success(a, "eth_call", 0.04, clock.now())
    assert t is not None and t.new is BreakerState.CLOSED
    row = a.methods["eth_call"]
    assert row.successes == 2
    assert row.ewma_ms == pytest.approx(20 + (40 - 20) / 8)
    assert a.evidence.usable_successes == 2


def test_record_failure_routes_by_bucket() -> None:
    """Quota, provider failure, capability and deterministic errors land where they should."""
    router = make([provider("a")])
    a = router.channels[0]
    now = 10.0
    assert router.record_failure(a, "eth_call", Category.RATE_LIMIT, 0.1, now, 3.0) is None
    assert a.evidence.rate_limited(now)
    assert a.breaker.consecutive_failures == 0
    router.record_failure(a, "eth_call", Category.SERVER_ERROR, 0.2, now)
    assert a.evidence.consecutive_failures == 1
    assert a.breaker.consecutive_failures == 1
    router.record_failure(a, "eth_call", Category.TIMEOUT, None, now)
    router.record_failure(a, "eth_call", Category.BLOCK_NOT_AVAILABLE, 0.1, now)
    router.record_failure(a, "eth_call", Category.EXECUTION_REVERT, 0.1, now)
    router.record_failure(a, "eth_call", "something_new", 0.1, now)  # unknown: a failure
    row = a.methods["eth_call"]
    assert row.outcomes == {
        "success": 0,
        "error": 1,
        "rate_limited": 1,
        "failure": 2,
        "timeout": 1,
        "capability": 1,
    }
    assert a.evidence.total_failures == 3
    assert a.evidence.comparable_attempts == 6
    assert row.hist_count == 5


def test_record_failure_keeps_the_last_error_of_provider_faults_only() -> None:
    """Provider failures and quota become the channel's last error (the adapter's fault,
    else one named after the category); the caller's errors and capability gaps never
    do, and a success marks the upstream reached."""
    router = make([provider("a")])
    a = router.channels[0]
    router.record_failure(a, "eth_call", Category.EXECUTION_REVERT, 0.1, 1.0)
    router.record_failure(a, "eth_call", Category.METHOD_NOT_FOUND, 0.1, 1.0)
    assert a.health.last is None and a.health.link == "unknown"
    router.record_failure(a, "eth_call", Category.SERVER_ERROR, 0.1, 2.0)
    assert a.health.last == Fault(
        cause="server_error", category="server_error", message="server error"
    )
    assert a.health.link == "up"  # an error answer: the upstream was reached
    refused = Fault(cause="refused", category="network_error", message="refused")
    router.record_failure(a, "eth_call", Category.NETWORK_ERROR, None, 3.0, fault=refused)
    assert a.health.last is refused and a.health.link == "down"
    router.record_failure(a, "eth_call", Category.RATE_LIMIT, 0.1, 4.0, 1.0)
    assert a.health.last is not None and a.health.last.category == "rate_limit"
    router.record_success(a, "eth_call", 0.01, 5.0)
    assert a.health.link == "up"
    router.observe_fault(a, refused, 6.0)
    assert a.health.link == "down" and a.breaker.consecutive_failures == 0  # health only


def test_health_is_shared_by_channels_on_one_breaker() -> None:
    """Two profiles naming one upstream share its breaker and its last error."""
    reg = BreakerRegistry(BreakerConfig(), random.Random(0))
    one = make([provider("a")], registry=reg, profile="one")
    two = make([provider("a")], registry=reg, profile="two")
    assert one.channels[0].health is two.channels[0].health
    assert reg.health("k", "http") is reg.health("k", "http")


def test_record_failure_returns_trip_transition() -> None:
    """The failure that opens the circuit returns the transition for events."""
    router = make([provider("a")])
    a = router.channels[0]
    assert router.record_failure(a, "eth_call", Category.NETWORK_ERROR, 0.1, 0.0) is None
    assert router.record_failure(a, "eth_call", Category.NETWORK_ERROR, 0.1, 0.0) is None
    t = router.record_failure(a, "eth_call", Category.NETWORK_ERROR, 0.1, 0.0)
    assert t is not None
    assert (t.old, t.new) == (BreakerState.CLOSED, BreakerState.OPEN)


def test_method_rows_bounded_for_unknown_methods() -> None:
    """Past MAX_METHOD_ROWS, unknown methods share the 'other' row; known ones still get rows."""
    router = make([provider("a")])
    a = router.channels[0]
    for i in range(MAX_METHOD_ROWS + 20):
        router.record_success(a, f"x_{i}", 0.01, 0.0)
    assert len(a.methods) == MAX_METHOD_ROWS + 1
    assert a.methods["other"].calls == 20
    router.record_success(a, "eth_chainId", 0.01, 0.0)
    assert "eth_chainId" in a.methods


# -- views -------------------------------------------------------------------------------


def test_repr_summarizes_states() -> None:
    """repr shows providers, channels and breaker state counts."""
    router = make([provider("a", ws_url="wss://a"), provider("b")])
    trip(router, router.channels[2], 0.0)
    router.candidates("eth_call", [], "priority", 1.0)
    assert repr(router) == (
        "<ChainRouter test/ethereum providers=2 channels=3 connected=2 closed=2 half_open=0 open=1>"
    )


# -- invariants --------------------------------------------------------------------------

_METHODS = ["eth_call", "eth_getLogs", "eth_getBalance", "trace_block", "eth_blockNumber"]
_CATS = [c.value for c in Category]

_Event = tuple[str, int, object]
_events = st.lists(
    st.one_of(
        st.tuples(st.just("fail"), st.integers(0, 15), st.sampled_from(_CATS)),
        st.tuples(st.just("ok"), st.integers(0, 15), st.floats(0.001, 2.0)),
        st.tuples(st.just("height"), st.integers(0, 7), st.integers(HEAD - 300, HEAD)),
        st.tuples(st.just("tick"), st.just(0), st.floats(0.0, 120.0)),
        st.tuples(st.just("ws"), st.integers(0, 7), st.booleans()),
        st.tuples(st.just("admit"), st.integers(0, 15), st.none()),
    ),
    max_size=60,
)


def _apply(router: ChainRouter, clock: FakeClock, method: str, ev: _Event) -> None:
    kind, i, value = ev
    ch = router.channels[i]
    if kind == "fail":
        assert isinstance(value, str)
        router.record_failure(ch, method, value, 0.1, clock.now())
    elif kind == "ok":
        assert isinstance(value, float)
        router.record_success(ch, method, value, clock.now())
    elif kind == "height":
        assert isinstance(value, int)
        router.observe_height(f"p{i}", value, clock.now())
    elif kind == "tick":
        assert isinstance(value, float)
        clock.advance(value)
    elif kind == "ws":
        router.set_connected(f"p{i}", bool(value))
    else:
        router.admit(ch, clock.now())


def _params(method: str, block: int | str | None) -> object:
    ref = hex(block) if isinstance(block, int) else block
    if method == "eth_getLogs":
        return [{"fromBlock": ref}]
    if method == "eth_getBalance":
        return [ADDR, ref or "latest"]
    return [ref]


@settings(max_examples=150, deadline=None)
@given(
    events=_events,
    strategy=st.sampled_from(["load-balanced", "priority", "fastest", "latency-weighted"]),
    method=st.sampled_from(_METHODS),
    block=st.one_of(st.none(), st.integers(0, HEAD), st.sampled_from(["earliest", "latest"])),
    exclude=st.frozensets(st.sampled_from([f"p{i}" for i in range(8)]), max_size=3),
    pin=st.one_of(st.none(), st.sampled_from(["p0", "p3", "nobody"])),
    max_lag=st.one_of(st.none(), st.integers(0, 5)),
    seed=st.integers(0, 2**16),
)
def test_candidates_invariants(
    events: list[_Event],
    strategy: str,
    method: str,
    block: int | str | None,
    exclude: frozenset[str],
    pin: str | None,
    max_lag: int | None,
    seed: int,
) -> None:
    """Never an OPEN channel, never a duplicate, never more than 10, always configured."""
    provs = [
        provider(
            f"p{i}",
            ws_url=f"wss://p{i}.example/ws",
            priority=i % 3,
            archival=i % 2 == 0,
            capabilities=Capabilities(
                unsupported_categories=frozenset({"trace"}) if i % 3 == 0 else frozenset(),
                limits=Limits(max_block_range=50, max_block_age=64) if i == 5 else Limits(),
            ),
        )
        for i in range(8)
    ]
    router = make(provs, seed=seed, max_lag_blocks=max_lag)
    chans = router.channels
    clock = FakeClock()
    for ev in events:
        _apply(router, clock, method, ev)
    params = _params(method, block)
    now = clock.now()
    out = router.candidates(method, params, strategy, now, provider_id=pin, exclude=exclude)
    assert len(out) <= MAX_CANDIDATES
    assert len({id(ch) for ch in out}) == len(out)
    assert all(any(ch is c for c in chans) for ch in out)
    for ch in out:
        assert ch.breaker.state(now) is not BreakerState.OPEN
        assert ch.connected
        assert ch.provider_id not in exclude
        if pin is not None:
            assert ch.provider_id == pin
    # Tiers never invert for requests without block preferences (a numbered or earliest
    # block may need an archival provider or one that has it, which outranks the tier).
    if method == "eth_blockNumber" or (method == "trace_block" and block in (None, "latest")):
        tiers = [
            (2 if ch.breaker.state(now) is BreakerState.HALF_OPEN else 1)
            + (2 if ch.evidence.rate_limited(now) else 0)
            for ch in out
        ]
        assert tiers == sorted(tiers)


def test_candidates_empty_when_nothing_configured() -> None:
    """A chain without providers yields no candidates and no retry hint."""
    router = make([])
    assert router.candidates("eth_call", [], "fastest", 0.0) == []
    assert router.retry_after(0.0) is None
    assert router.snapshot(0.0)["providers"] == []


def test_chain_replace_keeps_router_independent() -> None:
    """Routers built from modified configs do not share evidence."""
    chain = ChainConfig(key="e", chain_id=1, name="E", providers=(provider("a"),))
    reg = BreakerRegistry(BreakerConfig(), random.Random(0))
    r1 = ChainRouter(chain, reg, random.Random(0), profile="x")
    r2 = ChainRouter(replace(chain, max_lag_blocks=3), reg, random.Random(0), profile="y")
    r1.record_success(r1.channels[0], "eth_call", 0.01, 0.0)
    assert r2.channels[0].evidence.usable_successes == 0
    assert r1.channels[0].breaker is r2.channels[0].breaker


# -- public surface ----------------------------------------------------------------------

REEXPORTS = {
    "PROBE_STATUSES": "channel",
    "BreakerRegistry": "channel",
    "Channel": "channel",
    "Transport": "channel",
    "normalize_url": "channel",
    "PROVIDER_STATUSES": "status",
    "Transition": "breaker",
}


def test_public_surface() -> None:
    """__all__ is the facade's surface; re-exported names are their home module's objects."""
    assert sorted(router_module.__all__) == sorted(
        ["MAX_CANDIDATES", "MAX_METHOD_ROWS", "ChainRouter", *REEXPORTS]
    )
    for name, home in REEXPORTS.items():
        mod = importlib.import_module(f"lasso.kernel.{home}")
        assert getattr(router_module, name) is getattr(mod, name), name


def test_module_imports_alone() -> None:
    """The router imports first in a fresh interpreter (no cycle with .channel or .status)."""
    subprocess.run([sys.executable, "-c", "import lasso.kernel.router"], check=True)
