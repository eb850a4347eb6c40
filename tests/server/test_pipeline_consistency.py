"""Block-consistent reads through the driver (CONTRACT §8): a provider behind the block is
failed over at no cost to it, the served head never goes backwards, eth_getLogs goes to
providers known to have its last block; inline and raced (hedged) alike."""

from __future__ import annotations

from time import monotonic
from typing import Any

import pytest

from lasso.config import HedgeConfig
from lasso.net.http_conn import UpstreamResponse
from lasso.net.transport import MemoryRequest, error_answer, result_answer
from lasso.server.pipeline import execute, run
from lasso.server.runtime import ChainRuntime
from server_pipeline_support import answers, ok, outcomes, result_of, rpc_error, runtime, transport

HEDGE = HedgeConfig(delay_ms=5000)  # raced driver, no hedge actually sent


def block(number: int) -> dict[str, Any]:
    return {"number": hex(number), "hash": "0x" + f"{number:064x}"}


def heights(rt: ChainRuntime, **by_provider: tuple[int, float]) -> None:
    """Report heights as (height, seconds ago)."""
    for pid, (height, ago) in by_provider.items():
        rt.router.observe_height(pid, height, monotonic() - ago)


@pytest.mark.parametrize("hedge", [None, HEDGE], ids=["inline", "raced"])
async def test_block_number_never_goes_backwards(hedge: HedgeConfig | None) -> None:
    """A lower eth_blockNumber after a higher one is answered with the higher one."""
    rt = runtime(hedge, a=answers("0x64", "0x60", "0x65"))
    seen = [result_of(await execute(rt, "eth_blockNumber", [], "priority", None)) for _ in "abc"]
    assert seen == ["0x64", "0x64", "0x65"]
    assert rt.router.head.head == 0x65 and rt.router.state.height("a") == 0x65
    assert rt.consistency.counts[("retries", "clamped")] == 1


@pytest.mark.parametrize("hedge", [None, HEDGE], ids=["inline", "raced"])
async def test_a_clamped_head_hands_on_no_document(hedge: HedgeConfig | None) -> None:
    """An answer Lasso replaced (a head clamped to the served one) carries no judged
    document: the provider's would contradict the body (the response cache parses it)."""
    rt = runtime(hedge, a=answers("0x64", "0x60"))
    first = await execute(rt, "eth_blockNumber", [], "priority", None)
    second = await execute(rt, "eth_blockNumber", [], "priority", None)
    assert first.doc is not None and first.doc["result"] == "0x64"
    assert result_of(second) == "0x64" and second.doc is None


@pytest.mark.parametrize("hedge", [None, HEDGE], ids=["inline", "raced"])
async def test_null_block_from_a_provider_behind_goes_to_one_that_has_it(
    hedge: HedgeConfig | None,
) -> None:
    """A provider not known to have block 96 answers null: the one known to have it
    answers, and the first is not blamed."""
    rt = runtime(hedge, a=ok(None), b=ok(block(96)))
    heights(rt, a=(95, 60.0), b=(100, 0.0))  # a's optimistic height says it has 96
    out = await execute(rt, "eth_getBlockByNumber", ["0x60", False], "priority", None)
    assert out.provider_id == "b" and result_of(out) == block(96)
    assert transport(rt, "a").calls == 1 and outcomes(rt, "a", "eth_getBlockByNumber") == {}
    assert rt.consistency.counts[("retries", "behind")] == 1


async def test_null_for_a_block_nobody_has_is_the_answer() -> None:
    """A block beyond every known height is null everywhere: the first null answers."""
    rt = runtime(a=ok(None), b=ok(block(200)))
    heights(rt, a=(95, 0.0), b=(100, 0.0))
    out = await execute(rt, "eth_getBlockByNumber", ["0xc8", False], "priority", None)
    assert out.provider_id == "a" and result_of(out) is None


async def test_null_when_every_provider_with_the_block_is_gone_is_an_error() -> None:
    """Only providers behind are reachable: an error saying so, never the null."""
    rt = runtime(a=ok(None), b=ok(None))
    heights(rt, a=(95, 60.0), b=(94, 60.0))
    rt.router.observe_height("gone", 100, monotonic())  # a provider since removed
    out = await execute(rt, "eth_getBlockByNumber", ["0x60", False], "priority", None)
    assert out.status == "error" and out.error is not None
    assert "behind the requested block" in out.error["message"]
    assert out.error["data"]["providers_tried"] == ["a", "b"]


async def test_latest_block_below_the_served_head_is_retried() -> None:
    """After head 100 was served, a 'latest' block 99 is not the answer; 100 is."""
    rt = runtime(a=ok(block(99)), b=ok(block(100)))
    rt.router.head.serve_head(100)
    heights(rt, a=(99, 60.0), b=(100, 0.0))
    out = await execute(rt, "eth_getBlockByNumber", ["latest", False], "priority", None)
    assert out.provider_id == "b" and result_of(out) == block(100)
    assert rt.router.head.tag("latest") == 100


async def test_missing_state_from_a_provider_behind_is_failed_over() -> None:
    """'header not found' for a block another provider has: failed over, neutral."""
    rt = runtime(a=rpc_error(-32000, "header not found"), b=ok("0x1"))
    heights(rt, a=(95, 60.0), b=(100, 0.0))
    out = await execute(rt, "eth_call", [{"to": "0x" + "11" * 20}, "0x60"], "priority", None)
    assert out.provider_id == "b" and result_of(out) == "0x1"
    assert outcomes(rt, "a", "eth_call") == {}


async def test_get_logs_goes_only_to_providers_known_to_have_its_last_block() -> None:
    """A provider that may be behind toBlock could cut the range short: not asked."""
    rt = runtime(a=ok([]), b=ok([]))
    heights(rt, a=(95, 60.0), b=(100, 0.0))
    flt = {"fromBlock": "0x50", "toBlock": "0x62"}
    out = await execute(rt, "eth_getLogs", [flt], "priority", None)
    assert out.provider_id == "b" and transport(rt, "a").calls == 0


async def test_receipt_null_below_the_served_head_is_retried() -> None:
    """After head 100 was served, a null receipt from a provider at 95 is not the answer."""
    receipt = {"transactionHash": "0x" + "ab" * 32, "status": "0x1"}
    rt = runtime(a=ok(None), b=ok(receipt))
    rt.router.head.serve_head(100)
    heights(rt, a=(95, 60.0), b=(100, 0.0))
    out = await execute(rt, "eth_getTransactionReceipt", ["0x" + "ab" * 32], "priority", None)
    assert out.provider_id == "b" and result_of(out) == receipt


async def test_latest_reads_prefer_providers_at_the_served_head() -> None:
    """eth_call at 'latest' after head 100 was served goes first to a provider that has it."""
    seen: list[str] = []

    def at(pid: str) -> Any:
        def handler(req: MemoryRequest) -> UpstreamResponse:
            seen.append(pid)
            return result_answer(req, "0x1")

        return handler

    rt = runtime(a=at("a"), b=at("b"))
    rt.router.head.serve_head(100)
    heights(rt, a=(90, 0.0), b=(100, 0.0))
    for _ in range(3):
        await execute(rt, "eth_call", [{"to": "0x" + "11" * 20}, "latest"], "priority", None)
    assert seen == ["b", "b", "b"]


async def test_a_real_error_is_still_the_answer() -> None:
    """A revert from a provider behind is the caller's answer, not a consistency retry."""
    rt = runtime(a=lambda req: error_answer(req, 3, "execution reverted", data="0x"), b=ok("0x1"))
    heights(rt, a=(95, 60.0), b=(100, 0.0))
    out = await execute(rt, "eth_call", [{"to": "0x" + "11" * 20}, "0x60"], "priority", None)
    assert out.provider_id == "a" and out.status == "rpc_error"


def big_block(number: int) -> dict[str, Any]:
    """A block whose answer is past 4 KiB (judged by its envelope only, unless read)."""
    return {**block(number), "transactions": ["0x" + f"{i:064x}" for i in range(100)]}


@pytest.mark.parametrize("hedge", [None, HEDGE], ids=["inline", "raced"])
async def test_a_large_latest_block_is_read_to_be_checked(hedge: HedgeConfig | None) -> None:
    """A 'latest' block past the envelope-only size is still checked by its number: an
    older one is retried, a newer one is served and moves the served head."""
    rt = runtime(hedge, a=ok(big_block(99)), b=ok(big_block(101)))
    rt.router.head.serve_head(100)
    heights(rt, a=(99, 60.0), b=(101, 0.0))
    out = await execute(rt, "eth_getBlockByNumber", ["latest", False], "priority", None)
    assert out.body is not None and len(out.body) > 4096
    assert out.provider_id == "b" and result_of(out) == big_block(101)
    assert rt.router.head.tag("latest") == 101


@pytest.mark.parametrize("hedge", [None, HEDGE], ids=["inline", "raced"])
async def test_keep_result_parses_a_large_result(hedge: HedgeConfig | None) -> None:
    """run(keep_result=True) hands back a large result itself (eth_getLogs chunks merge
    from it), not the envelope's placeholder."""
    logs = [{"blockNumber": hex(n), "logIndex": "0x0", "data": "0x" + "ab" * 64} for n in range(40)]
    rt = runtime(hedge, a=ok(logs))
    out = await run(
        rt,
        "eth_getLogs",
        [{"fromBlock": "0x0", "toBlock": "0x27"}],
        "priority",
        None,
        keep_result=True,
    )
    assert out.body is not None and len(out.body) > 4096
    assert out.result == logs
