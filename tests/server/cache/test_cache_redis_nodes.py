"""Nodes sharing one real redis-server: answers shared, an outage served uncached, recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.app import LassoApp, Settings
from lasso.profiles import parse_profile

from redis_support import RedisServer
from support import eventually, fleet_chain_yaml, profile_yaml

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis_node() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Factory: a Lasso node on a free port with LASSO_REDIS_URL set to ``url``."""
    apps: list[LassoApp] = []

    async def start(yaml: str, url: str, node_id: str) -> LassoApp:
        profile = parse_profile(yaml, "public.yml", {})
        app = LassoApp({"public": profile}, Settings(node_id=node_id, probes=False, redis_url=url))
        port = await app.start("127.0.0.1", 0)
        await app.start_background()
        app.rpc_url = f"http://127.0.0.1:{port}/rpc/ethereum"  # type: ignore[attr-defined]
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(drain_timeout=1.0)


async def rpc(session: aiohttp.ClientSession, url: str, method: str, params: list[Any]) -> Any:
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    async with session.post(url, data=body) as r:
        return orjson.loads(await r.read()), r.headers.get("X-Lasso-Cache")


async def test_two_nodes_share_answers_through_redis(
    sim_fleet: Any, redis_node: Any, redis: RedisServer
) -> None:
    """An answer one node fetched is a hit on the other: one upstream call in all."""
    fleet = await sim_fleet(["alpha", "bravo"], block_time_s=60.0)
    yaml = profile_yaml(fleet_chain_yaml(fleet, extra="    block_time_ms: 60000\n"))
    a = await redis_node(yaml, redis.url, "a")
    b = await redis_node(yaml, redis.url, "b")
    async with aiohttp.ClientSession() as s:
        doc, _ = await rpc(s, a.rpc_url, "eth_blockNumber", [])
        await rpc(s, b.rpc_url, "eth_blockNumber", [])
        params = [hex(int(doc["result"], 16) - 300)]
        first, status = await rpc(s, a.rpc_url, "eth_getBlockReceipts", params)
        assert status == "MISS"
        assert a.cache.redis is not None
        await eventually(lambda: a.cache.redis.writes >= 1)
        second, status = await rpc(s, b.rpc_url, "eth_getBlockReceipts", params)
        assert status == "HIT" and second == first
        third, status = await rpc(s, b.rpc_url, "eth_getBlockReceipts", params)
        assert status == "HIT"  # now from b's own memory
    assert sum(p.stats.methods["eth_getBlockReceipts"] for p in fleet) == 1
    assert b.cache.redis is not None and b.cache.redis.hits == 1


async def test_redis_outage_mid_traffic_serves_uncached_and_recovers(
    sim_fleet: Any, redis_node: Any, redis: RedisServer
) -> None:
    """While Redis is down every request is still answered, each within the link's short
    timeout of normal; errors are counted; once Redis is back, answers are shared again."""
    fleet = await sim_fleet(["alpha", "bravo"], block_time_s=60.0)
    yaml = profile_yaml(fleet_chain_yaml(fleet, extra="    block_time_ms: 60000\n"))
    app = await redis_node(yaml, redis.url, "a")
    store = app.cache.redis
    assert store is not None
    failures: list[Any] = []
    slowest = [0.0]
    stop = asyncio.Event()
    head: list[int] = []

    async def client(session: aiohttp.ClientSession, k: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            params = [hex(head[0] - 100 - n * 4 - k)]  # a new final block each time
            t0 = time.monotonic()
            doc, _ = await rpc(session, app.rpc_url, "eth_getBlockTransactionCountByNumber", params)
            slowest[0] = max(slowest[0], time.monotonic() - t0)
            if "result" not in doc:
                failures.append(doc)

    async with aiohttp.ClientSession() as s:
        doc, _ = await rpc(s, app.rpc_url, "eth_blockNumber", [])
        head.append(int(doc["result"], 16))
        clients = [asyncio.create_task(client(s, k)) for k in range(4)]
        await eventually(lambda: store.writes >= 20)
        redis.stop()
        await eventually(lambda: not app.redis.up, timeout=5.0)  # type: ignore[union-attr]
        errors_during = store.errors
        dropped = store.dropped
        await eventually(lambda: store.dropped > dropped + 5)  # traffic went on, uncached
        redis.start()
        writes = store.writes
        await eventually(lambda: store.writes > writes + 5, timeout=10.0)
        assert app.redis is not None and app.redis.up
        stop.set()
        await asyncio.gather(*clients)
        async with s.get(app.rpc_url.replace("/rpc/ethereum", "/metrics")) as r:
            text = await r.text()
    assert not failures
    assert errors_during >= 1
    assert slowest[0] < 2.0  # no request waited on the dead Redis beyond the short timeout
    assert 'lasso_cache_redis_up{node_id="a"} 1.0' in text
    assert "lasso_cache_redis_errors_total" in text
