"""End to end: web3.py subscribed through Lasso to newHeads and logs of a real anvil chain
reached through three fault-injecting front doors, across upstream cuts and a reorg."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
import websockets
from eth_account import Account
from eth_utils import to_checksum_address
from test_web3_anvil import KEY0, _init_code
from web3 import AsyncWeb3, WebSocketProvider

from lasso.sim.faultproxy import FaultProxy

from support import UNIT, Anvil, eventually, profile_yaml

pytestmark = pytest.mark.e2e

FAST_WS = {
    "startup_jitter": 0.0,
    "reconnect_base": 0.05,
    "reconnect_cap": 0.2,
    "reconnect_jitter": 0.0,
    "heartbeat": 2.0,
}


class Chain:
    """Drives anvil directly: mining, signed transactions to a logging contract, reorgs."""

    def __init__(self, node: Anvil, session: aiohttp.ClientSession) -> None:
        self.node = node
        self.session = session
        self.acct = Account.from_key(KEY0)
        self.nonce = 0
        self.gas_price = 0
        self.contract = ""

    async def rpc(self, method: str, params: list[Any]) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        async with self.session.post(self.node.url, json=body) as r:
            doc = await r.json()
        assert "error" not in doc, doc
        return doc["result"]

    async def setup(self) -> None:
        self.nonce = int(
            await self.rpc("eth_getTransactionCount", [self.acct.address, "latest"]), 16
        )
        self.gas_price = int(await self.rpc("eth_gasPrice", []), 16)
        deploy = self.sign({"data": "0x" + _init_code(), "gas": 200_000})
        await self.rpc("eth_sendRawTransaction", [deploy])
        receipt = await eventually(
            lambda: self.rpc("eth_getTransactionReceipt", [self.last_hash]), message="deploy"
        )
        self.contract = to_checksum_address(receipt["contractAddress"])

    def sign(self, fields: dict[str, Any], nonce: int | None = None) -> str:
        if nonce is None:
            nonce = self.nonce
            self.nonce += 1
        tx = self.acct.sign_transaction(
            {"nonce": nonce, "gasPrice": self.gas_price, "chainId": 31337, **fields}
        )
        self.last_hash = "0x" + tx.hash.hex().removeprefix("0x")
        return "0x" + tx.raw_transaction.hex().removeprefix("0x")

    def log_tx(self, nonce: int | None = None) -> str:
        return self.sign({"to": self.contract, "gas": 100_000, "data": "0x"}, nonce)

    async def emit_log(self) -> None:
        """One transaction calling the contract: anvil mines a block with one log."""
        await self.rpc("eth_sendRawTransaction", [self.log_tx()])

    async def mine(self, n: int = 1) -> None:
        await self.rpc("anvil_mine", [hex(n)])

    async def head(self) -> int:
        return int(await self.rpc("eth_blockNumber", []), 16)

    async def logs(self, from_block: int) -> list[dict[str, Any]]:
        flt = {"address": self.contract, "fromBlock": hex(from_block), "toBlock": "latest"}
        result: list[dict[str, Any]] = await self.rpc("eth_getLogs", [flt])
        return result


@pytest.fixture
async def world(lasso_node: Any) -> AsyncIterator[tuple[Any, Chain, list[FaultProxy]]]:
    """A fresh anvil (reorgs change it), three doors, a Lasso node with three providers."""
    node = Anvil()
    doors = [FaultProxy("127.0.0.1", node.port) for _ in range(3)]
    session = aiohttp.ClientSession()
    try:
        for d in doors:
            await d.start()
        providers = "".join(
            f"      - id: door{i}\n        url: {d.url}\n        ws_url: {d.ws_url}\n"
            f"        priority: {(i + 1) * 10}\n"
            for i, d in enumerate(doors)
        )
        chains = (
            "  anvil:\n    chain_id: 31337\n"
            "    websocket:\n      new_heads_timeout_ms: 120000\n"
            "      failover: {max_backfill_blocks: 100, backfill_timeout_ms: 10000}\n"
            f"    providers:\n{providers}"
        )
        app = await lasso_node(profile_yaml(chains), ws_upstream_options=FAST_WS)
        ups = list(app.ws_upstreams)
        await eventually(lambda: len(ups) == 3 and all(u.connected for u in ups))
        chain = Chain(node, session)
        await chain.setup()
        yield app, chain, doors
    finally:
        await session.close()
        for d in doors:
            await d.stop()
        node.stop()


def _hex(value: Any) -> str:
    return "0x" + bytes(value).hex()


async def _collect(w3: AsyncWeb3, into: dict[str, list[Any]]) -> None:
    async for msg in w3.socket.process_subscriptions():
        into.setdefault(msg["subscription"], []).append(msg["result"])


async def test_no_block_lost_repeated_or_reordered_across_ten_cuts_and_a_reorg(
    world: tuple[Any, Chain, list[FaultProxy]],
) -> None:
    """Ten times the door serving the subscriptions is cut (RST) and refused while blocks
    and logs keep coming: web3 sees every block and every log exactly once, in order; then
    after anvil_reorg the new canonical heads arrive and the dropped logs come back with
    removed: true before the new ones."""
    app, chain, doors = world
    by_id = {f"door{i}": d for i, d in enumerate(doors)}
    url = app.base_url.replace("http://", "ws://") + "/ws/rpc/anvil"
    got: dict[str, list[Any]] = {}
    async with AsyncWeb3(WebSocketProvider(url)) as w3:
        heads_id = await w3.eth.subscribe("newHeads")
        logs_id = await w3.eth.subscribe("logs", {"address": chain.contract})
        assert len(heads_id) == 16 and heads_id != logs_id
        collector = asyncio.create_task(_collect(w3, got))
        try:
            mgr = app.subscriptions
            heads_stream = next(s for s in mgr.streams if s.kind == "newHeads")
            start = await chain.head() + 1

            for _ in range(10):
                await chain.emit_log()
                await chain.mine(1)
                await eventually(lambda: heads_stream.upstream is not None)
                serving = heads_stream.upstream.provider
                door = by_id[serving]
                door.cut()
                await door.refuse()
                await chain.emit_log()
                await chain.mine(2)
                await eventually(
                    lambda s=serving: (
                        heads_stream.upstream is not None and heads_stream.upstream.provider != s
                    ),
                    timeout=10,
                    message="failover",
                )
                await chain.emit_log()
                await door.resume()
            await chain.mine(1)
            head = await chain.head()

            def heads() -> list[Any]:
                return got.get(heads_id, [])

            await eventually(
                lambda: heads() and heads()[-1]["number"] >= head, timeout=10, message="catch up"
            )
            numbers = [h["number"] for h in heads()]
            assert numbers == list(range(start, head + 1))
            for h in heads():
                block = await chain.rpc("eth_getBlockByNumber", [hex(h["number"]), False])
                assert _hex(h["hash"]) == block["hash"]
            want = [(x["blockHash"], x["logIndex"]) for x in await chain.logs(start)]
            assert len(want) == 30

            def logs() -> list[Any]:
                return got.get(logs_id, [])

            await eventually(lambda: len(logs()) >= len(want), timeout=10, message="logs")
            assert [(_hex(x["blockHash"]), hex(x["logIndex"])) for x in logs()] == want
            assert not any(x["removed"] for x in logs())
            assert heads_stream.failovers == 10
            assert sum(s.machine.dropped for s in mgr.streams) == 0

            # -- the reorg: the last two blocks are replaced, one of them with a new log ----
            n_heads, n_logs = len(heads()), len(logs())
            top = head + 2
            await chain.emit_log()
            await chain.emit_log()

            async def mined() -> bool:
                return await chain.head() == top

            await eventually(mined, message="mined")
            await eventually(lambda: len(logs()) >= n_logs + 2, message="pre-reorg logs")
            old = {(_hex(x["blockHash"]), x["logIndex"]) for x in logs()[n_logs:]}
            # the replacement transaction takes the nonce of the first one dropped
            await chain.rpc("anvil_reorg", [2, [[chain.log_tx(chain.nonce - 2), 1]]])
            await chain.mine(1)
            final = await chain.head()
            assert final == top + 1
            await eventually(
                lambda: heads()[-1]["number"] == final and len(logs()) >= n_logs + 5,
                timeout=10,
                message="reorg delivered",
            )
            after = heads()[n_heads:]
            assert [h["number"] for h in after] == [top - 1, top, top - 1, top, final]
            for h in after[2:]:
                block = await chain.rpc("eth_getBlockByNumber", [hex(h["number"]), False])
                assert _hex(h["hash"]) == block["hash"]
            tail = logs()[n_logs + 2 :]
            removed = [x for x in tail if x["removed"]]
            added = [x for x in tail if not x["removed"]]
            assert {(_hex(x["blockHash"]), x["logIndex"]) for x in removed} == old
            assert tail[: len(removed)] == removed  # every removal before the new logs
            canonical = [(x["blockHash"], x["logIndex"]) for x in await chain.logs(top - 1)]
            assert [(_hex(x["blockHash"]), hex(x["logIndex"])) for x in added] == canonical
        finally:
            collector.cancel()


async def test_fifty_clients_share_one_upstream_subscription(
    world: tuple[Any, Chain, list[FaultProxy]],
) -> None:
    """Fifty sockets subscribing newHeads and the same logs filter (spelled differently)
    through the real endpoint make one upstream subscription per key; all get each head."""
    app, chain, doors = world
    url = app.base_url.replace("http://", "ws://") + "/ws/rpc/anvil"
    addr = chain.contract
    socks = [await websockets.connect(url) for _ in range(50)]
    try:
        for i, ws in enumerate(socks):
            spelled = addr.lower() if i % 2 else [addr.upper().replace("0X", "0x"), addr]
            await ws.send(
                orjson.dumps(
                    {"jsonrpc": "2.0", "id": 1, "method": "eth_subscribe", "params": ["newHeads"]}
                )
            )
            await ws.send(
                orjson.dumps(
                    {
                        "jsonrpc": "2.0",
                        "id": 2,
                        "method": "eth_subscribe",
                        "params": ["logs", {"address": spelled, "topics": [None]}],
                    }
                )
            )
            answers = [orjson.loads(await ws.recv()) for _ in range(2)]
            assert all(len(a["result"]) == 16 for a in answers)
        upstream = {(s.kind, s.upstream.provider) for s in app.subscriptions.streams if s.upstream}
        assert len(app.subscriptions.streams) == 2 and len(upstream) == 2
        assert app.metrics.subscriptions[("anvil", "newHeads")] == 50
        head = await chain.head() + 1  # the block the next transaction is mined in
        await chain.emit_log()
        for ws in socks:
            kinds = set()
            while len(kinds) < 2:
                msg = orjson.loads(await asyncio.wait_for(ws.recv(), 5 * UNIT))
                res = msg["params"]["result"]
                kinds.add("log" if "logIndex" in res else "head")
                if "number" in res:
                    assert int(res["number"], 16) == head
        text = app.metrics.render().decode()
        assert text.count("lasso_upstream_subscriptions{") == 2
    finally:
        for ws in socks:
            await ws.close()
    await eventually(lambda: app.metrics.subscriptions[("anvil", "newHeads")] == 0)


async def test_a_stalled_upstream_is_left_and_nothing_is_lost(
    world: tuple[Any, Chain, list[FaultProxy]],
) -> None:
    """The serving door stalls (socket open, nothing forwarded): after the staleness
    timeout the subscription moves on; when the door resumes, the bytes it held are
    duplicates and are dropped. Every block and log arrives once, in order."""
    app, chain, doors = world
    mgr = app.subscriptions
    mgr.stale_timeout_s = 0.5
    by_id = {f"door{i}": d for i, d in enumerate(doors)}
    url = app.base_url.replace("http://", "ws://") + "/ws/rpc/anvil"
    got: dict[str, list[Any]] = {}
    async with AsyncWeb3(WebSocketProvider(url)) as w3:
        heads_id = await w3.eth.subscribe("newHeads")
        logs_id = await w3.eth.subscribe("logs", {"address": chain.contract})
        collector = asyncio.create_task(_collect(w3, got))
        try:
            start = await chain.head() + 1
            heads_stream = next(s for s in mgr.streams if s.kind == "newHeads")
            await chain.emit_log()
            await eventually(lambda: got.get(heads_id))
            serving = heads_stream.upstream.provider
            by_id[serving].stall()
            for _ in range(4):  # the other doors' block-sync feeds see these blocks
                await chain.emit_log()
            await eventually(
                lambda: (
                    heads_stream.upstream is not None and heads_stream.upstream.provider != serving
                ),
                timeout=10,
                message="stale failover",
            )
            # the logs key on the silent provider moves with it (not after a heartbeat)
            logs_stream = next(s for s in mgr.streams if s.kind == "logs")
            assert logs_stream.upstream is None or logs_stream.upstream.provider != serving
            await by_id[serving].resume()
            await chain.emit_log()
            await chain.mine(1)  # anvil_mine answers once mined: the head below is final
            head = await chain.head()
            await eventually(lambda: got[heads_id][-1]["number"] == head, timeout=10)
            assert [h["number"] for h in got[heads_id]] == list(range(start, head + 1))
            want = [(x["blockHash"], x["logIndex"]) for x in await chain.logs(start)]
            await eventually(lambda: len(got.get(logs_id, [])) >= len(want), timeout=10)
            assert [(_hex(x["blockHash"]), hex(x["logIndex"])) for x in got[logs_id]] == want
        finally:
            collector.cancel()
