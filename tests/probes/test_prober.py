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

from support import eventually, fleet_chain_yaml, profile_yaml

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
        prober = HeightProber(app, policy=policy)
        tasks.append(asyncio.get_running_loop().create_task(prober.run()))
        return prober

    yield start
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def status_server(
    status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A real HTTP endpoint answering every request with one fixed response."""
    hits: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(await request.read())
        return web.Response(
            status=status, body=body, headers=headers, content_type="application/json"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site.port}", hits
    finally:
        await runner.cleanup()


def chain_with(extra_providers: dict[str, str], fleet: Any, extra: str = "") -> str:
    """Fleet chain YAML plus providers at arbitrary URLs, listed first (priority 1..)."""
    lines = fleet_chain_yaml(fleet, extra=extra).rstrip("\n").split("\n")
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
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet, extra=monitoring())))
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
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet, extra=monitoring(200))))
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
        profile_yaml(fleet_chain_yaml(fleet, extra=monitoring())),
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
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet, extra=monitoring())))
    caplog.set_level(logging.INFO, logger="lasso.events")
    prober = run_prober(app)
    await eventually(lambda: events(app, "provider.lagging"))
    (event,) = events(app, "provider.lagging")
    assert event["provider"] == "slow" and event["threshold"] == 3
    assert -52 <= event["lag"] <= -48
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
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet, extra=monitoring(60_000))))
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
    text = profile_yaml(fleet_chain_yaml(fleet, extra=monitoring()))
    app = await lasso_node(text)
    prober = run_prober(app)
    await eventually(lambda: (s := prober.state_of("a")) is not None and s.status == "healthy")
    await app.reload({"public": parse_profile(text, "public.yml", {})})
    router = app.runtime.profile(None).resolve("ethereum").router
    await eventually(lambda: router.state.height("a") is not None)
    assert router.channel("a", "http").probe_status == "healthy"
    assert fleet["a"].stats.methods["eth_chainId"] == 1
