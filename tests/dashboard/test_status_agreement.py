"""The dashboard and the operations API report one status per provider: the router's.

A provider is put into each state (through the simulator and the prober over real
sockets, or through the kernel directly), then the dashboard's data (its JSON snapshot,
the page) is compared with ``/api/chains``, ``/api/metrics/:chain`` and the
``lasso_provider_status`` metric, and the cluster view with the region's own API.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
from collections.abc import AsyncIterator, Callable
from time import monotonic
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from lasso.cluster.snapshot import ChainSnap, NodeSnapshot, ProviderSnap, merge_snapshots
from lasso.cluster.view import chain_document
from lasso.config import ChainConfig, ProviderConfig
from lasso.dashboard import views
from lasso.kernel.breaker import BreakerConfig
from lasso.kernel.classify import Category
from lasso.kernel.clock import FakeClock
from lasso.kernel.router import PROVIDER_STATUSES, BreakerRegistry, ChainRouter
from lasso.probes.health import ProbePolicy
from lasso.probes.heights import HeightProber
from lasso.sim.behavior import Behavior

from support import UNIT, eventually, fleet_chain_yaml, profile_yaml

FAST = ProbePolicy(
    backoff_base_s=0.05,
    backoff_max_s=0.2,
    rate_limit_backoff_s=0.2,
    auth_backoff_s=0.5,
    timeout_s=1.0,
)
MONITORING = "    monitoring:\n      probe_interval_ms: 50\n      lag_alert_threshold_blocks: 3"
MS = 1000 * UNIT  # Playwright timeouts are in milliseconds


# -- the kernel directly: every status, one instant ------------------------------------


KERNEL_STATES = {
    "sick": "misconfigured",
    "open": "circuit_open",
    "limited": "rate_limited",
    "probing": "recovering",
    "flaky": "degraded",
    "behind": "lagging",
    "fine": "healthy",
}


def kernel_router() -> tuple[ChainRouter, float]:
    """A router whose providers are in every status at the returned instant."""
    clock = FakeClock()
    chain = ChainConfig(
        key="ethereum",
        chain_id=1,
        name="Ethereum",
        providers=tuple(
            ProviderConfig(id=p, name=p, url=f"https://{p}.example/rpc") for p in KERNEL_STATES
        ),
        lag_alert_threshold_blocks=3,
    )
    rng = random.Random(1)
    r = ChainRouter(chain, BreakerRegistry(BreakerConfig(), rng), rng, profile="t")

    def http(pid: str) -> Any:
        ch = r.channel(pid, "http")
        assert ch is not None
        return ch

    http("probing").breaker.force_open(clock.now())
    clock.advance(70)  # past its recovery deadline: half-open
    now = clock.now()
    for pid in KERNEL_STATES:
        r.observe_height(pid, 90 if pid == "behind" else 100, now)
    http("sick").probe_status = "misconfigured"
    http("sick").breaker.force_open(now)
    http("open").breaker.force_open(now)
    http("limited").evidence.mark_rate_limited(now + 30)
    r.record_failure(http("flaky"), "eth_call", Category.SERVER_ERROR, 0.01, now)
    return r, now


def test_dashboard_view_carries_the_routers_status_for_every_state() -> None:
    """For each of the seven states, the dashboard's chain view says exactly what
    ``ChainRouter.provider_status`` (and so ``/api/chains``) says at the same instant."""
    r, now = kernel_router()
    snap = r.snapshot(now)
    view = views.chain_view(
        snap, config=r.chain, counters={}, tracker=views.RateTracker(), t=now, profile="t"
    )
    shown = {p["id"]: p["status"] for p in view["providers"]}
    api = {str(p["id"]): p["status"] for p in snap["providers"]}  # type: ignore[attr-defined]
    assert shown == api == {pid: r.provider_status(pid, now) for pid in KERNEL_STATES}
    assert shown == KERNEL_STATES
    assert all(view["status_counts"][s] == 1 for s in PROVIDER_STATUSES)


def test_cluster_status_is_the_most_severe_a_node_reported() -> None:
    """Each node publishes its router's word; a merge (region or cluster) keeps the most
    severe, the document and the dashboard's cluster view carry it, and a node that
    published none (an older version) adds nothing."""

    def node(node_id: str, statuses: dict[str, str | None]) -> NodeSnapshot:
        chain = ChainSnap(profile="t", chain="ethereum", chain_id=1)
        for pid, status in statuses.items():
            chain.providers[pid] = ProviderSnap(id=pid, name=pid, status=status)
        return NodeSnapshot(node_id=node_id, instance="1", chains={chain.key: chain})

    us = node("us", {"a": "healthy", "b": "lagging", "c": None, "d": "rate_limited"})
    eu = node("eu", {"a": "circuit_open", "b": "degraded", "c": None, "d": "recovering"})
    wire = orjson.loads(orjson.dumps(eu.to_wire()))
    wire["chains"][0]["providers"]["b"]["status"] = "a-future-word"
    eu_back = NodeSnapshot.from_wire(wire)
    assert eu_back.chains["t/ethereum"].providers["b"].status is None
    assert NodeSnapshot.from_wire(eu.to_wire()) == eu
    for pair in ([us, eu], [eu, us]):
        merged = merge_snapshots(pair, node_id="cluster").chains["t/ethereum"]
        assert {pid: p.status for pid, p in merged.providers.items()} == {
            "a": "circuit_open",
            "b": "degraded",
            "c": None,
            "d": "rate_limited",
        }
    merged = merge_snapshots([us, eu_back], node_id="cluster").chains["t/ethereum"]
    doc = chain_document(
        merged, {"us": us.chains["t/ethereum"], "eu": eu_back.chains["t/ethereum"]}
    )
    assert {p["id"]: p["by_node"]["eu"]["status"] for p in doc["providers"]} == {
        "a": "circuit_open",
        "b": None,
        "c": None,
        "d": "recovering",
    }
    snap, counters = views.from_cluster_document(doc)
    view = views.chain_view(
        snap, config=None, counters=counters, tracker=views.RateTracker(), t=0.0, profile="t"
    )
    assert {p["id"]: p["status"] for p in view["providers"]} == {
        "a": "circuit_open",
        "b": "lagging",  # eu's word was unknown to this version: us's stands
        "c": views.UNKNOWN,
        "d": "rate_limited",
    }


# -- over real sockets: the simulator, the prober, the HTTP API and the stream ----------

STATES = {
    "down": "circuit_open",
    "busy": "rate_limited",
    "slow": "lagging",
    "locked": "misconfigured",
    "good": "healthy",
}


@contextlib.asynccontextmanager
async def unauthorized() -> AsyncIterator[str]:
    """A real endpoint answering every request with HTTP 401 (a wrong API key)."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=401, body=b'{"error":"invalid api key"}')

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def get_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        assert r.status == 200, (url, r.status)
        return orjson.loads(await r.read())


async def api_statuses(base: str, path: str = "/api/chains") -> dict[str, str]:
    doc = await get_json(base + path)
    providers = doc["chains"][0]["providers"] if "chains" in doc else doc["providers"]
    return {p["id"]: p["status"] for p in providers}


async def metric_statuses(base: str) -> dict[str, str]:
    """The status each provider's ``lasso_provider_status`` series marks with 1."""
    async with aiohttp.ClientSession() as s, s.get(base + "/metrics") as r:
        text = await r.text()
    out: dict[str, str] = {}
    for m in re.finditer(r"^lasso_provider_status\{([^}]*)\} 1\.0$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        out[labels["provider"]] = labels["status"]
    return out


async def stream_snapshot(base: str, query: str = "") -> dict[str, Any]:
    """The first ``snapshot`` event of the dashboard's stream (what the page renders)."""

    async def read() -> dict[str, Any]:
        async with aiohttp.ClientSession() as s, s.get(f"{base}/api/stream{query}") as r:
            assert r.status == 200
            name = ""
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: ") and name == "snapshot":
                    doc: dict[str, Any] = orjson.loads(line[6:])
                    return doc
        raise AssertionError("the stream ended before a snapshot")

    return await asyncio.wait_for(read(), 5 * UNIT)


def dashboard_statuses(doc: dict[str, Any], chain: str = "ethereum") -> dict[str, str]:
    (c,) = [c for c in doc["chains"] if c["chain"] == chain]
    return {p["id"]: p["status"] for p in c["providers"]}


@pytest.fixture
async def run_prober() -> AsyncIterator[Callable[..., HeightProber]]:
    """Factory: run a prober with a fast policy on an app started without probes."""
    tasks: list[asyncio.Task[None]] = []

    def start(app: Any) -> HeightProber:
        prober = HeightProber(
            runtime=app.current_runtime, metrics=app.metrics, rng=app.rng, policy=FAST
        )
        tasks.append(asyncio.get_running_loop().create_task(prober.run()))
        return prober

    yield start
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture
async def node_in_every_state(sim_fleet: Any, lasso_node: Any, run_prober: Any) -> Any:
    """A node whose providers are down, rate-limited, lagging, misconfigured and
    healthy (real sockets), once ``/api/chains`` reports all of that."""
    fleet = await sim_fleet(
        {
            "down": Behavior(),
            "busy": Behavior(rate_limit_rps=0.01, rate_limit_burst=1),
            "slow": Behavior(lag_blocks=50),
            "good": Behavior(),
        }
    )
    async with unauthorized() as locked_url:
        chain = fleet_chain_yaml(fleet, extra=MONITORING)
        chain += f"      - id: locked\n        url: {locked_url}\n        priority: 90\n"
        # A long recovery timeout keeps the open circuit open while the views are compared.
        app = await lasso_node(
            profile_yaml(chain), breaker_config=BreakerConfig(recovery_timeout_s=60.0)
        )
        await fleet["down"].update(down=True)
        run_prober(app)

        async def settled() -> bool:
            return await api_statuses(app.base_url) == STATES

        await eventually(settled, timeout=15, message="every provider in its state")
        yield app


@pytest.mark.integration
async def test_stream_snapshot_and_api_agree_for_every_state(node_in_every_state: Any) -> None:
    """Open circuit, rate limit, lag, bad credentials and health: the dashboard's SSE
    snapshot, ``/api/chains``, ``/api/metrics/:chain`` and ``lasso_provider_status``
    report the same word for every provider."""
    base = node_in_every_state.base_url
    before = await api_statuses(base)
    shown = dashboard_statuses(await stream_snapshot(base, "?profile=public"))
    after = await api_statuses(base)
    assert before == after == STATES  # stable while the dashboard was read
    assert shown == STATES
    assert await api_statuses(base, "/api/metrics/ethereum") == STATES
    assert await metric_statuses(base) == STATES
    snap = await stream_snapshot(base)
    (chain,) = snap["chains"]
    assert {s: n for s, n in chain["status_counts"].items() if n} == dict.fromkeys(
        STATES.values(), 1
    )
    down = next(p for p in chain["providers"] if p["id"] == "down")
    assert down["transports"]["http"]["circuit"] == "open"  # detail beside the word


@pytest.mark.integration
async def test_page_shows_the_apis_status_for_every_state(
    node_in_every_state: Any, browser: Any, console: Any
) -> None:
    """In the browser, every provider's row and topology node carry the API's word, each
    with its own colour and label."""
    base = node_in_every_state.base_url
    page = await browser.new_page(viewport={"width": 1500, "height": 1100})
    log = console(page)
    await page.goto(base + "/dashboard")
    for pid, status in STATES.items():
        row = f'#provider-table tr[data-provider="{pid}"][data-status="{status}"]'
        await page.wait_for_selector(row, timeout=10 * MS)
        await page.wait_for_selector(
            f'svg.topology g.prov[data-provider="{pid}"][data-status="{status}"]'
        )
    assert await api_statuses(base) == STATES
    colours = {}
    for pid, status in STATES.items():
        row = f'#provider-table tr[data-provider="{pid}"]'
        colours[status] = await page.eval_on_selector(
            row + " td .dot", "el => getComputedStyle(el).backgroundColor"
        )
        label = (await page.inner_text(row + " td:first-child")).strip()
        assert label == status.replace("_", " ").replace("rate limited", "rate-limited")
    assert len(set(colours.values())) == len(STATES)  # one colour per status
    assert "rgba(0, 0, 0, 0)" not in colours.values()
    legend = await page.inner_text("#legend")
    assert "misconfigured" in legend and "disconnected" not in legend
    assert log.errors == []
    await page.close()


# -- the cluster view: the region's own API, read through another node ------------------


@pytest.fixture
async def two_regions(sim_fleet: Any) -> AsyncIterator[dict[str, Any]]:
    """Two nodes (regions ``us`` and ``eu``) in one in-process cluster, without probes."""
    from lasso.app import LassoApp, Settings
    from lasso.cluster.transport import MemoryHub
    from lasso.profiles import parse_profile

    fleet = await sim_fleet(["alpha", "bravo", "charlie"])
    hub = MemoryHub()
    apps: dict[str, Any] = {}
    text = profile_yaml(fleet_chain_yaml(fleet, extra=MONITORING))
    try:
        for i, region in enumerate(("us", "eu")):
            profile = parse_profile(text, "public.yml", dict(os.environ))
            settings = Settings(
                node_id=region, probes=False, cluster_interval_s=0.1, instance_id=f"n{i}"
            )
            app = LassoApp({profile.slug: profile}, settings, cluster_exchange=hub.exchange())
            port = await app.start("127.0.0.1", 0)
            await app.start_background()
            app.base_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
            apps[region] = app
        yield apps
    finally:
        for app in apps.values():
            await app.stop(drain_timeout=1.0)


@pytest.mark.integration
async def test_cluster_views_carry_each_regions_api_status(two_regions: dict[str, Any]) -> None:
    """Read from ``us``: the ``eu`` region's dashboard view says what ``eu``'s own
    ``/api/chains`` says, ``us``'s view says what ``us``'s says, and the aggregate (and
    ``?scope=cluster``) shows the most severe of the two."""
    us, eu = two_regions["us"], two_regions["eu"]
    router = eu.runtime.profile(None).resolve("ethereum").router
    now = monotonic()
    router.channel("alpha", "http").breaker.force_open(now)
    router.channel("bravo", "http").evidence.mark_rate_limited(now + 60)
    for pid in ("alpha", "bravo", "charlie"):
        router.observe_height(pid, 200, now)
    eu_expected = {"alpha": "circuit_open", "bravo": "rate_limited", "charlie": "healthy"}
    us_expected = dict.fromkeys(eu_expected, "healthy")

    async def cluster_sees_eu() -> bool:
        doc = await get_json(us.base_url + "/api/metrics/ethereum?node=eu")
        return {p["id"]: p["status"] for p in doc["providers"]} == eu_expected

    await eventually(cluster_sees_eu, timeout=10, message="us sees eu's statuses")
    assert await api_statuses(eu.base_url) == eu_expected
    assert await api_statuses(us.base_url) == us_expected
    region = await stream_snapshot(us.base_url, "?node=eu")
    assert region["scope"] == "node" and "cluster_error" not in region
    assert dashboard_statuses(region) == eu_expected
    own = await stream_snapshot(us.base_url, "?node=us")
    assert dashboard_statuses(own) == us_expected
    aggregate = await stream_snapshot(us.base_url)
    assert aggregate["scope"] == "cluster"
    assert dashboard_statuses(aggregate) == eu_expected  # the most severe of us and eu
    assert await api_statuses(us.base_url, "/api/metrics/ethereum?scope=cluster") == eu_expected
