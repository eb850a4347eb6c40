"""The response cache and coalescing end to end: real sockets, simulated providers."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.server.cache.service import result_bytes
from lasso.sim.behavior import Behavior

from support import eventually, fleet_chain_yaml, profile_yaml

pytestmark = pytest.mark.integration

ADDR = "0x" + "ab" * 20


async def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=orjson.dumps(body), headers=headers) as r,
    ):
        return r.status, orjson.loads(await r.read()), r.headers


def call(method: str, params: list[Any], rid: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}


def upstream(fleet: Any, method: str) -> int:
    return sum(p.stats.methods[method] for p in fleet)


async def start(
    sim_fleet: Any,
    lasso_node: Any,
    extra: str = "",
    behaviors: dict[str, Behavior] | None = None,
    ws: bool = False,
    block_time_s: float = 60.0,
) -> Any:
    fleet = await sim_fleet(behaviors or ["alpha", "bravo"], block_time_s=block_time_s)
    providers = {pid: f"ws_url: {url}" for pid, url in fleet.ws_urls().items()} if ws else None
    bt = f"    block_time_ms: {int(block_time_s * 1000)}\n"
    chain = fleet_chain_yaml(fleet, extra=bt + extra, providers=providers)
    app = await lasso_node(profile_yaml(chain))
    app.fleet = fleet
    app.rpc_url = app.base_url + "/rpc/ethereum"
    status, doc, _ = await post(
        app.rpc_url, call("eth_blockNumber", [])
    )  # the node learns the head
    assert status == 200
    app.head = int(doc["result"], 16)
    return app


@pytest.fixture
async def node(sim_fleet: Any, lasso_node: Any) -> Any:
    return await start(sim_fleet, lasso_node)


async def test_a_final_block_is_served_from_the_cache(node: Any) -> None:
    """The second identical request for a finalized block's receipts makes no upstream
    call, answers the same bytes with the client's own id, and says HIT."""
    params = [hex(node.head - 200)]
    _, first, h1 = await post(node.rpc_url, call("eth_getBlockReceipts", params, rid="a"))
    _, second, h2 = await post(node.rpc_url, call("eth_getBlockReceipts", params, rid=7))
    assert h1["X-Lasso-Cache"] == "MISS" and h2["X-Lasso-Cache"] == "HIT"
    assert first["id"] == "a" and second["id"] == 7
    assert first["result"] == second["result"] and first["result"]
    assert upstream(node.fleet, "eth_getBlockReceipts") == 1


async def test_keys_ignore_hex_case_and_object_key_order(node: Any) -> None:
    """Equal requests spelled differently share one entry."""
    block = hex(node.head - 100)
    a = [{"fromBlock": block, "toBlock": block, "address": ADDR}]
    b = [{"address": ADDR.upper().replace("0X", "0x"), "toBlock": block, "fromBlock": block}]
    await post(node.rpc_url, call("eth_getLogs", a))
    _, _, headers = await post(node.rpc_url, call("eth_getLogs", b))
    assert headers["X-Lasso-Cache"] == "HIT"
    assert upstream(node.fleet, "eth_getLogs") == 1


async def test_include_meta_reports_the_cache(node: Any) -> None:
    """include_meta (body and headers) carries cache: hit|miss."""
    params = [ADDR, hex(node.head - 100)]
    _, doc, _ = await post(node.rpc_url + "?include_meta=body", call("eth_getBalance", params))
    assert doc["lasso_meta"]["cache"] == "miss"
    _, _, headers = await post(
        node.rpc_url + "?include_meta=headers", call("eth_getBalance", params)
    )
    meta = orjson.loads(base64.urlsafe_b64decode(headers["X-Lasso-Meta"] + "=="))
    assert meta["cache"] == "hit" and headers["X-Lasso-Cache"] == "HIT"


async def test_no_cache_skips_the_read_but_refreshes(node: Any) -> None:
    """Cache-Control: no-cache goes upstream (BYPASS) and the answer refreshes the entry."""
    params = [ADDR, hex(node.head - 100)]
    nc = {"Cache-Control": "no-cache"}
    _, _, h1 = await post(node.rpc_url, call("eth_getTransactionCount", params), nc)
    _, _, h2 = await post(node.rpc_url, call("eth_getTransactionCount", params), nc)
    _, _, h3 = await post(node.rpc_url, call("eth_getTransactionCount", params))
    assert (h1["X-Lasso-Cache"], h2["X-Lasso-Cache"], h3["X-Lasso-Cache"]) == (
        "BYPASS",
        "BYPASS",
        "HIT",
    )
    assert upstream(node.fleet, "eth_getTransactionCount") == 2


async def test_a_pinned_provider_bypasses_the_cache(node: Any) -> None:
    """/rpc/provider/:id answers from that provider every time and stores nothing."""
    params = [ADDR, hex(node.head - 100)]
    url = node.base_url + "/rpc/provider/bravo/ethereum"
    for _ in range(2):
        _, _, headers = await post(url, call("eth_getCode", params))
        assert headers["X-Lasso-Cache"] == "BYPASS"
    _, _, headers = await post(node.rpc_url, call("eth_getCode", params))
    assert headers["X-Lasso-Cache"] == "MISS"
    assert node.fleet["bravo"].stats.methods["eth_getCode"] >= 2


async def test_nulls_errors_and_uncacheable_methods_are_not_cached(node: Any) -> None:
    """A null receipt, a revert, a block above the head and a pending read go upstream
    every time; uncacheable methods carry no X-Lasso-Cache."""
    unknown = "0x" + "77" * 32
    revert = [{"to": ADDR, "data": "0xdeadbeef"}, hex(node.head - 100)]
    receipts = []  # upstream receipt calls after each pass
    for _ in range(2):
        _, doc, h = await post(node.rpc_url, call("eth_getTransactionReceipt", [unknown]))
        assert doc["result"] is None and h["X-Lasso-Cache"] == "MISS"
        receipts.append(upstream(node.fleet, "eth_getTransactionReceipt"))
        _, doc, _ = await post(node.rpc_url, call("eth_call", revert))
        assert doc["error"]["code"] == 3
        await post(node.rpc_url, call("eth_getBlockReceipts", [hex(node.head + 5)]))
        _, _, h = await post(node.rpc_url, call("eth_getBalance", [ADDR, "pending"]))
        assert "X-Lasso-Cache" not in h
    # A null by hash from a provider not yet known at the served head is asked again
    # elsewhere (CONTRACT §8), so a pass may cost two calls: each pass makes at least one.
    assert 0 < receipts[0] < receipts[1] <= 4
    assert upstream(node.fleet, "eth_call") == 2
    assert upstream(node.fleet, "eth_getBlockReceipts") == 2
    assert upstream(node.fleet, "eth_getBalance") == 2


async def test_head_answers_last_until_the_head_moves(node: Any) -> None:
    """eth_blockNumber is answered from the cache while the head is unchanged, and never
    once the node knows a newer head."""
    _, _, headers = await post(node.rpc_url, call("eth_blockNumber", []))
    assert headers["X-Lasso-Cache"] == "MISS"  # the first call only taught the node the head
    _, doc, headers = await post(node.rpc_url, call("eth_blockNumber", []))
    assert headers["X-Lasso-Cache"] == "HIT" and int(doc["result"], 16) == node.head
    rt = node.runtime.profile(None).chains["ethereum"]
    rt.router.observe_height("alpha", node.head + 1, rt.router.state.observed_at("alpha") or 0)
    _, _, headers = await post(node.rpc_url, call("eth_blockNumber", []))
    assert headers["X-Lasso-Cache"] == "MISS"


async def test_head_answers_stop_when_the_next_block_is_due(node: Any) -> None:
    """Once the head block's timestamp plus the block time has passed, head answers are
    not served (the next block may be out before the node hears of it)."""
    cc = next(iter(node.cache.chains.values()))
    await eventually(lambda: cc.head_time is not None and cc.head_time[0] == node.head)
    stamp = cc.head_time[1]
    node.cache.wall = lambda: stamp + 60.5  # the chain's block time is 60 s
    statuses = []
    for _ in range(2):
        _, _, headers = await post(node.rpc_url, call("eth_gasPrice", []))
        statuses.append(headers["X-Lasso-Cache"])
    node.cache.wall = lambda: stamp + 1.0
    for _ in range(2):
        _, _, headers = await post(node.rpc_url, call("eth_gasPrice", []))
        statuses.append(headers["X-Lasso-Cache"])
    assert statuses == ["MISS", "MISS", "MISS", "HIT"]


async def test_without_a_block_time_an_old_head_is_still_cached(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """A chain with no block_time_ms (a node mining on demand) keeps caching head
    answers whatever the age of its head block (the TTL and newer heads still apply)."""
    fleet = await sim_fleet(["alpha", "bravo"], block_time_s=60.0)
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet)))
    url = app.base_url + "/rpc/ethereum"
    await post(url, call("eth_blockNumber", []))
    cc = next(iter(app.cache.chains.values()))
    await eventually(lambda: cc.head_time is not None)
    app.cache.wall = lambda: cc.head_time[1] + 3600.0  # an hour after the head block
    statuses = []
    for _ in range(2):
        _, _, headers = await post(url, call("eth_gasPrice", []))
        statuses.append(headers["X-Lasso-Cache"])
    assert statuses == ["MISS", "HIT"]


async def test_head_answers_expire(sim_fleet: Any, lasso_node: Any) -> None:
    """realtime_ttl_ms bounds how long a head answer is served."""
    app = await start(sim_fleet, lasso_node, "    cache:\n      realtime_ttl_ms: 150\n")
    _, _, headers = await post(app.rpc_url, call("eth_gasPrice", []))
    assert headers["X-Lasso-Cache"] == "MISS"

    async def expired() -> bool:
        _, _, h = await post(app.rpc_url, call("eth_gasPrice", []))
        return h["X-Lasso-Cache"] == "MISS"

    await eventually(expired, timeout=5.0)
    assert upstream(app.fleet, "eth_gasPrice") >= 2


async def test_identical_reads_in_flight_share_one_call(sim_fleet: Any, lasso_node: Any) -> None:
    """Twenty identical slow reads at once make one upstream call; every client gets its
    own id; the coalesced ones are counted. no-cache reads each make their own call."""
    slow = {pid: Behavior(latency_ms=300) for pid in ("alpha", "bravo")}
    app = await start(sim_fleet, lasso_node, behaviors=slow)
    params = [ADDR, "pending"]  # never cached: only coalescing can share it
    docs = await asyncio.gather(
        *(post(app.rpc_url, call("eth_getTransactionCount", params, rid=i)) for i in range(20))
    )
    assert sorted(d[1]["id"] for d in docs) == list(range(20))
    assert len({orjson.dumps(d[1]["result"]) for d in docs}) == 1
    assert upstream(app.fleet, "eth_getTransactionCount") == 1
    nc = {"Cache-Control": "no-cache"}  # each of these makes its own call
    await asyncio.gather(
        *(post(app.rpc_url, call("eth_getTransactionCount", params), nc) for _ in range(5))
    )
    assert upstream(app.fleet, "eth_getTransactionCount") == 6
    async with aiohttp.ClientSession() as s, s.get(app.base_url + "/metrics") as r:
        text = await r.text()
    assert (
        'lasso_coalesced_requests_total{chain="ethereum",method="eth_getTransactionCount",'
        'node_id="test",profile="public"} 19.0' in text
    )


async def test_api_cache_counts_every_coalesced_request_once(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """A batch of identical never-cacheable reads: each item is one of /api/cache's
    ``requests`` (as ``uncached``), so the calls saved never exceed the requests."""
    slow = {pid: Behavior(latency_ms=200) for pid in ("alpha", "bravo")}
    app = await start(sim_fleet, lasso_node, behaviors=slow)
    batch = [call("eth_getTransactionCount", [ADDR, "pending"], rid=i) for i in range(100)]
    status, doc, _ = await post(app.rpc_url, batch)
    assert status == 200 and len(doc) == 100
    async with aiohttp.ClientSession() as s, s.get(app.base_url + "/api/cache") as r:
        chain = (await r.json())["chains"][0]
    row = next(r for r in chain["methods"] if r["method"] == "eth_getTransactionCount")
    assert row["uncached"] == row["requests"] == 100 and row["coalesced"] >= 1
    assert row["hit"] + row["miss"] + row["bypass"] + row["uncached"] == row["requests"]
    assert chain["saved"] <= chain["requests"]
    for key in ("hit", "miss", "bypass", "uncached"):
        assert chain[key] == sum(m[key] for m in chain["methods"])


async def test_coalescing_and_caching_can_be_turned_off(sim_fleet: Any, lasso_node: Any) -> None:
    """routing.coalesce: false and cache.enabled: false send every request upstream."""
    slow = {pid: Behavior(latency_ms=200) for pid in ("alpha", "bravo")}
    extra = "    routing:\n      coalesce: false\n    cache:\n      enabled: false\n"
    app = await start(sim_fleet, lasso_node, extra, behaviors=slow)
    params = [ADDR, hex(app.head - 100)]
    results = await asyncio.gather(
        *(post(app.rpc_url, call("eth_getBalance", params)) for _ in range(5))
    )
    assert all("X-Lasso-Cache" not in h for _, _, h in results)
    assert upstream(app.fleet, "eth_getBalance") == 5


async def test_batch_items_use_the_cache(node: Any) -> None:
    """Batch items are cached and coalesced one by one; the batch says HIT when every
    cacheable item was one, and include_meta lists each item."""
    params = [ADDR, hex(node.head - 100)]
    batch = [call("eth_getBalance", params, rid=1), call("eth_getBalance", params, rid=2)]
    _, docs, headers = await post(node.rpc_url, batch)
    assert [d["id"] for d in docs] == [1, 2] and docs[0]["result"] == docs[1]["result"]
    assert upstream(node.fleet, "eth_getBalance") == 1
    assert headers["X-Lasso-Cache"] in ("MISS", "HIT")
    batch.append(call("eth_sendRawTransaction", ["0x02"], rid=3))
    _, docs, headers = await post(node.rpc_url + "?include_meta=headers", batch)
    assert headers["X-Lasso-Cache"] == "HIT"
    meta = orjson.loads(base64.urlsafe_b64decode(headers["X-Lasso-Meta"] + "=="))
    assert meta["cache_items"] == ["hit", "hit", None]


async def test_websocket_calls_use_the_cache(node: Any) -> None:
    """WebSocket unary calls and batch items share the HTTP cache."""
    params = [ADDR, hex(node.head - 100)]
    await post(node.rpc_url, call("eth_getStorageAt", [ADDR, "0x0", params[1]]))
    ws_url = node.base_url.replace("http", "ws") + "/ws/rpc/ethereum"
    async with aiohttp.ClientSession() as s, s.ws_connect(ws_url) as ws:
        await ws.send_bytes(orjson.dumps(call("eth_getStorageAt", [ADDR, "0x0", params[1]], 9)))
        doc = orjson.loads(await ws.receive_bytes() if False else (await ws.receive()).data)
        assert doc["id"] == 9 and doc["result"].startswith("0x")
        batch = [call("eth_getStorageAt", [ADDR, "0x0", params[1]], i) for i in (1, 2)]
        await ws.send_bytes(orjson.dumps(batch))
        docs = orjson.loads((await ws.receive()).data)
        assert [d["id"] for d in docs] == [1, 2]
    assert upstream(node.fleet, "eth_getStorageAt") == 1


async def test_unfinalized_answers_go_on_reorg(sim_fleet: Any, lasso_node: Any) -> None:
    """A receipt list of an unfinalized block is anchored to its hash; when a reorg
    replaces the block (seen through newHeads), the old answer is never served again."""
    app = await start(sim_fleet, lasso_node, ws=True, block_time_s=1.0)
    cc = next(iter(app.cache.chains.values()))
    block = app.head - 2
    await eventually(lambda: app.cache_watch.heads_seen > 0, timeout=10.0)  # newHeads is on
    params = [hex(block)]
    await post(app.rpc_url, call("eth_getBlockReceipts", params))  # asks for block's hash
    await eventually(lambda: cc.window.hash_at(block) is not None, timeout=10.0)
    _, before, _ = await post(app.rpc_url, call("eth_getBlockReceipts", params))
    _, again, headers = await post(app.rpc_url, call("eth_getBlockReceipts", params))
    assert headers["X-Lasso-Cache"] == "HIT" and again == before
    old_hash = cc.window.hash_at(block)
    app.fleet.reorg(5)
    await eventually(lambda: cc.window.hash_at(block) not in (None, old_hash), timeout=10.0)
    _, after, headers = await post(app.rpc_url, call("eth_getBlockReceipts", params))
    assert headers["X-Lasso-Cache"] == "MISS"
    assert after["result"][0]["blockHash"] != before["result"][0]["blockHash"]
    assert after["result"][0]["blockHash"] == cc.window.hash_at(block)
    assert cc.reorgs >= 1


async def test_metrics_and_the_cache_api(node: Any) -> None:
    """The cache's series are on /metrics and /api/cache reports hits per method."""
    params = [hex(node.head - 100)]
    for _ in range(3):
        await post(node.rpc_url, call("eth_getBlockTransactionCountByNumber", params))
    async with aiohttp.ClientSession() as s:
        async with s.get(node.base_url + "/metrics") as r:
            text = await r.text()
        async with s.get(node.base_url + "/api/cache") as r:
            doc = await r.json()
        async with s.get(node.base_url + "/api/cache?profile=nope") as r:
            assert r.status == 404
    m = "eth_getBlockTransactionCountByNumber"
    assert (
        f'lasso_cache_requests_total{{chain="ethereum",method="{m}",node_id="test",'
        f'profile="public",result="hit"}} 2.0' in text
    )
    assert "lasso_cache_bytes{" in text
    chain = doc["chains"][0]
    row = next(r for r in chain["methods"] if r["method"] == m)
    assert (row["hit"], row["miss"], row["saved"]) == (2, 1, 2)
    assert chain["entries"] >= 1 and chain["bytes"] > 0 and doc["redis"] is None


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"jsonrpc":"2.0","id":"lasso-t","result":{"a":[1,2]}}', b'{"a":[1,2]}'),
        (b'{"jsonrpc": "2.0", "id": "lasso-t", "result": "0x1" }\n', b'"0x1"'),
        (b'{"result":"0x1","id":"lasso-t","jsonrpc":"2.0"}', b'"0x1"'),
        (b'{"jsonrpc":"2.0","id":"lasso-t","result":null}', b"null"),
    ],
)
def test_result_bytes_slices_or_re_encodes(body: bytes, expected: bytes) -> None:
    """The stored bytes are the provider's result, sliced when it is the last member,
    re-encoded otherwise (never a slice that includes a following member)."""
    assert result_bytes(body, orjson.loads(body), b'"lasso-t"') == expected
    assert orjson.loads(result_bytes(body, orjson.loads(body))) == orjson.loads(expected)


def test_result_bytes_with_an_extra_member_after_the_result_re_encodes() -> None:
    """An answer with a member after ``result`` is re-encoded, not sliced."""
    body = b'{"jsonrpc":"2.0","id":"lasso-t","result":"0x1","extra":1}'
    assert result_bytes(body, orjson.loads(body), b'"lasso-t"') == b'"0x1"'


async def test_a_stored_head_below_the_served_head_is_not_served(node: Any) -> None:
    """A stored eth_blockNumber below a head the chain has served since (one kept across a
    reload, say) is a miss, and the answer is that served head (CONTRACT §8)."""
    await post(node.rpc_url, call("eth_blockNumber", []))
    _, doc, headers = await post(node.rpc_url, call("eth_blockNumber", []))
    assert headers["X-Lasso-Cache"] == "HIT" and int(doc["result"], 16) == node.head
    rt = node.runtime.profile(None).chains["ethereum"]
    assert rt.router.head.serve_head(node.head + 3) == node.head + 3
    for _ in range(2):
        _, doc, headers = await post(node.rpc_url, call("eth_blockNumber", []))
        assert headers["X-Lasso-Cache"] == "MISS" and int(doc["result"], 16) == node.head + 3


async def test_get_logs_to_latest_is_stored_only_when_it_reaches_the_head(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """eth_getLogs to ``latest`` resolves from the providers' consensus and the served
    head: while that is below the head the cache knows (one provider ahead of the rest),
    its answer is not stored; once they agree, it is."""
    app = await start(sim_fleet, lasso_node, behaviors=["alpha", "bravo", "charlie", "delta"])
    url = app.base_url + "/rpc/priority/ethereum"  # alpha answers first
    params = [{"fromBlock": hex(app.head - 20), "toBlock": "latest"}]
    rt = app.runtime.profile(None).chains["ethereum"]
    now = asyncio.get_running_loop().time()  # the router's clock (monotonic)
    for pid in ("alpha", "bravo", "charlie", "delta"):
        rt.router.observe_height(pid, app.head, now)
    statuses = []
    for _ in range(2):
        _, doc, headers = await post(url, call("eth_getLogs", params))
        assert isinstance(doc["result"], list)
        statuses.append(headers["X-Lasso-Cache"])
    assert statuses == ["MISS", "HIT"]
    rt.router.observe_height("alpha", app.head + 1, now)  # consensus stays at app.head
    statuses = []
    for _ in range(2):
        _, doc, headers = await post(url, call("eth_getLogs", params))
        assert isinstance(doc["result"], list)
        statuses.append(headers["X-Lasso-Cache"])
    assert statuses == ["MISS", "MISS"]
