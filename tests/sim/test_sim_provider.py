"""Tests of one simulated provider through real HTTP requests on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.sim import SimProvider, SyntheticChain

UNIT = float(os.environ.get("LASSO_TEST_TIME_UNIT", "1.0"))
CHAIN_ID = {"jsonrpc": "2.0", "id": 7, "method": "eth_chainId", "params": []}
Make = Callable[..., Awaitable[SimProvider]]
Post = Callable[..., Awaitable[Any]]


async def test_serves_the_shared_chain(
    make_provider: Make, rpc: Post, chain: SyntheticChain
) -> None:
    """eth_blockNumber and blocks over HTTP match the chain the provider serves."""
    provider = await make_provider()
    assert provider.port > 0 and provider.url == f"http://127.0.0.1:{provider.port}"
    head = await rpc(provider.url, "eth_blockNumber")
    assert head["result"] == hex(chain.height(provider._clock()))
    block = (await rpc(provider.url, "eth_getBlockByNumber", "latest", False))["result"]
    parent = (await rpc(provider.url, "eth_getBlockByHash", block["parentHash"], True))["result"]
    assert int(parent["number"], 16) == int(block["number"], 16) - 1
    assert parent["transactions"][0]["blockHash"] == block["parentHash"]
    assert (await rpc(provider.url, "eth_chainId"))["result"] == "0x1"


async def test_batches_and_errors_over_http(make_provider: Make, post: Post) -> None:
    """A batch gets an array; unknown methods -32601; bad params -32602; bad JSON -32700."""
    provider = await make_provider()
    nope = {"jsonrpc": "2.0", "id": 8, "method": "eth_nope"}
    bad = {"jsonrpc": "2.0", "id": 9, "method": "eth_getBalance", "params": ["0x12"]}
    batch = [CHAIN_ID, nope, bad]
    reply = await post(provider.url, batch)
    codes = [item.get("error", {}).get("code") for item in reply.json()]
    assert reply.status == 200 and codes == [None, -32601, -32602]
    async with aiohttp.ClientSession() as s, s.post(provider.url, data=b"{nope") as r:
        assert (await r.json())["error"]["code"] == -32700
    notification = await post(provider.url, {"jsonrpc": "2.0", "method": "eth_chainId"})
    assert notification.status == 200 and notification.body == b""


async def test_latency_delays_the_answer(make_provider: Make, post: Post) -> None:
    """latency_ms holds each answer back by about that long."""
    provider = await make_provider(latency_ms=60)
    started = time.monotonic()
    reply = await post(provider.url, CHAIN_ID)
    assert reply.status == 200 and time.monotonic() - started >= 0.055
    await provider.update(latency_ms=0, method_latency_ms={"eth_chainId": 40})
    started = time.monotonic()
    await post(provider.url, CHAIN_ID)
    assert time.monotonic() - started >= 0.035


async def test_error_rate_http500_and_jsonrpc(make_provider: Make, post: Post) -> None:
    """error_rate=1 fails every request: HTTP 500 or HTTP 200 with -32603 per call."""
    provider = await make_provider(error_rate=1.0, error_mode="http500")
    reply = await post(provider.url, CHAIN_ID)
    assert reply.status == 500 and reply.json()["error"]["code"] == -32603
    assert reply.json()["id"] == 7
    await provider.update(error_mode="jsonrpc")
    reply = await post(provider.url, [CHAIN_ID, {**CHAIN_ID, "id": 8}])
    assert reply.status == 200
    assert [(a["id"], a["error"]["code"]) for a in reply.json()] == [(7, -32603), (8, -32603)]
    assert provider.stats.faults["error"] == 2


async def test_rate_limit_answers_429_with_retry_after(make_provider: Make, post: Post) -> None:
    """Over the token bucket: HTTP 429, Retry-After: 1 and a -32005 body; or -32005 in 200."""
    provider = await make_provider(rate_limit_rps=0.5, rate_limit_burst=2)
    assert (await post(provider.url, CHAIN_ID)).status == 200
    assert (await post(provider.url, CHAIN_ID)).status == 200
    limited = await post(provider.url, CHAIN_ID)
    assert limited.status == 429 and limited.headers["Retry-After"] == "1"
    assert limited.json()["error"] == {"code": -32005, "message": "rate limit exceeded"}
    await provider.update(rate_limit_mode="jsonrpc", rate_limit_rps=0.5, rate_limit_burst=1)
    assert (await post(provider.url, CHAIN_ID)).status == 200  # a new bucket starts full
    limited = await post(provider.url, CHAIN_ID)
    assert limited.status == 200 and limited.json()["error"]["code"] == -32005
    assert provider.stats.statuses["429"] == 1 and provider.stats.faults["rate_limited"] == 2


async def test_lag_shows_an_older_head(make_provider: Make, rpc: Post) -> None:
    """A provider with lag_blocks reports an older head and null for newer blocks."""
    fresh = await make_provider("fresh")
    behind = await make_provider("behind", lag_blocks=3)
    head = int((await rpc(fresh.url, "eth_blockNumber"))["result"], 16)
    assert (await rpc(behind.url, "eth_blockNumber"))["result"] == hex(head - 3)
    assert (await rpc(behind.url, "eth_getBlockByNumber", hex(head), False))["result"] is None
    assert (await rpc(fresh.url, "eth_getBlockByNumber", hex(head), False))["result"] is not None
    await behind.update(lag_blocks=0)
    assert (await rpc(behind.url, "eth_blockNumber"))["result"] == hex(head)


async def test_a_growing_lag_stalls_the_head(chain: SyntheticChain, clock: Any) -> None:
    """Raising lag_blocks never moves a served head backwards: the node stalls until the
    chain is that far ahead (block time 2 s)."""
    provider = SimProvider("p", chain, clock=clock, seed=1)  # not started: no ticker
    top = provider.head()
    await provider.update(lag_blocks=5)
    assert provider.head() == top
    clock.advance(6 * 2.0)
    assert provider.head() == top + 1


async def test_hang_never_answers(make_provider: Make, eventually: Any) -> None:
    """With hang the request is accepted but never answered: the client times out."""
    provider = await make_provider(hang=True)
    timeout = aiohttp.ClientTimeout(total=0.3 * UNIT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with pytest.raises(asyncio.TimeoutError):
            async with session.post(provider.url, json=CHAIN_ID) as response:
                await response.read()
    assert provider.stats.faults["hung"] == 1
    await provider.update(hang=False)
    async with aiohttp.ClientSession() as session, session.post(provider.url, json=CHAIN_ID) as r:
        assert (await r.json())["result"] == "0x1"


async def test_hung_request_is_released_as_a_disconnect(
    make_provider: Make, eventually: Any
) -> None:
    """Turning hang off closes the connection of a request that was hanging."""
    provider = await make_provider(hang=True)
    async with aiohttp.ClientSession() as session:
        pending = asyncio.create_task(session.post(provider.url, json=CHAIN_ID))
        await eventually(lambda: provider.stats.faults["hung"] == 1)
        await provider.update(hang=False)
        with pytest.raises(aiohttp.ClientError):
            await pending


async def test_down_refuses_connections_then_comes_back(make_provider: Make, post: Post) -> None:
    """down closes the port (connection refused); clearing it reopens the same port."""
    provider = await make_provider()
    port = provider.port
    async with aiohttp.ClientSession() as keep_alive:
        async with keep_alive.post(provider.url, json=CHAIN_ID) as r:
            assert r.status == 200
        await provider.update(down=True)
        assert not provider.listening
        with pytest.raises(aiohttp.ClientConnectorError):
            async with aiohttp.ClientSession() as fresh, fresh.post(provider.url, json=CHAIN_ID):
                pass
        with pytest.raises(aiohttp.ClientError):  # the open keep-alive connection is reset
            async with keep_alive.post(provider.url, json=CHAIN_ID) as r:
                await r.read()
    await provider.update(down=False)
    assert provider.port == port and provider.listening
    assert (await post(provider.url, CHAIN_ID)).json()["result"] == "0x1"


async def test_drop_closes_without_an_answer(make_provider: Make, post: Post) -> None:
    """drop resets the connection after reading the request; no response arrives."""
    provider = await make_provider(drop=True, latency_ms=5)
    async with aiohttp.ClientSession() as session:
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            async with session.post(provider.url, json=CHAIN_ID) as r:
                await r.read()
    assert provider.stats.faults["dropped"] == 1 and provider.stats.statuses["dropped"] == 1
    await provider.update(drop=False)
    assert (await post(provider.url, CHAIN_ID)).status == 200


async def test_malformed_bodies_are_not_json(make_provider: Make, post: Post) -> None:
    """malformed answers 200 with truncated JSON, an HTML page or plain garbage."""
    provider = await make_provider(malformed=True)
    bodies = []
    for _ in range(3):
        reply = await post(provider.url, CHAIN_ID)
        assert reply.status == 200
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(reply.body)
        bodies.append(reply.body)
    assert len(set(bodies)) == 3 and bodies[0] and b"502" in bodies[1]


async def test_get_logs_range_limit_over_http(make_provider: Make, rpc: Post) -> None:
    """max_block_range rejects wider eth_getLogs ranges; narrower ones succeed."""
    provider = await make_provider(max_block_range=500)
    head = provider.head()
    wide = {"fromBlock": hex(head - 500), "toBlock": hex(head)}
    answer = await rpc(provider.url, "eth_getLogs", wide)
    assert answer["error"] == {"code": -32000, "message": "query exceeds max block range 500"}
    narrow = await rpc(provider.url, "eth_getLogs", {"fromBlock": hex(head - 10)})
    assert narrow["result"] and all(log["removed"] is False for log in narrow["result"])


async def test_archival_and_unsupported_methods(make_provider: Make, rpc: Post) -> None:
    """A pruned provider fails old state with missing trie node; unsupported methods -32601."""
    provider = await make_provider(archival=False, unsupported_methods=["eth_getBlockReceipts"])
    old = await rpc(provider.url, "eth_getBalance", "0x" + "11" * 20, "0x1")
    assert old["error"]["code"] == -32000 and "missing trie node" in old["error"]["message"]
    recent = await rpc(provider.url, "eth_getBalance", "0x" + "11" * 20, "latest")
    assert recent["result"].startswith("0x")
    receipts = await rpc(provider.url, "eth_getBlockReceipts", "latest")
    assert receipts["error"]["code"] == -32601


async def test_stats_count_requests_methods_and_statuses(make_provider: Make, post: Post) -> None:
    """Counters track requests, calls per method, statuses and error codes; reset zeroes them."""
    provider = await make_provider()
    await post(provider.url, CHAIN_ID)
    await post(provider.url, [CHAIN_ID, {"jsonrpc": "2.0", "id": 2, "method": "eth_nope"}])
    await provider.update(error_rate=1.0, error_mode="http500")
    await post(provider.url, CHAIN_ID)
    stats = provider.stats.to_dict()
    assert stats["requests"] == 3 and stats["calls"] == 4
    assert stats["methods"] == {"eth_chainId": 3, "eth_nope": 1}
    assert stats["statuses"] == {"200": 2, "500": 1}
    assert stats["rpc_errors"] == {"-32601": 1, "-32603": 1}
    provider.reset_stats()
    assert provider.stats.requests == 0 and not provider.stats.methods


async def test_batch_size_limit(make_provider: Make, post: Post) -> None:
    """max_batch_size rejects larger batches with a single -32600 error."""
    provider = await make_provider(max_batch_size=2)
    reply = await post(provider.url, [CHAIN_ID] * 3)
    assert reply.json()["error"]["code"] == -32600
    assert len((await post(provider.url, [CHAIN_ID] * 2)).json()) == 2


async def test_update_rejects_bad_fields_and_answer_works_in_process(make_provider: Make) -> None:
    """update() raises ValueError and changes nothing; answer() serves without a socket."""
    provider = await make_provider(latency_ms=5)
    with pytest.raises(ValueError):
        await provider.update(latency_ms=-1)
    with pytest.raises(ValueError):
        await provider.update(colour="red")
    assert provider.behavior.latency_ms == 5
    assert orjson.loads(provider.answer(orjson.dumps(CHAIN_ID)))["result"] == "0x1"
    assert provider.answer(b'{"jsonrpc":"2.0","method":"eth_chainId"}') == b""
    assert "SimProvider p listening" in repr(provider)


async def test_starting_down_and_stopping_twice(chain: SyntheticChain) -> None:
    """A provider created down learns its port but refuses; stop() is idempotent."""
    from lasso.sim import Behavior

    provider = SimProvider("d", chain, Behavior(down=True))
    await provider.start()
    try:
        assert provider.port > 0 and not provider.listening
        with pytest.raises(aiohttp.ClientConnectorError):
            async with aiohttp.ClientSession() as s, s.post(provider.url, json=CHAIN_ID):
                pass
        await provider.update(down=False)
        async with aiohttp.ClientSession() as s, s.post(provider.url, json=CHAIN_ID) as r:
            assert r.status == 200
    finally:
        await provider.stop()
        await provider.stop()
