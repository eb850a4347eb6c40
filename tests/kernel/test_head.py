"""Tests of the served head: monotonic answers and tag resolution."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lasso.kernel.head import HEAD_TAGS, HeadTracker


def test_serve_head_clamps_to_the_served_head() -> None:
    """eth_blockNumber answers never go below a head already served."""
    head = HeadTracker()
    assert head.head is None
    assert head.serve_head(100) == 100
    assert head.serve_head(95) == 100
    assert head.serve_head(103) == 103
    assert head.head == 103


def test_a_latest_block_behind_the_served_head_is_refused() -> None:
    """A 'latest' block below the served head is behind; one at or above it is served."""
    head = HeadTracker()
    head.serve_head(50)
    assert not head.accept_tag_block("latest", 49)
    assert head.accept_tag_block("latest", 50)
    assert head.accept_tag_block("latest", 52)
    assert head.serve_head(51) == 52  # a later eth_blockNumber sees the block served


def test_tags_are_tracked_separately() -> None:
    """finalized and safe have their own served numbers; pending and earliest none."""
    head = HeadTracker()
    assert head.accept_tag_block("finalized", 10)
    assert not head.accept_tag_block("finalized", 9)
    assert head.accept_tag_block("safe", 5)  # not compared with finalized
    assert head.accept_tag_block("pending", 1) and head.accept_tag_block("earliest", 0)
    assert head.finalized == 10 and head.tag("safe") == 5 and head.tag("pending") is None
    assert head.head is None


def test_resolve() -> None:
    """latest is the higher of the providers' head and the served one; unknown tags None."""
    head = HeadTracker()
    assert head.resolve("latest", None) is None
    assert head.resolve("latest", 7) == 7
    head.serve_head(9)
    assert head.resolve("latest", 7) == 9 and head.resolve("pending", 12) == 12
    assert head.resolve("latest", None) == 9
    assert head.resolve("earliest", 7) == 0 and head.resolve(42, 7) == 42
    assert head.resolve("finalized", 7) is None
    head.observe_tag("finalized", 3)
    assert head.resolve("finalized", 7) == 3


def test_observe_tag_and_restore_only_move_up() -> None:
    """Outside facts and a reload's hand-over never lower a served number."""
    head = HeadTracker()
    head.serve_head(20)
    head.observe_tag("latest", 15)
    head.observe_tag("bogus", 99)
    head.restore({"latest": 18, "finalized": 4})
    assert head.snapshot() == {"latest": 20, "finalized": 4}
    assert repr(head) == "<HeadTracker latest=20 finalized=4>"
    assert repr(HeadTracker()) == "<HeadTracker empty>"


ops = st.lists(
    st.tuples(st.sampled_from(["serve", *HEAD_TAGS, "observe"]), st.integers(0, 50)),
    max_size=60,
)


@given(ops)
def test_served_answers_never_go_backwards(steps: list[tuple[str, int]]) -> None:
    """Whatever the providers answer, in any order, each tag's served answers never
    decrease, and eth_blockNumber answers are never below a latest block served."""
    head = HeadTracker()
    last: dict[str, int] = {}
    for op, n in steps:
        if op == "serve":
            answer = head.serve_head(n)
            assert answer >= n
            assert answer >= last.get("latest", -1)
            last["latest"] = answer
        elif op == "observe":
            head.observe_tag("finalized", n)
        elif head.accept_tag_block(op, n):
            assert n >= last.get(op, -1)
            last[op] = n
        else:
            served = head.tag(op)
            assert served is not None and n < served
    for tag, value in last.items():
        assert (head.tag(tag) or 0) >= value
