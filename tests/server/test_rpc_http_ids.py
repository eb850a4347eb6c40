"""Ids byte for byte, the upstream id spliced in place, params depth and Lasso failures,
over real sockets (CONTRACT §3, §4)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from server_rpc_support import ScriptedUpstream, chain_yaml, raw_json
from support import free_port, profile_yaml

pytestmark = pytest.mark.integration

RAW_IDS = [
    b"18446744073709551616",
    b"-18446744073709551617",
    b"1.10",
    b"1e2",
    b"-0",
    b"0",
    b"9223372036854775808",
    b'"\\u0041bc"',
    b'"a\\"b"',
    '"é"'.encode(),
    b"null",
    b"1e309",
    b"-1E+400",
]
DEEP = 300  # params nesting orjson parses but cannot re-encode


def call(method: str, rid: bytes, params: bytes = b"[]") -> bytes:
    return b'{"jsonrpc":"2.0","id":%s,"method":"%s","params":%s}' % (rid, method.encode(), params)


def deep_params(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    up = await ScriptedUpstream().start()
    yield up
    await up.stop()


@pytest.fixture
async def node(upstream: ScriptedUpstream, lasso_node: Any) -> Any:
    dead = f"      - id: dead\n        url: http://127.0.0.1:{free_port()}\n"
    app = await lasso_node(
        profile_yaml(chain_yaml(upstream)),
        profile_yaml("  ethereum:\n    chain_id: 1\n    providers:\n" + dead, slug="down"),
    )
    app.ws_url = app.base_url.replace("http://", "ws://")
    return app


async def post_raw(url: str, body: bytes) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as s, s.post(url, data=body) as r:
        return r.status, await r.read()


CASES = {
    "upstream": ("/rpc/ethereum", "eth_blockNumber", b"[]"),
    "local": ("/rpc/ethereum", "eth_chainId", b"[]"),
    "blocked": ("/rpc/ethereum", "eth_sign", b"[]"),
    "ws-only": ("/rpc/ethereum", "eth_subscribe", b'["newHeads"]'),
    "bad-params": ("/rpc/ethereum", "eth_blockNumber", b"5"),
    "too-deep": ("/rpc/ethereum", "eth_call", deep_params(DEEP)),
    "all-failed": ("/rpc/profile/down/ethereum", "eth_blockNumber", b"[]"),
    "unknown-chain": ("/rpc/nochain", "eth_blockNumber", b"[]"),
    "unknown-provider": ("/rpc/ethereum/nobody", "eth_blockNumber", b"[]"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("rid", RAW_IDS, ids=[r.decode() for r in RAW_IDS])
async def test_every_answer_echoes_the_id_as_sent(node: Any, case: str, rid: bytes) -> None:
    """Success, local answers and every error path carry the client's id bytes."""
    path, method, params = CASES[case]
    status, body = await post_raw(node.base_url + path, call(method, rid, params))
    assert status in (200, 400)
    assert body.endswith(b'"id":%s}' % rid) or b'"id":%s,' % rid in body, body[:300]
    assert raw_json(body)["id"] == raw_json(rid)


async def test_numbers_beyond_a_double_reach_the_provider_as_sent(
    node: Any, upstream: ScriptedUpstream
) -> None:
    """Valid JSON numbers orjson cannot hold (1e400, 30-digit integers) are no parse
    error: the params reach the provider byte for byte, alone or in a batch."""
    params = b"[1e400,-2.5E-500,123456789012345678901234567890,0.5]"
    status, body = await post_raw(node.base_url + "/rpc/ethereum", call("eth_call", b"7", params))
    assert status == 200 and orjson.loads(body) == {"jsonrpc": "2.0", "id": 7, "result": "0x2a"}
    assert upstream.bodies[-1].endswith(b'"params":%s}' % params)
    batch = b"[%s,%s]" % (call("eth_call", b"1e999", params), call("eth_blockNumber", b"2"))
    status, body = await post_raw(node.base_url + "/rpc/ethereum", batch)
    assert status == 200 and body.startswith(b'[{"jsonrpc":"2.0","id":1e999,"result":"0x2a"}')
    assert any(b.endswith(b'"params":%s}' % params) for b in upstream.bodies[-2:])
    for bad in (b"[1e400,]", b"[NaN]", b'["\\ud800", 1e400]'):
        status, body = await post_raw(node.base_url + "/rpc/ethereum", bad)
        assert (status, orjson.loads(body)["error"]["code"]) == (400, -32700), bad


async def test_batch_ids_come_back_in_order_as_sent(node: Any) -> None:
    """Each batch item's id, of any spelling, comes back as sent, in order."""
    body = b"[" + b",".join(call("eth_blockNumber", rid) for rid in RAW_IDS) + b"]"
    status, answer = await post_raw(node.base_url + "/rpc/ethereum", body)
    assert status == 200
    assert [d["id"] for d in raw_json(answer)] == [raw_json(r) for r in RAW_IDS]
    for rid in RAW_IDS:
        assert b'"id":%s' % rid in answer


async def test_websocket_ids_come_back_as_sent(node: Any) -> None:
    """Over WebSocket too: single calls, errors and batches."""
    async with websockets.connect(node.ws_url + "/ws/rpc/ethereum") as ws:
        for rid in RAW_IDS:
            for method in ("eth_blockNumber", "eth_chainId", "eth_sign"):
                await ws.send(call(method, rid).decode())
                answer = (await ws.recv()).encode()
                assert b'"id":%s' % rid in answer, answer
        await ws.send(call("eth_call", b"1.10", deep_params(DEEP)).decode())
        answer = (await ws.recv()).encode()
        assert b'"id":1.10' in answer and b"-32602" in answer
        body = b"[" + b",".join(call("eth_blockNumber", rid) for rid in RAW_IDS) + b"]"
        await ws.send(body.decode())
        answer = (await ws.recv()).encode()
        assert [d["id"] for d in raw_json(answer)] == [raw_json(r) for r in RAW_IDS]


@pytest.mark.parametrize("depth", [129, 255, 600, 1023])
async def test_deep_params_get_32602_and_spare_the_batch(node: Any, depth: int) -> None:
    """Params nested too deep: -32602 with the id; the other batch items are answered."""
    status, body = await post_raw(
        node.base_url + "/rpc/ethereum", call("eth_call", b'"deep"', deep_params(depth))
    )
    doc = orjson.loads(body)
    assert status == 400 and doc["id"] == "deep" and doc["error"]["code"] == -32602
    assert doc["error"]["data"] == {"max_depth": 128}
    batch = b"[%s,%s,%s]" % (  # orjson parses 1,024 levels: the batch takes two
        call("eth_blockNumber", b"1"),
        call("eth_call", b"2", deep_params(min(depth, 1022))),
        call("eth_blockNumber", b"3"),
    )
    status, body = await post_raw(node.base_url + "/rpc/ethereum", batch)
    docs = orjson.loads(body)
    assert status == 200 and [d["id"] for d in docs] == [1, 2, 3]
    assert docs[0]["result"] == docs[2]["result"] == "0x2a"
    assert docs[1]["error"]["code"] == -32602


async def test_params_at_the_limit_reach_the_provider(
    node: Any, upstream: ScriptedUpstream
) -> None:
    """128 levels is allowed and forwarded."""
    status, body = await post_raw(
        node.base_url + "/rpc/ethereum", call("eth_call", b"1", deep_params(128))
    )
    assert status == 200 and orjson.loads(body)["result"] == "0x2a"
    assert upstream.calls["eth_call"] == 1


async def test_id_before_result_with_our_id_inside_the_result(lasso_node: Any) -> None:
    """An upstream answering result-first with its request id inside the result: the
    client's id goes in the id member, the result stays the upstream's."""
    up = await ScriptedUpstream(
        lambda c, rid: (
            b'{"jsonrpc":"2.0","result":{"echo":%s,"list":[%s]},"id":%s}' % (rid, rid, rid)
        )
    ).start()
    try:
        app = await lasso_node(profile_yaml(chain_yaml(up)))
        status, body = await post_raw(app.base_url + "/rpc/ethereum", call("eth_call", b"77"))
        doc = orjson.loads(body)
        assert status == 200 and doc["id"] == 77
        assert doc["result"]["echo"].startswith("lasso-")
        assert doc["result"]["list"] == [doc["result"]["echo"]]
    finally:
        await up.stop()


async def test_odd_upstream_error_objects_never_cost_a_500(lasso_node: Any) -> None:
    """An upstream error whose message or data orjson cannot re-encode still answers
    every client with a JSON-RPC error and its id."""
    deep = b"[" * 600 + b"]" * 600

    def answer(c: dict[str, Any], rid: bytes) -> bytes:
        if c["method"] == "eth_call":  # a revert with undecodable data and a wrong id
            err = b'{"code":3,"message":"execution reverted","data":%s}' % deep
            return b'{"jsonrpc":"2.0","id":"x","error":%s}' % err
        return b'{"jsonrpc":"2.0","id":%s,"error":{"code":-32000,"message":%s}}' % (rid, deep)

    up = await ScriptedUpstream(answer).start()
    try:
        app = await lasso_node(profile_yaml(chain_yaml(up)))
        for method in ("eth_call", "eth_getBalance"):
            status, body = await post_raw(app.base_url + "/rpc/ethereum", call(method, b'"k"'))
            doc = orjson.loads(body)
            assert status == 200 and doc["id"] == "k" and "error" in doc, body[:200]
        batch = b"[%s,%s]" % (call("eth_call", b"1"), call("eth_getBalance", b"2"))
        status, body = await post_raw(app.base_url + "/rpc/ethereum", batch)
        assert status == 200 and [d["id"] for d in orjson.loads(body)] == [1, 2]
    finally:
        await up.stop()


async def test_many_ids_at_once_stay_paired(node: Any) -> None:
    """Concurrent requests with distinct big ids each get their own back."""
    async with aiohttp.ClientSession() as s:

        async def one(i: int) -> bytes:
            rid = b"%d" % (2**70 + i)
            async with s.post(
                node.base_url + "/rpc/ethereum", data=call("eth_blockNumber", rid)
            ) as r:
                body = await r.read()
            assert b'"id":%s' % rid in body
            return rid

        assert len(set(await asyncio.gather(*(one(i) for i in range(50))))) == 50
