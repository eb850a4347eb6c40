"""Hedging over real sockets: a provider that turned slow is raced, and it shows."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from lasso.kernel.breaker import BreakerState
from lasso.sim.behavior import Behavior

from support import fleet_chain_yaml, profile_yaml

pytestmark = pytest.mark.integration

BALANCE = {
    "jsonrpc": "2.0",
    "id": 7,
    "method": "eth_getBalance",
    "params": ["0x00000000000000000000000000000000000000aa", "latest"],
}
HEDGE = "    routing:\n      hedge: {delay_ms: 30, budget_percent: 100}"


async def post(url: str, body: Any) -> Any:
    async with aiohttp.ClientSession() as s, s.post(url, data=orjson.dumps(body)) as r:
        assert r.status == 200
        return orjson.loads(await r.read())


async def get_text(url: str) -> str:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return await r.text()


async def test_slow_provider_is_raced_and_the_hedge_wins(sim_fleet: Any, lasso_node: Any) -> None:
    """The first provider stalls: after 30 ms the second is asked too and its answer wins;
    meta, metrics and the decision feed say so, and the slow one is not blamed."""
    fleet = await sim_fleet({"slow": Behavior(latency_ms=1500), "fast": Behavior()})
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet, extra=HEDGE)))
    doc = await post(f"{app.base_url}/rpc/priority/ethereum?include_meta=body", BALANCE)
    assert doc["id"] == 7 and "result" in doc, doc
    meta = doc["lasso_meta"]
    assert meta["hedged"] is True and meta["hedge_winner"] == "hedge"
    assert meta["selected_provider"]["id"] == "fast" and meta["retries"] == 0
    assert meta["end_to_end_latency_ms"] < 1000
    text = await get_text(f"{app.base_url}/metrics")
    won = 'lasso_hedges_total{chain="ethereum",node_id="test",outcome="won",profile="public"} 1.0'
    assert won in text, [line for line in text.splitlines() if "hedges" in line]
    decision = app.events.decisions[-1]
    assert decision["hedged"] is True and decision["hedge_winner"] == "hedge"
    rt = app.runtime.profile(None).resolve("ethereum")
    slow = rt.router.channel("slow", "http")
    assert slow.evidence.total_failures == 0
    assert slow.breaker.state(0.0) is BreakerState.CLOSED


async def test_fast_answers_are_not_hedged(sim_fleet: Any, lasso_node: Any) -> None:
    """Answers within the delay leave the second provider alone: hedged is false."""
    fleet = await sim_fleet({"a": Behavior(), "b": Behavior()})
    extra = "    routing:\n      hedge: {delay_ms: 2000, budget_percent: 100}"
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet, extra=extra)))
    for i in range(5):
        doc = await post(
            f"{app.base_url}/rpc/priority/ethereum?include_meta=body", {**BALANCE, "id": i}
        )
        assert doc["lasso_meta"]["hedged"] is False and "hedge_winner" not in doc["lasso_meta"]
    assert fleet["b"].stats.calls == 0
