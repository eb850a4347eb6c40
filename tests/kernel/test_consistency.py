"""Tests of block-consistent reads: plans, answer judgements, behind errors."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lasso.kernel import consistency
from lasso.kernel.chainstate import ChainState
from lasso.kernel.classify import Category
from lasso.kernel.consistency import (
    PLANNED_METHODS,
    ReadPlan,
    Verdict,
    check_answer,
    is_behind_error,
    judge_result,
    keep_known,
    plan_read,
)
from lasso.kernel.head import HeadTracker
from lasso.kernel.judge import ACCEPTED, Judgement
from lasso.kernel.methods import KNOWN_METHODS

from kernel_router_support import make, provider

SERVE, BEHIND = Verdict.SERVE, Verdict.BEHIND


def fleet(**heights: int) -> ChainState:
    state = ChainState(2_000)
    for pid, h in heights.items():
        state.observe_height(pid, h, 0.0)
    return state


def test_plans() -> None:
    """Each kind of read gets its rule; other methods get none."""
    head = HeadTracker()
    assert plan_read("eth_blockNumber", [], head) == ReadPlan(clamp_head=True)
    head.serve_head(100)
    assert plan_read("eth_blockNumber", [], head) == ReadPlan(clamp_head=True)
    assert plan_read("eth_blockNumber", [], head).checks_answer  # type: ignore[union-attr]
    assert not ReadPlan(min_block=5).checks_answer
    assert plan_read("eth_getBlockByNumber", ["0x5", False], head) == ReadPlan(
        block=5, null_is_missing=True
    )
    assert plan_read("eth_getBlockByNumber", ["latest", False], head) == ReadPlan(
        min_block=100, tag="latest"
    )
    assert plan_read("eth_getBlockByNumber", ["finalized", False], head) == ReadPlan(
        tag="finalized"
    )
    assert plan_read("eth_getBlockByNumber", ["pending", False], head) is None
    assert plan_read("eth_getBlockByNumber", ["0xzz"], head) is None
    assert plan_read("eth_getBlockReceipts", ["latest"], head) is None
    logs = [{"fromBlock": "0x1", "toBlock": "0x9"}]
    assert plan_read("eth_getLogs", logs, head) == ReadPlan(min_block=9, strict=True, block=9)
    assert plan_read("eth_getLogs", [{"fromBlock": "0x1"}], head) == ReadPlan(
        min_block=100, strict=True
    )
    assert plan_read("eth_getLogs", [{"blockHash": "0x" + "1" * 64}], head) is None
    assert plan_read("eth_call", [{}, "latest"], head) == ReadPlan(min_block=100)
    assert plan_read("eth_call", [{}, "0x5"], head) == ReadPlan(block=5)
    assert plan_read("eth_call", [{}, "earliest"], head) is None
    assert plan_read("eth_chainId", [], head) is None
    assert plan_read("eth_call", [{}], HeadTracker()) is None
    receipt = ["0x" + "ab" * 32]
    assert plan_read("eth_getTransactionReceipt", receipt, head) == ReadPlan(
        min_block=100, block=100, null_is_missing=True, observe=False
    )
    assert plan_read("eth_getTransactionReceipt", receipt, HeadTracker()) is None


def test_planned_methods_cover_every_plan() -> None:
    """plan_read returns None for every known method outside PLANNED_METHODS."""
    head = HeadTracker()
    head.serve_head(100)
    samples = ([], ["0x5", False], ["latest"], [{}, "latest"], ["0x" + "ab" * 32])
    for method in KNOWN_METHODS - PLANNED_METHODS:
        assert all(plan_read(method, p, head) is None for p in samples), method


def test_block_number_is_clamped_and_teaches_heights() -> None:
    """eth_blockNumber answers are clamped to the served head and sample the height."""
    state, head = fleet(), HeadTracker()
    plan = plan_read("eth_blockNumber", [], head)
    assert plan is not None
    assert judge_result(plan, "0x64", "a", state, head, 1.0) == (SERVE, None)
    assert judge_result(plan, "0x60", "b", state, head, 1.0) == (SERVE, "0x64")
    assert state.height("b") == 0x60 and head.head == 0x64
    assert judge_result(plan, "junk", "b", state, head, 1.0) == (SERVE, None)


def test_latest_block_behind_the_served_head_is_retried() -> None:
    """A 'latest' block older than the served head, or none at all, is BEHIND."""
    state, head = fleet(), HeadTracker()
    head.serve_head(10)
    plan = ReadPlan(min_block=10, tag="latest")
    assert judge_result(plan, {"number": "0x9"}, "a", state, head, 0.0) == (BEHIND, None)
    assert judge_result(plan, None, "a", state, head, 0.0) == (BEHIND, None)
    assert judge_result(plan, {"number": "0xb"}, "b", state, head, 0.0) == (SERVE, None)
    assert head.head == 11 and state.height("b") == 11 and state.height("a") == 9


def test_null_block_from_a_provider_behind_is_retried() -> None:
    """null for a block some provider has is BEHIND unless this provider has it too."""
    state, head = fleet(behind=95, ahead=100), HeadTracker()
    plan = ReadPlan(block=98, null_is_missing=True)
    assert judge_result(plan, None, "behind", state, head, 0.0) == (BEHIND, None)
    assert judge_result(plan, None, "ahead", state, head, 0.0) == (SERVE, None)
    future = ReadPlan(block=101, null_is_missing=True)
    assert judge_result(future, None, "behind", state, head, 0.0) == (SERVE, None)
    assert judge_result(ReadPlan(block=98), None, "behind", state, head, 0.0) == (SERVE, None)
    assert judge_result(plan, {"number": "0x62"}, "behind", state, head, 0.0) == (SERVE, None)
    assert state.height("behind") == 98  # the block it returned
    assert judge_result(ReadPlan(), [], "x", state, head, 0.0) == (SERVE, None)


def test_logs_answers_teach_no_heights() -> None:
    """A getLogs answer is no proof of a height (an old node cuts the range short)."""
    state, head = fleet(a=5), HeadTracker()
    plan = ReadPlan(min_block=9, strict=True, block=9)
    assert judge_result(plan, [], "a", state, head, 0.0) == (SERVE, None)
    assert state.height("a") == 5


def test_behind_errors() -> None:
    """'header not found' and kin mean BEHIND only when someone else has the block."""
    state = fleet(behind=95, ahead=100)
    plan = ReadPlan(block=98, null_is_missing=True)
    assert is_behind_error(plan, "header not found", "behind", state)
    assert is_behind_error(
        ReadPlan(min_block=98, strict=True), "block range extends beyond current head block",
        "behind", state,
    )  # fmt: skip
    assert not is_behind_error(plan, "header not found", "ahead", state)
    assert not is_behind_error(plan, "execution reverted", "behind", state)
    assert not is_behind_error(ReadPlan(block=101), "header not found", "behind", state)
    assert not is_behind_error(ReadPlan(), "header not found", "behind", state)
    assert not is_behind_error(plan, "header not found", "behind", fleet())


def test_keep_known() -> None:
    """Only providers known to have the block stay; all when nobody has it, none when
    only others have it."""
    router = make([provider("a"), provider("b"), provider("c")])
    for pid, h in (("a", 90), ("b", 100)):
        router.observe_height(pid, h, 0.0)
    chans = router.channels
    assert [c.provider_id for c in keep_known(chans, 95, router.state)] == ["b"]
    assert [c.provider_id for c in keep_known(chans, 200, router.state)] == ["a", "b", "c"]
    assert keep_known([c for c in chans if c.provider_id != "b"], 95, router.state) == []


@given(
    st.dictionaries(st.sampled_from("abcd"), st.integers(0, 30), min_size=1),
    st.integers(0, 35),
    st.sampled_from("abcd"),
)
def test_a_null_is_never_served_while_a_known_provider_has_the_block(
    heights: dict[str, int], block: int, answering: str
) -> None:
    """For any fleet, a null for block N is served only by a provider known to have N or
    when no provider is known to have it."""
    state, head = fleet(**heights), HeadTracker()
    verdict, _ = judge_result(
        ReadPlan(block=block, null_is_missing=True), None, answering, state, head, 0.0
    )
    someone = any(h >= block for h in heights.values())
    if verdict is SERVE:
        assert heights.get(answering, -1) >= block or not someone
    else:
        assert someone and heights.get(answering, -1) < block


def test_hash_reads_retry_a_null_from_below_the_served_head() -> None:
    """A null receipt from a provider behind the served head is BEHIND; a receipt found
    there says nothing about that provider's height."""
    state, head = fleet(behind=95, ahead=100), HeadTracker()
    head.serve_head(100)
    plan = plan_read("eth_getTransactionReceipt", ["0x" + "ab" * 32], head)
    assert plan is not None
    assert judge_result(plan, None, "behind", state, head, 0.0) == (BEHIND, None)
    assert judge_result(plan, None, "ahead", state, head, 0.0) == (SERVE, None)
    assert judge_result(plan, {"status": "0x1"}, "behind", state, head, 0.0) == (SERVE, None)
    assert state.height("behind") == 95


def test_check_answer() -> None:
    """Results and errors of planned reads become the judgement the planner acts on."""
    state, head = fleet(behind=95, ahead=100), HeadTracker()
    block = ReadPlan(block=98, null_is_missing=True)
    doc = {"jsonrpc": "2.0", "id": "x", "result": None}
    assert check_answer(block, ACCEPTED, doc, "behind", state, head, 0.0) is consistency.BEHIND
    assert check_answer(block, ACCEPTED, doc, "ahead", state, head, 0.0) is ACCEPTED
    assert check_answer(block, ACCEPTED, None, "ahead", state, head, 0.0) is ACCEPTED
    assert consistency.BEHIND.category is Category.BLOCK_NOT_AVAILABLE
    clamp = ReadPlan(clamp_head=True)
    head.serve_head(0x64)
    clamped = check_answer(clamp, ACCEPTED, {"result": "0x60"}, "behind", state, head, 0.0)
    assert clamped.ok and clamped.id_ok and clamped.replacement == "0x64"
    assert check_answer(clamp, ACCEPTED, {"result": "0x65"}, "ahead", state, head, 0.0) is ACCEPTED
    assert check_answer(clamp, ACCEPTED, {"result": "junk"}, "ahead", state, head, 0.0) is ACCEPTED
    assert head.head == 0x65 and state.height("behind") == 0x60
    missing = Judgement(
        ok=False,
        category=Category.BLOCK_NOT_AVAILABLE,
        error={"code": -32000, "message": "header not found"},
        message="header not found",
    )
    assert check_answer(block, missing, None, "behind", state, head, 0.0) is consistency.BEHIND
    assert check_answer(block, missing, None, "ahead", state, head, 0.0) is missing
    no_error = Judgement(ok=False, category=Category.TIMEOUT, message="header not found")
    assert check_answer(block, no_error, None, "behind", state, head, 0.0) is no_error
