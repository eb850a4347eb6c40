"""The head watch: block hashes and finality kept known for chains in use."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from lasso.server.cache.heads import block_of, finalized_interval

from support import eventually, fleet_chain_yaml, profile_yaml

pytestmark = pytest.mark.integration


async def seeded_node(sim_fleet: Any, lasso_node: Any, block_time_s: float = 60.0) -> Any:
    fleet = await sim_fleet(["alpha", "bravo"], block_time_s=block_time_s)
    extra = f"    block_time_ms: {int(block_time_s * 1000)}\n"
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet, extra=extra)))
    body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
    async with aiohttp.ClientSession() as s, s.post(app.base_url + "/rpc/ethereum", data=body) as r:
        app.head = int(orjson.loads(await r.read())["result"], 16)
    app.fleet = fleet
    return app


async def test_window_walks_down_to_what_requests_need(sim_fleet: Any, lasso_node: Any) -> None:
    """Over HTTP only: a latest poll gives the head; a request about an unfinalized block
    below the window makes the watch walk down to it (and no further); the finalized tag
    (the simulator's, 64 below the head) is polled once."""
    app = await seeded_node(sim_fleet, lasso_node)
    cc = next(iter(app.cache.chains.values()))
    await eventually(lambda: cc.window.top == app.head and cc.polls.get("finalized"))
    assert cc.finality.height(app.head, app.cache.clock()) == app.head - 64
    assert not cc.polls.get("walk")  # nobody asked about older blocks
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getBlockReceipts", "params": []}
    body["params"] = [hex(app.head - 30)]
    async with aiohttp.ClientSession() as s:
        async with s.post(app.base_url + "/rpc/ethereum", data=orjson.dumps(body)) as r:
            assert r.headers["X-Lasso-Cache"] == "MISS"
        await eventually(lambda: cc.window.bottom == app.head - 30)
        for expected in ("MISS", "HIT"):
            async with s.post(app.base_url + "/rpc/ethereum", data=orjson.dumps(body)) as r:
                assert r.headers["X-Lasso-Cache"] == expected
    assert 28 <= cc.polls["walk"] <= 31 and cc.walk_target is None
    truth = app.fleet.chain()
    for n in (cc.window.bottom, app.head - 10, app.head):
        assert cc.window.hash_at(n) == truth.block_hash(n)


async def test_idle_or_removed_chains_are_left_alone(sim_fleet: Any, lasso_node: Any) -> None:
    """No background call for a chain unused for idle_s, nor for one no longer served."""
    app = await seeded_node(sim_fleet, lasso_node)
    watch = app.cache_watch
    cc = next(iter(app.cache.chains.values()))
    await eventually(lambda: cc.polls.get("finalized"))
    watch.idle_s = 0.0
    before = dict(cc.polls)
    now = app.cache.clock() + 1.0
    watch.tick(now)
    assert cc.polls == before and repr(watch).startswith("<HeadWatch")
    watch.idle_s = 300.0
    watch.resolve = lambda profile, chain: None
    watch.tick(now + 100.0)
    assert cc.polls == before


async def test_a_head_feed_keeps_the_window_without_polls(sim_fleet: Any, lasso_node: Any) -> None:
    """newHeads notifications extend the window; junk notifications are ignored."""
    app = await seeded_node(sim_fleet, lasso_node)
    rt = app.runtime.profile(None).chains["ethereum"]
    watch = app.cache_watch
    cc = app.cache.chain(rt)
    await eventually(lambda: cc.window.top == app.head)
    chain = app.fleet.chain()
    nxt = app.head + 1
    head = {
        "number": hex(nxt),
        "hash": chain.block_hash(nxt),
        "parentHash": chain.block_hash(nxt - 1),
    }
    watch.on_head(rt, "alpha", head)
    assert cc.window.top == nxt and watch.heads_seen == 1
    assert cc.head_time is not None and cc.head_time[0] == app.head  # no timestamp in it
    head = {**chain.header(nxt + 1), "timestamp": hex(1234)}
    watch.on_head(rt, "alpha", head)
    assert cc.window.top == nxt + 1 and cc.head_time == (nxt + 1, 1234)
    assert cc.head(rt.router.state.max_height) == nxt + 1  # newer than any height seen
    for junk in ("x", {"number": 5}, {"number": "0xzz", "hash": "0x1"}):
        watch.on_head(rt, "alpha", junk)
    assert cc.window.top == nxt + 1 and watch.heads_seen == 2


def test_block_of_reads_block_answers() -> None:
    """block_of takes (number, hash, parent, timestamp) from an answer body, or None."""
    body = b'{"jsonrpc":"2.0","id":1,"result":{"number":"0x10","hash":"0xAB","parentHash":"0xCD"}}'
    assert block_of(body) == (16, "0xab", "0xcd", None)
    body = body.replace(b'"0xCD"', b'"0xCD","timestamp":"0x64"')
    assert block_of(body) == (16, "0xab", "0xcd", 100)
    for bad in (None, b"nope", b'{"result":null}', b'{"result":{"number":"0xzz","hash":"0x1"}}'):
        assert block_of(bad) is None


def test_finalized_interval_is_clamped() -> None:
    """Four blocks between finality polls, never under 2 s nor over 30 s."""
    assert finalized_interval(12_000) == 30.0
    assert finalized_interval(1_000) == 4.0
    assert finalized_interval(250) == 2.0
