"""JSON-RPC batches over real sockets: the 1000-item default, concurrency bounds, order,
and invalid items that must not vanish (CONTRACT §3, JSON-RPC 2.0 §6)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from server_rpc_support import ScriptedUpstream, chain_yaml
from support import eventually, profile_yaml

pytestmark = pytest.mark.integration


def call(i: Any, method: str = "eth_getBalance") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": method, "params": ["0x" + "00" * 20, "latest"]}


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    up = await ScriptedUpstream().start()
    yield up
    await up.stop()


async def post(url: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, data=orjson.dumps(body)) as r:
        content = await r.read()
        return r.status, (orjson.loads(content) if content else None)


async def test_a_1000_item_batch_is_answered_in_order(
    upstream: ScriptedUpstream, lasso_node: Any
) -> None:
    """viem's default batchSize (1000) is served, every answer in request order."""
    app = await lasso_node(profile_yaml(chain_yaml(upstream)))
    status, doc = await post(app.base_url + "/rpc/ethereum", [call(i) for i in range(1000)])
    assert status == 200
    assert [d["id"] for d in doc] == list(range(1000))
    assert all(d["result"] == "0x2a" for d in doc)
    status, doc = await post(app.base_url + "/rpc/ethereum", [call(i) for i in range(1001)])
    assert (
        status == 400 and doc["error"]["code"] == -32600 and "max 1000" in doc["error"]["message"]
    )


async def test_max_batch_is_a_setting(upstream: ScriptedUpstream, lasso_node: Any) -> None:
    """Settings.max_batch moves the cap, over HTTP and WebSocket."""
    from lasso.app import LassoApp, Settings
    from lasso.profiles import parse_profile

    prof = parse_profile(profile_yaml(chain_yaml(upstream)), "public.yml", {})
    app = LassoApp({"public": prof}, Settings(probes=False, max_batch=10))
    port = await app.start("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{port}/rpc/ethereum"
        assert (await post(url, [call(i) for i in range(10)]))[0] == 200
        status, doc = await post(url, [call(i) for i in range(11)])
        assert status == 400 and "max 10" in doc["error"]["message"]
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws/rpc/ethereum") as ws:
            await ws.send(orjson.dumps([call(i) for i in range(11)]).decode())
            assert orjson.loads(await ws.recv())["error"]["code"] == -32600
    finally:
        await app.stop(drain_timeout=1.0)


async def test_one_batch_runs_at_most_batch_concurrency_items(
    upstream: ScriptedUpstream, lasso_node: Any
) -> None:
    """A 100-item batch keeps exactly 32 calls in flight until they answer."""
    upstream.held.add("eth_getBalance")
    app = await lasso_node(profile_yaml(chain_yaml(upstream)))
    task = asyncio.create_task(post(app.base_url + "/rpc/ethereum", [call(i) for i in range(100)]))
    await eventually(lambda: upstream.inflight == 32, message="32 batch items in flight")
    assert upstream.calls["eth_getBalance"] == 32  # none beyond the bound was sent
    upstream.release()
    status, doc = await task
    assert status == 200 and [d["id"] for d in doc] == list(range(100))
    assert upstream.peak == 32


async def test_batches_share_a_node_wide_bound_and_never_block_single_calls(
    upstream: ScriptedUpstream,
) -> None:
    """Two big batches together stay under the node-wide bound; a single call still
    gets through at once while they wait."""
    from lasso.app import LassoApp, Settings
    from lasso.profiles import parse_profile

    upstream.held.add("eth_getBalance")
    prof = parse_profile(profile_yaml(chain_yaml(upstream)), "public.yml", {})
    settings = Settings(probes=False, batch_concurrency=32, batch_node_concurrency=40)
    app = LassoApp({"public": prof}, settings)
    port = await app.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/rpc/ethereum"
    try:
        batches = [
            asyncio.create_task(post(url, [call(f"{b}-{i}") for i in range(60)])) for b in "ab"
        ]
        await eventually(lambda: upstream.inflight == 40, message="40 batch items in flight")
        assert upstream.calls["eth_getBalance"] == 40
        status, doc = await asyncio.wait_for(post(url, call("single", "eth_blockNumber")), 5)
        assert status == 200 and doc["result"] == "0x2a"
        upstream.release()
        for b, task in zip("ab", batches, strict=True):
            status, doc = await task
            assert [d["id"] for d in doc] == [f"{b}-{i}" for i in range(60)]
        assert upstream.peak <= 41  # 40 batch items, plus the single call
    finally:
        await app.stop(drain_timeout=1.0)


async def test_invalid_items_without_id_are_answered_with_null_id(
    upstream: ScriptedUpstream, lasso_node: Any
) -> None:
    """JSON-RPC 2.0 §6: invalid request objects get an error with id null, even without
    an id; valid notifications (refused or executed) get nothing."""
    app = await lasso_node(profile_yaml(chain_yaml(upstream)))
    batch = [
        call(1),
        {"jsonrpc": "2.0", "method": 5},  # invalid, no id
        {"foo": "boo"},  # invalid, no id
        1,  # not an object
        {"jsonrpc": "1.0", "method": "eth_blockNumber"},  # bad version, no id
        {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": 7},  # bad params, no id
        {"jsonrpc": "2.0", "method": "eth_blockNumber"},  # a valid notification
        {"jsonrpc": "2.0", "method": "eth_sign", "params": []},  # refused notification
        call(2),
    ]
    status, doc = await post(app.base_url + "/rpc/ethereum", batch)
    assert status == 200
    assert [d["id"] for d in doc] == [1, None, None, None, None, None, 2]
    assert [d["error"]["code"] for d in doc[1:6]] == [-32600, -32600, -32600, -32600, -32602]
    await eventually(lambda: upstream.calls.get("eth_blockNumber") == 1)
    status, doc = await post(app.base_url + "/rpc/ethereum", {"jsonrpc": "2.0", "method": 5})
    assert status == 400 and doc["id"] is None and doc["error"]["code"] == -32600


async def test_websocket_batches_keep_invalid_items_and_order(
    upstream: ScriptedUpstream, lasso_node: Any
) -> None:
    """Over WebSocket, a 1000-item batch is one ordered answer; invalid items are kept."""
    app = await lasso_node(profile_yaml(chain_yaml(upstream)))
    url = app.base_url.replace("http://", "ws://") + "/ws/rpc/ethereum"
    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(orjson.dumps([call(i) for i in range(1000)]).decode())
        doc = orjson.loads(await ws.recv())
        assert [d["id"] for d in doc] == list(range(1000))
        await ws.send(orjson.dumps([{"foo": "boo"}, call("x")]).decode())
        doc = orjson.loads(await ws.recv())
        assert [d["id"] for d in doc] == [None, "x"] and doc[0]["error"]["code"] == -32600
