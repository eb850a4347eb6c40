"""Token buckets for client rate limits (CONTRACT §9), pure: time comes in as ``now``.

A bucket holds up to ``burst`` tokens and gains ``rps`` tokens per second; a request item
costs one. :func:`take` grants as many of the tokens asked for as the bucket holds (a
batch of ten with four tokens left gets four: the first four items run, the rest are
refused) and says how long until the next whole token. Over any window of ``t`` seconds
a bucket never grants more than ``rps * t + burst`` (the property the tests check with
generated schedules).

:class:`BucketTable` keeps buckets by name with a bound: least recently used first out.
A bucket left alone for ``burst / rps`` seconds is full again, which is what a new bucket
is, so evicting an idle bucket changes nothing; the bound only matters when more clients
than ``capacity`` are active at once (a scan from many addresses), and then the evicted
client merely starts again from a full bucket.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["TokenBucket", "BucketTable", "take", "DEFAULT_CAPACITY"]

DEFAULT_CAPACITY = 100_000
"""Buckets a table keeps (about 100 bytes each)."""


class TokenBucket:
    """Tokens and the time they were counted (seconds, the caller's monotonic clock)."""

    __slots__ = ("tokens", "stamp")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp

    def __repr__(self) -> str:
        return f"<TokenBucket tokens={self.tokens:.3f} stamp={self.stamp:.3f}>"


def take(bucket: TokenBucket, rps: float, burst: float, cost: int, now: float) -> tuple[int, float]:
    """Refill ``bucket`` up to ``now`` and take up to ``cost`` whole tokens.

    Args:
        bucket: the state, updated in place.
        rps: tokens gained per second (> 0).
        burst: the most tokens the bucket holds (≥ 1).
        cost: tokens wanted (≥ 1).
        now: the current time; a time before the bucket's stamp counts as no time passed.

    Returns:
        ``(granted, retry_after_s)``: ``granted`` ≤ ``cost`` tokens were taken; when fewer
        than ``cost``, ``retry_after_s`` is the time until the next whole token, else 0.
    """
    elapsed = now - bucket.stamp
    if elapsed > 0:
        tokens = bucket.tokens + elapsed * rps
        bucket.tokens = burst if tokens > burst else tokens
        bucket.stamp = now
    elif bucket.tokens > burst:  # the limit was lowered (a reload): clamp at once
        bucket.tokens = burst
    have = int(bucket.tokens)
    if have >= cost:
        bucket.tokens -= cost
        return cost, 0.0
    bucket.tokens -= have
    return have, (1.0 - bucket.tokens) / rps


class BucketTable:
    """Buckets by name, at most ``capacity`` of them (least recently used evicted first).

    A new name starts with a full bucket.
    """

    __slots__ = ("capacity", "_buckets", "evicted")

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self.evicted = 0

    def take(self, name: str, rps: float, burst: float, cost: int, now: float) -> tuple[int, float]:
        """:func:`take` from the bucket called ``name`` (made full if it is new)."""
        buckets = self._buckets
        bucket = buckets.get(name)
        if bucket is None:
            if len(buckets) >= self.capacity:
                buckets.popitem(last=False)
                self.evicted += 1
            bucket = buckets[name] = TokenBucket(burst, now)
        else:
            buckets.move_to_end(name)
        return take(bucket, rps, burst, cost, now)

    def peek(self, name: str) -> TokenBucket | None:
        """The bucket called ``name``, if the table holds one (its recency is unchanged)."""
        return self._buckets.get(name)

    def __len__(self) -> int:
        return len(self._buckets)

    def __repr__(self) -> str:
        return f"<BucketTable {len(self._buckets)}/{self.capacity} evicted={self.evicted}>"
