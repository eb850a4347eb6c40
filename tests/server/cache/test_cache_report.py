"""The cache's report: its snapshot, summed over workers, as metrics and the panel view."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from lasso.config import ChainConfig
from lasso.kernel.cache_policy import Kind, Stamp
from lasso.server.cache.chain import ChainCache
from lasso.server.cache.report import collector, merged, snapshot, view
from lasso.server.cache.service import ResponseCache


async def _inner(*args: Any) -> Any:  # never called: the report reads counters only
    raise AssertionError("no calls")


def cache_with_traffic() -> ResponseCache:
    cache = ResponseCache(_inner)
    cc = ChainCache("public", ChainConfig(key="ethereum", chain_id=1, name="Ethereum"))
    cache.chains[("public", 1)] = cc
    for result in ("hit", "hit", "miss", "bypass"):
        cc.count("eth_getBalance", result)
    cc.count("made_up", "miss")
    cc.count_coalesced("eth_getBalance")
    cc.polls["latest"] = 3
    cc.store.put(b"k", b'"0x1"', Stamp(Kind.FINAL))
    return cache


def test_snapshot_is_json_ready_and_per_chain() -> None:
    """The snapshot lists each chain's counters as plain lists, methods outside the
    registry collapsed to ``other``."""
    doc = snapshot(cache_with_traffic())
    [chain] = doc["chains"]
    assert sorted(map(tuple, chain["requests"])) == [
        ("eth_getBalance", "bypass", 1),
        ("eth_getBalance", "hit", 2),
        ("eth_getBalance", "miss", 1),
        ("other", "miss", 1),
    ]
    assert chain["coalesced"] == [["eth_getBalance", 1]] and chain["entries"] == 1
    assert doc["redis"] is None


def test_workers_are_summed() -> None:
    """Another worker's snapshot adds to every counter of the same profile and chain."""
    cache = cache_with_traffic()
    other = snapshot(cache_with_traffic())
    doc = merged(cache, lambda: [{"cache": other}, {"no": "cache here"}])
    [chain] = doc["chains"]
    assert chain["requests"][("eth_getBalance", "hit")] == 4
    assert chain["coalesced"]["eth_getBalance"] == 2 and chain["polls"]["latest"] == 6
    assert chain["entries"] == 2 and chain["bytes"] == 2 * cache.chains[("public", 1)].store.bytes


def test_metrics_and_view() -> None:
    """The collector writes the contract's series; the view gives hit ratio and calls
    saved per method and per chain, and the chain id as a string like every /api answer."""
    cache = cache_with_traffic()
    registry = CollectorRegistry(auto_describe=False)

    class Adapter:
        def collect(self) -> Any:
            return collector(cache)("n1", 0.0)

    registry.register(Adapter())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert (
        'lasso_cache_requests_total{chain="ethereum",method="eth_getBalance",node_id="n1",'
        'profile="public",result="hit"} 2.0' in text
    )
    assert 'lasso_coalesced_requests_total{chain="ethereum",method="eth_getBalance"' in text
    assert 'lasso_cache_bytes{chain="ethereum",node_id="n1",profile="public"}' in text
    assert 'lasso_cache_head_polls_total{chain="ethereum",kind="latest"' in text
    doc = view(cache, "public")
    [chain] = doc["chains"]
    assert chain["chain_id"] == "1"
    row = next(r for r in chain["methods"] if r["method"] == "eth_getBalance")
    assert (row["requests"], row["hit_ratio"], row["saved"]) == (4, 0.5, 3)
    assert (chain["requests"], chain["saved"]) == (5, 3)
    assert view(cache, "other")["chains"] == []
