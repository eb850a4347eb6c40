"""Tests of WebSocket subscriptions: the pure head follower and real WebSocket clients."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.sim import TOKEN_ADDRESSES, SimProvider, SyntheticChain
from lasso.sim.subscriptions import ChainFollower

UNIT = float(os.environ.get("LASSO_TEST_TIME_UNIT", "1.0"))
START = 1_700_000_000.0
Make = Callable[..., Awaitable[SimProvider]]


def test_follower_announces_each_block_once() -> None:
    """The first advance sets a baseline; later ones announce only the new blocks."""
    follower = ChainFollower(SyntheticChain(1, 2.0, start_time=START))
    assert follower.advance(100) == ([], [])
    assert follower.advance(100) == ([], [])
    assert follower.advance(103) == ([101, 102, 103], [])
    assert follower.advance(101) == ([], [])  # the head went back (more lag): nothing
    assert follower.advance(104) == ([104], [])


def test_follower_reannounces_a_reorg_and_removes_its_logs() -> None:
    """After a reorg the replaced blocks come again and their old logs return as removed."""
    chain = SyntheticChain(1, 2.0, start_time=START)
    head = chain.height(START)
    follower = ChainFollower(chain)
    follower.advance(head - 3)
    follower.advance(head)
    old_logs = chain.logs(head - 1) + chain.logs(head)
    chain.reorg(2, START)
    numbers, removed = follower.advance(head)
    assert numbers == [head - 1, head]
    assert removed == [{**log, "removed": True} for log in old_logs]
    assert follower.advance(head) == ([], [])


class Ws:
    """A WebSocket JSON-RPC client that separates answers from notifications."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0

    async def receive(self) -> Any:
        message = await asyncio.wait_for(self.ws.receive(), 5 * UNIT)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        return orjson.loads(message.data)

    async def call(self, method: str, *params: Any) -> Any:
        self.next_id += 1
        request = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        await self.ws.send_str(orjson.dumps(request).decode())
        answer = await self.receive()
        assert answer["id"] == self.next_id, answer
        return answer


@pytest.fixture
async def connect(session: aiohttp.ClientSession) -> AsyncIterator[Callable[[str], Awaitable[Ws]]]:
    opened: list[aiohttp.ClientWebSocketResponse] = []

    async def open_ws(url: str) -> Ws:
        ws = await session.ws_connect(url)
        opened.append(ws)
        return Ws(ws)

    yield open_ws
    for ws in opened:
        await ws.close()


async def test_new_heads_follow_the_chain(make_provider: Make, connect: Any, clock: Any) -> None:
    """newHeads delivers each new block once, in order, linked by parentHash."""
    provider = await make_provider()
    ws = await connect(provider.ws_url)
    sub = (await ws.call("eth_subscribe", "newHeads"))["result"]
    assert sub.startswith("0x")
    head = provider.head()
    clock.advance(3 * provider.chain.block_time_s)
    provider.notify()
    heads = [await ws.receive() for _ in range(3)]
    assert [h["params"]["subscription"] for h in heads] == [sub] * 3
    blocks = [h["params"]["result"] for h in heads]
    assert [int(b["number"], 16) for b in blocks] == [head + 1, head + 2, head + 3]
    assert blocks[1]["parentHash"] == blocks[0]["hash"]
    assert blocks[0]["parentHash"] == provider.chain.block_hash(head)
    assert "transactions" not in blocks[0]
    assert (await ws.call("eth_blockNumber"))["result"] == hex(head + 3)
    assert (await ws.call("eth_unsubscribe", sub))["result"] is True
    assert (await ws.call("eth_unsubscribe", sub))["result"] is False


async def test_log_subscription_filters_and_reorgs(
    make_provider: Make, connect: Any, clock: Any
) -> None:
    """logs honours the address filter; a reorg re-sends dropped logs with removed: true."""
    provider = await make_provider()
    chain = provider.chain
    ws = await connect(provider.ws_url)
    token = TOKEN_ADDRESSES[1]
    await ws.call("eth_subscribe", "logs", {"address": token})
    heads = (await ws.call("eth_subscribe", "newHeads"))["result"]
    head = provider.head()
    clock.advance(6 * chain.block_time_s)
    provider.notify()
    expected = [
        log for n in range(head + 1, head + 7) for log in chain.logs(n) if log["address"] == token
    ]
    received: list[Any] = []
    new_heads = 0
    while new_heads < 6 or len(received) < len(expected):
        note = (await ws.receive())["params"]
        if note["subscription"] == heads:
            new_heads += 1
        else:
            received.append(note["result"])
    assert received == expected
    old = [log for n in (head + 5, head + 6) for log in chain.logs(n) if log["address"] == token]
    chain.reorg(2, clock())
    provider.notify()
    reheads: list[Any] = []
    removed: list[Any] = []
    added: list[Any] = []
    fresh = [log for n in (head + 5, head + 6) for log in chain.logs(n) if log["address"] == token]
    while len(reheads) < 2 or len(removed) < len(old) or len(added) < len(fresh):
        note = (await ws.receive())["params"]
        if note["subscription"] == heads:
            reheads.append(note["result"])
        elif note["result"]["removed"]:
            removed.append(note["result"])
        else:
            added.append(note["result"])
    assert [int(h["number"], 16) for h in reheads] == [head + 5, head + 6]
    assert reheads[0]["parentHash"] == chain.block_hash(head + 4)
    assert removed == [{**log, "removed": True} for log in old]
    assert added == fresh


async def test_ws_errors_and_faults(make_provider: Make, connect: Any, eventually: Any) -> None:
    """Unknown subscriptions are -32602; rate limits answer -32005; down drops the socket."""
    provider = await make_provider()
    ws = await connect(provider.ws_url)
    assert (await ws.call("eth_subscribe", "bogus"))["error"]["code"] == -32602
    await provider.update(rate_limit_rps=0.1, rate_limit_burst=1)
    assert "result" in await ws.call("eth_chainId")
    assert (await ws.call("eth_chainId"))["error"]["code"] == -32005
    assert provider.stats.ws_connections == 1
    await provider.update(down=True)
    message = await asyncio.wait_for(ws.ws.receive(), 5 * UNIT)
    closed = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert message.type in closed
    await eventually(lambda: provider.stats.ws_connections == 0)
