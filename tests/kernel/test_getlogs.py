"""Tests of eth_getLogs planning and splitting."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.kernel.getlogs import (
    MAX_CHUNKS,
    Chunk,
    LogsSplit,
    PlanKind,
    chunk_params,
    chunk_size_for,
    learned_limit,
    plan_get_logs,
)
from lasso.kernel.head import HeadTracker
from lasso.kernel.logs_limits import LogsLimit, LogsLimitKind

RANGE, RESULTS = LogsLimitKind.RANGE, LogsLimitKind.RESULTS
ADDR = "0x" + "ab" * 20


def logs_of(block: int) -> list[dict[str, Any]]:
    """The truth: blocks divisible by 3 hold two logs, others none."""
    if block % 3:
        return []
    return [{"blockNumber": hex(block), "logIndex": hex(i)} for i in range(2)]


def truth(lo: int, hi: int) -> list[dict[str, Any]]:
    return [log for b in range(lo, hi + 1) for log in logs_of(b)]


def test_pass_through_cases() -> None:
    """blockHash filters, malformed params, unknown tags and reversed ranges pass as sent."""
    head = HeadTracker()
    by_hash = [{"blockHash": "0x" + "11" * 32}]
    for params in (by_hash, [], None, [{"fromBlock": "0xzz"}], [{"fromBlock": "finalized"}]):
        plan = plan_get_logs(params, head, 100, chunk_size=10)
        assert plan.kind is PlanKind.PASS and plan.params is params
    reversed_ = [{"fromBlock": "0x65", "toBlock": "latest"}]
    plan = plan_get_logs(reversed_, head, 100, chunk_size=10)
    assert plan.kind is PlanKind.PASS and plan.params is reversed_ and plan.lo == 101
    assert plan_get_logs([{}], HeadTracker(), None, chunk_size=10).params == [{}]


def test_tags_are_resolved_first() -> None:
    """latest is the served head (or the consensus when higher), earliest is 0."""
    head = HeadTracker()
    head.serve_head(120)
    plan = plan_get_logs([{"fromBlock": "0x64", "address": ADDR}], head, 110, chunk_size=None)
    assert plan.kind is PlanKind.PASS
    assert plan.params == [{"fromBlock": "0x64", "toBlock": "0x78", "address": ADDR}]
    plan = plan_get_logs([{"fromBlock": "earliest", "toBlock": "0x9"}], head, 110, chunk_size=4)
    assert plan.kind is PlanKind.SPLIT
    assert plan.chunks == (Chunk(0, 3), Chunk(4, 7), Chunk(8, 9))


def test_max_range_is_refused_with_data() -> None:
    """A range over routing.get_logs.max_range is -32602 with data.max_range."""
    plan = plan_get_logs(
        [{"fromBlock": "0x0", "toBlock": hex(100_000)}], HeadTracker(), None, chunk_size=None
    )
    assert plan.kind is PlanKind.REJECT and plan.error is not None
    assert plan.error["code"] == -32602
    assert plan.error["data"] == {"max_range": 100_000, "requested": 100_001}
    plan = plan_get_logs(
        [{"fromBlock": "0x0", "toBlock": "0x9"}], HeadTracker(), None, chunk_size=None,
        max_range=10,
    )  # fmt: skip
    assert plan.kind is PlanKind.PASS


def test_too_many_chunks_are_refused() -> None:
    """A split needing more than MAX_CHUNKS chunks is refused with the range that fits."""
    params = [{"fromBlock": "0x0", "toBlock": hex(MAX_CHUNKS * 10)}]
    plan = plan_get_logs(params, HeadTracker(), None, chunk_size=10)
    assert plan.kind is PlanKind.REJECT and plan.error is not None
    assert plan.error["data"]["max_range"] == MAX_CHUNKS * 10


def test_chunk_params_keep_the_filter() -> None:
    """Chunk params carry the client's filter with hex bounds; extra params stay."""
    params = [{"address": ADDR, "topics": [None], "fromBlock": "latest"}, "extra"]
    assert chunk_params(params, Chunk(16, 31)) == [
        {"address": ADDR, "topics": [None], "fromBlock": "0x10", "toBlock": "0x1f"},
        "extra",
    ]
    assert params[0]["fromBlock"] == "latest"  # the client's params are not modified


def test_chunk_size_for() -> None:
    """The largest limit, or no split when a provider has none or there is none."""
    assert chunk_size_for([100, 1000]) == 1000
    assert chunk_size_for([100, None]) is None
    assert chunk_size_for([]) is None


def test_learned_limit() -> None:
    """Range errors teach their number or half the span; result errors teach nothing."""
    assert learned_limit(LogsLimit(RANGE, 500), 2000, None) == 500
    assert learned_limit(LogsLimit(RANGE, 500), 2000, 100) == 100
    assert learned_limit(LogsLimit(RANGE), 2000, None) == 1000
    assert learned_limit(LogsLimit(RANGE), 1, None) == 1
    assert learned_limit(LogsLimit(RESULTS, 10), 2000, 700) == 700


def run(split: LogsSplit, reject: Any, parallel: int = 4) -> None:
    """Drive a split to the end: ``reject(chunk)`` returns a LogsLimit to refuse it. Each
    round sends what next_chunks allows, lowest blocks first."""
    while not split.done and split.error is None:
        batch = split.next_chunks()
        assert batch and len(batch) <= parallel
        assert batch == sorted(batch)
        for chunk in batch:
            limit = reject(chunk)
            if limit is None:
                split.succeeded(chunk, truth(chunk.lo, chunk.hi))
            else:
                split.too_large(chunk, limit)


def test_split_merges_in_block_order() -> None:
    """Chunks run at most max_parallel at a time and merge into the whole answer."""
    plan = plan_get_logs([{"fromBlock": "0x0", "toBlock": "0x3e7"}], HeadTracker(), None,
                         chunk_size=100)  # fmt: skip
    split = LogsSplit(plan.chunks, max_parallel=4)
    assert len(split.next_chunks()) == 4 and split.next_chunks() == []
    assert split.in_flight == 4
    split = LogsSplit(plan.chunks, max_parallel=4)
    run(split, lambda c: None)
    assert split.result() == truth(0, 999)
    assert repr(split) == "<LogsSplit done pending=0 running=0 answered=10 created=10>"


def test_reactive_split_to_the_named_size_and_in_halves() -> None:
    """A chunk refused as too large is split to the size named, else in halves."""
    split = LogsSplit((Chunk(0, 99),), max_parallel=8)
    run(split, lambda c: LogsLimit(RANGE, 30) if c.span > 30 else None, 8)
    assert split.result() == truth(0, 99)
    split = LogsSplit((Chunk(0, 99),), max_parallel=2)
    run(split, lambda c: LogsLimit(RESULTS) if c.span > 13 else None)
    assert split.result() == truth(0, 99)


def test_single_block_too_large_fails_whole() -> None:
    """A block that is too large alone fails the request; no partial answer."""
    split = LogsSplit((Chunk(0, 3),), max_parallel=4)
    run(split, lambda c: LogsLimit(RESULTS) if c.lo <= 2 <= c.hi else None)
    assert split.error is not None and split.error["code"] == -32005
    assert not split.done and split.next_chunks() == []
    with pytest.raises(RuntimeError):
        split.result()
    assert repr(split).startswith("<LogsSplit failed")


def test_a_log_outside_the_chunk_fails_the_request() -> None:
    """A provider answering logs outside the chunk's range fails the request."""
    split = LogsSplit((Chunk(0, 9), Chunk(10, 19)), max_parallel=2)
    a, b = split.next_chunks()
    assert split.succeeded(a, truth(0, 9))
    assert not split.succeeded(b, truth(0, 19))
    assert split.error is not None and split.error["data"]["fromBlock"] == "0xa"
    split.failed({"code": 1})  # the first failure stays the answer
    assert split.error["code"] == -32000


def test_other_failure_fails_whole_and_stops_sending() -> None:
    """One chunk failing for good stops the rest and fails the request."""
    split = LogsSplit(tuple(Chunk(i * 10, i * 10 + 9) for i in range(5)), max_parallel=2)
    first = split.next_chunks()
    split.failed({"code": -32000, "message": "All providers failed"})
    assert split.next_chunks() == [] and split.in_flight == 2
    split.succeeded(first[0], [])
    assert not split.done


def test_chunk_budget_is_bounded() -> None:
    """Re-splits stop at MAX_CHUNKS chunks in all."""
    split = LogsSplit((Chunk(0, 5_000),), max_parallel=64)
    run(split, lambda c: LogsLimit(RESULTS) if c.span > 1 else None, 64)
    assert split.error is not None


@settings(max_examples=200, deadline=None)
@given(
    lo=st.integers(0, 5_000),
    width=st.integers(0, 3_000),
    chunk=st.integers(1, 700),
    provider_limit=st.integers(1, 800),
    results_cap=st.integers(2, 400),
    parallel=st.integers(1, 6),
)
def test_split_answer_equals_the_truth(
    lo: int, width: int, chunk: int, provider_limit: int, results_cap: int, parallel: int
) -> None:
    """Whatever the chunk size, a provider's range limit and a result cap, a split either
    answers exactly the truth in block order or fails whole."""
    hi = lo + width
    head = HeadTracker()
    plan = plan_get_logs([{"fromBlock": hex(lo), "toBlock": hex(hi)}], head, None,
                         chunk_size=chunk)  # fmt: skip
    if plan.kind is PlanKind.PASS:
        assert width + 1 <= chunk
        return
    if plan.kind is PlanKind.REJECT:
        assert -(-(width + 1) // chunk) > MAX_CHUNKS
        return
    assert plan.kind is PlanKind.SPLIT
    split = LogsSplit(plan.chunks, max_parallel=parallel)

    def reject(c: Chunk) -> LogsLimit | None:
        if c.span > provider_limit:
            return LogsLimit(RANGE, provider_limit)
        if len(truth(c.lo, c.hi)) > results_cap:
            return LogsLimit(RESULTS)
        return None

    run(split, reject, parallel)
    if split.error is None:
        assert split.result() == truth(lo, hi)
    else:  # only the chunk budget can stop it: no block holds more than the cap
        assert split.error["code"] == -32005
