"""Client rate limits kept in this process: :class:`LocalLimiter`.

Every limiter answers ``take(bucket, limit, cost, now)`` with ``(granted, retry_after_s)``
(see :func:`lasso.kernel.ratelimit.take`), or with an awaitable of it when it has to ask
another process first (:class:`lasso.auth.shared.SharedLimiter`).

``share`` scales every limit: a process that enforces a limit alone while others enforce
the same one (the workers of ``lasso serve --workers N`` without Redis, or every process
of a cluster while Redis is unreachable) admits ``share`` of it, ``1 / N`` for ``N``
processes, so that together they admit about the configured rate. Buckets of keys and JWT
subjects and buckets of client addresses live in two separate tables, so a scan from many
addresses can never push a key's bucket out.
"""

from __future__ import annotations

from collections.abc import Awaitable

from lasso.config import RateLimit
from lasso.kernel.ratelimit import DEFAULT_CAPACITY, BucketTable

__all__ = ["ADDRESS_PREFIX", "Grant", "LocalLimiter", "is_grant"]

Grant = tuple[int, float]
"""``(granted, retry_after_s)``."""

ADDRESS_PREFIX = "ip:"
"""Buckets named ``ip:<address>`` are kept in the address table."""


class LocalLimiter:
    """Token buckets in memory, scaled by ``share``.

    Args:
        capacity: buckets per table (keys and subjects; addresses), least recently used
            evicted first.
        share: the fraction of each limit this process admits (0 < share ≤ 1).
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, share: float = 1.0) -> None:
        self.named = BucketTable(capacity)
        self.addresses = BucketTable(capacity)
        self.share = share

    def take(self, bucket: str, limit: RateLimit, cost: int, now: float) -> Grant:
        table = self.addresses if bucket.startswith(ADDRESS_PREFIX) else self.named
        share = self.share
        if share == 1.0:
            return table.take(bucket, limit.rps, limit.burst, cost, now)
        burst = limit.burst * share
        return table.take(bucket, limit.rps * share, burst if burst > 1.0 else 1.0, cost, now)

    def __repr__(self) -> str:
        return f"<LocalLimiter share={self.share:.3f} {self.named!r} {self.addresses!r}>"


def is_grant(result: Grant | Awaitable[Grant]) -> bool:
    """Whether a limiter answered at once (a tuple) rather than with an awaitable."""
    return type(result) is tuple
