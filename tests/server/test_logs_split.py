"""eth_getLogs through the driver (CONTRACT §8): proactive splits by configured and learned
limits, reactive re-splits, bounded parallelism, block order, failing whole, tags resolved
first, blockHash unsplit, max_range refused; over in-memory providers."""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Any

import orjson
import pytest

from lasso.config import GetLogsConfig
from lasso.net.http_conn import UpstreamResponse
from lasso.net.transport import MemoryRequest, error_answer, result_answer
from lasso.server.consistency_state import ChainConsistency
from lasso.server.pipeline import execute
from lasso.server.runtime import ChainRuntime
from server_pipeline_support import result_of, runtime, transport


def truth(lo: int, hi: int) -> list[dict[str, Any]]:
    """The chain's logs: one in every third block."""
    return [
        {"blockNumber": hex(n), "logIndex": "0x0", "data": hex(n * 7)}
        for n in range(lo, hi + 1)
        if n % 3 == 0
    ]


class LogsNode:
    """A provider answering eth_getLogs from :func:`truth`, refusing ranges over ``limit``
    (with ``message``), at ``height``; counts the ranges it was sent and its concurrency."""

    def __init__(
        self,
        limit: int | None = None,
        *,
        message: str = "query exceeds max block range {limit}",
        height: int = 100_000,
        results: int | None = None,
    ) -> None:
        self.limit = limit
        self.message = message
        self.height = height
        self.results = results
        self.ranges: list[tuple[int, int]] = []
        self.in_flight = 0
        self.peak = 0

    async def __call__(self, req: MemoryRequest) -> UpstreamResponse:
        doc = req.doc
        if doc["method"] == "eth_blockNumber":
            return result_answer(req, hex(self.height))
        flt = doc["params"][0]
        lo, hi = int(flt["fromBlock"], 16), int(flt["toBlock"], 16)
        self.ranges.append((lo, hi))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.001)  # the simulated provider's latency
        finally:
            self.in_flight -= 1
        if self.limit is not None and hi - lo + 1 > self.limit:
            return error_answer(req, -32000, self.message.format(limit=self.limit))
        logs = truth(lo, min(hi, self.height))
        if self.results is not None and len(logs) > self.results:
            return error_answer(req, -32005, f"query returned more than {self.results} results")
        return result_answer(req, logs)


def logs_chain(settings: GetLogsConfig | None = None, **nodes: Any) -> ChainRuntime:
    limits = {pid: n.limit for pid, n in nodes.items() if getattr(n, "configured", False)}
    extra = {"get_logs": settings} if settings is not None else None
    rt = runtime(chain_settings=extra, limits=limits, **nodes)
    for pid, n in nodes.items():
        rt.router.observe_height(pid, n.height, monotonic())
    return rt


def configured(node: LogsNode) -> LogsNode:
    """The node's limit is also in its profile (limits.max_block_range)."""
    node.configured = True  # type: ignore[attr-defined]
    return node


def span(lo: int, hi: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"fromBlock": hex(lo), "toBlock": hex(hi), **extra}]


async def get_logs(rt: ChainRuntime, params: Any, provider_id: str | None = None) -> Any:
    return await execute(rt, "eth_getLogs", params, "round-robin", provider_id)


async def test_a_wide_range_is_split_by_configured_limits_and_merged_in_order() -> None:
    """10,000 blocks over 100- and 1,000-block providers: 1,000-block chunks, all to the
    provider they fit, merged in block order and equal to the truth."""
    small, big = configured(LogsNode(100)), configured(LogsNode(1000))
    rt = logs_chain(small=small, big=big)
    out = await get_logs(rt, span(1, 10_000))
    assert result_of(out) == truth(1, 10_000)
    assert small.ranges == [] and len(big.ranges) == 10
    assert sorted(big.ranges) == [(a, a + 999) for a in range(1, 10_000, 1000)]
    assert big.peak <= 4  # routing.get_logs.max_parallel's default
    assert out.extra == {
        "get_logs": {"from": "0x1", "to": "0x2710", "chunks": 10, "providers": ["big"]}
    }
    assert rt.consistency.counts[("chunks", "ok")] == 10
    assert rt.consistency.counts[("splits", "")] == 1


async def test_an_unconfigured_limit_is_learned_and_then_split_proactively() -> None:
    """The first request is split reactively from the provider's error; the next one is
    split up front to the learned size."""
    node = LogsNode(500)
    rt = logs_chain(only=node)
    out = await get_logs(rt, span(0, 1999))
    assert result_of(out) == truth(0, 1999)
    assert rt.router.logs_range_limit("only") == 500
    node.ranges.clear()
    out = await get_logs(rt, span(0, 1999))
    assert result_of(out) == truth(0, 1999)
    assert sorted(node.ranges) == [(0, 499), (500, 999), (1000, 1499), (1500, 1999)]


async def test_a_limit_without_a_number_halves_until_it_fits() -> None:
    """'block range too large' names no limit: halves, down to what the provider takes."""
    node = LogsNode(300, message="block range too large")
    rt = logs_chain(only=node)
    out = await get_logs(rt, span(0, 999))
    assert result_of(out) == truth(0, 999)
    assert max(hi - lo + 1 for lo, hi in node.ranges if hi - lo < 300) <= 300


async def test_too_many_results_splits_the_chunk_and_learns_no_range() -> None:
    """A result-size error splits that chunk only; the range limit stays unknown."""
    node = LogsNode(results=50)
    rt = logs_chain(only=node)
    out = await get_logs(rt, span(0, 599))
    assert result_of(out) == truth(0, 599)
    assert rt.router.logs_range_limit("only") is None


async def test_parallelism_is_bounded_per_request_and_node_wide() -> None:
    """max_parallel bounds one request; the node's slots bound every request together."""
    state = ChainConsistency(logs_slots=asyncio.Semaphore(3))
    node = configured(LogsNode(100))
    rt = runtime(
        chain_settings={"get_logs": GetLogsConfig(max_parallel=2)},
        limits={"only": 100},
        state=state,
        only=node,
    )
    rt.router.observe_height("only", node.height, monotonic())
    one = await get_logs(rt, span(0, 999))
    assert result_of(one) == truth(0, 999) and node.peak == 2
    node.peak = 0
    outs = await asyncio.gather(*(get_logs(rt, span(0, 999)) for _ in range(4)))
    assert all(result_of(o) == truth(0, 999) for o in outs)
    assert node.peak == 3


async def test_a_failing_chunk_fails_the_whole_request() -> None:
    """One chunk's error is the answer; no partial logs, the other chunks stopped."""

    async def broken(req: MemoryRequest) -> UpstreamResponse:
        lo = int(req.doc["params"][0]["fromBlock"], 16)
        if lo >= 500:
            return error_answer(req, -32602, "invalid argument: bad topic")
        await asyncio.sleep(0.001)
        return result_answer(req, truth(lo, int(req.doc["params"][0]["toBlock"], 16)))

    rt = runtime(limits={"a": 100}, a=broken)
    rt.router.observe_height("a", 10_000, monotonic())
    out = await get_logs(rt, span(0, 999))
    assert out.status == "rpc_error" and out.body is not None
    doc = orjson.loads(out.body)
    assert doc["error"]["message"] == "invalid argument: bad topic" and "result" not in doc
    assert transport(rt, "a").calls < 10 + 4
    assert rt.consistency.counts[("chunks", "failed")] == 1


async def test_logs_outside_a_chunk_fail_the_request() -> None:
    """A provider answering logs of other blocks gave a wrong answer: the request fails."""
    rt = runtime(limits={"a": 10}, a=lambda req: result_answer(req, truth(0, 99)))
    rt.router.observe_height("a", 1000, monotonic())
    out = await get_logs(rt, span(0, 99))
    assert out.status == "error" and out.error is not None
    assert "outside the range" in out.error["message"]


async def test_a_single_block_still_too_large_fails() -> None:
    """A one-block chunk that is still too many results cannot be split: the request fails."""
    node = LogsNode(results=0)
    rt = logs_chain(only=node)
    out = await get_logs(rt, span(3, 4))
    assert out.status == "error" and out.error is not None
    assert out.error["code"] == -32005


async def test_tags_are_resolved_first() -> None:
    """'earliest'..'latest' is sent as numbers up to the chain's head."""
    node = LogsNode(height=300)
    rt = logs_chain(only=node)
    out = await get_logs(rt, [{"fromBlock": "earliest", "toBlock": "latest"}])
    assert result_of(out) == truth(0, 300)
    assert node.ranges == [(0, 300)]


async def test_max_range_is_refused_with_data() -> None:
    """A range over routing.get_logs.max_range is -32602 with data.max_range, unsent."""
    node = LogsNode()
    rt = logs_chain(GetLogsConfig(max_range=1000), only=node)
    out = await get_logs(rt, span(0, 1000))
    assert out.status == "rpc_error" and out.error is not None
    assert out.error["code"] == -32602
    assert out.error["data"] == {"max_range": 1000, "requested": 1001}
    assert node.ranges == []


async def test_block_hash_filters_are_not_split() -> None:
    """A blockHash filter is one block: sent as it is."""
    rt = runtime(limits={"a": 1}, a=lambda req: result_answer(req, truth(3, 3)))
    params = [{"blockHash": "0x" + "ab" * 32}]
    out = await get_logs(rt, params)
    assert result_of(out) == truth(3, 3)
    assert transport(rt, "a").requests[0].doc["params"] == params


@pytest.mark.parametrize("pinned", ["small", "big"])
async def test_a_provider_override_is_split_within_that_providers_limit(pinned: str) -> None:
    """/rpc/provider/X/...: every chunk goes to X, sized to X's limit."""
    small, big = configured(LogsNode(100)), configured(LogsNode(1000))
    rt = logs_chain(small=small, big=big)
    out = await get_logs(rt, span(0, 1999), provider_id=pinned)
    assert result_of(out) == truth(0, 1999)
    chosen, other = (small, big) if pinned == "small" else (big, small)
    assert other.ranges == [] and len(chosen.ranges) == 2000 // chosen.limit  # type: ignore[operator]


async def test_a_small_range_passes_through_as_the_providers_bytes() -> None:
    """A range that fits is one request whose answer bytes are passed through."""
    node = LogsNode()
    rt = logs_chain(only=node)
    out = await get_logs(rt, span(1, 30))
    assert result_of(out) == truth(1, 30) and out.extra is None
    assert node.ranges == [(1, 30)]


async def test_a_provider_not_known_to_have_to_block_is_asked_its_height_first() -> None:
    """Lasso last saw the pinned provider at 95; asked, it is at 100 now: served."""
    node, other = LogsNode(height=100), LogsNode(height=100)
    rt = runtime(a=node, b=other)
    rt.router.observe_height("a", 95, monotonic())
    rt.router.observe_height("b", 100, monotonic())
    out = await get_logs(rt, span(90, 98), provider_id="a")
    assert result_of(out) == truth(90, 98) and node.ranges == [(90, 98)]
    assert [r.method for r in transport(rt, "a").requests] == ["eth_blockNumber", "eth_getLogs"]


async def test_a_pinned_provider_behind_to_block_is_refused_not_answered_short() -> None:
    """The pinned provider is still behind toBlock that another has: an error, no logs."""
    node, other = LogsNode(height=95), LogsNode(height=100)
    rt = runtime(a=node, b=other)
    rt.router.observe_height("a", 95, monotonic())
    rt.router.observe_height("b", 100, monotonic())
    out = await get_logs(rt, span(90, 98), provider_id="a")
    assert out.status == "error" and out.error is not None
    assert out.error["data"] == {"behind": "0x62"} and node.ranges == []


async def test_a_range_past_every_known_height_goes_out_as_asked() -> None:
    """Nobody is known to have toBlock, even after asking: a future block, sent as asked."""
    node = LogsNode(height=100)
    rt = runtime(a=node)
    out = await get_logs(rt, span(90, 120))
    assert result_of(out) == truth(90, 100) and node.ranges == [(90, 120)]


async def test_a_reactive_split_uses_the_largest_limit_learned() -> None:
    """Both providers refuse the whole range; the last says 100, the other said 1,000:
    the re-split uses 1,000-block chunks (each fits the larger one), not 100."""
    big, small = LogsNode(1000), LogsNode(100)
    rt = runtime(big=big, small=small)  # priority: big is asked first, small last
    for pid in ("big", "small"):
        rt.router.observe_height(pid, 100_000, monotonic())
    out = await execute(rt, "eth_getLogs", span(0, 9999), "priority", None)
    assert result_of(out) == truth(0, 9999)
    assert sorted(r for r in big.ranges if r != (0, 9999)) == [
        (a, a + 999) for a in range(0, 10_000, 1000)
    ]
    assert small.ranges == [(0, 9999)]
