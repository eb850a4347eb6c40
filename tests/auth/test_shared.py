"""SharedLimiter against a real redis-server: one limit for several processes, leases,
membership, and each process's share while Redis is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from lasso.auth.limiter import LocalLimiter
from lasso.auth.shared import SharedLimiter
from lasso.config import RateLimit
from lasso.net.redis_link import RedisLink

from redis_support import RedisServer
from support import UNIT, eventually

Make = Callable[..., Awaitable[SharedLimiter]]


@pytest.fixture
async def make(redis: RedisServer) -> AsyncIterator[Make]:
    """Factory: a SharedLimiter on its own link (one per simulated process)."""
    made: list[SharedLimiter] = []

    async def build(instance: str, **kw: Any) -> SharedLimiter:
        link = RedisLink(redis.url, op_timeout=0.5 * UNIT)
        limiter = SharedLimiter(link, LocalLimiter(), instance=instance, **kw)
        made.append(limiter)
        return limiter

    yield build
    for limiter in made:
        await limiter.link.aclose()


async def take(limiter: SharedLimiter, bucket: str, limit: RateLimit, cost: int = 1) -> Any:
    result = limiter.take(bucket, limit, cost, time.monotonic())
    if not isinstance(result, tuple):
        result = await result
    return result


async def drive(limiter: SharedLimiter, limit: RateLimit, until: float) -> int:
    """Ask for one token at a time until ``until``; the number granted."""
    admitted = 0
    while time.monotonic() < until:
        granted, _ = await take(limiter, "key:k", limit)
        admitted += granted
        if not granted:
            await asyncio.sleep(0.002)  # the load generator's pacing, not a wait for a result
    return admitted


async def test_two_processes_share_one_bucket(make: Make) -> None:
    """Two limiters driven hard admit about rps·t + burst together, never more."""
    a, b = await make("a"), await make("b")
    limit = RateLimit(rps=40, burst=10)
    start = time.monotonic()
    until = start + 2.0
    got = await asyncio.gather(drive(a, limit, until), drive(b, limit, until))
    elapsed = time.monotonic() - start
    ceiling = limit.rps * elapsed + limit.burst
    assert sum(got) <= ceiling + 1
    assert sum(got) >= 0.85 * ceiling, (got, ceiling)
    assert min(got) > 0.2 * sum(got)  # both got a fair part of it


async def test_leases_save_round_trips(make: Make) -> None:
    """At 1000 rps a lease is 50 tokens: 200 requests cost a handful of Redis calls."""
    a = await make("a")
    limit = RateLimit(rps=1000, burst=1000)
    for _ in range(200):
        assert (await take(a, "key:fast", limit))[0] == 1
    assert a.redis_calls <= 5 and a.lease_size(limit) == 50


async def test_an_empty_bucket_is_refused_locally_until_it_refills(make: Make) -> None:
    """Once Redis says "empty", the process refuses without asking again, with a hint."""
    a = await make("a")
    limit = RateLimit(rps=2, burst=2)
    assert [(await take(a, "key:slow", limit))[0] for _ in range(3)] == [1, 1, 0]
    calls = a.redis_calls
    granted, retry = await take(a, "key:slow", limit)
    assert granted == 0 and 0 < retry <= 0.5 and a.redis_calls == calls


async def test_batch_gets_a_partial_grant(make: Make) -> None:
    """A cost of 8 against a burst of 5 grants 5."""
    a = await make("a")
    granted, retry = await take(a, "key:batch", RateLimit(rps=1, burst=5), cost=8)
    assert granted == 5 and retry > 0


async def test_membership_sets_each_process_share(make: Make) -> None:
    """Two heartbeating processes each own half; one leaving leaves the other whole."""
    a, b = await make("a"), await make("b")
    assert await a.heartbeat() == 1
    assert await b.heartbeat() == 2
    assert await a.heartbeat() == 2
    assert a.fallback.share == 0.5 and a.participants == 2
    await b.leave()
    assert await a.heartbeat() == 1 and a.fallback.share == 1.0


async def test_redis_down_falls_back_to_the_share_and_recovers(
    redis: RedisServer, make: Make
) -> None:
    """Redis stops: the limiter enforces its share (half, of two) at once, without waiting
    on Redis; when Redis returns, the shared bucket is used again."""
    a, b = await make("a"), await make("b")
    await a.heartbeat()
    await b.heartbeat()
    await a.heartbeat()
    limit = RateLimit(rps=1, burst=10)
    redis.stop()
    for _ in range(5):  # the link notices (three failures open it)
        await take(a, "key:down", limit)
    assert a.mode == "fallback"
    a.fallback.named._buckets.clear()
    t0 = time.monotonic()
    grants = [a.take("key:down", limit, 1, time.monotonic()) for _ in range(8)]
    assert all(isinstance(g, tuple) for g in grants)  # answered at once: no Redis wait
    assert sum(g[0] for g in grants) == 5  # half of the burst of 10
    assert time.monotonic() - t0 < 0.05
    redis.start()
    await eventually(lambda: a.link.available(), timeout=5, message="link half-open")

    async def shared_again() -> bool:
        await take(a, "key:up", limit)
        return a.mode == "redis" and a.link.up

    await eventually(shared_again, timeout=10, message="back on Redis")
    assert "redis" in repr(a) and a.describe()["participants"] == 2
