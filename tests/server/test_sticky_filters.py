"""Sticky filters through the driver (CONTRACT §8): Lasso's filter ids bound to the provider
that made the filter, polls sent there whatever the strategy, "filter not found" once the
binding is gone; and the table (with the served head) surviving a reload."""

from __future__ import annotations

import random
from time import monotonic
from types import MappingProxyType
from typing import Any

import orjson
import pytest

from lasso.config import ChainConfig, ProfileConfig, ProviderConfig
from lasso.kernel.breaker import BreakerConfig
from lasso.kernel.filters import FILTER_NOT_FOUND, Binding
from lasso.kernel.router import BreakerRegistry
from lasso.net.http_conn import UpstreamResponse
from lasso.net.transport import MemoryRequest, error_answer, result_answer
from lasso.server.consistency_state import NodeConsistency
from lasso.server.pipeline import execute
from lasso.server.runtime import ChainRuntime, PoolRegistry, Runtime
from server_pipeline_support import result_of, runtime, transport


class FilterNode:
    """A provider keeping its own filters, numbered 0x1, 0x2... like anvil or Nethermind."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.filters: dict[str, int] = {}

    def __call__(self, req: MemoryRequest) -> UpstreamResponse:
        method, params = req.method, req.doc["params"]
        if method.startswith("eth_new"):
            fid = hex(len(self.filters) + 1)
            self.filters[fid] = 0
            return result_answer(req, fid)
        fid = params[0]
        if fid not in self.filters:
            return error_answer(req, -32000, "filter not found")
        if method == "eth_uninstallFilter":
            del self.filters[fid]
            return result_answer(req, True)
        self.filters[fid] += 1
        return result_answer(req, [f"{self.name}:{fid}:{self.filters[fid]}"])


async def call(rt: ChainRuntime, method: str, params: Any, strategy: str = "round-robin") -> Any:
    return await execute(rt, method, params, strategy, None)


def error_of(out: Any) -> dict[str, Any]:
    if out.error is not None:
        return dict(out.error)
    return dict(orjson.loads(out.body)["error"])


@pytest.mark.parametrize("strategy", ["round-robin", "load-balanced", "fastest", "priority"])
async def test_polls_go_to_the_provider_that_made_the_filter(strategy: str) -> None:
    """Twelve polls of a block filter all reach its provider, with its own id."""
    nodes = {p: FilterNode(p) for p in "abc"}
    rt = runtime(**nodes)
    made = await call(rt, "eth_newBlockFilter", [], strategy)
    fid = result_of(made)
    assert isinstance(fid, str) and fid.startswith("0x") and len(fid) == 34
    owner = made.provider_id
    for i in range(12):
        out = await call(rt, "eth_getFilterChanges", [fid], strategy)
        assert result_of(out) == [f"{owner}:0x1:{i + 1}"]
    assert result_of(await call(rt, "eth_getFilterLogs", [fid.upper().replace("0X", "0x")]))
    others = [p for p in "abc" if p != owner]
    assert all(transport(rt, p).calls == 0 for p in others)


async def test_unknown_ids_are_not_found_and_uninstall_answers_false() -> None:
    """An id Lasso never made: 'filter not found'; uninstalling it: false."""
    rt = runtime(a=FilterNode("a"))
    out = await call(rt, "eth_getFilterChanges", ["0x1"])
    assert out.status == "rpc_error" and error_of(out) == FILTER_NOT_FOUND
    assert result_of(await call(rt, "eth_uninstallFilter", ["0x1"])) is False
    assert transport(rt, "a").calls == 0
    assert rt.consistency.counts[("filter_not_found", "")] == 2


async def test_malformed_ids_are_invalid_params() -> None:
    """A poll without one string id is -32602, without an upstream call."""
    rt = runtime(a=FilterNode("a"))
    for params in ([], [1], ["0x1", "0x2"], {"id": "0x1"}):
        out = await call(rt, "eth_getFilterChanges", params)
        assert error_of(out)["code"] == -32602


async def test_uninstall_forgets_the_binding() -> None:
    """After eth_uninstallFilter, the id is unknown."""
    rt = runtime(a=FilterNode("a"))
    fid = result_of(await call(rt, "eth_newFilter", [{"address": "0x" + "11" * 20}]))
    assert result_of(await call(rt, "eth_uninstallFilter", [fid])) is True
    assert error_of(await call(rt, "eth_getFilterChanges", [fid])) == FILTER_NOT_FOUND
    assert len(rt.consistency.filters) == 0


async def test_a_filter_the_provider_lost_is_not_found() -> None:
    """The provider restarted and forgot the filter: 'filter not found', binding dropped."""
    node = FilterNode("a")
    rt = runtime(a=node)
    fid = result_of(await call(rt, "eth_newPendingTransactionFilter", []))
    node.filters.clear()
    assert error_of(await call(rt, "eth_getFilterChanges", [fid])) == FILTER_NOT_FOUND
    assert len(rt.consistency.filters) == 0


async def test_a_filter_whose_provider_is_unreachable_is_not_found() -> None:
    """The provider's circuit is open: the client is told to recreate the filter."""
    rt = runtime(a=FilterNode("a"), b=FilterNode("b"))
    made = await call(rt, "eth_newBlockFilter", [], "priority")
    assert made.provider_id == "a"
    ch = rt.router.channel("a", "http")
    assert ch is not None
    ch.breaker.force_open(monotonic(), retry_after_s=60.0)
    out = await call(rt, "eth_getFilterChanges", [result_of(made)])
    assert error_of(out) == FILTER_NOT_FOUND
    remade = await call(rt, "eth_newBlockFilter", [], "priority")
    assert remade.provider_id == "b"


async def test_a_failed_creation_is_not_bound() -> None:
    """A creation every provider refused answers the error and binds nothing."""
    rt = runtime(a=lambda req: error_answer(req, -32601, "the method does not exist"))
    out = await call(rt, "eth_newBlockFilter", [])
    assert out.status == "error" and len(rt.consistency.filters) == 0


def _profiles(*providers: str) -> dict[str, ProfileConfig]:
    chain = ChainConfig(
        key="eth",
        chain_id=1,
        name="eth",
        providers=tuple(
            ProviderConfig(id=p, name=p, url=f"http://{p}.example", priority=i)
            for i, p in enumerate(providers)
        ),
    )
    profile = ProfileConfig(name="Public", slug="public", chains=MappingProxyType({"eth": chain}))
    return {"public": profile}


def _build(profiles: dict[str, ProfileConfig], node: NodeConsistency, gen: int) -> Runtime:
    rng = random.Random(1)
    return Runtime(
        profiles,
        pools=PoolRegistry(),
        breakers=BreakerRegistry(BreakerConfig(), rng),
        rng=rng,
        generation=gen,
        consistency=node,
    )


async def test_filters_and_the_served_head_survive_a_reload() -> None:
    """A new runtime generation keeps the chain's filter table and served head; a chain
    that left the profiles takes its state with it."""
    node = NodeConsistency()
    first = _build(_profiles("a", "b"), node, 1).profile("public")
    assert first is not None
    old = first.resolve("eth")
    assert old is not None
    old.router.head.serve_head(100)
    old.consistency.filters.bind("0xabc", _binding("a"), 0.0)
    second = _build(_profiles("a"), node, 2).profile("public")
    assert second is not None
    new = second.resolve("eth")
    assert new is not None and new is not old
    assert new.router.head is old.router.head and new.router.head.head == 100
    assert new.consistency is old.consistency and len(new.consistency.filters) == 1
    _build({}, node, 3)
    assert repr(node) == "<NodeConsistency chains=0>"


def _binding(pid: str) -> Binding:
    return Binding(provider_id=pid, upstream_id="0x1", method="eth_newBlockFilter")
