"""Failover through real sockets: simulated providers misbehave, clients see no error."""

from __future__ import annotations

from typing import Any

import aiohttp
import orjson
import pytest

from lasso.kernel.keccak import tx_hash
from lasso.sim.behavior import Behavior

from support import profile_yaml, routed_chain_yaml

pytestmark = pytest.mark.integration

BLOCK_NUMBER = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}
BALANCE = {
    "jsonrpc": "2.0",
    "id": "b",
    "method": "eth_getBalance",
    "params": ["0x00000000000000000000000000000000000000aa", "latest"],
}


async def rpc(url: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, data=orjson.dumps(body)) as r:
        raw = await r.read()
        return r.status, (orjson.loads(raw) if raw else None)


async def start(
    sim_fleet: Any, lasso_node: Any, behaviors: dict[str, Behavior], **kw: Any
) -> tuple[Any, Any]:
    fleet = await sim_fleet(behaviors)
    app = await lasso_node(profile_yaml(routed_chain_yaml(fleet, **kw)))
    return fleet, app


@pytest.mark.parametrize(
    "fault",
    [
        {"error_rate": 1.0, "error_mode": "http500"},
        {"error_rate": 1.0, "error_mode": "jsonrpc"},
        {"down": True},
        {"drop": True},
        {"malformed": True},
    ],
    ids=["http500", "jsonrpc-internal-error", "refused", "dropped", "malformed"],
)
async def test_reads_fail_over_from_a_broken_first_provider(
    sim_fleet: Any, lasso_node: Any, fault: dict[str, Any]
) -> None:
    """With priority routing the broken provider is tried first, yet every read succeeds."""
    fleet, app = await start(sim_fleet, lasso_node, {"bad": Behavior(**fault), "good": Behavior()})
    for i in range(12):
        status, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", {**BALANCE, "id": i})
        assert status == 200
        assert doc["id"] == i and "result" in doc, doc
    assert fleet["good"].stats.calls >= 12


async def test_hanging_provider_times_out_and_fails_over(sim_fleet: Any, lasso_node: Any) -> None:
    """A provider that never answers costs one attempt timeout each, until its breaker opens."""
    fleet, app = await start(
        sim_fleet, lasso_node, {"hang": Behavior(hang=True), "good": Behavior()}
    )
    for i in range(4):
        status, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", {**BLOCK_NUMBER, "id": i})
        assert status == 200 and "result" in doc, doc
    # Two timeouts open the breaker (timeout threshold 2): later calls skip it entirely.
    assert fleet["hang"].stats.calls == 2
    assert fleet["good"].stats.calls == 4


async def test_breaker_opens_and_traffic_stops(sim_fleet: Any, lasso_node: Any) -> None:
    """After consecutive 500s the failing provider's circuit opens and it gets no more calls."""
    fleet, app = await start(
        sim_fleet,
        lasso_node,
        {"bad": Behavior(error_rate=1.0, error_mode="http500"), "good": Behavior()},
    )
    for i in range(20):
        status, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", {**BALANCE, "id": i})
        assert "result" in doc
    assert fleet["bad"].stats.calls == 5  # failure threshold
    async with aiohttp.ClientSession() as s, s.get(f"{app.base_url}/metrics") as r:
        text = await r.text()
    labels = 'chain="ethereum",node_id="test",profile="public",provider="bad",transport="http"'
    assert f"lasso_circuit_breaker_state{{{labels}}} 2.0" in text


async def test_rate_limited_provider_is_demoted_not_failed(sim_fleet: Any, lasso_node: Any) -> None:
    """429s move traffic to another provider without errors and without opening a breaker."""
    fleet, app = await start(
        sim_fleet,
        lasso_node,
        {"limited": Behavior(rate_limit_rps=0.001, rate_limit_burst=1), "good": Behavior()},
    )
    for i in range(15):
        status, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", {**BALANCE, "id": i})
        assert "result" in doc, doc
    # One success (the burst), one 429; then the channel sits in tier 3 and is not tried first.
    assert fleet["limited"].stats.faults["rate_limited"] == 1
    rt = app.runtime.profile(None).resolve("ethereum")
    ch = rt.router.channel("limited", "http")
    assert int(ch.breaker.state(0)) == 0
    assert ch.evidence.total_rate_limits == 1


async def test_a_send_that_failed_after_dispatch_goes_to_another_provider(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """A 500 after dispatch may have landed; a signed transaction is safe to rebroadcast,
    so the next provider gets it and its hash is the answer (CONTRACT §8)."""
    fleet, app = await start(
        sim_fleet,
        lasso_node,
        {"bad": Behavior(error_rate=1.0, error_mode="http500"), "good": Behavior()},
    )
    raw = "0x02f86c0180"
    body = {"jsonrpc": "2.0", "id": 9, "method": "eth_sendRawTransaction", "params": [raw]}
    status, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", body)
    assert status == 200 and doc["id"] == 9
    assert doc["result"] == tx_hash(raw)
    assert fleet["bad"].stats.methods["eth_sendRawTransaction"] == 1
    assert fleet["good"].stats.methods["eth_sendRawTransaction"] == 1


async def test_send_raw_transaction_moves_on_when_never_dispatched(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """A refused connection means the transaction never left: the next provider gets it."""
    fleet, app = await start(
        sim_fleet, lasso_node, {"down": Behavior(down=True), "good": Behavior()}
    )
    body = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "eth_sendRawTransaction",
        "params": ["0x02f86c0180"],
    }
    status, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", body)
    assert "result" in doc, doc
    assert fleet["good"].stats.methods["eth_sendRawTransaction"] == 1


async def test_unsupported_method_moves_to_a_provider_that_has_it(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """-32601 from one provider is a capability miss, not the answer."""
    fleet, app = await start(
        sim_fleet,
        lasso_node,
        {"thin": Behavior(unsupported_methods=frozenset({"eth_feeHistory"})), "full": Behavior()},
    )
    body = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "eth_feeHistory",
        "params": ["0x4", "latest", [25, 75]],
    }
    status, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", body)
    assert "result" in doc, doc
    assert fleet["thin"].stats.methods["eth_feeHistory"] == 1


async def test_all_providers_failing_gives_a_clear_error(sim_fleet: Any, lasso_node: Any) -> None:
    """Nothing can answer: -32000 with the reason, and retry_after_ms once circuits are open."""
    fleet, app = await start(
        sim_fleet,
        lasso_node,
        {
            "a": Behavior(error_rate=1.0, error_mode="http500"),
            "b": Behavior(error_rate=1.0, error_mode="http500"),
        },
    )
    status, doc = await rpc(f"{app.base_url}/rpc/ethereum", BALANCE)
    assert status == 200 and doc["id"] == "b"
    assert doc["error"]["code"] == -32000
    assert doc["error"]["data"]["last_error"]["category"] == "internal_error"  # HTTP 500, -32603
    for _ in range(6):
        await rpc(f"{app.base_url}/rpc/ethereum", BALANCE)
    status, doc = await rpc(f"{app.base_url}/rpc/ethereum", BALANCE)
    assert doc["error"]["code"] == -32000
    assert doc["error"]["data"]["retry_after_ms"] > 0


async def test_revert_comes_back_unchanged_and_is_not_retried(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """An execution revert is the caller's fault: returned as the provider sent it, one attempt."""
    fleet, app = await start(sim_fleet, lasso_node, {"a": Behavior(), "b": Behavior()})
    # The simulator reverts calls whose data starts with 0xdeadbeef.
    body = {
        "jsonrpc": "2.0",
        "id": 5,
        "method": "eth_call",
        "params": [{"to": "0x" + "11" * 20, "data": "0xdeadbeef"}, "latest"],
    }
    direct_status, direct = await rpc(fleet["a"].url, body)
    status, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", body)
    assert "error" in direct, direct
    assert doc == direct
    assert fleet["a"].stats.methods["eth_call"] == 2 and fleet["b"].stats.methods["eth_call"] == 0


async def test_get_logs_beyond_a_provider_range_limit_goes_elsewhere(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """A configured max_block_range keeps wide eth_getLogs away from that provider."""
    fleet = await sim_fleet({"narrow": Behavior(max_block_range=10), "wide": Behavior()})
    chain = routed_chain_yaml(
        fleet, providers={"narrow": "capabilities:\n  limits:\n    max_block_range: 10"}
    )
    app = await lasso_node(profile_yaml(chain))
    head = fleet["wide"].head()
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_getLogs",
        "params": [{"fromBlock": hex(head - 50), "toBlock": hex(head)}],
    }
    status, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", body)
    assert "result" in doc, doc
    assert fleet["narrow"].stats.methods["eth_getLogs"] == 0
    small = {**body, "params": [{"fromBlock": hex(head - 5), "toBlock": hex(head)}]}
    status, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", small)
    assert "result" in doc and fleet["narrow"].stats.methods["eth_getLogs"] == 1
