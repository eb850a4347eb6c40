"""The block window: hashes linked to the head, reorg evidence, walk-back; and finality."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.kernel.blockwindow import MAX_WALK_FAILURES, BlockWindow, Finality


def h(n: int, fork: int = 0) -> str:
    """A distinct hash for block ``n`` of fork ``fork``."""
    return f"0x{fork:032x}{n:032x}"


def feed(window: BlockWindow, first: int, last: int, fork: int = 0) -> None:
    """Observe blocks first..last of one fork, in order, as newHeads delivers them."""
    for n in range(first, last + 1):
        window.observe(n, h(n, fork), h(n - 1, fork))


def held(window: BlockWindow) -> dict[int, str]:
    assert window.bottom is not None and window.top is not None
    return {n: window.hash_at(n) or "" for n in range(window.bottom, window.top + 1)}


def test_first_block_and_its_parent() -> None:
    """The first head gives two hashes: its own and its parent's."""
    w = BlockWindow()
    assert w.observe(100, h(100), h(99)) is None
    assert (w.bottom, w.top) == (99, 100)
    assert w.hash_at(99) == h(99) and w.hash_at(100) == h(100)
    assert w.height_of(h(100)) == 100 and w.height_of(h(5)) is None


def test_heads_in_order_extend() -> None:
    """Each head whose parent is the top is appended; nothing is reported."""
    w = BlockWindow()
    feed(w, 100, 110)
    assert (w.bottom, w.top, w.epoch) == (99, 110, 0)
    assert held(w) == {n: h(n) for n in range(99, 111)}


def test_same_block_again_is_nothing() -> None:
    """A block already held with the same hash changes nothing."""
    w = BlockWindow()
    feed(w, 100, 105)
    assert w.observe(103, h(103), h(102)) is None
    assert (w.bottom, w.top, w.epoch) == (99, 105, 0)


def test_replaced_top_is_a_reorg_at_the_top() -> None:
    """A head on top of another block at the top height: fork evidence at the top."""
    w = BlockWindow()
    feed(w, 100, 105)
    assert w.observe(106, h(106, 1), h(105, 1)) == 105
    assert w.epoch == 1 and w.reorgs == 1
    assert w.hash_at(105) == h(105, 1) and w.hash_at(104) is None
    assert w.detached == 6  # 99..104 wait for a walk-back


def test_replaced_height_with_known_parent_is_a_fork_exactly_there() -> None:
    """A new block at a held height whose parent is held: heights from it up are replaced."""
    w = BlockWindow()
    feed(w, 100, 110)
    assert w.observe(107, h(107, 1), h(106)) == 107
    assert (w.bottom, w.top) == (99, 107)
    assert w.hash_at(107) == h(107, 1) and w.hash_at(106) == h(106)
    assert w.hash_at(108) is None


def test_replaced_height_and_parent_detach_the_rest() -> None:
    """A new block at a held height with a new parent: evidence one below; the rest waits."""
    w = BlockWindow()
    feed(w, 100, 110)
    assert w.observe(107, h(107, 1), h(106, 1)) == 106
    assert held(w) == {106: h(106, 1), 107: h(107, 1)}
    assert w.detached == 7  # 99..105


def test_gap_restarts_and_walk_back_reconnects() -> None:
    """A head two above the top: a new segment; one fetch links the old one back."""
    w = BlockWindow()
    feed(w, 100, 105)
    assert w.observe(107, h(107), h(106)) is None
    assert w.epoch == 0
    assert held(w) == {106: h(106), 107: h(107)}
    assert w.hash_at(105) is None  # not linked yet
    want = w.wanted(floor=50)
    assert want == h(106)  # its parent is unknown: fetch it to learn it
    w.fetched()
    assert w.observe(106, h(106), h(105)) is None
    assert held(w) == {n: h(n) for n in range(99, 108)}
    assert w.detached == 0


def test_a_head_without_parent_above_the_top_starts_anew() -> None:
    """The next height with no parent known cannot be linked: a new segment, no reorg."""
    w = BlockWindow()
    feed(w, 100, 103)
    assert w.observe(104, h(104), None) is None
    assert (w.bottom, w.top, w.epoch) == (104, 104, 0) and w.detached == 5
    assert w.wanted(floor=0) == h(104)  # learn its parent, then reconnect
    w.fetched()
    w.observe(104, h(104), h(103), head=False)
    assert (w.bottom, w.top) == (99, 104) and w.detached == 0


def test_walk_back_finds_the_fork_point() -> None:
    """After a deep reorg seen with a gap, walk-back goes down until the forks agree."""
    w = BlockWindow()
    feed(w, 100, 110)
    # Blocks 106..112 were replaced (fork 1); the node only sees the new head 112.
    w.observe(112, h(112, 1), h(111, 1))
    truth = {n: (h(n, 1) if n >= 106 else h(n)) for n in range(90, 113)}
    by_hash = {v: n for n, v in truth.items()}
    fetches = 0
    while (want := w.wanted(floor=90, target=95)) is not None and fetches < 50:
        w.fetched()
        fetches += 1
        n = by_hash[want]
        w.observe(n, truth[n], truth[n - 1])
        if w.bottom == 99:
            break
    assert held(w) == {n: truth[n] for n in range(99, 113)}
    assert fetches <= 8  # 111 (parent unknown) down to 105, then the old segment rejoins


def test_walk_back_goes_to_the_target_not_below_the_floor() -> None:
    """Walk-back fills the window down to a target, never to the finalized height."""
    w = BlockWindow()
    w.observe(100, h(100), h(99))
    assert w.wanted(floor=95) is None  # nothing asked for, nothing detached
    while (want := w.wanted(floor=90, target=97)) is not None:
        w.fetched()
        number = int(want[-32:], 16)
        w.observe(number, want, h(number - 1))
    assert w.bottom == 97
    n = 97
    while (want := w.wanted(floor=95, target=0)) is not None:
        assert want == h(n - 1)
        w.fetched()
        number = int(want[-32:], 16)
        w.observe(number, want, h(number - 1))
        n = number
    assert w.bottom == 96


def test_walk_back_budget_and_failures() -> None:
    """Fetches that find nothing end the walk and drop the detached segment."""
    w = BlockWindow(max_walk=2)
    w.observe(100, h(100), h(99))
    w.fetched()
    w.fetched()
    assert w.wanted(floor=0, target=0) is None  # budget spent
    w2 = BlockWindow()
    feed(w2, 10, 20)
    w2.observe(30, h(30), h(29))
    assert w2.detached
    for _ in range(MAX_WALK_FAILURES):
        w2.fetch_failed()
    assert w2.detached == 0 and w2.wanted(floor=0) is None


def test_answers_never_replace_or_restart() -> None:
    """A block from an answer (not a head source) only confirms or extends the bottom."""
    w = BlockWindow()
    assert w.observe(100, h(100), h(99), head=False) is None
    assert w.top is None  # an answer does not start the window
    feed(w, 100, 105)
    assert w.observe(104, h(104, 1), h(103), head=False) is None  # another fork: ignored
    assert w.observe(106, h(106, 1), h(105, 1), head=False) is None
    assert w.observe(110, h(110), h(109), head=False) is None  # a gap: ignored
    assert (w.top, w.epoch, w.hash_at(104)) == (105, 0, h(104))
    assert w.observe(106, h(106), h(105), head=False) is None  # only heads move the top
    assert w.top == 105


def test_unlinkable_old_blocks_are_ignored() -> None:
    """A block far below the segment, or a wrong parent of the bottom, changes nothing."""
    w = BlockWindow()
    feed(w, 100, 105)
    assert w.observe(50, h(50), h(49)) is None
    assert w.observe(98, h(98, 7), h(97, 7)) is None
    assert (w.bottom, w.top) == (99, 105)


def test_learning_a_parent_that_contradicts_the_block_below() -> None:
    """A held block whose newly learned parent is not the block below: a fork under it."""
    w = BlockWindow()
    w.observe(100, h(100), None)  # no parent known
    w.observe(101, h(101), h(100))
    w.observe(102, h(102), h(101))
    assert w.bottom == 100
    # a walk-back answer for 100 says its parent is 99; consistent: nothing happens
    assert w.observe(100, h(100), h(99)) is None
    w2 = BlockWindow()
    feed(w2, 100, 103)
    w2._parent[102] = None  # as if 102 had been learnt without its parent
    assert w2.observe(102, h(102), h(101, 5)) == 101
    assert w2.bottom == 102 and w2.epoch == 1


def test_capacity_drops_the_lowest() -> None:
    """The segment never holds more than its capacity."""
    w = BlockWindow(capacity=8)
    feed(w, 1, 50)
    assert len(w) == 8 and (w.bottom, w.top) == (43, 50)
    assert w.wanted(floor=0) is None  # full: no walk-back


def test_capacity_must_allow_a_pair() -> None:
    """A window needs room for a block and its parent."""
    with pytest.raises(ValueError):
        BlockWindow(capacity=1)


def test_repr_summarizes() -> None:
    """The repr shows the span, the counts and the epoch."""
    w = BlockWindow()
    feed(w, 10, 12)
    assert repr(w) == "<BlockWindow 9..12 held=4 detached=0 epoch=0>"


# -- property: the segment is always a chain the node has seen linked to its head --------


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, int]]:
    ops = st.one_of(
        st.tuples(st.just("grow"), st.integers(1, 3)),
        st.tuples(st.just("reorg"), st.integers(1, 6)),
        st.tuples(st.just("head"), st.just(0)),
        st.tuples(st.just("block"), st.integers(0, 20)),
        st.tuples(st.just("stale"), st.integers(0, 20)),
        st.tuples(st.just("stale_answer"), st.integers(0, 20)),
        st.tuples(st.just("walk"), st.integers(1, 4)),
    )
    return draw(st.lists(ops, min_size=10, max_size=80))


@settings(max_examples=400, deadline=None)
@given(histories())
def test_window_never_holds_a_block_off_the_observed_chain(ops: list[tuple[str, int]]) -> None:
    """Whatever heads, reorgs, stale answers and walk-backs happen, the segment is linked,
    and once the true head is observed every held hash is the chain's, until the chain
    moves or a stale head source speaks (answers from before a reorg change nothing)."""
    forks: dict[int, int] = {}  # height -> fork id of the current chain
    head = 100
    next_fork = 1
    orphans: list[tuple[int, str, str]] = []

    def true_hash(n: int) -> str:
        return h(n, forks.get(n, 0))

    def by_hash(value: str) -> int | None:
        n = int(value[-32:], 16)
        return n if n <= head and true_hash(n) == value else None

    w = BlockWindow(capacity=64)
    synced = False
    for op, arg in ops:
        if op == "grow":
            head += arg
            synced = False
        elif op == "reorg":
            for n in range(head - arg + 1, head + 1):
                orphans.append((n, true_hash(n), true_hash(n - 1)))
                forks[n] = next_fork
            next_fork += 1
            synced = False
        elif op == "head":
            w.observe(head, true_hash(head), true_hash(head - 1))
            synced = True
        elif op == "block":
            n = max(0, head - arg)
            w.observe(n, true_hash(n), true_hash(n - 1), head=False)
        elif op == "stale_answer" and orphans:  # an answer computed before a reorg
            n, bh, ph = orphans[arg % len(orphans)]
            w.observe(n, bh, ph, head=False)
        elif op == "stale" and orphans:
            n, bh, ph = orphans[arg % len(orphans)]
            w.observe(n, bh, ph)
            synced = False
        elif op == "walk":
            for _ in range(arg):
                want = w.wanted(floor=head - 40, target=head - 30)
                if want is None:
                    break
                w.fetched()
                n = by_hash(want)
                if n is None:
                    w.fetch_failed()
                else:
                    w.observe(n, want, true_hash(n - 1), head=False)
        # always: a contiguous, linked segment
        if w.top is not None and w.bottom is not None:
            for n in range(w.bottom + 1, w.top + 1):
                parent = w._parent.get(n)
                assert w.hash_at(n) is not None
                assert parent is None or parent == w.hash_at(n - 1)
            assert len(w) <= 64
        if synced:
            for n, value in held(w).items():
                assert value == true_hash(n), (n, value, true_hash(n))


# -- finality -----------------------------------------------------------------------------


def test_finality_falls_back_to_depth_below_the_head() -> None:
    """Without finalized-tag reports, blocks ``depth`` below the head are final."""
    f = Finality(64)
    assert f.height(None, 0.0) is None
    assert f.height(50, 0.0) is None  # nothing that deep yet
    assert f.height(1000, 0.0) == 936


def test_finality_takes_the_lowest_fresh_report_capped_at_the_head() -> None:
    """Finalized-tag reports win; the lowest fresh one counts; stale ones fall away."""
    f = Finality(64, fresh_s=10.0)
    f.report("a", 950, 0.0)
    f.report("b", 940, 5.0)
    assert f.height(1000, 6.0) == 940
    assert f.height(930, 6.0) == 930  # never above the head
    assert f.height(1000, 12.0) == 940  # a is stale now
    assert f.height(1000, 16.0) == 936  # both stale: depth again
    f.report("c", 990, 20.0)
    f.forget("c")
    assert f.height(1000, 20.0) == 936


def test_finality_repr() -> None:
    """The repr shows the depth and the reports held."""
    f = Finality(12)
    f.report("a", 5, 0.0)
    assert repr(f) == "<Finality depth=12 reports=1>"


def test_finality_depth_must_be_positive() -> None:
    """A zero depth would call the head final."""
    with pytest.raises(ValueError):
        Finality(0)
