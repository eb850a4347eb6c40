"""The height/health prober over real sockets: idle polling, breaker effects, events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from time import monotonic
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from lasso.kernel.breaker import BreakerConfig, BreakerState
from lasso.logs import JsonFormatter
from lasso.probes.health import ProbePolicy
from lasso.probes.heights import HeightProber
from lasso.sim.behavior import Behavior

from support import UNCACHED, eventually, profile_yaml, routed_chain_yaml, status_server

pytestmark = pytest.mark.integration

FAST = ProbePolicy(
    backoff_base_s=0.05,
    backoff_max_s=0.2,
    rate_limit_backoff_s=0.2,
    auth_backoff_s=0.5,
    timeout_s=1.0,
)
MONITORING = "    monitoring:\n      probe_interval_ms: {ms}\n      lag_alert_threshold_blocks: 3"


def monitoring(ms: int = 50) -> str:
    return MONITORING.format(ms=ms)


@pytest.fixture
async def run_prober() -> AsyncIterator[Callable[..., HeightProber]]:
    """Factory: run a prober with a fast policy on an app started without probes."""
    tasks: list[asyncio.Task[None]] = []

    def start(app: Any, policy: ProbePolicy = FAST) -> HeightProber:
        prober = HeightProber(
            runtime=app.current_runtime, metrics=app.metrics, rng=app.rng, policy=policy
        )
        tasks.append(asyncio.get_running_loop().create_task(prober.run()))
        return prober

    yield start
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def chain_with(extra_providers: dict[str, str], fleet: Any, extra: str = "") -> str:
    """Fleet chain YAML plus providers at arbitrary URLs, listed first (priority 1..)."""
    lines = routed_chain_yaml(fleet, extra=extra).rstrip("\n").split("\n")
    at = lines.index("    providers:") + 1
    added: list[str] = []
    for i, (pid, url) in enumerate(extra_providers.items()):
        added += [f"      - id: {pid}", f"        url: {url}", f"        priority: {i + 1}"]
    return "\n".join(lines[:at] + added + lines[at:]) + "\n"


def events(app: Any, name: str) -> list[dict[str, Any]]:
    return [e for e in app.events.state_events if e.get("event") == name]


def circuit_events(app: Any, provider: str) -> list[tuple[str, str, str]]:
    return [
        (e["from"], e["to"], e["reason"])
        for e in app.events.state_events
        if e.get("type") == "circuit" and e.get("provider") == provider
    ]


async def get(url: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.read()


async def rpc(url: str, body: Any) -> Any:
    async with aiohttp.ClientSession() as s, s.post(url, data=orjson.dumps(body)) as r:
        return orjson.loads(await r.read())


BLOCK_NUMBER = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}


async def test_idle_providers_are_polled_and_feed_heights(
    sim_fleet: Any, lasso_node: Any, run_prober: Any
) -> None:
    """Each idle instance is asked its chain id once, then its height every interval."""
    fleet = await sim_fleet(["a", "b"])
    app = await lasso_node(profile_yaml(routed_chain_yaml(fleet, extra=monitoring())))
    prober = run_prober(app)
    router = app.runtime.profile(None).resolve("ethereum").router
    await eventually(lambda: router.state.height("a") and router.state.height("b"))
    await eventually(lambda: fleet["a"].stats.methods["eth_blockNumber"] >= 3)
    assert fleet["a"].stats.methods["eth_chainId"] == 1
    state = prober.state_of("a")
    assert state is not None and state.chain_verified and state.status == "healthy"
    assert router.channel("a", "http").probe_status == "healthy"
    # Probes are system traffic: no client per-method row, no client evidence.
    assert router.channel("a", "http").methods == {}
    assert router.channel("a", "http").evidence.comparable_attempts == 0
    status, text = await get(f"{app.base_url}/metrics")
    assert (
        b'lasso_health_probes_total{chain="ethereum",node_id="test",outcome="ok",provider="a"}'
        in (text)
    )
    assert "instances=2" in repr(prober)


async def test_busy_provider_is_not_polled(
    sim_fleet: Any, lasso_node: Any, run_prober: Any
) -> None:
    """Client eth_blockNumber answers from a provider stand in for its poll."""
    fleet = await sim_fleet(["a", "b"])
    app = await lasso_node(profile_yaml(routed_chain_yaml(fleet, extra=monitoring(200))))
    prober = run_prober(app)
    await eventually(lambda: (s := prober.state_of("a")) is not None and s.chain_verified)
    fleet.reset_stats()
    sent = 0
    deadline = monotonic() + 10
    while fleet["b"].stats.methods["eth_blockNumber"] < 4:  # ~0.8 s of b's idle polls
        assert monotonic() < deadline, "b was not polled"
        doc = await rpc(f"{app.base_url}/rpc/provider/a/ethereum", BLOCK_NUMBER)
        assert "result" in doc
        sent += 1
        await asyncio.sleep(0.02)  # pacing client traffic, not waiting for a condition
    assert fleet["a"].stats.methods["eth_blockNumber"] - sent <= 1  # at most one in flight


async def test_idle_dead_provider_opens_and_heals_without_client_traffic(
    sim_fleet: Any, lasso_node: Any, run_prober: Any
) -> None:
    """Refused probes open the breaker; once the provider is back the prober takes the
    half-open probe slot and closes it, with no client request at all."""
    fleet = await sim_fleet(["a", "b"])
    app = await lasso_node(
        profile_yaml(routed_chain_yaml(fleet, extra=monitoring())),
        breaker_config=BreakerConfig(recovery_timeout_s=0.3),
    )
    prober = run_prober(app)
    router = app.runtime.profile(None).resolve("ethereum").router
    ch = router.channel("a", "http")
    await eventually(lambda: (s := prober.state_of("a")) is not None and s.status == "healthy")
    await fleet["a"].update(down=True)
    await eventually(lambda: ch.breaker.state(monotonic()) is BreakerState.OPEN)
    assert ("closed", "open", "failure_threshold_exceeded") in circuit_events(app, "a")
    state = prober.state_of("a")
    assert state is not None and state.status == "unhealthy"  # 3 refused probes
    assert router.provider_status("a", monotonic()) == "circuit_open"
    await fleet["a"].update(down=False)
    await eventually(lambda: ch.breaker.state(monotonic()) is BreakerState.CLOSED, timeout=10)
    trail = circuit_events(app, "a")
    assert ("open", "half_open", "proactive_recovery") in trail
    assert trail[-1] == ("half_open", "closed", "recovered")
    assert app.metrics.requests == {}  # nobody paid for the recovery
    assert ch.probe_status == "healthy"


async def test_unauthorized_provider_is_misconfigured_and_skipped(
    sim_fleet: Any, lasso_node: Any, run_prober: Any
) -> None:
    """401 marks the provider misconfigured, opens its circuit, and clients never notice."""
    fleet = await sim_fleet(["good"])
    async with status_server(401, b'{"error":"invalid api key"}') as (url, hits):
        chain = chain_with({"locked": url}, fleet, extra=monitoring())
        app = await lasso_node(profile_yaml(chain))
        run_prober(app)
        rt = app.runtime.profile(None).resolve("ethereum")
        await eventually(
            lambda: rt.router.provider_status("locked", monotonic()) == "misconfigured"
        )
        ch = rt.router.channel("locked", "http")
        assert ch.breaker.state(monotonic()) is BreakerState.OPEN
        assert ch.probe_status == "misconfigured"
        (event,) = events(app, "provider.misconfigured")
        assert event["provider"] == "locked" and "401" in event["detail"]
        before = len(hits)
        for i in range(5):
            doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", {**BLOCK_NUMBER, "id": i})
            assert "result" in doc, doc
        assert len(hits) == before  # the open circuit kept clients away
        _, text = await get(f"{app.base_url}/metrics")
        line = (
            b'lasso_provider_status{chain="ethereum",node_id="test",profile="public",'
            b'provider="locked",status="misconfigured"} 1.0'
        )
        assert line in text
        _, body = await get(f"{app.base_url}/api/metrics/ethereum")
        providers = {p["id"]: p for p in orjson.loads(body)["providers"]}
        assert providers["locked"]["status"] == "misconfigured"
        assert providers["good"]["status"] == "healthy"


async def test_wrong_chain_id_is_misconfigured(
    sim_fleet: Any, lasso_node: Any, run_prober: Any
) -> None:
    """An endpoint serving another chain is caught by the one-time chain id check."""
    base = await sim_fleet(["base"], chain_id=8453)
    fleet = await sim_fleet(["good"])
    app = await lasso_node(
        profile_yaml(chain_with({"wrong": base["base"].url}, fleet, monitoring()))
    )
    prober = run_prober(app)
    router = app.runtime.profile(None).resolve("ethereum").router
    await eventually(lambda: router.provider_status("wrong", monotonic()) == "misconfigured")
    state = prober.state_of("wrong")
    assert state is not None and not state.chain_verified
    assert "wrong chain id 8453" in state.detail
    assert router.state.height("wrong") is None  # never polled for a height


async def test_wrong_chain_id_stays_with_the_misconfigured_chain(
    sim_fleet: Any, lasso_node: Any, run_prober: Any
) -> None:
    """A typo'd chain_id on one chain excludes only that chain's pairing with the shared
    upstream: its breaker, health and the chain configured right are untouched."""
    from lasso.profiles import parse_profile

    fleet = await sim_fleet(["a1"])
    url = fleet["a1"].url
    chains = routed_chain_yaml(fleet, extra=monitoring()) + (
        f"  typo:\n    chain_id: 5\n{monitoring()}\n{UNCACHED}\n"
        f"    providers:\n      - id: a1\n        url: {url}\n"
    )
    app = await lasso_node(profile_yaml(chains))
    prober = run_prober(app)
    profile = app.runtime.profile(None)
    good, typo = profile.resolve("ethereum").router, profile.resolve("typo").router
    await eventually(lambda: typo.provider_status("a1", monotonic()) == "misconfigured")
    await eventually(lambda: (s := prober.state_of("a1", "ethereum")) and s.chain_verified)
    now = monotonic()
    shared = good.channel("a1", "http")
    assert shared.breaker is typo.channel("a1", "http").breaker  # one upstream, one breaker
    assert shared.breaker.state(now) is BreakerState.CLOSED
    assert good.provider_status("a1", now) == "healthy"
    assert shared.config_fault is None and shared.probe_status == "healthy"
    for i in range(3):
        doc = await rpc(f"{app.base_url}/rpc/ethereum", {**BLOCK_NUMBER, "id": i})
        assert "result" in doc, doc
    calls = fleet["a1"].stats.methods["eth_blockNumber"]
    doc = await rpc(f"{app.base_url}/rpc/typo", BLOCK_NUMBER)
    assert doc["error"]["code"] == -32000 and "circuits open" not in doc["error"]["message"]
    assert fleet["a1"].stats.methods["eth_blockNumber"] == calls  # never sent upstream
    _, body = await get(f"{app.base_url}/api/chains")
    by_chain = {c["chain"]: c for c in orjson.loads(body)["chains"]}
    (good_view,) = by_chain["ethereum"]["providers"]
    (typo_view,) = by_chain["typo"]["providers"]
    assert good_view["status"] == "healthy"
    assert good_view["last_error"] is None, good_view["last_error"]
    assert typo_view["status"] == "misconfigured"
    assert typo_view["last_error"]["cause"] == "wrong_chain"
    assert "wrong chain id 1, configured 5" in typo_view["last_error"]["message"]
    assert not circuit_events(app, "a1")  # no breaker transition for either chain
    await app.reload({"public": parse_profile(profile_yaml(chains), "public.yml", {})})
    profile = app.runtime.profile(None)
    reloaded = profile.resolve("typo").router.channel("a1", "http")
    assert prober.state_of("a1", "typo") is not None  # the prober picks the reload up
    assert reloaded.config_fault is not None  # at once: the verdict outlives the channel
    assert profile.resolve("ethereum").router.channel("a1", "http").config_fault is None


async def test_rate_limited_probe_marks_the_channel(
    sim_fleet: Any, lasso_node: Any, run_prober: Any
) -> None:
    """A 429 to a probe rate-limits the channel for 60 s, without a breaker penalty."""
    fleet = await sim_fleet(["good"])
    async with status_server(429, b"Too Many Requests", {"Retry-After": "1"}) as (url, _hits):
        app = await lasso_node(profile_yaml(chain_with({"busy": url}, fleet, monitoring())))
        prober = run_prober(app)
        router = app.runtime.profile(None).resolve("ethereum").router
        ch = router.channel("busy", "http")
        await eventually(lambda: ch.probe_status == "rate_limited")
        now = monotonic()
        assert 55 < ch.evidence.rate_limit_remaining(now) <= 60
        assert ch.breaker.state(now) is BreakerState.CLOSED and ch.breaker.consecutive_failures == 0
        assert ch.evidence.total_rate_limits == 0  # a mark, not client evidence
        await eventually(lambda: events(app, "provider.rate_limited"))
        assert router.provider_status("busy", now) == "rate_limited"
        state = prober.state_of("busy")
        assert state is not None and state.counts["rate_limited"] >= 1


async def test_lag_crossing_publishes_lagging_and_caught_up(
    sim_fleet: Any, lasso_node: Any, run_prober: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Crossing lag_alert_threshold_blocks emits structured log lines and state events."""
    fleet = await sim_fleet({"a": Behavior(), "b": Behavior(), "slow": Behavior(lag_blocks=50)})
    app = await lasso_node(profile_yaml(routed_chain_yaml(fleet, extra=monitoring())))
    caplog.set_level(logging.INFO, logger="lasso.events")
    prober = run_prober(app)
    await eventually(lambda: events(app, "provider.lagging"))
    (event,) = events(app, "provider.lagging")
    assert event["provider"] == "slow" and event["threshold"] == 3
    assert 48 <= event["lag"] <= 52  # blocks behind
    assert set(prober.lagging("public", "ethereum")) == {"slow"}
    record = next(r for r in caplog.records if getattr(r, "event", "") == "provider.lagging")
    assert record.levelno == logging.WARNING
    line = orjson.loads(JsonFormatter("test").format(record))
    assert line["provider"] == "slow" and line["chain"] == "ethereum" and line["node_id"] == "test"
    await fleet["slow"].update(lag_blocks=0)
    await eventually(lambda: events(app, "provider.caught_up"))
    assert prober.lagging("public", "ethereum") == {}


async def test_client_rate_limits_start_and_end_events(
    sim_fleet: Any, lasso_node: Any, run_prober: Any
) -> None:
    """A rate limit learned from client traffic is announced, and so is its end."""
    fleet = await sim_fleet(
        {"limited": Behavior(rate_limit_rps=0.001, rate_limit_burst=1), "good": Behavior()}
    )
    app = await lasso_node(profile_yaml(routed_chain_yaml(fleet, extra=monitoring(60_000))))
    run_prober(app)
    for i in range(3):
        doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", {**BLOCK_NUMBER, "id": i})
        assert "result" in doc
    await eventually(lambda: events(app, "provider.rate_limited"))
    (event,) = events(app, "provider.rate_limited")
    assert event["provider"] == "limited" and 0 < event["remaining_s"] <= 1.0  # Retry-After: 1
    await eventually(lambda: events(app, "provider.rate_limit_cleared"), timeout=3)


async def test_probe_state_survives_a_reload(
    sim_fleet: Any, lasso_node: Any, run_prober: Any
) -> None:
    """A reload keeps each instance's probe state: the chain id is not asked again."""
    from lasso.profiles import parse_profile

    fleet = await sim_fleet(["a"])
    text = profile_yaml(routed_chain_yaml(fleet, extra=monitoring()))
    app = await lasso_node(text)
    prober = run_prober(app)
    await eventually(lambda: (s := prober.state_of("a")) is not None and s.status == "healthy")
    await app.reload({"public": parse_profile(text, "public.yml", {})})
    router = app.runtime.profile(None).resolve("ethereum").router
    await eventually(lambda: router.state.height("a") is not None)
    assert router.channel("a", "http").probe_status == "healthy"
    assert fleet["a"].stats.methods["eth_chainId"] == 1


# -- probe-assisted recovery -----------------------------------------------------------

RECOVERY = "    monitoring:\n      probe_interval_ms: {ms}\n      recovery_probe_interval_ms: 200"


def balance(id_: Any = 1) -> dict[str, Any]:
    addr = "0x00000000000000000000000000000000000000aa"
    return {"jsonrpc": "2.0", "id": id_, "method": "eth_getBalance", "params": [addr, "latest"]}


async def drive_until_open(app: Any, ch: Any, limit: int = 20) -> int:
    """Client calls through the priority route until ``ch``'s breaker opens; every one
    must still succeed (failover). Returns how many were sent."""
    for i in range(limit):
        doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", balance(i))
        assert "result" in doc, doc
        if ch.breaker.state(monotonic()) is BreakerState.OPEN:
            return i + 1
    raise AssertionError(f"the circuit did not open after {limit} calls: {ch.breaker!r}")


async def test_healed_provider_recovers_long_before_its_recovery_timeout(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """The first provider refuses connections until its circuit opens, then heals: probes
    of the open circuit move it to half-open before its 30 s deadline, the prober's trials
    close it, and it serves client traffic again within seconds."""
    fleet = await sim_fleet({"fast": Behavior(), "slow": Behavior(latency_ms=5)})
    app = await lasso_node(
        profile_yaml(routed_chain_yaml(fleet, extra=RECOVERY.format(ms=12_000))), probes=True
    )
    ch = app.runtime.profile(None).resolve("ethereum").router.channel("fast", "http")
    for i in range(3):  # fast is busy: its health is judged by client traffic
        assert "result" in await rpc(f"{app.base_url}/rpc/priority/ethereum", balance(i))
    await fleet["fast"].update(down=True)
    await drive_until_open(app, ch)
    deadline = ch.breaker.recovery_deadline
    assert deadline is not None and deadline - monotonic() > 25  # the 30 s default
    assert ch.breaker.probe_assisted(monotonic())
    evidence = ch.evidence.comparable_attempts
    await eventually(lambda: app.prober.recovery_probes >= 2)  # refused while down
    assert ch.breaker.state(monotonic()) is BreakerState.OPEN
    await fleet["fast"].update(down=False)

    def half_open_early() -> bool:
        if ("open", "half_open", "probe_recovery") not in circuit_events(app, "fast"):
            return False
        assert monotonic() < deadline, "went half-open only when the deadline passed"
        return True

    await eventually(half_open_early, timeout=3)
    await eventually(lambda: ch.breaker.state(monotonic()) is BreakerState.CLOSED, timeout=3)
    assert monotonic() < deadline
    trail = circuit_events(app, "fast")
    assert trail == [
        ("closed", "open", "failure_threshold_exceeded"),
        ("open", "half_open", "probe_recovery"),
        ("half_open", "closed", "recovered"),
    ]
    assert ch.evidence.comparable_attempts == evidence  # probes wrote no routing evidence
    served = fleet["fast"].stats.methods["eth_getBalance"]
    assert "result" in await rpc(f"{app.base_url}/rpc/priority/ethereum", balance())
    assert fleet["fast"].stats.methods["eth_getBalance"] == served + 1
    assert not ch.breaker.on_probation  # a real success vouched for the probes
    _, text = await get(f"{app.base_url}/metrics")
    series = (
        b'lasso_recovery_probes_total{chain="ethereum",node_id="test",outcome="%s",provider="fast"}'
    )
    assert series % b"failure" in text and series % b"ok" in text
    assert "recovery=" in repr(app.prober)


async def test_fastest_routes_back_to_a_provider_that_probes_recovered(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """After a probe-driven close, the provider's pre-outage failure streak no longer bars
    it: ``fastest`` explores it, it requalifies, and it wins the traffic back."""
    # No block during the test: with blocks, "slow"'s periodic height poll may see a block
    # "fast"'s last recovery probe did not, and block-consistent routing then rightly puts
    # "fast" second until its own next poll (tests/integration/test_consistency*).
    fleet = await sim_fleet(
        {"fast": Behavior(), "slow": Behavior(latency_ms=30)}, block_time_s=3600.0
    )
    app = await lasso_node(
        profile_yaml(routed_chain_yaml(fleet, extra=RECOVERY.format(ms=12_000))), probes=True
    )
    ch = app.runtime.profile(None).resolve("ethereum").router.channel("fast", "http")
    url = f"{app.base_url}/rpc/fastest/ethereum"
    for i in range(20):  # both measured; fast (no added latency) is the fastest
        assert "result" in await rpc(url, balance(i))
    await fleet["fast"].update(down=True)
    await drive_until_open(app, ch)
    assert ch.evidence.consecutive_failures >= 3
    await fleet["fast"].update(down=False)
    await eventually(lambda: ch.breaker.state(monotonic()) is BreakerState.CLOSED, timeout=5)
    assert ch.evidence.consecutive_failures == 0
    served = fleet["fast"].stats.methods["eth_getBalance"]

    async def fast_wins() -> bool:
        for i in range(50):
            assert "result" in await rpc(url, balance(i))
        return fleet["fast"].stats.methods["eth_getBalance"] - served >= 40

    await eventually(fast_wins, timeout=10, message="fastest never went back to 'fast'")
    assert ch.evidence.qualified(monotonic())


@contextlib.asynccontextmanager
async def two_faced_server(head: Callable[[], int]) -> AsyncIterator[tuple[str, list[str]]]:
    """A provider that answers the health probe (eth_chainId, eth_blockNumber) and fails
    every real call with HTTP 500; yields its URL and the methods it was sent."""
    seen: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        seen.append(doc["method"])
        results = {"eth_chainId": "0x1", "eth_blockNumber": hex(head())}
        if doc["method"] in results:
            body = {"jsonrpc": "2.0", "id": doc["id"], "result": results[doc["method"]]}
            return web.json_response(body)
        error = {"code": -32603, "message": "internal error"}
        return web.json_response({"jsonrpc": "2.0", "id": doc["id"], "error": error}, status=500)

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site.port}/", seen
    finally:
        await runner.cleanup()


async def test_provider_passing_probes_but_failing_calls_falls_back_to_timed_backoff(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """Anti-flap: probes re-admit a provider once, real traffic fails it again, and from
    then on it waits its timed backoff (60 s) with no probes sent, instead of flapping at
    the probe cadence."""
    fleet = await sim_fleet(["good"])
    async with two_faced_server(fleet["good"].head) as (url, seen):
        chain = chain_with({"twofaced": url}, fleet, extra=RECOVERY.format(ms=100))
        app = await lasso_node(profile_yaml(chain), probes=True)
        ch = app.runtime.profile(None).resolve("ethereum").router.channel("twofaced", "http")
        await drive_until_open(app, ch)
        assert ch.breaker.probe_assisted(monotonic())
        await eventually(lambda: ch.breaker.state(monotonic()) is BreakerState.CLOSED)
        assert ch.breaker.on_probation  # re-admitted on eth_blockNumber answers alone
        await drive_until_open(app, ch)
        now = monotonic()
        assert ch.breaker.probe_assist_disabled and not ch.breaker.probe_assisted(now)
        assert ch.breaker.reopens == 1
        assert 55 < (ch.breaker.retry_after(now) or 0) <= 63  # 30 s doubled, +≤5 % jitter
        sent = len(seen)
        polls = fleet["good"].stats.methods["eth_blockNumber"]
        # The prober keeps working (the idle provider is polled every 100 ms) while the
        # latched circuit gets nothing: ≥ 8 recovery intervals of silence.
        await eventually(lambda: fleet["good"].stats.methods["eth_blockNumber"] >= polls + 16)
        assert len(seen) == sent
        assert ch.breaker.state(monotonic()) is BreakerState.OPEN
        assert circuit_events(app, "twofaced") == [
            ("closed", "open", "failure_threshold_exceeded"),
            ("open", "half_open", "probe_recovery"),
            ("half_open", "closed", "recovered"),
            ("closed", "open", "failure_threshold_exceeded"),
        ]


async def test_shared_instance_uses_the_smallest_recovery_interval(
    sim_fleet: Any, lasso_node: Any, run_prober: Any
) -> None:
    """Two profiles sharing one upstream: its open circuit is probed at the shorter of
    their recovery_probe_interval_ms, and the prober ticks often enough for it."""
    fleet = await sim_fleet(["a"])
    slow = "    monitoring:\n      recovery_probe_interval_ms: 5000"
    fast = "    monitoring:\n      recovery_probe_interval_ms: 300"
    app = await lasso_node(
        profile_yaml(routed_chain_yaml(fleet, extra=slow)),
        profile_yaml(routed_chain_yaml(fleet, extra=fast), slug="other"),
    )
    prober = run_prober(app)
    (group,) = prober._refresh()
    assert len(group.members) == 2
    assert group.recovery_interval == pytest.approx(0.3)
    assert prober._tick_s == pytest.approx(0.075)
