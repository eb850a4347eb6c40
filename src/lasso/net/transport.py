"""The upstream transport seam: one JSON-RPC exchange with one provider, and a fake of it.

:class:`UpstreamTransport` is all the request pipeline needs of a provider connection:
send these bytes, give back the answer or raise an :class:`~lasso.net.errors.UpstreamError`
(with ``dispatched`` and ``provider_fault`` set truthfully). Three implementations:

* :class:`~lasso.net.http_client.HttpUpstreamPool` (HTTP/1.1 keep-alive pool);
* :class:`~lasso.net.ws_upstream.UpstreamWs` (one upstream WebSocket, answers matched by id);
* :class:`MemoryTransport`, in memory: a handler function answers each exchange, so
  failover, hedging and cancellation are tested without sockets (httpx's
  ``MockTransport`` habit; ``cluster.transport.MemoryExchange`` is its cluster twin).

Cancelling the awaitable an exchange returns must leave the transport clean: the HTTP pool
closes that connection (a half-read response cannot be reused), the WebSocket removes the
pending entry (a late answer is dropped), the fake counts it in :attr:`MemoryTransport.cancelled`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, NamedTuple, Protocol

import orjson

from lasso.net.errors import UpstreamTimeout
from lasso.net.http_conn import UpstreamResponse

__all__ = ["MemoryRequest", "MemoryTransport", "UpstreamTransport", "error_answer", "result_answer"]


class UpstreamTransport(Protocol):
    """One provider connection, as the request pipeline uses it."""

    def exchange(
        self, body: bytes, tid: bytes, timeout: float, *, replay_safe: bool
    ) -> Awaitable[UpstreamResponse]:
        """Send one encoded JSON-RPC request and return the complete answer.

        Args:
            body: the request, whose ``id`` is ``tid``.
            tid: the request's id as JSON text (a quoted ASCII string).
            timeout: seconds for everything, connecting included.
            replay_safe: the request may be resent on a fresh connection when a reused
                one closes before any response byte.

        Returns:
            The answer (WebSocket answers as status 200, headers empty).

        Raises:
            UpstreamError: no answer; its ``dispatched`` says whether the bytes may have
                reached the provider, ``provider_fault`` whether it is to blame.
        """
        ...


class MemoryRequest(NamedTuple):
    """One exchange as a :class:`MemoryTransport` handler sees it."""

    body: bytes
    tid: bytes
    timeout: float
    replay_safe: bool

    @property
    def doc(self) -> dict[str, Any]:
        """The request parsed (the pipeline always sends an object)."""
        parsed: dict[str, Any] = orjson.loads(self.body)
        return parsed

    @property
    def method(self) -> str:
        return str(self.doc["method"])


Handler = Callable[[MemoryRequest], UpstreamResponse | Awaitable[UpstreamResponse]]


def result_answer(request: MemoryRequest, result: Any, *, status: int = 200) -> UpstreamResponse:
    """A JSON-RPC success answer to ``request`` (its id echoed)."""
    body = b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (request.tid, orjson.dumps(result))
    return UpstreamResponse(status, body, {})


def error_answer(
    request: MemoryRequest,
    code: int,
    message: str,
    *,
    data: Any = None,
    status: int = 200,
    headers: Mapping[bytes, bytes] | None = None,
) -> UpstreamResponse:
    """A JSON-RPC error answer to ``request`` (its id echoed)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    body = b'{"jsonrpc":"2.0","id":%s,"error":%s}' % (request.tid, orjson.dumps(error))
    return UpstreamResponse(status, body, dict(headers or {}))


class MemoryTransport:
    """An :class:`UpstreamTransport` whose answers come from ``handler``.

    The handler gets a :class:`MemoryRequest` and returns an ``UpstreamResponse`` (or an
    awaitable of one, to take its time: await an event the test controls), or raises an
    ``UpstreamError``. The exchange's ``timeout`` is enforced as the real transports do:
    :class:`~lasso.net.errors.UpstreamTimeout` with ``dispatched=True``.

    Args:
        handler: answers each exchange.
        keep: how many recent requests :attr:`requests` keeps.
    """

    def __init__(self, handler: Handler, *, keep: int = 1000) -> None:
        self.handler = handler
        self.requests: deque[MemoryRequest] = deque(maxlen=keep)
        self.calls = 0
        self.cancelled = 0
        self.in_flight = 0

    def exchange(
        self, body: bytes, tid: bytes, timeout: float, *, replay_safe: bool
    ) -> Awaitable[UpstreamResponse]:
        return self._exchange(MemoryRequest(body, tid, timeout, replay_safe))

    async def _exchange(self, request: MemoryRequest) -> UpstreamResponse:
        self.calls += 1
        self.requests.append(request)
        if request.timeout <= 0:
            raise UpstreamTimeout("deadline already passed", dispatched=False)
        self.in_flight += 1
        try:
            answer = self.handler(request)
            if not inspect.isawaitable(answer):
                return answer
            try:
                async with asyncio.timeout(request.timeout):
                    return await answer
            except TimeoutError:
                raise UpstreamTimeout(f"no answer within {request.timeout:g}s") from None
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.in_flight -= 1

    def __repr__(self) -> str:
        return (
            f"<MemoryTransport calls={self.calls} in_flight={self.in_flight} "
            f"cancelled={self.cancelled}>"
        )
