"""Request coalescing: identical reads in flight share one call (CONTRACT §7).

The first caller of a key (the leader) runs the call itself; callers that arrive while
it is in flight (followers) wait for its value through :func:`asyncio.shield`, so a
follower that goes away (its client disconnected, its task was cancelled) cancels
nothing. If the leader itself is cancelled, its followers are not: one of them runs the
call again and the others follow it (the next leader). An exception from the call
reaches every follower, as it reaches the leader.

Nothing is kept once the call is over: a caller arriving after the leader finished
makes a new call (the response cache, not this, serves repeats).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")

_GONE: Any = object()  # the leader was cancelled: followers run the call again


class _Flight:
    """A call in flight. Its future is made by the first follower: a call nobody
    joins (most of them) costs no future."""

    __slots__ = ("future", "waiters")

    def __init__(self) -> None:
        self.future: asyncio.Future[Any] | None = None
        self.waiters = 0

    def joined(self) -> asyncio.Future[Any]:
        future = self.future
        if future is None:
            future = self.future = asyncio.get_running_loop().create_future()
        return future


class Coalescer(Generic[T]):
    """Calls in flight by key.

    Attributes:
        followers: calls answered by another caller's call.
    """

    __slots__ = ("_flights", "followers")

    def __init__(self) -> None:
        self._flights: dict[bytes, _Flight] = {}
        self.followers = 0

    def __len__(self) -> int:
        return len(self._flights)

    def waiters(self, key: bytes) -> int:
        """Followers waiting on the call in flight for ``key`` (0 when none is)."""
        flight = self._flights.get(key)
        return 0 if flight is None else flight.waiters

    def run(
        self, key: bytes, call: Callable[[], Awaitable[T]]
    ) -> Coroutine[Any, Any, tuple[T, bool]]:
        """Run ``call()`` unless a call for ``key`` is in flight; then share its value.

        Returns:
            A coroutine of the value and whether it came from another caller's call.

        Raises:
            Whatever ``call()`` raised (for followers too), and CancelledError when this
            caller is cancelled.
        """
        return self.run_then(key, call, _pair)

    async def run_then(
        self, key: bytes, call: Callable[[], Awaitable[T]], then: Callable[[T, bool], R]
    ) -> R:
        """:meth:`run`, answering ``then(value, shared)`` (called once the value is there,
        not on an exception): a caller that only maps or counts the value needs no
        coroutine of its own around this one (the hot path)."""
        flight = self._flights.get(key)
        while flight is not None:
            flight.waiters += 1
            try:
                value = await asyncio.shield(flight.joined())
            finally:
                flight.waiters -= 1
            if value is not _GONE:
                self.followers += 1
                return then(value, True)
            flight = self._flights.get(key)  # the leader went away: lead or follow anew
        flight = _Flight()
        flights = self._flights
        flights[key] = flight
        try:
            value = await call()
        except BaseException as exc:
            if flights.get(key) is flight:
                del flights[key]
            future = flight.future
            if future is not None:
                if isinstance(exc, asyncio.CancelledError) or not flight.waiters:
                    future.set_result(_GONE)
                else:
                    future.set_exception(exc)
            raise
        if flights.get(key) is flight:
            del flights[key]
        if flight.future is not None:
            flight.future.set_result(value)
        return then(value, False)

    def __repr__(self) -> str:
        return f"<Coalescer in_flight={len(self._flights)} followers={self.followers}>"


def _pair(value: Any, shared: bool) -> tuple[Any, bool]:
    return value, shared
