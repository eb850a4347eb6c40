"""Sticky filters over real sockets: the per-client bound of the filter table (CONTRACT §8,
docs/routing.md), so one client's flood of filters never evicts another client's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.kernel.filters import MAX_FILTERS, MAX_FILTERS_PER_CLIENT

from server_rpc_support import ScriptedUpstream, chain_yaml
from support import profile_yaml

pytestmark = pytest.mark.integration


@pytest.fixture
async def upstream() -> AsyncIterator[ScriptedUpstream]:
    up = await ScriptedUpstream().start()
    yield up
    await up.stop()


async def post(url: str, body: Any, source: str = "127.0.0.1") -> Any:
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with (
        aiohttp.ClientSession(connector=connector) as s,
        s.post(url, data=orjson.dumps(body)) as r,
    ):
        assert r.status == 200
        return orjson.loads(await r.read())


def new_filter(i: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": i, "method": "eth_newBlockFilter", "params": []}


async def test_a_flooding_client_only_evicts_its_own_filters(
    upstream: ScriptedUpstream, lasso_node: Any
) -> None:
    """The QA repro on an open profile: one filter, then 10 batches of 1,000 filters from
    another address; the first filter still answers, the flood keeps its last 1,000."""
    app = await lasso_node(profile_yaml(chain_yaml(upstream)))
    url = app.base_url + "/rpc/ethereum"
    first = (await post(url, new_filter(0)))["result"]
    flood: list[str] = []
    for _ in range(MAX_FILTERS // 1_000):
        doc = await post(url, [new_filter(i) for i in range(1_000)], source="127.0.0.2")
        flood += [d["result"] for d in doc]
    poll = {"jsonrpc": "2.0", "id": 1, "method": "eth_getFilterChanges", "params": [first]}
    assert (await post(url, poll)).get("result") == "0x2a"
    poll["params"] = [flood[0]]  # the flooder's oldest: evicted by its own newer ones
    assert (await post(url, poll, source="127.0.0.2"))["error"]["message"] == "filter not found"
    poll["params"] = [flood[-MAX_FILTERS_PER_CLIENT]]
    assert (await post(url, poll, source="127.0.0.2")).get("result") == "0x2a"
