"""Client keys, scopes and limits over HTTP (CONTRACT §9), through real sockets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from typing import Any

import aiohttp
import jwt
import orjson
import pytest

from lasso.profiles import parse_profile

from support import fleet_chain_yaml

pytestmark = pytest.mark.integration

KEY = "lasso_http-frontend-key-0001"
OTHER = "lasso_http-backend-key-00002"
JWT_SECRET = "h" * 32
BN = {"jsonrpc": "2.0", "id": 7, "method": "eth_blockNumber", "params": []}


def gated_yaml(fleet: Any, extra_keys: str = "", front: str = "") -> str:
    chains = fleet_chain_yaml(fleet) + fleet_chain_yaml(fleet, key="base", chain_id=8453)
    return f"""---
name: Gated
slug: gated
{front}auth:
  keys:
    - id: frontend
      key: {KEY}
      rps_limit: 2
      burst_limit: 3
      chains: [ethereum]
      methods: {{allow: ["eth_*"], deny: ["eth_sendRawTransaction"]}}
    - id: backend
      key_sha256: {hashlib.sha256(OTHER.encode()).hexdigest()}
{extra_keys}  jwt:
    secret: '{JWT_SECRET}'
    audience: lasso
---
chains:
{chains}"""


@pytest.fixture
async def node(sim_fleet: Any, lasso_node: Any) -> Any:
    fleet = await sim_fleet(["alpha"])
    open_profile = f"---\nname: Open\nslug: public\n---\nchains:\n{fleet_chain_yaml(fleet)}"
    limited = (
        f"---\nname: Limited\nslug: limited\nrps_limit: 1\nburst_limit: 2\n---\n"
        f"chains:\n{fleet_chain_yaml(fleet)}"
    )
    app = await lasso_node(open_profile, gated_yaml(fleet), limited)
    app.fleet = fleet
    return app


async def post(url: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=orjson.dumps(body), headers=headers) as r,
    ):
        content = await r.read()
        return r.status, (orjson.loads(content) if content else None), r.headers


def gated(node: Any, tail: str = "ethereum") -> str:
    return f"{node.base_url}/rpc/profile/gated/{tail}"


async def test_missing_key_is_401_with_the_client_id(node: Any) -> None:
    """No key: HTTP 401, -32001 "Unauthorized", the id kept, a WWW-Authenticate challenge."""
    status, doc, headers = await post(gated(node), {**BN, "id": "abc"})
    assert status == 401 and doc["id"] == "abc"
    assert doc["error"]["code"] == -32001 and doc["error"]["message"].startswith("Unauthorized")
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert node.fleet["alpha"].stats.methods.get("eth_blockNumber", 0) == 0


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({"X-Lasso-Api-Key": KEY}, ""),
        ({"Authorization": f"Bearer {KEY}"}, ""),
        ({}, f"?key={KEY}"),
    ],
    ids=["header", "bearer", "query"],
)
async def test_a_key_is_accepted_three_ways(node: Any, headers: dict[str, str], query: str) -> None:
    """Header, bearer token or ?key=: the request goes through."""
    status, doc, _ = await post(gated(node) + query, BN, headers)
    assert status == 200 and doc["id"] == 7 and doc["result"].startswith("0x")


async def test_wrong_key_is_401(node: Any) -> None:
    """A key that is not configured is refused like a missing one, without echoing it."""
    status, doc, _ = await post(gated(node), BN, {"X-Lasso-Api-Key": KEY + "-nope"})
    assert status == 401 and doc["error"]["code"] == -32001
    assert KEY not in orjson.dumps(doc).decode()


async def test_chain_and_method_scopes_are_403(node: Any) -> None:
    """Out-of-scope chain: 403/-32602; out-of-scope method: 403/-32601."""
    key = {"X-Lasso-Api-Key": OTHER}
    status, doc, _ = await post(gated(node, "base"), BN, key)
    assert status == 200  # backend has no scope
    key = {"X-Lasso-Api-Key": KEY}
    status, doc, _ = await post(gated(node, "base"), BN, key)
    assert (status, doc["error"]["code"], doc["id"]) == (403, -32602, 7)
    call = {"jsonrpc": "2.0", "id": 8, "method": "debug_traceCall", "params": []}
    status, doc, _ = await post(gated(node), call, key)
    assert (status, doc["error"]["code"], doc["id"]) == (403, -32601, 8)


async def test_batch_items_are_screened_one_by_one(node: Any) -> None:
    """A batch answers refused items in place (their ids kept) and runs the others."""
    batch = [
        {**BN, "id": 1},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_sendRawTransaction", "params": ["0x00"]},
        {**BN, "id": 3},
        {**BN, "id": 4},
        {**BN, "id": 5},
    ]
    status, doc, _ = await post(gated(node), batch, {"X-Lasso-Api-Key": KEY})
    assert status == 200
    by_id = {item["id"]: item for item in doc}
    assert by_id[2]["error"]["code"] == -32601
    assert [by_id[i].get("result") is not None for i in (1, 3, 4)] == [True, True, True]
    assert by_id[5]["error"]["code"] == -32005  # burst 3, four items asked for tokens
    assert by_id[5]["error"]["data"]["retry_after_ms"] > 0


async def test_over_the_rate_is_429_with_retry_after(node: Any) -> None:
    """Burst 3 at 2 rps: the fourth request at once is 429, Retry-After, -32005."""
    key = {"X-Lasso-Api-Key": KEY}
    statuses = [(await post(gated(node), BN, key))[0] for _ in range(3)]
    status, doc, headers = await post(gated(node), {**BN, "id": "late"}, key)
    assert statuses == [200, 200, 200] and status == 429
    assert int(headers["Retry-After"]) >= 1 and doc["id"] == "late"
    assert doc["error"]["code"] == -32005 and 0 < doc["error"]["data"]["retry_after_ms"] <= 500


async def test_anonymous_clients_are_limited_per_address(node: Any) -> None:
    """A profile with only rps_limit: each address gets its bucket; keys are not needed."""
    url = f"{node.base_url}/rpc/profile/limited/ethereum"
    statuses = [(await post(url, BN))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_an_open_profile_is_untouched(node: Any) -> None:
    """No auth, no rps_limit: no checks and no client counters."""
    for _ in range(10):
        assert (await post(f"{node.base_url}/rpc/ethereum", BN))[0] == 200
    assert not any(p == "public" for p, _, _ in node.clients.stats)


async def test_jwt_bearer(node: Any) -> None:
    """A valid JWT passes; an expired one is 401 with reason token_expired."""
    now = int(time.time())
    good = jwt.encode({"sub": "u", "aud": "lasso", "exp": now + 60}, JWT_SECRET, algorithm="HS256")
    old = jwt.encode({"sub": "u", "aud": "lasso", "exp": now - 600}, JWT_SECRET, algorithm="HS256")
    assert (await post(gated(node), BN, {"Authorization": f"Bearer {good}"}))[0] == 200
    status, doc, _ = await post(gated(node), BN, {"Authorization": f"Bearer {old}"})
    assert status == 401 and doc["error"]["data"]["reason"] == "token_expired"


async def test_counters_views_and_meta_name_the_key_id(node: Any) -> None:
    """/metrics, /api/clients and include_meta know the key only by its id."""
    key = {"X-Lasso-Api-Key": OTHER}
    await post(gated(node) + "?include_meta=headers", BN, key)
    await post(gated(node), BN)  # unauthorized, counted as anonymous
    async with aiohttp.ClientSession() as s:
        async with s.get(node.base_url + "/metrics") as r:
            text = await r.text()
        async with s.get(node.base_url + "/api/clients?profile=gated") as r:
            view = await r.json()
        async with s.get(node.base_url + "/api/clients?profile=nope") as r:
            assert r.status == 404
    assert (
        'lasso_client_requests_total{key="backend",node_id="test",profile="gated",status="success"}'
        in text
    )
    assert 'key="anonymous",node_id="test",profile="gated",status="unauthorized"' in text
    rows = {row["key"]: row for row in view["clients"]}
    assert rows["backend"]["requests"] == 1 and rows["anonymous"]["refused"] == 1
    assert set(rows) == {"frontend", "backend", "jwt", "anonymous"}


async def test_reload_applies_new_keys_without_dropping_connections(node: Any) -> None:
    """On one keep-alive connection: a key added by a reload works, a removed one is 401."""
    async with aiohttp.ClientSession() as s:

        async def call(key: str) -> int:
            async with s.post(
                gated(node), data=orjson.dumps(BN), headers={"X-Lasso-Api-Key": key}
            ) as r:
                await r.read()
                return r.status

        added = "lasso_added-by-reload-00001"
        assert await call(OTHER) == 200
        assert await call(added) == 401
        text = gated_yaml(node.fleet, extra_keys=f"    - id: added\n      key: {added}\n")
        backend = (
            f"    - id: backend\n      key_sha256: {hashlib.sha256(OTHER.encode()).hexdigest()}\n"
        )
        profiles = {slug: p.config for slug, p in node.runtime.profiles.items()}
        profiles["gated"] = parse_profile(text.replace(backend, ""), "gated.yml", {})
        await node.reload(profiles)
        assert await call(added) == 200
        assert await call(OTHER) == 401


async def test_secret_in_query_never_reaches_meta(node: Any) -> None:
    """include_meta=body with ?key=: the meta object holds no trace of the key."""
    status, doc, headers = await post(gated(node) + f"?include_meta=body&key={KEY}", BN)
    assert status == 200 and "lasso_meta" in doc
    assert KEY not in orjson.dumps(doc).decode()
    status, _, headers = await post(gated(node) + f"?include_meta=headers&key={KEY}", BN)
    meta = base64.urlsafe_b64decode(headers["X-Lasso-Meta"] + "==")
    assert KEY.encode() not in meta


async def test_concurrent_keyed_requests_are_all_counted(node: Any) -> None:
    """Concurrent requests of one key: each is admitted or limited, and counted once."""
    key = {"X-Lasso-Api-Key": OTHER}
    results = await asyncio.gather(*(post(gated(node), {**BN, "id": i}, key) for i in range(20)))
    assert all(status == 200 for status, _, _ in results)
    assert node.clients.stats[("gated", "backend", "success")] == 20
