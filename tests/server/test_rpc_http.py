"""The HTTP JSON-RPC surface of CONTRACT §3, through real sockets against simulated providers."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import aiohttp
import orjson
import pytest

from support import fleet_chain_yaml, profile_yaml

pytestmark = pytest.mark.integration

BN = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}


@pytest.fixture
async def node(sim_fleet: Any, lasso_node: Any) -> Any:
    fleet = await sim_fleet(["alpha", "bravo"])
    chain = fleet_chain_yaml(fleet, extra="    aliases: [eth, mainnet]")
    other = fleet_chain_yaml(fleet, key="other", chain_id=1).replace("chain_id: 1", "chain_id: 1")
    app = await lasso_node(profile_yaml(chain), profile_yaml(other, slug="team"))
    app.fleet = fleet
    return app


async def post(
    url: str, body: Any, *, raw: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any, Any]:
    data = raw if raw is not None else orjson.dumps(body)
    async with aiohttp.ClientSession() as s, s.post(url, data=data, headers=headers) as r:
        content = await r.read()
        return r.status, (orjson.loads(content) if content else None), r.headers


@pytest.mark.parametrize(
    "path",
    [
        "/rpc/ethereum",
        "/rpc/eth",
        "/rpc/1",
        "/rpc/fastest/ethereum",
        "/rpc/load-balanced/1",
        "/rpc/round-robin/mainnet",
        "/rpc/latency-weighted/ethereum",
        "/rpc/priority/ethereum",
        "/rpc/provider/bravo/ethereum",
        "/rpc/ethereum/bravo",
        "/rpc/profile/public/ethereum",
        "/rpc/profile/default/fastest/1",
        "/rpc/profile/team/other",
        "/rpc/profile/team/provider/alpha/other",
    ],
)
async def test_every_route_answers(node: Any, path: str) -> None:
    """Each route of the contract reaches a provider and answers with the client's id."""
    status, doc, _ = await post(node.base_url + path, {**BN, "id": "abc"})
    assert status == 200
    assert doc["id"] == "abc" and doc["result"].startswith("0x")


async def test_provider_override_pins_the_provider(node: Any) -> None:
    """/rpc/provider/:id sends every call to that provider only."""
    for _ in range(5):
        await post(node.base_url + "/rpc/provider/bravo/ethereum", BN)
    assert node.fleet["bravo"].stats.methods["eth_blockNumber"] >= 5
    assert node.fleet["alpha"].stats.methods["eth_blockNumber"] == 0


@pytest.mark.parametrize(
    ("path", "headers", "provider"),
    [
        ("/rpc/ethereum?provider=bravo", {}, "bravo"),
        ("/rpc/ethereum?provider_id=alpha", {"X-Lasso-Provider": "bravo"}, "alpha"),
        ("/rpc/ethereum?provider_override=bravo&provider_id=alpha", {}, "bravo"),
        ("/rpc/ethereum", {"X-Lasso-Provider": "bravo"}, "bravo"),
        ("/rpc/provider/alpha/ethereum?provider=bravo", {"X-Lasso-Provider": "bravo"}, "alpha"),
    ],
)
async def test_provider_override_from_query_and_header(
    node: Any, path: str, headers: dict[str, str], provider: str
) -> None:
    """Query parameters and X-Lasso-Provider pin the provider; the path wins over both."""
    body = {"jsonrpc": "2.0", "id": 1, "method": "web3_clientVersion"}
    for _ in range(3):
        status, doc, _ = await post(node.base_url + path, body, headers=headers)
        assert status == 200 and doc["result"].endswith("/" + provider)


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"{not json", 400, -32700),
        (b"[]", 400, -32600),
        (b'"just a string"', 400, -32600),
        (b'{"jsonrpc":"2.0","id":1}', 400, -32600),
        (b'{"jsonrpc":"1.0","id":1,"method":"eth_blockNumber"}', 400, -32600),
        (b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":5}', 400, -32602),
        (orjson.dumps([BN] * 1001), 400, -32600),
    ],
    ids=[
        "malformed",
        "empty-batch",
        "scalar",
        "no-method",
        "bad-version",
        "scalar-params",
        "batch-1001",
    ],
)
async def test_invalid_requests_get_the_contract_errors(
    node: Any, raw: bytes, status: int, code: int
) -> None:
    """Validation errors carry the right HTTP status and JSON-RPC code."""
    got_status, doc, _ = await post(node.base_url + "/rpc/ethereum", None, raw=raw)
    assert got_status == status
    assert doc["jsonrpc"] == "2.0" and doc["error"]["code"] == code


async def test_body_over_limit_is_413(node: Any) -> None:
    """A body over 8 MB is refused with 413 before it is buffered."""
    big = b'{"jsonrpc":"2.0","id":1,"method":"eth_call","params":["' + b"a" * 8_100_000 + b'"]}'
    status, doc, _ = await post(node.base_url + "/rpc/ethereum", None, raw=big)
    assert status == 413 and doc["error"]["code"] == -32600


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/rpc/nochain", 400, -32602),
        ("/rpc/provider/nobody/ethereum", 400, -32602),
        ("/rpc/profile/nope/ethereum", 404, -32000),
        ("/rpc/a/b/c/d/e", 404, -32601),
    ],
)
async def test_unknown_chain_provider_profile(node: Any, path: str, status: int, code: int) -> None:
    """Unknown chains and providers are -32602/400, unknown profiles -32000/404."""
    got, doc, _ = await post(node.base_url + path, BN)
    assert got == status and doc["error"]["code"] == code


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [("/rpc/nochain", 400, -32602), ("/rpc/profile/nope/ethereum", 404, -32000)],
)
async def test_route_errors_keep_every_id(node: Any, path: str, status: int, code: int) -> None:
    """A route error answers a batch with an array, one error per item with its id (a
    notification gets none, a non-object item null), and a single object with its id."""
    raw = (
        b'[{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"},'
        b'{"jsonrpc":"2.0","id":"two","method":"eth_blockNumber"},'
        b'{"jsonrpc":"2.0","method":"eth_blockNumber"},7,'
        b'{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"eth_blockNumber"}]'
    )
    async with aiohttp.ClientSession() as s, s.post(node.base_url + path, data=raw) as r:
        body = await r.read()
        assert r.status == status
    assert body.startswith(b"[") and b"123456789012345678901234567890" in body
    docs = orjson.loads(body)
    assert [d["id"] for d in docs[:3]] == [1, "two", None]
    assert {d["error"]["code"] for d in docs} == {code} and len(docs) == 4
    got, doc, _ = await post(node.base_url + path, {**BN, "id": "single"})
    assert (got, doc["id"], doc["error"]["code"]) == (status, "single", code)
    got, doc, _ = await post(node.base_url + path, None, raw=b"[1")
    assert got == status and doc["id"] is None  # not JSON: one error, id null
    # Without an id but no valid notification either ({}, no method): answered, id null.
    got, docs, _ = await post(node.base_url + path, None, raw=b'[{},{"method":""}]')
    assert got == status and [d["id"] for d in docs] == [None, None]


async def test_subscribe_over_http_points_to_websocket(node: Any) -> None:
    """eth_subscribe over HTTP is -32601 with data.websocket_url."""
    body = {"jsonrpc": "2.0", "id": 4, "method": "eth_subscribe", "params": ["newHeads"]}
    status, doc, _ = await post(node.base_url + "/rpc/ethereum", body)
    assert doc["id"] == 4 and doc["error"]["code"] == -32601
    assert doc["error"]["data"]["websocket_url"] == "/ws/rpc/ethereum"


@pytest.mark.parametrize(
    "method",
    ["eth_sendTransaction", "eth_sign", "personal_sign", "eth_signTransaction", "eth_accounts"],
)
async def test_signing_methods_are_refused(node: Any, method: str) -> None:
    """Lasso never signs: the signing methods are -32601 and never reach a provider."""
    status, doc, _ = await post(
        node.base_url + "/rpc/ethereum", {"jsonrpc": "2.0", "id": 2, "method": method, "params": []}
    )
    assert doc["error"]["code"] == -32601
    assert (
        node.fleet["alpha"].stats.methods[method] == 0
        and node.fleet["bravo"].stats.methods[method] == 0
    )


async def test_chain_id_is_answered_locally(node: Any) -> None:
    """eth_chainId comes from the config without an upstream call."""
    status, doc, _ = await post(
        node.base_url + "/rpc/ethereum", {"jsonrpc": "2.0", "id": 3, "method": "eth_chainId"}
    )
    assert doc == {"jsonrpc": "2.0", "id": 3, "result": "0x1"}
    assert node.fleet["alpha"].stats.calls + node.fleet["bravo"].stats.calls == 0


async def test_notification_is_executed_and_answered_204(node: Any) -> None:
    """A request without id runs upstream and gets 204 with no body."""
    status, doc, _ = await post(
        node.base_url + "/rpc/ethereum", {"jsonrpc": "2.0", "method": "eth_gasPrice", "params": []}
    )
    assert status == 204 and doc is None
    assert (
        node.fleet["alpha"].stats.methods["eth_gasPrice"]
        + node.fleet["bravo"].stats.methods["eth_gasPrice"]
        == 1
    )


async def test_batch_keeps_order_and_mixes_outcomes(node: Any) -> None:
    """Batch items answer in order; invalid/blocked items get inline errors; notifications none."""
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_sign", "params": []},
        {"jsonrpc": "2.0", "method": "eth_gasPrice"},
        {"id": 3},
        {"jsonrpc": "2.0", "id": 4, "method": "eth_chainId"},
        *[
            {
                "jsonrpc": "2.0",
                "id": 10 + i,
                "method": "eth_getBalance",
                "params": ["0x" + "00" * 19 + f"{i:02x}", "latest"],
            }
            for i in range(8)
        ],
    ]
    status, doc, _ = await post(node.base_url + "/rpc/ethereum", batch)
    assert status == 200
    assert [d["id"] for d in doc] == [1, 2, 3, 4, *range(10, 18)]  # the notification: no entry
    assert (
        "result" in doc[0]
        and doc[1]["error"]["code"] == -32601
        and doc[2]["error"]["code"] == -32600
    )
    assert all("result" in d for d in doc[4:])


async def test_batch_of_only_notifications_is_204(node: Any) -> None:
    """Nothing to answer: 204."""
    status, doc, _ = await post(
        node.base_url + "/rpc/ethereum", [{"jsonrpc": "2.0", "method": "eth_gasPrice"}] * 3
    )
    assert status == 204


async def test_include_meta_headers_and_body(node: Any) -> None:
    """include_meta=headers gives X-Lasso-Meta (base64url JSON); =body embeds lasso_meta."""
    status, doc, headers = await post(
        node.base_url + "/rpc/fastest/ethereum?include_meta=headers", BN
    )
    raw = headers["X-Lasso-Meta"]
    assert "=" not in raw
    meta = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    for key in (
        "request_id",
        "strategy",
        "chain_id",
        "transport",
        "selected_provider",
        "candidate_providers",
        "retries",
        "upstream_latency_ms",
        "end_to_end_latency_ms",
        "lasso_overhead_ms",
    ):
        assert key in meta, key
    assert meta["strategy"] == "fastest" and meta["chain_id"] == "1"
    assert headers["X-Lasso-Request-Id"] == meta["request_id"]
    status, doc, _ = await post(
        node.base_url + "/rpc/ethereum", BN, headers={"X-Lasso-Include-Meta": "body"}
    )
    assert doc["result"].startswith("0x") and doc["lasso_meta"]["selected_provider"]["id"] in (
        "alpha",
        "bravo",
    )


async def test_include_meta_body_on_a_batch_puts_lasso_meta_in_every_response(
    node: Any,
) -> None:
    """A batch answer stays an array of responses; with include_meta=body each response
    object carries its own lasso_meta (its provider, cache status, index), notifications
    still get nothing, and the request id is also a header."""
    batch = [
        {**BN, "id": 1},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_chainId"},
        {"jsonrpc": "2.0", "method": "eth_blockNumber"},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_sign", "params": []},
        {
            "jsonrpc": "2.0",
            "id": 4,
            "method": "eth_getBalance",
            "params": ["0x" + "11" * 20, "0x1"],
        },
    ]
    status, docs, headers = await post(node.base_url + "/rpc/ethereum?include_meta=body", batch)
    assert status == 200 and [d["id"] for d in docs] == [1, 2, 3, 4]
    metas = [d["lasso_meta"] for d in docs]
    assert {m["request_id"] for m in metas} == {headers["X-Lasso-Request-Id"]}
    assert [m["batch_index"] for m in metas] == [0, 1, 3, 4]
    assert {m["batch_size"] for m in metas} == {5}
    assert metas[0]["selected_provider"]["id"] in ("alpha", "bravo")
    assert "selected_provider" not in metas[1] and "selected_provider" not in metas[2]
    assert metas[3]["cache"] in ("hit", "miss") and metas[3]["chain_id"] == "1"
    assert docs[0]["result"].startswith("0x") and docs[2]["error"]["code"] == -32601
    assert "X-Lasso-Meta" not in headers


async def test_cors_preflight(node: Any) -> None:
    """Browsers get CORS headers on preflight and on answers."""
    async with aiohttp.ClientSession() as s:
        async with s.options(
            node.base_url + "/rpc/ethereum", headers={"Origin": "https://dapp.example"}
        ) as r:
            assert r.status == 204
            assert r.headers["Access-Control-Allow-Origin"] == "*"
            assert "POST" in r.headers["Access-Control-Allow-Methods"]
            allowed = r.headers["Access-Control-Allow-Headers"].split(", ")
            assert {"X-Lasso-Provider", "X-Lasso-Include-Meta", "X-Lasso-Api-Key"} <= set(allowed)
            assert "X-Lasso-Transport" not in allowed  # no transport preference exists
        async with s.post(node.base_url + "/rpc/ethereum", data=orjson.dumps(BN)) as r:
            assert r.headers["Access-Control-Allow-Origin"] == "*"


async def test_garbage_http_gets_400_not_a_hang(node: Any) -> None:
    """A non-HTTP byte stream is answered 400 and closed."""
    port = int(node.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\x16\x03\x01 not http at all\r\n\r\n")
    async with asyncio.timeout(5):
        data = await reader.read()  # until the server closes
    writer.close()
    assert data.startswith(b"HTTP/1.1 400")


async def test_health_chains_metrics_api(node: Any) -> None:
    """The operations endpoints answer with the contract's fields."""
    await post(node.base_url + "/rpc/ethereum", BN)
    async with aiohttp.ClientSession() as s:
        async with s.get(node.base_url + "/api/health") as r:
            health = await r.json()
        assert health["status"] == "healthy" and health["node_id"] == "test"
        assert {"version", "uptime_seconds", "cluster"} <= set(health)
        assert health["cluster"]["status"] == "standalone"
        async with s.get(node.base_url + "/api/chains") as r:
            chains = await r.json()
        assert chains["chains"][0]["chain_id"] == "1"
        assert {p["id"] for p in chains["chains"][0]["providers"]} == {"alpha", "bravo"}
        async with s.get(node.base_url + "/api/metrics/eth") as r:
            metrics = await r.json()
        assert metrics["chain_performance"]["total_calls"] == 1
        async with s.get(node.base_url + "/api/metrics/nochain") as r:
            assert r.status == 404
        async with s.get(node.base_url + "/metrics") as r:
            text = await r.text()
        assert (
            'lasso_rpc_requests_total{chain="ethereum",method="eth_blockNumber",node_id="test"'
            in text
        )
        assert "lasso_upstream_request_duration_seconds_bucket" in text


async def test_unknown_methods_collapse_to_other_in_metrics(node: Any) -> None:
    """Clients cannot blow up label cardinality: unregistered methods count as 'other'."""
    for i in range(3):
        await post(
            node.base_url + "/rpc/ethereum",
            {"jsonrpc": "2.0", "id": i, "method": f"x_weird{i}", "params": []},
        )
    async with aiohttp.ClientSession() as s, s.get(node.base_url + "/metrics") as r:
        text = await r.text()
    assert "x_weird" not in text
    assert 'method="other"' in text


async def test_head_requests_get_headers_without_a_body(node: Any) -> None:
    """HEAD answers 200 with Content-Length and no body; the connection stays usable."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", int(node.base_url.rsplit(":", 1)[1])
    )
    writer.write(
        b"HEAD /api/health HTTP/1.1\r\nHost: x\r\n\r\nGET /api/health HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
        second = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Length:" in head
    assert second.startswith(b"HTTP/1.1 200")  # no stray body bytes in between


@pytest.mark.parametrize(
    ("method", "path", "status", "allow"),
    [
        ("GET", "/rpc/ethereum", 405, "POST, OPTIONS"),
        ("PUT", "/rpc", 405, "POST, OPTIONS"),
        ("DELETE", "/rpc/fastest/ethereum", 405, "POST, OPTIONS"),
        ("PATCH", "/rpc/profile/team/other", 405, "POST, OPTIONS"),
        ("HEAD", "/rpc/ethereum", 405, "POST, OPTIONS"),
        ("POST", "/ws/rpc/ethereum", 405, "GET, OPTIONS"),
        ("DELETE", "/ws/rpc/fastest/ethereum", 405, "GET, OPTIONS"),
        ("GET", "/ws/rpc/ethereum", 426, None),
        ("POST", "/api/health", 405, "GET, HEAD, OPTIONS"),
        ("PUT", "/metrics", 405, "GET, HEAD, OPTIONS"),
        ("DELETE", "/api/metrics/ethereum", 405, "GET, HEAD, OPTIONS"),
        ("POST", "/nowhere", 404, None),
        ("PUT", "/nowhere", 404, None),
    ],
)
async def test_a_method_a_path_does_not_take_is_405_with_allow(
    node: Any, method: str, path: str, status: int, allow: str | None
) -> None:
    """Each path names the methods it takes in Allow (RFC 9110 §15.5.6); the JSON-RPC
    paths answer a JSON-RPC error saying what to use, a plain GET of a WebSocket path is
    426 Upgrade Required; the connection stays usable."""
    async with aiohttp.ClientSession() as s:
        async with s.request(method, node.base_url + path) as r:
            body = await r.read()
            assert r.status == status
            assert r.headers.get("Allow") == allow
            if method == "HEAD":
                assert body == b""
            elif path.startswith(("/rpc", "/ws/")):
                doc = orjson.loads(body)
                assert doc["id"] is None and doc["error"]["code"] == -32600
                want = "use POST" if path.startswith("/rpc") else "Upgrade: websocket"
                assert want in doc["error"]["message"]
        if status == 426:
            assert r.headers["Upgrade"] == "websocket"
        async with s.post(node.base_url + "/rpc/ethereum", data=orjson.dumps(BN)) as r:
            assert r.status == 200  # same pooled connection, still in step


async def test_post_to_rpc_without_a_chain_is_a_json_rpc_404(node: Any) -> None:
    """POST /rpc names no chain: the JSON-RPC "no route" error, with the client's id."""
    status, doc, _ = await post(node.base_url + "/rpc", {**BN, "id": 7})
    assert status == 404
    assert doc["id"] == 7 and doc["error"]["code"] == -32601


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/rpc/ethereum?strategy=bogus", "strategy"),
        ("/rpc/fastest/ethereum?strategy=slowest", "strategy"),
        ("/rpc/ethereum?include_meta=yes", "include_meta"),
    ],
)
async def test_a_bad_enumerated_query_value_is_400_listing_the_choices(
    node: Any, path: str, name: str
) -> None:
    """A query value outside its choices is a JSON-RPC -32602 (HTTP 400) with the client's
    id, naming the parameter and its valid values; it never falls back silently."""
    status, doc, _ = await post(node.base_url + path, {**BN, "id": "q"})
    assert status == 400 and doc["id"] == "q"
    assert doc["error"]["code"] == -32602
    assert doc["error"]["data"]["parameter"] == name
    assert all(v in doc["error"]["message"] for v in doc["error"]["data"]["valid_values"])


async def test_include_meta_none_answers_without_meta(node: Any) -> None:
    """?include_meta=none is valid and means no meta, whatever the header asks."""
    status, doc, headers = await post(
        node.base_url + "/rpc/ethereum?include_meta=none",
        BN,
        headers={"X-Lasso-Include-Meta": "body"},
    )
    assert status == 200 and "lasso_meta" not in doc and "X-Lasso-Meta" not in headers


async def test_a_bad_scope_on_chain_metrics_is_400_listing_the_choices(node: Any) -> None:
    """/api/metrics/:chain?scope= takes node or cluster; anything else is 400 saying so."""
    async with aiohttp.ClientSession() as s:
        async with s.get(node.base_url + "/api/metrics/ethereum?scope=bogus") as r:
            doc = await r.json()
            assert r.status == 400
        assert doc["parameter"] == "scope" and doc["valid_values"] == ["node", "cluster"]
        assert "'bogus'" in doc["message"]
        async with s.get(node.base_url + "/api/metrics/ethereum?scope=node") as r:
            assert r.status == 200
