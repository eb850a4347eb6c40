"""Tests of the fleet: ephemeral ports, shared chains, the demo layout and the admin API."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from lasso.sim import (
    Behavior,
    ProviderSpec,
    SimFleet,
    SyntheticChain,
    default_demo_specs,
    demo_fleet,
    demo_profile_env,
)

START = 1_700_000_000.0
ROOT = Path(__file__).resolve().parents[2]
CHAIN_ID = {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"}


@pytest.fixture
async def fleet(clock: Any) -> AsyncIterator[SimFleet]:
    chain = SyntheticChain(1, 2.0, "fleet", start_time=START)
    base = SyntheticChain(8453, 1.0, "fleet", start_time=START)
    specs = [
        ProviderSpec(id="a"),
        ProviderSpec(id="b", behavior=Behavior(lag_blocks=2)),
        ProviderSpec(id="c", chain_id=8453),
    ]
    async with SimFleet([chain, base], specs, admin_port=0, clock=clock) as running:
        yield running


async def test_ephemeral_ports_and_urls(fleet: SimFleet, rpc: Any) -> None:
    """Port 0 binds distinct free ports; urls() and ws_urls() report the bound ones."""
    urls = fleet.urls()
    assert set(urls) == {"a", "b", "c"} and len(set(urls.values())) == 3
    assert all(
        re.fullmatch(r"http://127\.0\.0\.1:\d+", u) and not u.endswith(":0") for u in urls.values()
    )
    assert fleet.ws_urls()["a"] == urls["a"].replace("http", "ws") + "/ws"
    assert (await rpc(urls["c"], "eth_chainId"))["result"] == "0x2105"
    assert fleet["a"].chain is fleet.chain() and "a" in fleet and len(fleet) == 3
    assert fleet.admin_url is not None


async def test_providers_serve_one_chain(fleet: SimFleet, rpc: Any) -> None:
    """Providers of a chain agree on block hashes; a lagging one is behind by its lag."""
    a, b = fleet.urls()["a"], fleet.urls()["b"]
    head_a = int((await rpc(a, "eth_blockNumber"))["result"], 16)
    head_b = int((await rpc(b, "eth_blockNumber"))["result"], 16)
    assert head_a - head_b == 2
    block_a = (await rpc(a, "eth_getBlockByNumber", hex(head_b), False))["result"]
    block_b = (await rpc(b, "eth_getBlockByNumber", hex(head_b), False))["result"]
    assert block_a == block_b


async def test_admin_updates_behaviour(
    fleet: SimFleet, session: aiohttp.ClientSession, post: Any
) -> None:
    """POST /providers/{id} switches faults at run time; bad input is 400, unknown id 404."""
    admin = fleet.admin_url
    reply = await post(f"{admin}/providers/a", {"error_rate": 1, "error_mode": "http500"})
    assert reply.status == 200 and reply.json()["behavior"]["error_rate"] == 1.0
    assert fleet["a"].behavior.error_mode == "http500"
    assert (await post(fleet.urls()["a"], CHAIN_ID)).status == 500
    bad = await post(f"{admin}/providers/a", {"error_rate": 3})
    assert bad.status == 400 and "error_rate" in bad.json()["error"]
    unknown_field = await post(f"{admin}/providers/a", {"colour": "red"})
    assert unknown_field.status == 400 and "colour" in unknown_field.json()["error"]
    assert (await post(f"{admin}/providers/zz", {"down": True})).status == 404
    async with session.post(f"{admin}/providers/a", data=b"[1]") as r:
        assert r.status == 400
    reply = await post(f"{admin}/providers/a", {"down": True})
    assert reply.json()["listening"] is False and not fleet["a"].listening
    await post(f"{admin}/providers/a", {"down": False, "error_rate": 0})
    assert (await post(fleet.urls()["a"], CHAIN_ID)).status == 200


async def test_admin_lists_and_resets_stats(
    fleet: SimFleet, session: aiohttp.ClientSession, post: Any
) -> None:
    """GET /providers shows counters; reset-stats zeroes one provider or all of them."""
    admin = fleet.admin_url
    await post(fleet.urls()["a"], CHAIN_ID)
    await post(fleet.urls()["b"], CHAIN_ID)
    async with session.get(f"{admin}/providers") as r:
        listed = {p["id"]: p for p in (await r.json())["providers"]}
    assert listed["a"]["stats"]["methods"] == {"eth_chainId": 1}
    assert listed["b"]["head"] == listed["a"]["head"] - 2
    assert listed["c"]["chain_id"] == 8453
    one = await post(f"{admin}/providers/a/reset-stats", {})
    assert one.json()["stats"]["requests"] == 0 and fleet["b"].stats.requests == 1
    await post(f"{admin}/reset-stats", {})
    assert fleet["b"].stats.requests == 0
    async with session.get(f"{admin}/providers/b") as r:
        assert (await r.json())["behavior"]["lag_blocks"] == 2


async def test_admin_chain_and_reorg(
    fleet: SimFleet, session: aiohttp.ClientSession, post: Any, rpc: Any
) -> None:
    """GET /chain describes a chain; POST /chain/reorg replaces the newest blocks."""
    admin = fleet.admin_url
    async with session.get(f"{admin}/chain") as r:
        before = await r.json()
    assert before["chain_id"] == 1 and before["reorg_count"] == 0
    url = fleet.urls()["a"]
    old = (await rpc(url, "eth_getBlockByNumber", "latest", False))["result"]
    reply = await post(f"{admin}/chain/reorg", {"depth": 2})
    assert reply.json()["first_replaced"] == before["head"] - 1
    assert reply.json()["head_hash"] != before["head_hash"]
    new = (await rpc(url, "eth_getBlockByNumber", "latest", False))["result"]
    assert new["number"] == old["number"] and new["hash"] != old["hash"]
    parent = (await rpc(url, "eth_getBlockByHash", new["parentHash"], False))["result"]
    assert parent["number"] == hex(int(new["number"], 16) - 1)
    assert (await post(f"{admin}/chain/reorg", {"depth": 0})).status == 400
    assert (await post(f"{admin}/chain/reorg", {"depth": 1, "chain_id": 5})).status == 404
    async with session.get(f"{admin}/chain?chain_id=8453") as r:
        assert (await r.json())["reorg_count"] == 0
    async with session.get(f"{admin}/chains") as r:
        assert [c["chain_id"] for c in (await r.json())["chains"]] == [1, 8453]


def test_fleet_rejects_bad_specs() -> None:
    """Duplicate ids, unknown chains and bad ports are errors at construction."""
    chain = SyntheticChain(1, 2.0)
    with pytest.raises(ValueError, match="duplicate"):
        SimFleet(chain, [ProviderSpec(id="a"), ProviderSpec(id="a")])
    with pytest.raises(ValueError, match="unknown chain"):
        SimFleet(chain, [ProviderSpec(id="a", chain_id=10)])
    with pytest.raises(ValueError, match="port"):
        ProviderSpec(id="a", port=70000)
    with pytest.raises(ValueError, match="lag_blocks"):
        ProviderSpec.from_mapping({"id": "a", "lag_blocks": -1})
    spec = ProviderSpec.from_mapping(
        {"id": "a", "port": 5, "latency_ms": 3, "behavior": {"hang": True}}
    )
    assert spec.port == 5 and spec.behavior.latency_ms == 3 and spec.behavior.hang


def test_demo_specs_match_the_demo_profile() -> None:
    """default_demo_specs has the ids, chains and ports that config/profiles/demo.yml uses."""
    profile = ROOT / "config" / "profiles" / "demo.yml"
    body = profile.read_text().split("---", 2)[2]
    wanted: dict[str, tuple[int, int]] = {}
    for chain in yaml.safe_load(body)["chains"].values():
        for provider in chain["providers"]:
            port = int(re.search(r":(\d+)\}?\"?$", provider["url"]).group(1))  # type: ignore[union-attr]
            assert provider["ws_url"].endswith(f":{port}/ws}}")
            wanted[provider["id"]] = (chain["chain_id"], port)
    have = {s.id: (s.chain_id, s.port) for s in default_demo_specs()}
    assert have == wanted
    assert {s.port for s in default_demo_specs(ephemeral=True)} == {0}


async def test_demo_fleet_starts_on_ephemeral_ports(rpc: Any) -> None:
    """demo_fleet(ephemeral=True) runs both demo chains; demo_profile_env points at them."""
    profile = ROOT / "config" / "profiles" / "demo.yml"
    async with demo_fleet(ephemeral=True, admin_port=0) as fleet:
        env = demo_profile_env(fleet)
        assert env["LASSO_SIM_ALPHA_URL"] == fleet.urls()["alpha"]
        assert env["LASSO_SIM_BASE_CHARLIE_WS"] == fleet.ws_urls()["charlie-base"]
        if profile.exists():
            assert set(re.findall(r"\$\{(LASSO_SIM_\w+):-", profile.read_text())) == set(env)
        assert len(fleet) == 8
        assert (await rpc(fleet.urls()["alpha-base"], "eth_chainId"))["result"] == "0x2105"
        assert (await rpc(fleet.urls()["echo"], "eth_chainId"))["result"] == "0x1"
        assert fleet["delta"].behavior.max_block_range == 500
        assert fleet["echo"].behavior.archival is False
    assert not any(p.listening for p in fleet)
