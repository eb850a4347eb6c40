"""The newHeads tracker: order, dedupe, gap fill, reorgs (kernel/subscriptions/heads.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lasso.kernel.subscriptions import (
    Backfill,
    BackfillDone,
    BackfillFailed,
    Decision,
    Dropped,
    Emit,
    Header,
    HeadReceived,
    Resubscribe,
    Start,
    StreamState,
    Subscribed,
    SubscriptionStream,
    UpstreamLost,
    Warn,
    parse_header,
)

from kernel_subscriptions_support import (
    active,
    backfills,
    bhash,
    chain,
    header,
    numbers,
)


def test_heads_in_order_and_deduplicated() -> None:
    """Heads are emitted once each, in order; re-deliveries count as duplicates."""
    s = active()
    c = chain(1, 4)
    out: list[Decision] = []
    for n in (1, 2, 2, 3, 1, 4):
        out += s.handle(HeadReceived(provider="p1", header=c[n]))
    assert numbers(out) == [1, 2, 3, 4]
    assert s.duplicates == 2 and s.tip == 4


def test_gap_is_backfilled_then_delivered_in_order() -> None:
    """A head past tip+1 waits while the gap is fetched; backfilled blocks come first."""
    s = active()
    c = chain(1, 6)
    assert numbers(s.handle(HeadReceived(provider="p1", header=c[1]))) == [1]
    out = s.handle(HeadReceived(provider="p1", header=c[5]))
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block) == (2, 4) and numbers(out) == []
    # a live head inside the gap arrives before the backfill: emitted, no duplicate later
    assert numbers(s.handle(HeadReceived(provider="p1", header=c[2]))) == [2]
    done = BackfillDone(
        request_id=bf.request_id, from_block=2, to_block=4, headers=(c[2], c[3], c[4])
    )
    assert numbers(s.handle(done)) == [3, 4, 5]
    assert s.backfilled == 2
    assert numbers(s.handle(HeadReceived(provider="p1", header=c[6]))) == [6]


def test_gap_over_the_cap_skips_the_oldest_blocks() -> None:
    """Past max_backfill_blocks the most recent blocks are fetched and the rest skipped."""
    s = active(max_backfill_blocks=3)
    c = chain(1, 20)
    s.handle(HeadReceived(provider="p1", header=c[1]))
    out = s.handle(HeadReceived(provider="p1", header=c[10]))
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block) == (7, 9)
    assert any(isinstance(d, Warn) for d in out)
    out = s.handle(
        BackfillDone(request_id=bf.request_id, from_block=7, to_block=9, headers=(c[7], c[8], c[9]))
    )
    assert numbers(out) == [7, 8, 9, 10]
    assert s.dropped == 5  # blocks 2..6


def test_failed_backfills_give_up_after_three_attempts() -> None:
    """A gap that cannot be fetched is retried, then skipped with a warning."""
    s = active()
    c = chain(1, 5)
    s.handle(HeadReceived(provider="p1", header=c[1]))
    (bf,) = backfills(s.handle(HeadReceived(provider="p1", header=c[4])))
    for _ in range(2):
        (bf,) = backfills(s.handle(BackfillFailed(request_id=bf.request_id)))
        assert (bf.from_block, bf.to_block) == (2, 3)
    out = s.handle(BackfillFailed(request_id=bf.request_id))
    assert numbers(out) == [4] and s.dropped == 2
    assert s.handle(BackfillFailed(request_id=999)) == []  # stale answers are ignored
    assert s.handle(BackfillDone(request_id=999, from_block=1, to_block=1)) == []


def test_failover_catches_up_to_the_current_head() -> None:
    """After an upstream loss the stream fetches tip+1..head, then resumes on the new one."""
    s = active()
    c = chain(1, 12)
    for n in (1, 2, 3):
        s.handle(HeadReceived(provider="p1", header=c[n]))
    out = s.handle(UpstreamLost(provider="p1", reason="ended"))
    assert out[0] == Resubscribe(exclude=frozenset({"p1"}))
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block, bf.exclude) == (4, None, frozenset({"p1"}))
    # the old upstream still delivers: it may extend the tip, nothing else
    assert numbers(s.handle(HeadReceived(provider="p1", header=c[4]))) == [4]
    assert numbers(s.handle(HeadReceived(provider="p1", header=c[6]))) == []
    done = BackfillDone(
        request_id=bf.request_id, from_block=4, to_block=6, headers=(c[4], c[5], c[6])
    )
    assert numbers(s.handle(done)) == [5, 6]
    out = s.handle(Subscribed(provider="p2"))
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block) == (7, None)
    assert numbers(s.handle(HeadReceived(provider="p2", header=c[9]))) == []
    done = BackfillDone(request_id=bf.request_id, from_block=7, to_block=8, headers=(c[7], c[8]))
    assert numbers(s.handle(done)) == [7, 8, 9]


def test_catch_up_over_the_cap_is_reported() -> None:
    """A capped catch-up warns and accepts the skipped range once its blocks arrive."""
    s = active(max_backfill_blocks=2)
    c = chain(1, 10)
    s.handle(HeadReceived(provider="p1", header=c[1]))
    (bf,) = backfills(s.handle(UpstreamLost(provider="p1", reason="ended")))
    out = s.handle(
        BackfillDone(request_id=bf.request_id, from_block=9, to_block=10, headers=(c[9], c[10]))
    )
    assert any(isinstance(d, Warn) for d in out)
    assert numbers(out) == [9, 10] and s.dropped == 7
    (bf,) = backfills(s.handle(Subscribed(provider="p2")))
    assert s.handle(BackfillFailed(request_id=bf.request_id))[0].type == "warn"


def test_reorg_at_the_tip_emits_the_new_branch_once() -> None:
    """A new block at an emitted height whose parent is canonical replaces the old branch."""
    s = active()
    old = chain(1, 8)
    new = chain(7, 9, branch=1, fork=7)
    for n in range(1, 9):
        s.handle(HeadReceived(provider="p1", header=old[n]))
    out = s.handle(HeadReceived(provider="p1", header=new[7]))
    assert out[0] == Dropped(blocks=((7, bhash(7)), (8, bhash(8))))
    assert numbers(out) == [7]
    assert numbers(s.handle(HeadReceived(provider="p1", header=new[8]))) == [8]
    assert numbers(s.handle(HeadReceived(provider="p1", header=new[8]))) == []
    assert numbers(s.handle(HeadReceived(provider="p1", header=new[9]))) == [9]
    # a lagging provider re-sending the dead branch cannot drag the stream back
    assert s.handle(HeadReceived(provider="p9", header=old[8])) == []


def test_deep_reorg_walks_back_to_the_fork_point() -> None:
    """A head whose parent is unknown fetches its ancestors, then swaps the branch."""
    s = active()
    old = chain(1, 10)
    new = chain(6, 11, branch=1, fork=6)
    for n in range(1, 11):
        s.handle(HeadReceived(provider="p1", header=old[n]))
    out = s.handle(HeadReceived(provider="p1", header=new[11]))
    (bf,) = backfills(out)
    assert bf.to_block == 10 and bf.from_block == 1
    answer = tuple([old[n] for n in range(1, 6)] + [new[n] for n in range(6, 11)])
    out = s.handle(
        BackfillDone(request_id=bf.request_id, from_block=1, to_block=10, headers=answer)
    )
    assert isinstance(out[0], Dropped)
    assert [n for n, _ in out[0].blocks] == [6, 7, 8, 9, 10]
    assert numbers(out) == [6, 7, 8, 9, 10, 11]


def test_reorg_beyond_the_window_rebases_with_a_warning() -> None:
    """When the fork point is older than the window, the stream rebases on the new branch."""
    s = active(window=4)
    old = chain(1, 10)
    for n in range(1, 11):
        s.handle(HeadReceived(provider="p1", header=old[n]))
    new = chain(2, 11, branch=1, fork=2)
    (bf,) = backfills(s.handle(HeadReceived(provider="p1", header=new[11])))
    assert (bf.from_block, bf.to_block) == (7, 10)
    out = s.handle(
        BackfillDone(
            request_id=bf.request_id,
            from_block=7,
            to_block=10,
            headers=tuple(new[n] for n in range(7, 11)),
        )
    )
    assert any(isinstance(d, Warn) for d in out)
    assert any(isinstance(d, Dropped) for d in out)
    assert numbers(out) == [7, 8, 9, 10, 11]


def test_anchor_covers_a_loss_before_the_first_head() -> None:
    """A stream lost before any head catches up from the head it started at; heads older
    than that are not owed; a first head past it opens a gap."""
    c = chain(1, 20)
    s = SubscriptionStream("newHeads")
    s.handle(Start())
    assert s.handle(Subscribed(provider="p1", head=5)) == []
    assert s.handle(HeadReceived(provider="p1", header=c[4])) == []
    (bf,) = backfills(s.handle(UpstreamLost(provider="p1", reason="ended")))
    assert (bf.from_block, bf.to_block) == (6, None)
    done = BackfillDone(
        request_id=bf.request_id, from_block=6, to_block=8, headers=(c[6], c[7], c[8])
    )
    assert numbers(s.handle(done)) == [6, 7, 8]
    s2 = SubscriptionStream("newHeads")
    s2.handle(Start())
    s2.handle(Subscribed(provider="p1", head=5))
    (bf,) = backfills(s2.handle(HeadReceived(provider="p1", header=c[9])))
    assert (bf.from_block, bf.to_block) == (6, 8)
    done = BackfillDone(request_id=bf.request_id, from_block=6, to_block=8, headers=(c[7], c[8]))
    out = s2.handle(done)
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block) == (6, 6)
    assert numbers(
        s2.handle(BackfillDone(request_id=bf.request_id, from_block=6, to_block=6, headers=(c[6],)))
    ) == [6, 7, 8, 9]


def test_heads_from_the_past_and_the_first_head() -> None:
    """The first head sets the baseline; heads older than the window are ignored."""
    s = active(window=3)
    c = chain(1, 10)
    assert numbers(s.handle(HeadReceived(provider="p1", header=c[5]))) == [5]
    for n in (6, 7, 8):
        s.handle(HeadReceived(provider="p1", header=c[n]))
    assert s.handle(HeadReceived(provider="p1", header=header(2, branch=3))) == []
    assert s.handle(HeadReceived(provider="p2", header=header(9, branch=3))) == []
    assert "newHeads active" in repr(s)


@dataclass
class Driver:
    """Feeds a stream, answers its backfills from a chain model, checks each output."""

    stream: SubscriptionStream
    canonical: dict[int, Header]
    view: list[Header] = field(default_factory=list)
    queue: list[Backfill] = field(default_factory=list)
    emitted: list[int] = field(default_factory=list)
    warned: int = 0

    def feed(self, fact: Any) -> None:
        for d in self.stream.handle(fact):
            if isinstance(d, Emit):
                h = parse_header(d.payload)
                assert h is not None
                if self.view and not self.warned:
                    assert h.number == self.view[-1].number + 1, (h, self.view[-1])
                    assert h.parent_hash == self.view[-1].hash
                self.view.append(h)
                self.emitted.append(h.number)
            elif isinstance(d, Dropped):
                k = len(d.blocks)
                assert [(x.number, x.hash) for x in self.view[-k:]] == list(d.blocks)
                del self.view[-k:]
            elif isinstance(d, Backfill):
                self.queue.append(d)
            elif isinstance(d, Warn):
                self.warned += 1

    def answer(self, head: int, fail: bool = False) -> None:
        bf = self.queue.pop(0)
        if fail:
            self.feed(BackfillFailed(request_id=bf.request_id))
            return
        hi = head if bf.to_block is None else bf.to_block
        lo = bf.from_block
        if bf.to_block is None and hi - lo + 1 > self.stream._heads.cap:
            lo = hi - self.stream._heads.cap + 1
        hs = tuple(self.canonical[n] for n in range(lo, hi + 1) if n in self.canonical)
        self.feed(
            BackfillDone(
                request_id=bf.request_id, from_block=lo, to_block=max(hi, lo - 1), headers=hs
            )
        )


step = st.one_of(
    st.tuples(st.just("head"), st.integers(0, 2), st.integers(-3, 2)),
    st.tuples(st.just("answer"), st.just(0), st.just(0)),
    st.tuples(st.just("lose"), st.integers(0, 2), st.just(0)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=1, max_size=80), st.integers(1, 40))
def test_property_heads_are_gap_free_and_exactly_once(steps: list[Any], advance_every: int) -> None:
    """Duplicated, reordered and gapped deliveries from three providers, with failovers and
    backfills, emit every block exactly once, by number, each linked to the previous one."""
    canonical = chain(1, 200)
    s = SubscriptionStream("newHeads", max_backfill_blocks=500)
    d = Driver(s, canonical)
    providers = ["p0", "p1", "p2"]
    d.feed(Start())
    head = 1
    d.feed(Subscribed(provider="p0", head=head))  # owed: block 2 on
    for i, (what, who, delta) in enumerate(steps):
        if i % advance_every == 0:
            head += 1 + i % 3  # the chain moves on, sometimes by several blocks
        if what == "head":
            n = min(max(1, head + delta), head)
            d.feed(HeadReceived(provider=providers[who], header=canonical[n]))
        elif what == "answer" and d.queue:
            d.answer(head)
        elif what == "lose" and s.state is StreamState.ACTIVE:
            d.feed(UpstreamLost(provider=s.primary or "", reason="ended"))
            d.feed(Subscribed(provider=providers[who]))
    # settle: the primary announces the head, every backfill is answered
    if s.state is not StreamState.ACTIVE:
        d.feed(Subscribed(provider="p0"))
    d.feed(HeadReceived(provider=s.primary or "", header=canonical[head]))
    while d.queue:
        d.answer(head)
    assert d.emitted == list(range(2, head + 1))
    assert s.dropped == 0 and d.warned == 0
    assert len(s._heads.pending) == 0


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(step, min_size=1, max_size=60),
    st.integers(3, 12),
    st.integers(1, 4),
    st.integers(5, 40),
)
def test_property_reorgs_converge_on_the_new_branch(
    steps: list[Any], fork_back: int, extra: int, switch_at: int
) -> None:
    """Whatever the interleaving, after a reorg the view equals the new canonical chain:
    dropped blocks are announced as a suffix, new blocks follow their parents, none twice."""
    old = chain(1, 100)
    s = SubscriptionStream("newHeads", max_backfill_blocks=500)
    d = Driver(s, dict(old))
    providers = ["p0", "p1", "p2"]
    d.feed(Start())
    d.feed(Subscribed(provider="p0"))
    head = 20
    for n in range(1, head + 1):
        d.feed(HeadReceived(provider="p0", header=old[n]))
    fork = head - fork_back
    new = chain(fork, head + extra + 30, branch=1, fork=fork)
    reorged = False
    for i, (what, who, delta) in enumerate(steps):
        if i == switch_at % max(1, len(steps)) and not reorged:
            reorged = True
            d.canonical = {**{n: old[n] for n in range(1, fork)}, **new}
            head += extra
        src = d.canonical
        if what == "head":
            n = min(max(1, head + delta), head)
            p = providers[who]
            # other providers may still be on the old branch
            hdr = old[n] if (p != s.primary and n in old and reorged and who == 2) else src[n]
            d.feed(HeadReceived(provider=p, header=hdr))
        elif what == "answer" and d.queue:
            d.answer(head)
        elif what == "lose" and s.state is StreamState.ACTIVE:
            d.feed(UpstreamLost(provider=s.primary or "", reason="ended"))
            d.feed(Subscribed(provider=providers[who]))
    if not reorged:
        d.canonical = {**{n: old[n] for n in range(1, fork)}, **new}
        head += extra
    head += 1
    if s.state is not StreamState.ACTIVE:
        d.feed(Subscribed(provider="p0"))
    d.feed(HeadReceived(provider=s.primary or "", header=d.canonical[head]))
    while d.queue:
        d.answer(head)
    assert [h.hash for h in d.view] == [d.canonical[n].hash for n in range(1, head + 1)]
    new_numbers = [n for n in d.emitted if n >= fork]
    # every block of the new branch was emitted exactly once after the old one was dropped
    assert sorted(n for n in new_numbers[-(head - fork + 1) :]) == list(range(fork, head + 1))


def test_head_caches_are_bounded() -> None:
    """Recent hashes and pending heads stay within their limits."""
    s = active(window=2, max_backfill_blocks=1)
    c = chain(1, 60)
    for n in range(1, 12):
        s.handle(HeadReceived(provider="p1", header=c[n]))
    assert len(s._heads.canon) == 2 and len(s._heads.recent._items) == 8
    for n in (20, 30, 40, 50, 60):
        s.handle(HeadReceived(provider="p1", header=c[n]))
    assert len(s._heads.pending) == 3
    assert min(h.number for _, h, _ in s._heads.pending.values()) == 40


def test_a_sibling_linking_to_the_tip_wins_and_prunes_the_orphan() -> None:
    """A head whose parent is unknown waits; a sibling extending the tip goes out and the
    orphan is dropped."""
    s = active()
    c = chain(1, 5)
    for n in range(1, 6):
        s.handle(HeadReceived(provider="p1", header=c[n]))
    orphan = header(6, branch=7)  # parent 5 on branch 7: unknown
    (bf,) = backfills(s.handle(HeadReceived(provider="p1", header=orphan)))
    assert bf.to_block == 5
    assert numbers(s.handle(HeadReceived(provider="p1", header=header(6)))) == [6]
    assert s._heads.pending == {}
    old = header(2, branch=9)
    done = BackfillDone(request_id=bf.request_id, from_block=1, to_block=5, headers=(old,))
    s2 = active(window=3)
    for n in range(1, 6):
        s2.handle(HeadReceived(provider="p1", header=c[n]))
    (bf2,) = backfills(s2.handle(HeadReceived(provider="p1", header=orphan)))
    s2.handle(BackfillDone(request_id=bf2.request_id, from_block=1, to_block=5, headers=(old,)))
    assert old.hash not in s2._heads.pending
    assert s.handle(done) == []
