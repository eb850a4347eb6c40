"""One rate limit across every node and worker: buckets in Redis (``LASSO_REDIS_URL``).

The bucket of each client lives in Redis (a hash ``lasso:rl:<profile>:<bucket>`` with
its tokens and the time they were counted, expiring once it would be full again) and is
changed only by :data:`TAKE_LUA`, one atomic script that refills it by Redis's own clock
(``TIME``, so node clocks do not matter) and takes tokens. Asking Redis for every request
would cost every request a round trip, so each process takes tokens in **leases**: up to
``lease_window_s`` of the limit at once (at least one token, at most the burst), spends
them locally, and asks again when they run out. Tokens are only ever spent once, so the
cluster never admits more than ``rps * t + burst``; a lease left unspent for
``lease_ttl_s`` is dropped (a process that stops receiving traffic wastes at most one
lease). When the script finds the bucket empty it says how long until a lease's worth has
refilled; until then the process refuses that client locally, without asking again.

Redis unreachable (the shared :class:`~lasso.net.redis_link.RedisLink` is down, or a call
fails or times out): the process falls back to its :class:`~lasso.auth.limiter.LocalLimiter`
scaled to its **share**, ``1 / participants``. Every process registers itself in the
sorted set ``lasso:rl:members`` every ``heartbeat_s`` (score: Redis time) and drops
members not seen for ``member_ttl_s``; the count it reads back is the participants
figure, kept as last known while Redis is away. Before the first heartbeat answers, the
share is the one the process was given (``1 / workers`` of this node). When Redis is back,
leases resume; the fallback buckets are simply left behind.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from time import monotonic
from typing import Any

from lasso.auth.limiter import Grant, LocalLimiter
from lasso.config import RateLimit
from lasso.kernel.ratelimit import DEFAULT_CAPACITY
from lasso.net.redis_link import RedisLink, RedisUnavailable

__all__ = ["MEMBERS_LUA", "TAKE_LUA", "SharedLimiter"]

log = logging.getLogger("lasso.auth")

TAKE_LUA = """
-- KEYS[1] bucket; ARGV: rps, burst, want, refill target (tokens to wait for when short)
local rps = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local target = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'n', 't')
local tokens = burst
if state[1] then
  tokens = tonumber(state[1])
  local elapsed = now - tonumber(state[2])
  if elapsed > 0 then
    tokens = tokens + elapsed * rps / 1000000
  else
    now = tonumber(state[2])
  end
  if tokens > burst then tokens = burst end
end
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'n', tostring(tokens), 't', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rps) + 1000)
local wait_ms = 0
if granted < want then
  wait_ms = math.ceil((math.min(target, burst) - tokens) * 1000 / rps)
end
return {granted, wait_ms}
"""

MEMBERS_LUA = """
-- KEYS[1] members; ARGV: member id, ttl ms, 1 to join / 0 to leave
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
else
  redis.call('ZREM', KEYS[1], ARGV[1])
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[1], ttl * 2)
return redis.call('ZCARD', KEYS[1])
"""


class _Lease:
    __slots__ = ("tokens", "expires", "refused_until", "fetching")

    def __init__(self) -> None:
        self.tokens = 0
        self.expires = 0.0
        self.refused_until = 0.0
        self.fetching: asyncio.Future[None] | None = None


class SharedLimiter:
    """Buckets in Redis, spent through local leases; the local share when Redis is away.

    Args:
        link: the node's Redis link.
        fallback: this process's limiter, used (scaled to the share) while Redis is away.
        instance: this process's member id (unique in the cluster).
        prefix: Redis key prefix.
        lease_window_s: a lease is this many seconds of the limit (at least 1 token, at
            most the burst).
        lease_ttl_s: unspent leased tokens are dropped after this long.
        heartbeat_s, member_ttl_s: membership refresh and expiry.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        link: RedisLink,
        fallback: LocalLimiter,
        *,
        instance: str,
        prefix: str = "lasso:rl:",
        lease_window_s: float = 0.05,
        lease_ttl_s: float = 1.0,
        heartbeat_s: float = 2.0,
        member_ttl_s: float = 10.0,
        capacity: int = DEFAULT_CAPACITY,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.link = link
        self.fallback = fallback
        self.instance = instance
        self.prefix = prefix
        self.lease_window_s = lease_window_s
        self.lease_ttl_s = lease_ttl_s
        self.heartbeat_s = heartbeat_s
        self.member_ttl_s = member_ttl_s
        self.capacity = capacity
        self._clock = clock
        self._leases: OrderedDict[str, _Lease] = OrderedDict()
        self._take = link.client.register_script(TAKE_LUA)
        self._members = link.client.register_script(MEMBERS_LUA)
        self.participants: int | None = None  # last count read from Redis
        self.redis_calls = 0
        self.fallback_grants = 0

    # -- taking tokens ------------------------------------------------------------------
    def take(
        self, bucket: str, limit: RateLimit, cost: int, now: float
    ) -> Grant | Awaitable[Grant]:
        """Tokens from the local lease when it covers ``cost``; else an awaitable that
        asks Redis (or the fallback, when Redis is away)."""
        if not self.link.available():
            self.fallback_grants += 1
            return self.fallback.take(bucket, limit, cost, now)
        lease = self._leases.get(bucket)
        if lease is not None:
            if lease.expires <= now:
                lease.tokens = 0
            if lease.tokens >= cost:
                lease.tokens -= cost
                return cost, 0.0
            if lease.refused_until > now and lease.fetching is None:
                granted = lease.tokens
                lease.tokens = 0
                return granted, lease.refused_until - now
        return self._fetch(bucket, limit, cost)

    def lease_size(self, limit: RateLimit) -> int:
        size = math.ceil(limit.rps * self.lease_window_s)
        return max(1, min(limit.burst, size))

    def _lease(self, bucket: str) -> _Lease:
        leases = self._leases
        lease = leases.get(bucket)
        if lease is None:
            if len(leases) >= self.capacity:
                for name, old in leases.items():  # the oldest lease nobody is fetching
                    if old.fetching is None:
                        del leases[name]
                        break
            lease = leases[bucket] = _Lease()
        else:
            leases.move_to_end(bucket)
        return lease

    async def _fetch(self, bucket: str, limit: RateLimit, cost: int) -> Grant:
        lease = self._lease(bucket)
        while lease.fetching is not None:  # another request of this client is asking
            await asyncio.shield(lease.fetching)
            now = self._clock()
            if lease.tokens >= cost and lease.expires > now:
                lease.tokens -= cost
                return cost, 0.0
            if lease.refused_until > now:
                granted = lease.tokens if lease.expires > now else 0
                lease.tokens -= granted
                return granted, lease.refused_until - now
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lease.fetching = done
        try:
            return await self._ask(bucket, lease, limit, cost)
        finally:
            lease.fetching = None
            done.set_result(None)

    async def _ask(self, bucket: str, lease: _Lease, limit: RateLimit, cost: int) -> Grant:
        now = self._clock()
        have = lease.tokens if lease.expires > now else 0
        size = self.lease_size(limit)
        want = max(cost - have, size)
        key = self.prefix + bucket
        args = (limit.rps, limit.burst, want, size)
        self.redis_calls += 1
        try:
            granted, wait_ms = await self.link.call(lambda _c: self._take(keys=[key], args=args))
        except RedisUnavailable:
            self.fallback_grants += 1
            return self.fallback.take(bucket, limit, cost, self._clock())
        now = self._clock()
        have += int(granted)
        lease.expires = now + self.lease_ttl_s
        if int(granted) < want:
            lease.refused_until = now + int(wait_ms) / 1000
        give = cost if have >= cost else have
        lease.tokens = have - give
        if give == cost:
            return give, 0.0
        return give, max(lease.refused_until - now, 0.001)

    # -- membership ---------------------------------------------------------------------
    async def heartbeat(self, join: bool = True) -> int | None:
        """Register (or, ``join=False``, withdraw) this process; returns the member count."""
        key = self.prefix + "members"
        args = (self.instance, int(self.member_ttl_s * 1000), 1 if join else 0)
        try:
            count = int(await self.link.call(lambda _c: self._members(keys=[key], args=args)))
        except RedisUnavailable:
            return None
        if join and count >= 1:
            if count != self.participants:
                log.info(
                    "rate-limit participants: %d",
                    count,
                    extra={"event": "auth.participants", "participants": count},
                )
            self.participants = count
            self.fallback.share = 1.0 / count
        return count

    async def run(self) -> None:
        """Heartbeat every ``heartbeat_s`` until cancelled."""
        while True:
            await self.heartbeat()
            await asyncio.sleep(self.heartbeat_s)

    async def leave(self) -> None:
        await self.heartbeat(join=False)

    @property
    def mode(self) -> str:
        """``redis`` while the link serves, ``fallback`` while it is down."""
        return "redis" if self.link.available() else "fallback"

    def describe(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "participants": self.participants,
            "share": round(self.fallback.share, 4),
            "leases": len(self._leases),
            "redis_calls": self.redis_calls,
            "fallback_grants": self.fallback_grants,
        }

    def __repr__(self) -> str:
        return (
            f"<SharedLimiter {self.mode} participants={self.participants}"
            f" leases={len(self._leases)} redis_calls={self.redis_calls}>"
        )
