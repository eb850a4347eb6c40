"""The upstream transport seam's in-memory twin: answers, failures, timeouts, cancellation."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from lasso.net.errors import UpstreamConnectError, UpstreamTimeout
from lasso.net.http_conn import UpstreamResponse
from lasso.net.transport import (
    MemoryRequest,
    MemoryTransport,
    UpstreamTransport,
    error_answer,
    result_answer,
)

BODY = b'{"jsonrpc":"2.0","id":"lasso-x-1","method":"eth_chainId","params":[]}'
TID = b'"lasso-x-1"'


async def test_answers_come_from_the_handler() -> None:
    """A plain handler's answer is returned; the request is kept for inspection."""
    t = MemoryTransport(lambda req: result_answer(req, "0x1"))
    seam: UpstreamTransport = t
    resp = await seam.exchange(BODY, TID, 1.0, replay_safe=True)
    assert orjson.loads(resp.body) == {"jsonrpc": "2.0", "id": "lasso-x-1", "result": "0x1"}
    assert t.calls == 1 and t.requests[0].method == "eth_chainId"
    assert t.requests[0] == MemoryRequest(BODY, TID, 1.0, True)


async def test_error_answer_shape() -> None:
    """error_answer echoes the id, carries data, status and headers."""
    req = MemoryRequest(BODY, TID, 1.0, True)
    headers = {b"retry-after": b"2"}
    resp = error_answer(req, -32005, "slow", data={"retry_after": 2}, status=429, headers=headers)
    assert resp.status == 429 and resp.headers == {b"retry-after": b"2"}
    assert orjson.loads(resp.body)["error"] == {
        "code": -32005,
        "message": "slow",
        "data": {"retry_after": 2},
    }


async def test_handler_errors_propagate() -> None:
    """An UpstreamError raised by the handler is the exchange's failure."""

    def refuse(req: MemoryRequest) -> UpstreamResponse:
        raise UpstreamConnectError("refused")

    with pytest.raises(UpstreamConnectError) as info:
        await MemoryTransport(refuse).exchange(BODY, TID, 1.0, replay_safe=True)
    assert not info.value.dispatched


async def test_timeout_is_enforced_like_a_real_transport() -> None:
    """A slow handler times out as dispatched; a spent deadline sends nothing."""

    async def never(req: MemoryRequest) -> UpstreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    t = MemoryTransport(never)
    with pytest.raises(UpstreamTimeout) as late:
        await t.exchange(BODY, TID, 0.01, replay_safe=True)
    assert late.value.dispatched and t.in_flight == 0
    with pytest.raises(UpstreamTimeout) as spent:
        await t.exchange(BODY, TID, 0.0, replay_safe=True)
    assert not spent.value.dispatched


async def test_cancellation_is_counted() -> None:
    """Cancelling an exchange in flight is counted and leaves nothing in flight."""
    gate = asyncio.Event()

    async def held(req: MemoryRequest) -> UpstreamResponse:
        await gate.wait()
        return result_answer(req, None)

    t = MemoryTransport(held, keep=2)
    task = asyncio.ensure_future(t.exchange(BODY, TID, 5.0, replay_safe=False))
    for _ in range(10):
        await asyncio.sleep(0)
    assert t.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (t.cancelled, t.in_flight) == (1, 0)
    assert "cancelled=1" in repr(t)
    for _ in range(3):
        t.handler = lambda req: result_answer(req, 1)
        await t.exchange(BODY, TID, 1.0, replay_safe=True)
    assert len(t.requests) == 2  # bounded
