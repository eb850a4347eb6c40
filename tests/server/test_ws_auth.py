"""Client keys, scopes and limits over WebSocket: at the upgrade, per message, per
subscription, across reloads and token expiry."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import orjson
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from lasso.profiles import parse_profile

from support import eventually, fleet_chain_yaml

pytestmark = pytest.mark.integration

KEY = "lasso_ws-frontend-key-000001"
OTHER = "lasso_ws-backend-key-0000002"
STREAMS = "lasso_ws-streams-key-0000003"
JWT_SECRET = "w" * 32
BN = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}


class Subscriptions:
    """A stand-in subscription manager: ids, unsubscribe, cleanup."""

    def __init__(self) -> None:
        self.active: dict[str, Any] = {}
        self._n = 0

    async def subscribe(self, client: Any, params: list[Any]) -> str:
        self._n += 1
        sub_id = f"0x{self._n:x}"
        self.active[sub_id] = client
        return sub_id

    def unsubscribe(self, client: Any, sub_id: str) -> bool:
        return self.active.pop(sub_id, None) is not None

    def drop_client(self, client: Any) -> None:
        for sub_id in [s for s, c in self.active.items() if c is client]:
            del self.active[sub_id]

    async def aclose(self) -> None:
        self.active.clear()


def profile_text(fleet: Any, *, keys: str | None = None, front: str = "") -> str:
    keys = (
        keys
        if keys is not None
        else f"""    - id: frontend
      key: {KEY}
      rps_limit: 1
      burst_limit: 3
      methods: {{deny: ["debug_*"]}}
      max_subscriptions: 2
    - id: backend
      key: {OTHER}
    - id: streams
      key: {STREAMS}
      max_subscriptions: 2
"""
    )
    chains = fleet_chain_yaml(fleet) + fleet_chain_yaml(fleet, key="base", chain_id=8453)
    return f"""---
name: Gated
slug: gated
{front}auth:
  keys:
{keys}  jwt:
    secret: '{JWT_SECRET}'
    leeway_s: 0
    chains: [ethereum]
---
chains:
{chains}"""


@pytest.fixture
async def node(sim_fleet: Any, lasso_node: Any) -> Any:
    fleet = await sim_fleet(["alpha"])
    app = await lasso_node(profile_text(fleet))
    app.fleet = fleet
    app.ws_url = app.base_url.replace("http://", "ws://") + "/ws/rpc/profile/gated"
    app.ws.subscriptions = Subscriptions()
    return app


async def call(ws: Any, doc: Any) -> Any:
    await ws.send(orjson.dumps(doc).decode())
    return orjson.loads(await asyncio.wait_for(ws.recv(), 5))


async def reload(node: Any, text: str) -> None:
    profiles = {slug: p.config for slug, p in node.runtime.profiles.items()}
    profiles["gated"] = parse_profile(text, "gated.yml", {})
    await node.reload(profiles)


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        ("/ethereum", {}, 401, -32001),
        ("/ethereum?key=lasso_not-a-real-key-00000", {}, 401, -32001),
        ("/ethereum", {"Authorization": "Bearer lasso_not-a-real-key-00000"}, 401, -32001),
    ],
    ids=["missing", "wrong-query", "wrong-bearer"],
)
async def test_refused_upgrades_answer_the_http_status(
    node: Any, path: str, headers: dict[str, str], status: int, code: int
) -> None:
    """A refused upgrade gets the HTTP status and the JSON-RPC error body, no socket."""
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(node.ws_url + path, additional_headers=headers):
            pass  # pragma: no cover
    response = info.value.response
    assert response.status_code == status
    assert orjson.loads(response.body)["error"]["code"] == code
    assert node.metrics.ws_connections == 0


async def test_chain_out_of_the_tokens_scope_refuses_the_upgrade(node: Any) -> None:
    """JWT clients may use ethereum only: an upgrade to base is 403/-32602."""
    token = jwt.encode({"exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256")
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(
            node.ws_url + "/base", additional_headers={"Authorization": f"Bearer {token}"}
        ):
            pass  # pragma: no cover
    assert info.value.response.status_code == 403
    assert orjson.loads(info.value.response.body)["error"]["code"] == -32602


@pytest.mark.parametrize(
    ("suffix", "headers"),
    [
        (f"?key={KEY}", {}),
        ("", {"X-Lasso-Api-Key": KEY}),
        ("", {"Authorization": f"Bearer {KEY}"}),
    ],
    ids=["query", "header", "bearer"],
)
async def test_keys_at_the_upgrade_three_ways(
    node: Any, suffix: str, headers: dict[str, str]
) -> None:
    """The three ways of presenting a key open the socket."""
    async with websockets.connect(
        node.ws_url + "/ethereum" + suffix, additional_headers=headers
    ) as ws:
        assert (await call(ws, BN))["result"].startswith("0x")


async def test_each_message_counts_against_the_rate(node: Any) -> None:
    """Burst 3: the fourth message is -32005 with retry_after_ms; the socket stays open."""
    async with websockets.connect(node.ws_url + f"/ethereum?key={KEY}") as ws:
        answers = [await call(ws, {**BN, "id": i}) for i in range(4)]
        assert [("result" in a) for a in answers] == [True, True, True, False]
        assert answers[3]["id"] == 3 and answers[3]["error"]["code"] == -32005
        assert answers[3]["error"]["data"]["retry_after_ms"] > 0
        batch = [{**BN, "id": "b1"}, {**BN, "id": "b2"}]
        doc = await call(ws, batch)
        assert [item["error"]["code"] for item in doc] == [-32005, -32005]
        assert ws.state.name == "OPEN"


async def test_method_scope_per_message(node: Any) -> None:
    """A denied method is -32601 on the socket; the next call works."""
    async with websockets.connect(node.ws_url + f"/ethereum?key={OTHER}") as ws:
        assert "result" in await call(ws, BN)
    async with websockets.connect(node.ws_url + f"/ethereum?key={KEY}") as ws:
        doc = await call(ws, {"jsonrpc": "2.0", "id": 9, "method": "debug_traceCall", "params": []})
        assert doc["id"] == 9 and doc["error"]["code"] == -32601
        assert "result" in await call(ws, BN)


async def test_subscriptions_are_capped_per_key_across_sockets(node: Any) -> None:
    """max_subscriptions 2 per key on this node: the third, on another socket, is -32005;
    closing a socket frees its subscriptions."""
    sub = {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
    url = node.ws_url + f"/ethereum?key={STREAMS}"
    async with websockets.connect(url) as a:
        async with websockets.connect(url) as b:
            assert isinstance((await call(a, sub))["result"], str)
            assert isinstance((await call(b, sub))["result"], str)
            doc = await call(a, {**sub, "id": 2})
            assert doc["id"] == 2 and doc["error"]["code"] == -32005
            assert "max 2" in doc["error"]["message"]
        await eventually(lambda: sum(node.clients.subscriptions.values()) == 1)
        assert isinstance((await call(a, {**sub, "id": 3}))["result"], str)
        unsub = {"jsonrpc": "2.0", "id": 4, "method": "eth_unsubscribe", "params": ["0x1"]}
        assert (await call(a, unsub))["result"] is True
        assert sum(node.clients.subscriptions.values()) == 1
    await eventually(lambda: not node.clients.subscriptions)


async def test_reload_closes_sockets_of_removed_keys_only(node: Any) -> None:
    """A key removed by a reload ends its sockets (1008); other sockets keep working."""
    async with (
        websockets.connect(node.ws_url + f"/ethereum?key={KEY}") as kept,
        websockets.connect(node.ws_url + f"/ethereum?key={OTHER}") as dropped,
    ):
        await reload(node, profile_text(node.fleet, keys=f"    - id: frontend\n      key: {KEY}\n"))
        with pytest.raises(ConnectionClosed) as info:
            await call(dropped, BN)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        for i in range(5):  # the reload lifted frontend's limit: no 429 now
            assert "result" in await call(kept, {**BN, "id": i})


async def test_expired_token_ends_the_socket(node: Any) -> None:
    """A JWT socket closes (1008) when its token expires, even if it sends nothing."""
    token = jwt.encode({"exp": time.time() + 1.0}, JWT_SECRET, algorithm="HS256")
    async with websockets.connect(
        node.ws_url + "/ethereum", additional_headers={"Authorization": f"Bearer {token}"}
    ) as ws:
        assert "result" in await call(ws, BN)
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 10)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008


async def test_ungated_profile_sockets_are_untouched(sim_fleet: Any, lasso_node: Any) -> None:
    """Profiles without auth: sockets open without keys and carry no session client."""
    fleet = await sim_fleet(["alpha"])
    app = await lasso_node(
        f"---\nname: Open\nslug: public\n---\nchains:\n{fleet_chain_yaml(fleet)}"
    )
    ws_url = app.base_url.replace("http://", "ws://") + "/ws/rpc/ethereum"
    async with websockets.connect(ws_url) as ws:
        assert "result" in await call(ws, BN)
        assert all(c.session.client is None for c in app.ws.clients)
    assert not app.clients.stats
