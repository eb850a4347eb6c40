"""Provider health end to end through the simulator: breakers, rate limits, lag, limits."""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.kernel.breaker import BreakerConfig, BreakerState
from lasso.sim.behavior import Behavior

from support import eventually, profile_yaml, routed_chain_yaml

pytestmark = pytest.mark.integration

ADDR = "0x00000000000000000000000000000000000000aa"
FAST_PROBES = "    monitoring:\n      probe_interval_ms: 50"


def balance(block: str = "latest", id_: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "eth_getBalance", "params": [ADDR, block]}


async def rpc(url: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.post(url, data=orjson.dumps(body)) as r:
        raw = await r.read()
        return r.status, (orjson.loads(raw) if raw else None)


def chain_of(app: Any) -> Any:
    return app.runtime.profile(None).resolve("ethereum")


async def test_failing_provider_opens_stops_and_recovers_through_half_open(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """Consecutive 500s open the circuit and traffic stops; once healed, half-open client
    probes close it again."""
    fleet = await sim_fleet(
        {"bad": Behavior(error_rate=1.0, error_mode="http500"), "good": Behavior()}
    )
    app = await lasso_node(
        profile_yaml(routed_chain_yaml(fleet)), breaker_config=BreakerConfig(recovery_timeout_s=0.3)
    )
    ch = chain_of(app).router.channel("bad", "http")
    for i in range(12):
        _, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", balance(id_=i))
        assert "result" in doc, doc
    assert fleet["bad"].stats.calls == 5  # the server_error threshold, then nothing
    assert ch.breaker.state(monotonic()) is BreakerState.OPEN
    await fleet["bad"].update(error_rate=0.0)
    await eventually(lambda: ch.breaker.state(monotonic()) is BreakerState.HALF_OPEN)
    # Half-open sits in tier 2: priority routing keeps using "good"...
    _, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", balance())
    assert "result" in doc and fleet["bad"].stats.calls == 5
    # ...while requests pinned to "bad" are its probes: two successes close it.
    for i in range(2):
        _, doc = await rpc(f"{app.base_url}/rpc/provider/bad/ethereum", balance(id_=i))
        assert "result" in doc, doc
    assert ch.breaker.state(monotonic()) is BreakerState.CLOSED
    _, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", balance())
    assert "result" in doc and fleet["bad"].stats.calls == 8  # first in priority again


async def test_recovered_idle_provider_is_readmitted_by_the_prober(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """With probes on, an idle provider whose circuit opened is re-admitted by the prober's
    half-open probes, so it takes traffic again without a client paying for the probe."""
    fleet = await sim_fleet({"bad": Behavior(), "good": Behavior()})
    app = await lasso_node(
        profile_yaml(routed_chain_yaml(fleet, extra=FAST_PROBES)),
        probes=True,
        breaker_config=BreakerConfig(recovery_timeout_s=0.3),
    )
    ch = chain_of(app).router.channel("bad", "http")
    await fleet["bad"].update(error_rate=1.0, error_mode="http500")
    for i in range(8):
        _, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", balance(id_=i))
        assert "result" in doc, doc
    assert ch.breaker.state(monotonic()) is BreakerState.OPEN
    balances = fleet["bad"].stats.methods["eth_getBalance"]
    await fleet["bad"].update(error_rate=0.0)
    await eventually(lambda: ch.breaker.state(monotonic()) is BreakerState.CLOSED, timeout=10)
    assert fleet["bad"].stats.methods["eth_getBalance"] == balances  # probes, not clients
    _, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", balance())
    assert "result" in doc
    assert fleet["bad"].stats.methods["eth_getBalance"] == balances + 1


@pytest.mark.parametrize("mode", ["http429", "jsonrpc"])
async def test_429_storm_demotes_the_provider_and_clients_see_no_errors(
    sim_fleet: Any, lasso_node: Any, mode: str
) -> None:
    """A burst against a throttling first provider: every client call succeeds, the channel
    is demoted (rate-limited, tier 3) and its breaker never counts a failure."""
    # Two tokens that never refill; http429 answers carry Retry-After: 1, the JSON-RPC
    # -32005 answers no hint (so the default 30 s applies).
    throttled = Behavior(rate_limit_rps=0.001, rate_limit_burst=2, rate_limit_mode=mode)  # type: ignore[arg-type]
    fleet = await sim_fleet({"limited": throttled, "good": Behavior()})
    app = await lasso_node(profile_yaml(routed_chain_yaml(fleet)))
    url = f"{app.base_url}/rpc/priority/ethereum"
    results = await asyncio.gather(*(rpc(url, balance(id_=i)) for i in range(60)))
    storm_end = monotonic()
    for i, (status, doc) in enumerate(results):
        assert status == 200 and doc["id"] == i and "result" in doc, doc
    assert fleet["limited"].stats.faults["rate_limited"] >= 1
    ch = chain_of(app).router.channel("limited", "http")
    assert ch.evidence.total_rate_limits == fleet["limited"].stats.faults["rate_limited"]
    assert ch.breaker.state(monotonic()) is BreakerState.CLOSED
    assert ch.breaker.consecutive_failures == 0
    # Demoted: later calls go to "good" first. Once a 1 s Retry-After has run out the
    # channel is tried again (one 429, then demoted for another second).
    fleet.reset_stats()
    for i in range(10):
        _, doc = await rpc(url, balance(id_=i))
        assert "result" in doc
    retries = 1 + int(monotonic() - storm_end) if mode == "http429" else 0
    assert fleet["limited"].stats.calls <= retries
    assert fleet["limited"].stats.statuses.get("200", 0) == 0
    if mode == "jsonrpc":  # 30 s: still limited now, whatever the machine's speed
        now = monotonic()
        assert 25 < ch.evidence.rate_limit_remaining(now) <= 30
        assert chain_of(app).router.provider_status("limited", now) == "rate_limited"
        async with aiohttp.ClientSession() as s, s.get(f"{app.base_url}/metrics") as r:
            text = await r.text()
        labels = (
            'chain="ethereum",node_id="test",profile="public",provider="limited",transport="http"'
        )
        assert f"lasso_provider_rate_limited{{{labels}}} 1.0" in text
        assert f"lasso_circuit_breaker_state{{{labels}}} 0.0" in text


async def test_all_providers_rate_limited_gives_a_clear_error(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """When nobody else can answer, the client gets -32000 with the rate limit and when to
    retry, never a bare upstream 429."""
    limited = Behavior(rate_limit_rps=0.001, rate_limit_burst=1)
    fleet = await sim_fleet({"a": limited, "b": limited})
    app = await lasso_node(profile_yaml(routed_chain_yaml(fleet)))
    url = f"{app.base_url}/rpc/ethereum"
    for i in range(2):  # each provider's single token
        _, doc = await rpc(url, balance(id_=i))
        assert "result" in doc
    status, doc = await rpc(url, balance(id_="x"))
    assert status == 200 and doc["id"] == "x"
    err = doc["error"]
    assert err["code"] == -32000
    assert err["data"]["last_error"]["category"] == "rate_limit"
    assert err["data"]["retry_after_ms"] == 1000  # the provider's Retry-After: 1
    assert sorted(err["data"]["providers_tried"]) == ["a", "b"]


async def test_lagging_provider_gets_no_latest_reads(sim_fleet: Any, lasso_node: Any) -> None:
    """A provider 50 blocks behind is excluded for `latest` reads, though first in priority."""
    fleet = await sim_fleet({"slow": Behavior(lag_blocks=50), "a": Behavior(), "b": Behavior()})
    extra = FAST_PROBES + "\n    selection:\n      max_lag_blocks: 2"
    app = await lasso_node(profile_yaml(routed_chain_yaml(fleet, extra=extra)), probes=True)
    router = chain_of(app).router
    await eventually(lambda: "slow" in router.state.lagging(monotonic(), 2))
    assert router.state.optimistic_lag("slow", monotonic()) >= 48
    fleet.reset_stats()
    url = f"{app.base_url}/rpc/priority/ethereum"
    head = fleet["a"].head()
    for i in range(10):
        _, doc = await rpc(url, balance(id_=i))
        assert "result" in doc
        block = {
            "jsonrpc": "2.0",
            "id": i,
            "method": "eth_getBlockByNumber",
            "params": ["latest", False],
        }
        _, doc = await rpc(url, block)
        assert int(doc["result"]["number"], 16) >= head
    slow = fleet["slow"].stats.methods
    assert slow["eth_getBalance"] == 0 and slow["eth_getBlockByNumber"] == 0
    assert fleet["a"].stats.methods["eth_getBalance"] == 10
    async with aiohttp.ClientSession() as s, s.get(f"{app.base_url}/api/metrics/ethereum") as r:
        providers = {p["id"]: p for p in (await r.json())["providers"]}
    assert providers["slow"]["lag"] >= 48 and providers["slow"]["status"] == "lagging"
    assert providers["a"]["status"] == "healthy"


async def test_get_logs_beyond_an_unconfigured_limit_moves_to_a_wider_provider(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """Without a configured max_block_range, the narrow provider's range error is a
    capability miss: the request fails over and the breaker is not touched."""
    fleet = await sim_fleet({"narrow": Behavior(max_block_range=10), "wide": Behavior()})
    app = await lasso_node(profile_yaml(routed_chain_yaml(fleet)))
    head = fleet["wide"].head()
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "eth_getLogs",
        "params": [{"fromBlock": hex(head - 50), "toBlock": hex(head)}],
    }
    _, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", body)
    assert "result" in doc, doc
    assert fleet["narrow"].stats.methods["eth_getLogs"] == 1
    assert fleet["wide"].stats.methods["eth_getLogs"] == 1
    ch = chain_of(app).router.channel("narrow", "http")
    assert ch.breaker.consecutive_failures == 0
    assert ch.methods["eth_getLogs"].outcomes["capability"] == 1


async def test_old_block_goes_to_the_archival_provider(sim_fleet: Any, lasso_node: Any) -> None:
    """A block older than archival_threshold skips `archival: false`; a recent one does not."""
    fleet = await sim_fleet({"pruned": Behavior(archival=False), "archive": Behavior()})
    chain = routed_chain_yaml(fleet, providers={"pruned": "archival: false"})
    app = await lasso_node(profile_yaml(chain))
    url = f"{app.base_url}/rpc/priority/ethereum"
    _, doc = await rpc(url, {"jsonrpc": "2.0", "id": 0, "method": "eth_blockNumber"})
    head = int(doc["result"], 16)  # the answer also gives the router a consensus height
    fleet.reset_stats()
    _, doc = await rpc(url, balance(hex(head - 1000)))
    assert "result" in doc, doc
    assert fleet["pruned"].stats.methods["eth_getBalance"] == 0
    assert fleet["archive"].stats.methods["eth_getBalance"] == 1
    _, doc = await rpc(url, balance(hex(head - 1)))
    assert "result" in doc
    assert fleet["pruned"].stats.methods["eth_getBalance"] == 1  # recent: priority order


async def test_undeclared_pruned_node_fails_over_on_missing_state(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """A pruned node not declared `archival: false` answers 'missing trie node': a
    capability miss, so the archival provider answers and nobody is penalized."""
    fleet = await sim_fleet({"pruned": Behavior(archival=False), "archive": Behavior()})
    app = await lasso_node(profile_yaml(routed_chain_yaml(fleet)))
    head = fleet["archive"].head()
    _, doc = await rpc(f"{app.base_url}/rpc/priority/ethereum", balance(hex(head - 1000)))
    assert "result" in doc, doc
    assert fleet["pruned"].stats.methods["eth_getBalance"] == 1
    ch = chain_of(app).router.channel("pruned", "http")
    assert ch.breaker.consecutive_failures == 0


async def test_every_circuit_open_gives_32000_with_retry_after(
    sim_fleet: Any, lasso_node: Any
) -> None:
    """Once every circuit is open the answer is immediate: -32000 and retry_after_ms."""
    broken = Behavior(error_rate=1.0, error_mode="http500")
    fleet = await sim_fleet({"a": broken, "b": broken})
    app = await lasso_node(profile_yaml(routed_chain_yaml(fleet)))
    url = f"{app.base_url}/rpc/ethereum"
    for i in range(5):
        await rpc(url, balance(id_=i))
    calls = fleet["a"].stats.calls + fleet["b"].stats.calls
    status, doc = await rpc(url, balance(id_=42))
    assert status == 200 and doc["id"] == 42
    assert doc["error"]["code"] == -32000
    assert "circuits open" in doc["error"]["message"]
    assert 0 < doc["error"]["data"]["retry_after_ms"] <= 31_500  # 30 s, +≤5 % jitter
    assert fleet["a"].stats.calls + fleet["b"].stats.calls == calls  # nothing sent
