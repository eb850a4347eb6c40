"""A guarded link to Redis, shared by every feature that keeps node-wide state there.

Redis is optional (``LASSO_REDIS_URL``): the response cache and the client rate limits use
it to share state between nodes and workers. It must never make a request wait: when Redis
is slow or gone, callers serve without it (uncached, or with each node's share of a limit).
:class:`RedisLink` wraps one ``redis.asyncio`` client with

* a short per-operation timeout (``op_timeout``) and no client-side retries;
* the kernel's :class:`~lasso.kernel.breaker.CircuitBreaker` (three consecutive failures
  open it; one trial after 1 s, then 2, 4, 8, 16 s while it keeps failing), so while Redis
  is down a call costs one comparison and raises :class:`RedisUnavailable` at once;
* one WARNING log line when the link goes down (with the cause) and one INFO line when it
  is back, never one per request.

Callers catch :class:`RedisUnavailable` and degrade; nothing else escapes :meth:`call`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from time import monotonic
from typing import Any, TypeVar
from urllib.parse import urlsplit

from lasso.kernel.breaker import BreakerConfig, BreakerState, CircuitBreaker

__all__ = [
    "RedisLink",
    "RedisUnavailable",
    "REDIS_BREAKER",
    "check_redis_url",
    "redis_url_from_env",
]

log = logging.getLogger("lasso.redis")

T = TypeVar("T")

REDIS_BREAKER = BreakerConfig(
    failure_threshold=3,
    success_threshold=1,
    recovery_timeout_s=1.0,
    max_recovery_timeout_s=30.0,
    category_thresholds={"network_error": 3, "timeout": 3},
    category_recovery={},
)
"""Three consecutive failures open the link; recovery is tried after 1 s, doubling to 16 s."""

_SCHEMES = ("redis", "rediss", "unix")


class RedisUnavailable(Exception):
    """Redis did not serve this call: the link is down, or the call failed or timed out.

    The caller must carry on without Redis (the request is never failed because of it).
    """


def check_redis_url(url: str) -> str | None:
    """Return what is wrong with a ``LASSO_REDIS_URL`` value, or ``None`` when it is usable."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError on a port out of range or not a number
    except ValueError as exc:
        return f"LASSO_REDIS_URL {url!r} is not a valid URL: {exc}"
    if parts.scheme not in _SCHEMES:
        return f"LASSO_REDIS_URL {url!r} must start with redis://, rediss:// or unix://"
    if parts.scheme != "unix" and not parts.hostname:
        return f"LASSO_REDIS_URL {url!r} names no host"
    if parts.scheme == "unix" and not parts.path:
        return f"LASSO_REDIS_URL {url!r} names no socket path"
    del port
    return None


def redis_url_from_env(env: Mapping[str, str]) -> str | None:
    """``LASSO_REDIS_URL`` when set and non-empty, else ``None``.

    Raises:
        ValueError: the value is set but unusable (the message says why).
    """
    url = env.get("LASSO_REDIS_URL", "").strip()
    if not url:
        return None
    problem = check_redis_url(url)
    if problem is not None:
        raise ValueError(problem)
    return url


def _cause(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class RedisLink:
    """One Redis client for the node, behind a circuit breaker.

    Args:
        url: a ``redis://``, ``rediss://`` or ``unix://`` URL (see :func:`check_redis_url`).
        op_timeout: the most one operation may take, connecting included, in seconds.
        clock: monotonic seconds (injected by tests).
        client: an already built ``redis.asyncio.Redis`` (tests); by default one is made
            from ``url`` with the timeouts above and no retries.
    """

    def __init__(
        self,
        url: str,
        *,
        op_timeout: float = 0.05,
        clock: Callable[[], float] = monotonic,
        client: Any = None,
        rng: random.Random | None = None,
    ) -> None:
        problem = check_redis_url(url)
        if problem is not None:
            raise ValueError(problem)
        self.url = url
        self.op_timeout = op_timeout
        self._clock = clock
        self._breaker = CircuitBreaker(REDIS_BREAKER, rng or random.Random())
        self._client = client if client is not None else _make_client(url, op_timeout)
        self.calls = 0
        self.failures = 0
        self.refused = 0  # calls answered at once because the link was down
        self.last_error: str | None = None
        self._down = False

    @property
    def client(self) -> Any:
        """The ``redis.asyncio.Redis`` client (for scripts registered by callers)."""
        return self._client

    def available(self) -> bool:
        """Whether a call now would be attempted (closed, or a half-open trial is due)."""
        return self._breaker.state(self._clock()) is not BreakerState.OPEN

    @property
    def up(self) -> bool:
        """False from the failure that opened the link until a call succeeds again."""
        return not self._down

    async def call(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``op(client)`` under the timeout and the breaker.

        Raises:
            RedisUnavailable: the link is down, or the operation failed or timed out.
        """
        now = self._clock()
        if not self._breaker.admit(now):
            self.refused += 1
            raise RedisUnavailable(self.last_error or "redis unavailable")
        self.calls += 1
        try:
            async with asyncio.timeout(self.op_timeout):
                result = await op(self._client)
        except asyncio.CancelledError:
            self._breaker.on_neutral(self._clock())
            raise
        except Exception as exc:  # any client, protocol or OS error: Redis did not serve us
            self._failed(exc)
            raise RedisUnavailable(self.last_error or "redis unavailable") from None
        self._breaker.on_success(self._clock())
        if self._down:
            self._down = False
            log.info(
                "redis link recovered",
                extra={"event": "redis.recovered", "redis": _safe_url(self.url)},
            )
        return result

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = _cause(exc)
        category = "timeout" if isinstance(exc, TimeoutError) else "network_error"
        self._breaker.on_failure(self._clock(), category)
        if not self._down and self._breaker.state(self._clock()) is BreakerState.OPEN:
            self._down = True
            log.warning(
                "redis unavailable: %s; serving without it until it is back",
                self.last_error,
                extra={
                    "event": "redis.unavailable",
                    "redis": _safe_url(self.url),
                    "cause": self.last_error,
                },
            )

    async def aclose(self) -> None:
        try:
            await self._client.aclose()
        except Exception:  # closing a dead link must not fail shutdown
            pass

    def __repr__(self) -> str:
        state = self._breaker.state(self._clock())
        return (
            f"<RedisLink {_safe_url(self.url)} {state} calls={self.calls}"
            f" failures={self.failures} refused={self.refused}>"
        )


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    if parts.username:
        netloc = f"{parts.username}:***@{netloc}"
    else:
        netloc = f"***@{netloc}"
    return parts._replace(netloc=netloc).geturl()


def _make_client(url: str, op_timeout: float) -> Any:
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    return Redis.from_url(
        url,
        socket_timeout=op_timeout,
        socket_connect_timeout=op_timeout,
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
        health_check_interval=0,
    )
