"""End to end: web3.py's AsyncWeb3 over a WebSocket to Lasso, in front of a real anvil."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from web3 import AsyncHTTPProvider, AsyncWeb3, WebSocketProvider

from support import Anvil, eventually, profile_yaml

pytestmark = pytest.mark.e2e

ADDR1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


async def test_web3_websocket_unary_calls_match_anvil(anvil: Anvil, lasso_node: Any) -> None:
    """Chain id, blocks, balances and concurrent calls over Lasso's WS equal anvil's answers."""
    chains = f"""  anvil:
    chain_id: 31337
    providers:
      - id: anvil-http
        url: {anvil.url}
      - id: anvil-ws
        ws_url: {anvil.ws_url}
"""
    app = await lasso_node(
        profile_yaml(chains), ws_upstream_options={"startup_jitter": 0, "reconnect_base": 0.05}
    )
    rt = app.runtime.profile(None).resolve("anvil")
    await eventually(lambda: rt.router.channel("anvil-ws", "ws").connected)
    direct = AsyncWeb3(AsyncHTTPProvider(anvil.url))
    ws_url = app.base_url.replace("http://", "ws://") + "/ws/rpc/anvil"
    async with AsyncWeb3(WebSocketProvider(ws_url)) as via:
        assert await via.eth.chain_id == 31337
        assert await via.eth.block_number == await direct.eth.block_number
        assert await via.eth.get_balance(ADDR1) == await direct.eth.get_balance(ADDR1)
        block = await via.eth.get_block("latest")
        assert block["hash"] == (await direct.eth.get_block(block["number"]))["hash"]
        balances = await asyncio.gather(*(via.eth.get_balance(ADDR1) for _ in range(20)))
        assert len(set(balances)) == 1
    # Pinned to the WS-only provider: Lasso -> anvil over an upstream WebSocket too.
    pinned = app.base_url.replace("http://", "ws://") + "/ws/rpc/provider/anvil-ws/anvil"
    async with AsyncWeb3(WebSocketProvider(pinned)) as via_ws:
        assert await via_ws.eth.get_balance(ADDR1) == await direct.eth.get_balance(ADDR1)
        assert await via_ws.eth.gas_price == await direct.eth.gas_price
    row = rt.router.channel("anvil-ws", "ws").methods["eth_getBalance"]
    assert row.successes >= 1
