"""The WebSocket JSON-RPC endpoint of CONTRACT §4 through real sockets and simulated providers."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from typing import Any

import aiohttp
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from lasso.sim.behavior import Behavior

from server_rpc_support import ScriptedUpstream, chain_yaml
from support import eventually, fleet_chain_yaml, profile_yaml

pytestmark = pytest.mark.integration

BALANCE = {"jsonrpc": "2.0", "method": "eth_getBalance", "params": ["0x" + "00" * 20, "latest"]}
BN = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}


class FakeSubscriptions:
    """A stand-in for the subscription manager: hands out ids, records calls."""

    def __init__(self, client_notifies: bool = False) -> None:
        self.active: dict[str, Any] = {}
        self.dropped: list[Any] = []
        self.client_notifies = client_notifies
        self.gate: asyncio.Event | None = None
        self._n = 0

    async def subscribe(self, client: Any, params: list[Any]) -> str:
        if params and params[0] == "bogus":
            raise _SubError(-32602, "Invalid subscription parameters")
        if self.gate is not None:
            await self.gate.wait()
        self._n += 1
        sub_id = f"{self._n:016x}"
        self.active[sub_id] = client
        if self.client_notifies:  # an event that races the answer must still follow it
            client.send_notification(sub_id, {"number": "0x1"})
        return sub_id

    def unsubscribe(self, client: Any, sub_id: str) -> bool:
        return self.active.pop(sub_id, None) is not None

    def drop_client(self, client: Any) -> None:
        self.dropped.append(client)
        for sub_id in [s for s, c in self.active.items() if c is client]:
            del self.active[sub_id]

    async def aclose(self) -> None:
        self.active.clear()


class _SubError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@pytest.fixture
async def node(sim_fleet: Any, lasso_node: Any) -> Any:
    fleet = await sim_fleet(
        {
            "alpha": Behavior(method_latency_ms={"eth_getBalance": 300}),
            "bravo": Behavior(method_latency_ms={"eth_getBalance": 300}),
        }
    )
    chain = fleet_chain_yaml(fleet, extra="    aliases: [eth]")
    other = fleet_chain_yaml(fleet, key="other", chain_id=1)
    app = await lasso_node(profile_yaml(chain), profile_yaml(other, slug="team"))
    app.fleet = fleet
    app.ws_url = app.base_url.replace("http://", "ws://")
    return app


async def http_post(url: str, body: Any) -> Any:
    async with aiohttp.ClientSession() as s, s.post(url, data=orjson.dumps(body)) as r:
        return orjson.loads(await r.read())


async def http_post_with(url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=orjson.dumps(body), headers=headers) as r,
    ):
        return r.status, orjson.loads(await r.read())


async def call(ws: Any, body: Any) -> Any:
    await ws.send(body if isinstance(body, str | bytes) else orjson.dumps(body).decode())
    return orjson.loads(await asyncio.wait_for(ws.recv(), 10))


@pytest.mark.parametrize(
    ("path", "provider"),
    [
        ("/ws/rpc/ethereum", None),
        ("/ws/rpc/eth", None),
        ("/ws/rpc/1", None),
        ("/ws/rpc/fastest/ethereum", None),
        ("/ws/rpc/round-robin/ethereum", None),
        ("/ws/rpc/provider/bravo/ethereum", "bravo"),
        ("/ws/rpc/ethereum/alpha", "alpha"),
        ("/ws/rpc/ethereum?provider_id=bravo", "bravo"),
        ("/ws/rpc/ethereum?provider=bravo", "bravo"),
        ("/ws/rpc/ethereum?provider_override=alpha&provider_id=bravo", "alpha"),
        ("/ws/rpc/ethereum/alpha?provider=bravo", "alpha"),
        ("/ws/rpc/profile/public/ethereum", None),
        ("/ws/rpc/profile/team/fastest/other", None),
        ("/ws/rpc/profile/team/provider/alpha/other", "alpha"),
    ],
)
async def test_every_path_serves_unary_calls(node: Any, path: str, provider: str | None) -> None:
    """Each WS path answers like HTTP; a provider override reaches only that provider."""
    async with websockets.connect(node.ws_url + path) as ws:
        doc = await call(ws, {**BN, "id": "abc"})
        assert doc["id"] == "abc" and int(doc["result"], 16) > 0
        doc = await call(ws, {"jsonrpc": "2.0", "id": 7, "method": "web3_clientVersion"})
        assert doc["id"] == 7
        if provider is not None:
            assert doc["result"].endswith("/" + provider)


@pytest.mark.parametrize(
    ("query", "provider"),
    [("", "bravo"), ("?provider=alpha", "alpha")],
)
async def test_provider_header_pins_the_socket_like_http(
    node: Any, query: str, provider: str
) -> None:
    """X-Lasso-Provider pins a socket's calls as it pins an HTTP request; the query wins."""
    async with websockets.connect(
        node.ws_url + "/ws/rpc/ethereum" + query, additional_headers={"X-Lasso-Provider": "bravo"}
    ) as ws:
        for i in range(3):
            doc = await call(ws, {"jsonrpc": "2.0", "id": i, "method": "web3_clientVersion"})
            assert doc["result"].endswith("/" + provider)
    status, doc = await http_post_with(
        node.base_url + "/rpc/ethereum" + query,
        {"jsonrpc": "2.0", "id": 1, "method": "web3_clientVersion"},
        {"X-Lasso-Provider": "bravo"},
    )
    assert status == 200 and doc["result"].endswith("/" + provider)


async def test_unknown_provider_header_rejects_the_upgrade(node: Any) -> None:
    """An X-Lasso-Provider the chain lacks: 400 / -32602, the same answer as over HTTP."""
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(
            node.ws_url + "/ws/rpc/ethereum", additional_headers={"X-Lasso-Provider": "zulu"}
        ):
            pass  # pragma: no cover
    ws_doc = orjson.loads(info.value.response.body)
    status, http_doc = await http_post_with(
        node.base_url + "/rpc/ethereum", BN, {"X-Lasso-Provider": "zulu"}
    )
    assert info.value.response.status_code == status == 400
    assert ws_doc["error"] == http_doc["error"]
    assert ws_doc["error"]["code"] == -32602
    assert (ws_doc["id"], http_doc["id"]) == (None, 1)  # an upgrade carries no request id


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/ws/rpc/nochain", 400, -32602),
        ("/ws/rpc/ethereum?provider=zulu", 400, -32602),
        ("/ws/rpc/profile/nobody/ethereum", 404, -32000),
        ("/ws/rpc/provider/zulu/ethereum", 400, -32602),
        ("/ws/rpc/a/b/c/d", 404, -32601),
        ("/ws/elsewhere", 404, -32601),
    ],
)
async def test_unknown_routes_reject_the_upgrade(
    node: Any, path: str, status: int, code: int
) -> None:
    """Unknown chain, profile, provider or path: an HTTP error with a JSON-RPC body."""
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(node.ws_url + path):
            pass  # pragma: no cover
    response = info.value.response
    assert response.status_code == status
    assert orjson.loads(response.body)["error"]["code"] == code
    assert node.ws.rejected >= 1 and node.metrics.ws_connections == 0


async def test_malformed_handshake_gets_400(node: Any) -> None:
    """An upgrade without a valid Sec-WebSocket-Key is refused with HTTP 400."""
    port = int(node.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /ws/rpc/ethereum HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    writer.close()
    assert head.startswith(b"HTTP/1.1 400")


async def test_answers_equal_http_and_ids_are_restored(node: Any) -> None:
    """The same calls over WS and HTTP give the same results, each with its own id."""
    calls = [
        {"jsonrpc": "2.0", "id": "s", "method": "eth_getBlockByNumber", "params": ["0x1", False]},
        {"jsonrpc": "2.0", "id": 42, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": None, "method": "net_version", "params": []},
        {"jsonrpc": "2.0", "id": 1.5, "method": "eth_getCode", "params": ["0x" + "00" * 20, "0x1"]},
    ]
    async with websockets.connect(node.ws_url + "/ws/rpc/ethereum") as ws:
        for body in calls:
            over_ws = await call(ws, body)
            over_http = await http_post(node.base_url + "/rpc/ethereum", body)
            assert over_ws == over_http
            assert over_ws["id"] == body["id"]


async def test_concurrent_requests_are_answered_out_of_order(node: Any) -> None:
    """A slow call does not hold back a fast one sent after it on the same socket."""
    slow = {
        "jsonrpc": "2.0",
        "id": "slow",
        "method": "eth_getBalance",
        "params": ["0x" + "00" * 20, "latest"],
    }
    async with websockets.connect(node.ws_url + "/ws/rpc/ethereum") as ws:
        await ws.send(orjson.dumps(slow).decode())
        for i in range(10):
            await ws.send(orjson.dumps({**BN, "id": i}).decode())
        order = [orjson.loads(await asyncio.wait_for(ws.recv(), 10))["id"] for _ in range(11)]
    assert sorted(order[:10]) == list(range(10))
    assert order[-1] == "slow"


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", -32700),
        ("{", -32700),
        ("42", -32600),
        ('"text"', -32600),
        ('{"jsonrpc":"2.0","id":1}', -32600),
        ('{"jsonrpc":"1.0","id":1,"method":"eth_blockNumber"}', -32600),
        ('{"jsonrpc":"2.0","id":{"a":1},"method":"eth_blockNumber"}', -32600),
        ('{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":3}', -32602),
        ("[]", -32600),
        ('{"jsonrpc":"2.0","id":1,"method":"eth_sendTransaction","params":[{}]}', -32601),
        ('{"jsonrpc":"2.0","id":1,"method":"eth_unsubscribe","params":[]}', -32602),
        ('[{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}]', -32600),
    ],
)
async def test_bad_frames_get_json_rpc_errors(node: Any, frame: str, code: int) -> None:
    """Each malformed frame gets its JSON-RPC error and the socket keeps serving."""
    async with websockets.connect(node.ws_url + "/ws/rpc/ethereum") as ws:
        doc = await call(ws, frame)
        assert doc["error"]["code"] == code
        assert "result" in await call(ws, BN)


async def test_batch_items_with_a_non_string_method_are_invalid_not_fatal(node: Any) -> None:
    """A batch item whose method is a list or an object gets -32600; the socket stays."""
    async with websockets.connect(node.ws_url + "/ws/rpc/ethereum") as ws:
        doc = await call(
            ws,
            '[{"jsonrpc":"2.0","id":1,"method":["eth_subscribe"]},'
            '{"jsonrpc":"2.0","id":2,"method":{"a":1}}]',
        )
        assert [(d["id"], d["error"]["code"]) for d in doc] == [(1, -32600), (2, -32600)]
        assert "result" in await call(ws, BN)


async def test_batches_and_notifications(node: Any) -> None:
    """A batch is answered in one array frame, in order; notifications get no answer."""
    batch = [{**BN, "id": i} for i in range(5)] + [{"jsonrpc": "2.0", "method": "eth_chainId"}]
    async with websockets.connect(node.ws_url + "/ws/rpc/ethereum") as ws:
        doc = await call(ws, batch)
        assert [item["id"] for item in doc] == list(range(5))
        too_big = [{**BN, "id": i} for i in range(1001)]
        assert (await call(ws, too_big))["error"]["code"] == -32600
        await ws.send(orjson.dumps({"jsonrpc": "2.0", "method": "eth_blockNumber"}).decode())
        assert (await call(ws, {**BN, "id": "after"}))["id"] == "after"


async def test_requests_beyond_the_inflight_bound_wait_instead_of_failing(
    lasso_node: Any,
) -> None:
    """100 requests at once on one socket: 32 run, the socket stops being read (no -32008),
    the rest follow in order as answers go out; other sockets are unaffected."""
    up = await ScriptedUpstream().start()
    up.held.add("eth_getBalance")
    try:
        app = await lasso_node(profile_yaml(chain_yaml(up)))
        url = app.base_url.replace("http://", "ws://") + "/ws/rpc/ethereum"
        async with websockets.connect(url) as ws, websockets.connect(url) as other:
            for i in range(100):
                await ws.send(orjson.dumps({**BALANCE, "id": i}).decode())
            await ws.send(orjson.dumps({"jsonrpc": "2.0", "id": "local", "method": "eth_chainId"}))
            await eventually(lambda: up.inflight == 32, message="32 in flight")
            client = next(c for c in app.ws.clients if c.inflight)
            assert client.inflight == 32 and client.conn.reading_paused
            assert up.calls["eth_getBalance"] == 32
            assert (await call(other, {"jsonrpc": "2.0", "id": 7, "method": "eth_chainId"}))[
                "result"
            ] == "0x1"
            up.release()
            answers = [orjson.loads(await ws.recv()) for _ in range(101)]
        assert sorted(a["id"] for a in answers if a["id"] != "local") == list(range(100))
        assert all(a["result"] for a in answers)
        # Read in order behind the 100: only once at most 31 of them were in flight.
        assert [a["id"] for a in answers].index("local") >= 100 - 32
        assert up.peak == 32
    finally:
        await up.stop()


async def test_subscription_capacity_and_unsubscribe(node: Any) -> None:
    """128 subscriptions per socket, then -32008; unsubscribe frees a slot; ids are per socket."""
    subs = node.ws.subscriptions = FakeSubscriptions()
    async with (
        websockets.connect(node.ws_url + "/ws/rpc/ethereum") as ws,
        websockets.connect(node.ws_url + "/ws/rpc/ethereum") as other,
    ):
        ids = []
        for i in range(128):
            doc = await call(
                ws, {"jsonrpc": "2.0", "id": i, "method": "eth_subscribe", "params": ["newHeads"]}
            )
            ids.append(doc["result"])
        doc = await call(
            ws, {"jsonrpc": "2.0", "id": "x", "method": "eth_subscribe", "params": ["newHeads"]}
        )
        assert doc["error"] == {"code": -32008, "message": "Subscription capacity unavailable"}
        unsub = {"jsonrpc": "2.0", "id": "u", "method": "eth_unsubscribe", "params": [ids[0]]}
        assert (await call(other, unsub))["result"] is False  # not this socket's id
        assert (await call(ws, unsub))["result"] is True
        assert (await call(ws, unsub))["result"] is False
        doc = await call(
            ws, {"jsonrpc": "2.0", "id": "z", "method": "eth_subscribe", "params": ["bogus"]}
        )
        assert doc["error"] == {"code": -32602, "message": "Invalid subscription parameters"}
        doc = await call(
            ws, {"jsonrpc": "2.0", "id": "y", "method": "eth_subscribe", "params": ["newHeads"]}
        )
        assert isinstance(doc["result"], str)
    await eventually(lambda: len(subs.dropped) == 2 and not subs.active)


async def test_notification_racing_the_answer_follows_it(node: Any) -> None:
    """An event sent while eth_subscribe is still answering arrives after the answer."""
    node.ws.subscriptions = FakeSubscriptions(client_notifies=True)
    async with websockets.connect(node.ws_url + "/ws/rpc/ethereum") as ws:
        doc = await call(
            ws, {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
        )
        event = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
    assert event == {
        "jsonrpc": "2.0",
        "method": "eth_subscription",
        "params": {"subscription": doc["result"], "result": {"number": "0x1"}},
    }


async def test_vanishing_client_is_cleaned_up(node: Any) -> None:
    """An aborted TCP connection frees its slot, its gauge and its subscriptions."""
    subs = node.ws.subscriptions = FakeSubscriptions()
    ws = await websockets.connect(node.ws_url + "/ws/rpc/ethereum")
    sub = {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
    doc = await call(ws, sub)
    assert doc["result"] in subs.active
    subs.gate = asyncio.Event()  # the next subscribe is still pending when the client goes
    await ws.send(orjson.dumps({**sub, "id": 2}).decode())
    client = next(iter(node.ws.clients))
    await eventually(lambda: client.pending_subs == 1)
    assert node.metrics.ws_connections == 1
    ws.transport.abort()
    await eventually(lambda: node.metrics.ws_connections == 0 and not node.ws.clients)
    assert subs.dropped == [client] and not subs.active
    subs.gate.set()  # the pending subscribe completes after the client left: it is undone
    await eventually(lambda: client.pending_subs == 0)
    assert not subs.active and not client.send_notification("x", {})


async def test_oversized_frames_close_with_1009(node: Any) -> None:
    """A message above the node's limit closes the socket with 1009."""
    node.ws.max_message = 4096
    async with websockets.connect(node.ws_url + "/ws/rpc/ethereum") as ws:
        await ws.send(orjson.dumps({**BN, "params": ["x" * 5000]}).decode())
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009


async def test_ping_pong_and_server_keepalive(node: Any) -> None:
    """Client pings are answered; the server's keepalive pings are answered by the client."""
    node.ws.ping_interval = 0.02
    async with websockets.connect(node.ws_url + "/ws/rpc/ethereum", ping_interval=None) as ws:
        await asyncio.wait_for(await ws.ping(), 5)
        conn = next(iter(node.ws.clients)).conn
        await eventually(lambda: conn.pongs_received >= 3, message="keepalive pongs")
        assert "result" in await call(ws, BN)


async def test_silent_client_is_closed_by_keepalive(node: Any) -> None:
    """A client that never answers pings is disconnected and cleaned up."""
    node.ws.ping_interval = 0.05
    node.ws.pong_timeout = 0.02
    node.ws.close_timeout = 0.1
    port = int(node.base_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /ws/rpc/ethereum HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    try:
        await eventually(lambda: node.metrics.ws_connections == 1)
        await eventually(lambda: node.metrics.ws_connections == 0, message="not closed")
    finally:
        sock.close()


async def test_metrics_count_connections_and_requests(node: Any) -> None:
    """lasso_ws_connections tracks open sockets; WS requests count like HTTP ones."""
    async with websockets.connect(node.ws_url + "/ws/rpc/ethereum") as ws:
        await call(ws, BN)
        async with aiohttp.ClientSession() as s, s.get(node.base_url + "/metrics") as r:
            text = await r.text()
    assert 'lasso_ws_connections{node_id="test"} 1.0' in text
    assert 'method="eth_blockNumber"' in text
