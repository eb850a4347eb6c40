"""Upstream WebSocket connections (UpstreamWs) and the node's registry of them, through real
sockets against the provider simulator: correlation, errors, reconnects, routing, newHeads."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.net.errors import (
    PoolTimeout,
    UpstreamDisconnected,
    UpstreamNotConnected,
    UpstreamRpcError,
    UpstreamTimeout,
)
from lasso.net.ws_upstream import UpstreamWs
from lasso.sim.behavior import Behavior

from support import UNCACHED, eventually, profile_yaml

pytestmark = pytest.mark.integration

FAST = {"startup_jitter": 0.0, "reconnect_base": 0.02, "reconnect_jitter": 0.01}


@pytest.fixture
async def upstreams() -> AsyncIterator[list[UpstreamWs]]:
    """UpstreamWs objects created by a test, closed after it."""
    made: list[UpstreamWs] = []
    yield made
    for up in made:
        await up.aclose()


async def connected(made: list[UpstreamWs], url: str, **kw: Any) -> UpstreamWs:
    up = UpstreamWs("p", url, rng=random.Random(1), **{**FAST, **kw})
    made.append(up)
    up.start()
    await eventually(lambda: up.connected, message="upstream websocket did not connect")
    return up


def test_backoff_follows_the_reference_schedule() -> None:
    """Immediate first attempt, then base x attempts capped, plus bounded jitter."""
    up = UpstreamWs("p", "ws://127.0.0.1:1/ws", rng=random.Random(7))
    assert up.reconnect_delay(0) == 0.0
    for attempts, base in ((1, 5.0), (2, 10.0), (6, 30.0), (50, 30.0)):
        delay = up.reconnect_delay(attempts)
        assert base <= delay <= base + 1.0
    with pytest.raises(ValueError):
        UpstreamWs("p", "http://not-a-websocket")


async def test_requests_are_correlated_concurrently(sim_fleet: Any, upstreams: Any) -> None:
    """Many concurrent calls on one socket each get their own answer."""
    fleet = await sim_fleet({"a": Behavior(latency_ms=5, jitter=0.8)})
    up = await connected(upstreams, fleet["a"].ws_url)
    numbers = [f"0x{n:x}" for n in range(1, 41)]
    blocks = await asyncio.gather(
        *(up.request("eth_getBlockByNumber", [n, False], 5.0) for n in numbers)
    )
    assert [b["number"] for b in blocks] == numbers
    raw = await up.request_raw(
        b'{"jsonrpc":"2.0","id":"lasso-t-1","method":"eth_chainId","params":[]}',
        b'"lasso-t-1"',
        5.0,
    )
    assert raw.status == 200 and orjson.loads(raw.body) == {
        "jsonrpc": "2.0",
        "id": "lasso-t-1",
        "result": "0x1",
    }
    assert up.pending == 0 and "connected=True" in repr(up)


async def test_cancelled_exchange_leaves_no_pending_entry(sim_fleet: Any, upstreams: Any) -> None:
    """A hedge loser's exchange is cancelled: its pending entry goes, the socket stays up."""
    fleet = await sim_fleet({"a": Behavior(hang=True)})
    up = await connected(upstreams, fleet["a"].ws_url)
    body = b'{"jsonrpc":"2.0","id":"lasso-t-2","method":"eth_chainId","params":[]}'
    task = asyncio.ensure_future(up.exchange(body, b'"lasso-t-2"', 5.0, replay_safe=True))
    await eventually(lambda: up.pending == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert up.pending == 0 and up.connected


async def test_error_answers_and_local_failures(sim_fleet: Any, upstreams: Any) -> None:
    """JSON-RPC errors raise UpstreamRpcError; not connected and over-capacity send nothing."""
    fleet = await sim_fleet({"a": Behavior(unsupported_methods=["eth_mining"])})
    up = await connected(upstreams, fleet["a"].ws_url, max_pending=1)
    with pytest.raises(UpstreamRpcError) as info:
        await up.request("eth_mining", [], 5.0)
    assert info.value.code == -32601 and info.value.dispatched and not info.value.provider_fault

    await fleet["a"].update(hang=True)
    hung = asyncio.ensure_future(up.request("eth_blockNumber", [], 0.2))
    await eventually(lambda: up.pending == 1)
    with pytest.raises(PoolTimeout) as over:
        await up.request("eth_blockNumber", [], 5.0)
    assert not over.value.dispatched
    with pytest.raises(UpstreamTimeout) as late:
        await hung
    assert late.value.dispatched and up.pending == 0

    idle = UpstreamWs("q", fleet["a"].ws_url)  # never started
    with pytest.raises(UpstreamNotConnected) as down:
        await idle.request("eth_blockNumber", [], 1.0)
    assert not down.value.dispatched and not down.value.provider_fault


async def test_reconnects_after_the_provider_goes_down_and_up(
    sim_fleet: Any, upstreams: Any
) -> None:
    """A drop fails pending calls, ends subscriptions once, tells listeners; it comes back."""
    fleet = await sim_fleet({"a": Behavior()}, block_time_s=0.1)
    up = await connected(upstreams, fleet["a"].ws_url)
    states: list[bool] = []
    up.add_state_listener(states.append)
    heads: list[int] = []
    ends: list[str] = []
    sub_id = await up.subscribe(
        ["newHeads"], lambda h: heads.append(int(h["number"], 16)), ends.append
    )
    assert isinstance(sub_id, str) and up.subscriptions == 1
    await eventually(lambda: len(heads) >= 2, message="no heads")
    assert heads == list(range(heads[0], heads[0] + len(heads)))

    await fleet["a"].update(hang=True)
    pending = asyncio.ensure_future(up.request("eth_blockNumber", [], 10.0))
    await eventually(lambda: up.pending == 1)
    await fleet["a"].update(down=True, hang=False)
    with pytest.raises(UpstreamDisconnected):
        await pending
    await eventually(lambda: not up.connected and states == [False])
    assert ends == ["connection lost"] and up.subscriptions == 0
    await eventually(lambda: up.connect_failures >= 2, message="no retries while down")

    await fleet["a"].update(down=False)
    await eventually(lambda: up.connected and states == [False, True], timeout=10)
    assert up.connection_id == 2 and ends == ["connection lost"]
    assert int(await up.request("eth_blockNumber", [], 5.0), 16) > 0


async def test_unsubscribe_stops_delivery(sim_fleet: Any, upstreams: Any) -> None:
    """After unsubscribe no more events are delivered and on_end is not called."""
    fleet = await sim_fleet({"a": Behavior()}, block_time_s=0.05)
    up = await connected(upstreams, fleet["a"].ws_url)
    heads: list[Any] = []
    ends: list[str] = []
    sub_id = await up.subscribe(["newHeads"], heads.append, ends.append)
    await eventually(lambda: len(heads) >= 1)
    await up.unsubscribe(sub_id)
    await up.unsubscribe(sub_id)  # twice: still quiet
    seen = len(heads)
    # Let several block times pass; a leaked subscription would keep delivering.
    marker = await up.request("eth_blockNumber", [], 5.0)
    await eventually(lambda: fleet["a"].head() >= int(marker, 16) + 3)
    assert len(heads) == seen and ends == [] and up.subscriptions == 0
    await up.aclose()
    assert ends == []


async def test_garbage_frames_drop_the_link(sim_fleet: Any, upstreams: Any) -> None:
    """An answer that is not JSON fails the call at once and the link is redialled."""
    fleet = await sim_fleet({"a": Behavior()})
    up = await connected(upstreams, fleet["a"].ws_url)
    await fleet["a"].update(malformed=True)
    with pytest.raises(UpstreamDisconnected):
        await up.request("eth_blockNumber", [], 5.0)
    assert up.bad_frames == 1
    await fleet["a"].update(malformed=False)
    await eventually(lambda: up.connected and up.connection_id == 2)


async def test_dead_link_is_detected_by_the_heartbeat(upstreams: Any) -> None:
    """A peer that completes the handshake but never answers pings is dropped and redialled."""
    from websockets.server import ServerProtocol

    accepted = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        proto = ServerProtocol()
        proto.receive_data(await reader.readuntil(b"\r\n\r\n"))
        request = proto.events_received()[0]
        proto.send_response(proto.accept(request))  # type: ignore[arg-type]
        for data in proto.data_to_send():
            writer.write(data)
        accepted += 1
        try:
            while await reader.read(4096):  # swallow pings, answer nothing
                pass
        finally:
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        up = await connected(upstreams, f"ws://127.0.0.1:{port}/", heartbeat=0.05)
        await eventually(lambda: up.heartbeat_failures >= 1 and accepted >= 2, timeout=5)
        assert up.connection_id >= 2
    finally:
        server.close()


async def test_rejected_handshake_counts_as_a_failed_connect(
    sim_fleet: Any, upstreams: Any
) -> None:
    """A provider answering the upgrade with HTTP 404 is retried, never marked connected."""
    fleet = await sim_fleet({"a": Behavior(websocket=False)})
    up = UpstreamWs("a", fleet["a"].ws_url, **FAST)
    upstreams.append(up)
    up.start()
    await eventually(lambda: up.connect_failures >= 2)
    assert not up.connected and "handshake rejected" in (up.last_error or "")


# -- the registry inside a node ---------------------------------------------------------


def chain_yaml(fleet: Any, *, http: bool = True, ws: bool = True, extra: str = "") -> str:
    lines = ["  ethereum:", "    chain_id: 1"]
    if extra:
        lines.append(extra.rstrip("\n"))
    lines.append("    providers:")
    for i, p in enumerate(fleet):
        lines.append(f"      - id: {p.id}")
        if http:
            lines.append(f"        url: {p.url}")
        if ws:
            lines.append(f"        ws_url: {p.ws_url}")
        lines.append(f"        priority: {(i + 1) * 10}")
    return "\n".join(lines) + "\n"


async def rpc(app: Any, body: Any, path: str = "/rpc/ethereum") -> Any:
    async with (
        aiohttp.ClientSession() as s,
        s.post(app.base_url + path, data=orjson.dumps(body)) as r,
    ):
        return orjson.loads(await r.read())


def ws_channel(app: Any, pid: str) -> Any:
    rt = app.runtime.profile(None).resolve("ethereum")
    return rt.router.channel(pid, "ws")


async def test_ws_channels_follow_the_connection(sim_fleet: Any, lasso_node: Any) -> None:
    """A WS channel enters routing on connect, leaves on a drop and returns on reconnect."""
    fleet = await sim_fleet(["a", "b"])
    app = await lasso_node(profile_yaml(chain_yaml(fleet)), ws_upstream_options=FAST)
    await eventually(lambda: ws_channel(app, "a").connected and ws_channel(app, "b").connected)
    assert len(app.ws_upstreams) == 2
    await fleet["a"].update(down=True)
    await eventually(lambda: not ws_channel(app, "a").connected)
    assert ws_channel(app, "b").connected
    await fleet["a"].update(down=False)
    await eventually(lambda: ws_channel(app, "a").connected, timeout=10)
    async with aiohttp.ClientSession() as s, s.get(app.base_url + "/metrics") as r:
        text = await r.text()
    assert 'lasso_ws_upstream_connected{chain="ethereum",node_id="test",provider="a"} 1.0' in text


async def test_requests_are_routed_and_measured_over_ws(sim_fleet: Any, lasso_node: Any) -> None:
    """With only ws_url providers, HTTP clients are served over WS and WS latency is recorded."""
    fleet = await sim_fleet(["a"])
    app = await lasso_node(profile_yaml(chain_yaml(fleet, http=False)), ws_upstream_options=FAST)
    await eventually(lambda: ws_channel(app, "a").connected)
    body = {"jsonrpc": "2.0", "id": "q", "method": "eth_getBlockByNumber", "params": ["0x2", False]}
    doc = await rpc(app, body, "/rpc/ethereum?include_meta=body")
    assert doc["id"] == "q" and doc["result"]["number"] == "0x2"
    assert doc["lasso_meta"]["selected_provider"] == {"id": "a", "protocol": "ws"}
    row = ws_channel(app, "a").methods["eth_getBlockByNumber"]
    assert row.calls == 1 and row.successes == 1
    call = {"to": "0x" + "11" * 20, "data": "0xdeadbeef"}
    revert = {"jsonrpc": "2.0", "id": 9, "method": "eth_call", "params": [call, "latest"]}
    doc = await rpc(app, revert)  # a caller error comes back unchanged, id restored
    assert doc["id"] == 9 and doc["error"]["code"] == 3


async def test_fastest_prefers_a_faster_ws_channel(sim_fleet: Any, lasso_node: Any) -> None:
    """Measured WS latency competes with HTTP: fastest settles on the quicker WS provider."""
    fleet = await sim_fleet({"slow": Behavior(latency_ms=40), "quick": Behavior()})
    lines = [
        "  ethereum:",
        "    chain_id: 1",
        UNCACHED,  # every call is routed: an answer from the cache has no provider
        "    providers:",
        "      - id: slow",
        f"        url: {fleet['slow'].url}",
        "      - id: quick",
        f"        ws_url: {fleet['quick'].ws_url}",
    ]
    app = await lasso_node(profile_yaml("\n".join(lines) + "\n"), ws_upstream_options=FAST)
    await eventually(lambda: ws_channel(app, "quick").connected)
    picks = []
    for i in range(40):
        body = {
            "jsonrpc": "2.0",
            "id": i,
            "method": "eth_getBalance",
            "params": ["0x" + "0" * 40, "latest"],
        }
        doc = await rpc(app, body, "/rpc/fastest/ethereum?include_meta=body")
        picks.append(doc["lasso_meta"]["selected_provider"]["protocol"])
    assert picks[-20:].count("ws") >= 16, picks


async def test_new_heads_feed_block_heights(sim_fleet: Any, lasso_node: Any) -> None:
    """With polling off, provider heights still track the chain through newHeads."""
    fleet = await sim_fleet(["a"], block_time_s=0.05)
    app = await lasso_node(profile_yaml(chain_yaml(fleet)), ws_upstream_options=FAST)
    rt = app.runtime.profile(None).resolve("ethereum")
    await eventually(lambda: app.ws_upstreams.heads_seen >= 3, message="no heads")
    await eventually(lambda: rt.router.state.height("a") == fleet["a"].head())
    assert not rt.pools["a"]._conns  # no HTTP polling was needed


async def test_new_heads_feed_respects_the_switch(sim_fleet: Any, lasso_node: Any) -> None:
    """subscribe_new_heads: false keeps the connection but subscribes to nothing."""
    fleet = await sim_fleet(["a"], block_time_s=0.05)
    extra = "    websocket:\n      subscribe_new_heads: false"
    app = await lasso_node(profile_yaml(chain_yaml(fleet, extra=extra)), ws_upstream_options=FAST)
    up = next(iter(app.ws_upstreams))
    await eventually(lambda: up.connected)
    assert int(await up.request("eth_blockNumber", [], 5.0), 16) > 0
    assert up.subscriptions == 0 and app.ws_upstreams.heads_seen == 0


async def test_reload_keeps_shared_connections_and_closes_removed_ones(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """A reload reuses live connections for kept providers and closes the dropped ones."""
    from lasso.profiles import parse_profile

    fleet = await sim_fleet(["a", "b"])
    app = await lasso_node(profile_yaml(chain_yaml(fleet)), ws_upstream_options=FAST)
    await eventually(lambda: all(up.connected for up in app.ws_upstreams))
    a, b = sorted(app.ws_upstreams, key=lambda up: up.provider_id)
    text = profile_yaml(chain_yaml(fleet)).split("      - id: b")[0]
    await app.reload({"public": parse_profile(text, "public.yml", {})})
    assert list(app.ws_upstreams) == [a] and a.connection_id == 1
    assert ws_channel(app, "a").connected  # the new router learned it at once
    await eventually(lambda: not b.connected and b._task is None)
