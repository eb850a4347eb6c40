"""The request's Cache-Control: directives read as RFC 9111 says, end to end."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from lasso.net.http_messages import no_cache_requested

from support import fleet_chain_yaml, profile_yaml

ADDR = "0x" + "cd" * 20


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", False),
        ("no-cache", True),
        ("No-Cache", True),
        ("NO-CACHE", True),
        ("max-age=0, no-cache", True),
        (" private ,no-cache ", True),
        ('no-cache="set-cookie"', True),
        ("no-store", False),
        ("max-age=0", False),
        ("no-cache-please", False),
        ("x-no-cache", False),
    ],
)
def test_no_cache_is_a_case_insensitive_directive(value: str, expected: bool) -> None:
    """no-cache counts as a whole directive in any case, never as a substring."""
    assert no_cache_requested(value) is expected


@pytest.mark.integration
async def test_a_capitalised_no_cache_bypasses_the_cache(sim_fleet: Any, lasso_node: Any) -> None:
    """Cache-Control: No-Cache (as some HTTP libraries capitalise it) skips the cache read."""
    fleet = await sim_fleet(["alpha"], block_time_s=60.0)
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet)))
    url = app.base_url + "/rpc/ethereum"

    async def post(method: str, params: list[Any], headers: dict[str, str]) -> Any:
        async with aiohttp.ClientSession() as s:
            body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
            async with s.post(url, data=orjson.dumps(body), headers=headers) as r:
                assert r.status == 200
                return r.headers.get("X-Lasso-Cache"), orjson.loads(await r.read())

    _, head = await post("eth_blockNumber", [], {})  # the node learns the head
    final_block = hex(int(head["result"], 16) - 100)

    async def cache_status(headers: dict[str, str]) -> str:
        status, _ = await post("eth_getBalance", [ADDR, final_block], headers)
        return str(status)

    assert await cache_status({}) == "MISS"
    assert await cache_status({}) == "HIT"
    assert await cache_status({"Cache-Control": "No-Cache"}) == "BYPASS"
    assert await cache_status({"Cache-Control": "no-cache-please"}) == "HIT"
