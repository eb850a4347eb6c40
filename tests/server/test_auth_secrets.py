"""Secrets stay secret: a run with keys and tokens in use, every way, right and wrong; then
every log line (DEBUG, as JSON), every metric, every API answer and the meta are searched
for the secrets."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import Any

import aiohttp
import jwt
import orjson
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from lasso.logs import JsonFormatter

from support import fleet_chain_yaml

pytestmark = pytest.mark.integration

KEY = "lasso_topsecret-key-AAAAAAAAAAAA"
SECOND = "lasso_topsecret-key-BBBBBBBBBBBB"
WRONG = "lasso_topsecret-guess-CCCCCCCCCC"
JWT_SECRET = "topsecret-jwt-hmac-DDDDDDDDDDDDDDDDDD"
BN = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}


class Capture(logging.Handler):
    """Every record of the process but the test's own client library (websockets.client
    logs the URLs it opens), formatted the way ``lasso serve`` writes it (JSON, extras)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter("test"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("websockets.client"):
            self.lines.append(self.format(record))


@pytest.fixture
def capture() -> Any:
    handler = Capture()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler
    root.removeHandler(handler)
    root.setLevel(old_level)


async def test_no_secret_in_logs_metrics_api_or_meta(
    sim_fleet: Any, lasso_node: Any, capture: Capture
) -> None:
    """Keys by header, bearer and query, a JWT, wrong keys, refusals, limits, WebSocket,
    a reload and a key_sha256 entry: no secret appears anywhere a user or operator sees."""
    fleet = await sim_fleet(["alpha"])
    chain = fleet_chain_yaml(fleet)
    text = f"""---
name: Secret
slug: secret
rps_limit: 5
auth:
  keys:
    - id: frontend
      key: {KEY}
      methods: {{deny: ["debug_*"]}}
    - id: second
      key: {SECOND}
  jwt:
    secret: '{JWT_SECRET}'
---
chains:
{chain}"""
    node = await lasso_node(text)
    base = node.base_url + "/rpc/profile/secret/ethereum"
    ws_base = node.base_url.replace("http://", "ws://") + "/ws/rpc/profile/secret/ethereum"
    token = jwt.encode(
        {"sub": "carol", "exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256"
    )
    forged = jwt.encode(
        {"sub": "mallory", "exp": int(time.time()) + 60}, "x" * 40, algorithm="HS256"
    )
    seen: list[str] = []
    async with aiohttp.ClientSession() as s:

        async def post(url: str, body: Any, headers: dict[str, str] | None = None) -> None:
            async with s.post(url, data=orjson.dumps(body), headers=headers) as r:
                seen.append(await r.text())
                seen.extend(f"{k}: {v}" for k, v in r.headers.items())
                meta = r.headers.get("X-Lasso-Meta")
                if meta:
                    seen.append(base64.urlsafe_b64decode(meta + "==").decode())

        for headers, query in [
            ({"X-Lasso-Api-Key": KEY}, "?include_meta=headers"),
            ({"Authorization": f"Bearer {KEY}"}, "?include_meta=body"),
            ({}, f"?key={KEY}&include_meta=body"),
            ({}, f"?include_meta=headers&key={SECOND}"),
            ({"Authorization": f"Bearer {token}"}, "?include_meta=body"),
            ({"Authorization": f"Bearer {forged}"}, ""),
            ({"X-Lasso-Api-Key": WRONG}, ""),
            ({}, f"?key={WRONG}"),
            ({}, ""),
        ]:
            await post(base + query, BN, headers)
        debug = {"jsonrpc": "2.0", "id": 2, "method": "debug_traceCall", "params": []}
        await post(base, debug, {"X-Lasso-Api-Key": KEY})
        await post(base, [BN] * 8, {"X-Lasso-Api-Key": KEY})  # over the rate
        await post(node.base_url + f"/rpc/profile/secret/nochain?key={KEY}", BN)
        async with websockets.connect(ws_base + f"?key={KEY}") as ws:
            await ws.send(orjson.dumps(BN).decode())
            seen.append(await asyncio.wait_for(ws.recv(), 5))
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(ws_base + f"?key={WRONG}"):
                pass  # pragma: no cover
        seen.append(info.value.response.body.decode())
        await node.reload({slug: p.config for slug, p in node.runtime.profiles.items()})
        for path in [
            "/metrics",
            "/api/health",
            "/api/chains?profile=secret",
            "/api/metrics/ethereum?profile=secret",
            "/api/cluster",
            "/api/profiles",
            "/api/clients?profile=secret",
            "/dashboard/secret",
        ]:
            async with s.get(node.base_url + path) as r:
                assert r.status == 200, path
                seen.append(await r.text())
        async with s.get(node.base_url + "/api/stream?profile=secret") as r:
            first = await asyncio.wait_for(r.content.readuntil(b"\n\n"), 10)
            seen.append(first.decode())
    seen.append(repr(node.clients))
    seen.extend(repr(g) for g in node.clients.gates.values())
    seen.extend(repr(p.config) for p in node.runtime.profiles.values())
    assert any("frontend" in s for s in seen)  # the id is shown where the key is named
    assert any("unauthorized" in line or "Unauthorized" in line for line in seen)
    assert any('"config.reloaded"' in line for line in capture.lines), "the capture is not working"
    for secret in (KEY, SECOND, WRONG, JWT_SECRET, token, forged):
        for where, texts in (("answer", seen), ("log", capture.lines)):
            leaks = [t for t in texts if secret in t]
            assert not leaks, f"{secret[:12]}... found in a {where}: {leaks[0][:300]}"
