"""One key's limit across two Lasso nodes sharing a real redis-server: the admitted count
over a window, each node's share while Redis is down, and the return to one bucket."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.net.redis_link import RedisLink

from redis_support import RedisServer
from support import eventually, fleet_chain_yaml

pytestmark = pytest.mark.integration

KEY = "lasso_shared-limit-key-00001"
RPS, BURST = 40, 20
BODY = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []})


def profile(fleet: Any) -> str:
    return f"""---
name: Shared
slug: shared
auth:
  keys:
    - id: app
      key: {KEY}
      rps_limit: {RPS}
      burst_limit: {BURST}
---
chains:
{fleet_chain_yaml(fleet)}"""


async def drive(urls: list[str], seconds: float, workers: int = 6) -> dict[str, int]:
    """Hammer every URL with ``workers`` loops each for ``seconds``; admitted per URL."""
    admitted = dict.fromkeys(urls, 0)
    deadline = time.monotonic() + seconds
    headers = {"X-Lasso-Api-Key": KEY}

    async def loop(session: aiohttp.ClientSession, url: str) -> None:
        while time.monotonic() < deadline:
            async with session.post(url, data=BODY, headers=headers) as r:
                await r.read()
                if r.status == 200:
                    admitted[url] += 1
                else:
                    assert r.status == 429
                    await asyncio.sleep(0.005)  # load pacing after a refusal, not a wait

    async with aiohttp.ClientSession() as s:
        await asyncio.gather(*(loop(s, u) for u in urls for _ in range(workers)))
    return admitted


async def test_two_nodes_share_one_limit_and_fall_back_to_halves(
    sim_fleet: Any, lasso_node: Any, redis: RedisServer
) -> None:
    """Shared: rps·t + burst in total (±10 %). Redis down: each node its half, at once.
    Redis back: one bucket again."""
    fleet = await sim_fleet(["alpha"])
    # A generous timeout: a loaded test machine must not look like an outage.
    a = await lasso_node(profile(fleet), node_id="a", redis=RedisLink(redis.url, op_timeout=0.5))
    b = await lasso_node(profile(fleet), node_id="b", redis=RedisLink(redis.url, op_timeout=0.5))
    urls = [f"{n.base_url}/rpc/profile/shared/ethereum" for n in (a, b)]

    async def both_registered() -> bool:
        return a.clients.shared.participants == 2 and b.clients.shared.participants == 2

    await eventually(both_registered, timeout=10, message="both nodes registered")

    t0 = time.monotonic()
    got = await drive(urls, 4.0)
    expected = RPS * (time.monotonic() - t0) + BURST
    total = sum(got.values())
    stats = [n.clients.shared.describe() for n in (a, b)]
    assert 0.9 * expected <= total <= 1.1 * expected, (got, expected, stats)
    assert min(got.values()) >= 0.25 * total  # neither node starves the other

    redis.stop()
    for node in (a, b):  # the links notice the outage (three failed calls)
        await eventually(lambda n=node: n.clients.shared.mode == "fallback", timeout=10)
    t0 = time.monotonic()
    got = await drive(urls, 2.0)
    elapsed = time.monotonic() - t0
    for url in urls:  # each node alone: half the rate plus at most half the burst
        assert got[url] <= (RPS / 2) * elapsed + BURST / 2 + 1, got
        assert got[url] >= 0.8 * (RPS / 2) * elapsed, got

    redis.start()

    async def shared_again() -> bool:
        await drive(urls, 0.2, workers=1)
        return all(n.clients.shared.mode == "redis" and n.redis.up for n in (a, b))

    await eventually(shared_again, timeout=15, message="back on Redis")
    t0 = time.monotonic()
    got = await drive(urls, 2.0)
    expected = RPS * (time.monotonic() - t0) + BURST
    assert sum(got.values()) <= 1.1 * expected, (got, expected)
