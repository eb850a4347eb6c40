"""The logs tracker: dedupe, catch-up buffering, reorg removals (kernel/subscriptions/logs.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lasso.kernel.subscriptions import (
    Backfill,
    BackfillDone,
    BackfillFailed,
    BlocksDropped,
    Decision,
    Emit,
    HeadReceived,
    HeadSeen,
    LogEntry,
    LogReceived,
    Resubscribe,
    Start,
    StreamState,
    Subscribed,
    SubscriptionStream,
    UpstreamLost,
    Warn,
    parse_log,
)
from lasso.kernel.subscriptions import logs as kernel_logs

from kernel_subscriptions_support import (
    active,
    backfills,
    bhash,
    emitted_logs,
    header,
    log_entry,
    numbers,
)


def test_logs_dedupe_and_removed_on_reorg() -> None:
    """Duplicate logs are dropped; a new block at an emitted height removes the old logs
    first, then the new branch is re-read from the fork point and delivered in order."""
    s = active("logs")
    out: list[Decision] = []
    for n, i in ((5, 0), (5, 1), (5, 1), (6, 2), (7, 3)):
        out += s.handle(LogReceived(provider="p1", log=log_entry(n, i)))
    assert emitted_logs(out) == [
        (5, 0, 0, False),
        (5, 1, 0, False),
        (6, 2, 0, False),
        (7, 3, 0, False),
    ]
    out = s.handle(LogReceived(provider="p1", log=log_entry(6, 0, branch=1)))
    assert emitted_logs(out) == [(6, 2, 0, True), (7, 3, 0, True)]
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block) == (6, None)
    # the replaced block never comes back; others cannot reorg the stream
    assert s.handle(LogReceived(provider="p1", log=log_entry(6, 2))) == []
    assert s.handle(LogReceived(provider="p2", log=log_entry(5, 0, branch=2))) == []
    s.handle(LogReceived(provider="p1", log=log_entry(7, 0, branch=1)))
    done = BackfillDone(
        request_id=bf.request_id,
        from_block=6,
        to_block=7,
        logs=(log_entry(6, 0, branch=1), log_entry(6, 1, branch=1), log_entry(7, 0, branch=1)),
    )
    assert emitted_logs(s.handle(done)) == [(6, 0, 1, False), (6, 1, 1, False), (7, 0, 1, False)]
    assert s.duplicates == 5


def test_logs_removed_by_the_heads_stream_or_upstream() -> None:
    """BlocksDropped and an upstream removed:true re-send our logs of that block as removed."""
    s = active("logs")
    for n, i in ((1, 0), (2, 0), (2, 1), (3, 0)):
        s.handle(LogReceived(provider="p1", log=log_entry(n, i)))
    out = s.handle(BlocksDropped(blocks=((3, bhash(3)), (2, bhash(2)), (99, bhash(99)))))
    assert emitted_logs(out) == [(2, 0, 0, True), (2, 1, 0, True), (3, 0, 0, True)]
    (bf,) = backfills(out)
    assert bf.from_block == 2
    assert s.handle(BlocksDropped(blocks=((3, bhash(3)),))) == []
    assert s.handle(BackfillDone(request_id=bf.request_id, from_block=2, to_block=3)) == []
    out = s.handle(LogReceived(provider="p1", log=log_entry(1, 0, removed=True)))
    assert emitted_logs(out) == [(1, 0, 0, True)]
    assert s.handle(LogReceived(provider="p1", log=log_entry(1, 0, removed=True))) == []
    assert numbers(s.handle(HeadReceived(provider="p1", header=header(1)))) == []


def test_logs_failover_buffers_and_merges_the_backfill() -> None:
    """After a loss, live logs wait for the catch-up getLogs and come out merged in order."""
    s = active("logs")
    s.handle(HeadSeen(provider="p1", number=3))
    s.handle(HeadSeen(provider="p1", number=2))  # never moves back
    s.handle(LogReceived(provider="p1", log=log_entry(3, 0)))
    out = s.handle(UpstreamLost(provider="p1", reason="ended"))
    assert out == [Resubscribe(exclude=frozenset({"p1"}))]
    out = s.handle(Subscribed(provider="p2"))
    (bf,) = backfills(out)
    assert (bf.from_block, bf.to_block) == (3, None)
    assert s.handle(LogReceived(provider="p2", log=log_entry(6, 0))) == []
    done = BackfillDone(
        request_id=bf.request_id,
        from_block=3,
        to_block=5,
        logs=(log_entry(3, 0), log_entry(4, 0), log_entry(5, 0), log_entry(5, 1)),
    )
    out = s.handle(done)
    assert emitted_logs(out) == [
        (4, 0, 0, False),
        (5, 0, 0, False),
        (5, 1, 0, False),
        (6, 0, 0, False),
    ]
    assert s.backfilled == 3


def test_logs_catch_up_failures_and_cap() -> None:
    """A failing catch-up is retried, then the buffer is flushed; a capped one warns."""
    s = active("logs", max_backfill_blocks=2)
    s.handle(LogReceived(provider="p1", log=log_entry(2, 0)))
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    (bf,) = backfills(s.handle(Subscribed(provider="p2")))
    assert bf.from_block == 2
    s.handle(LogReceived(provider="p2", log=log_entry(9, 0)))
    for _ in range(2):
        (bf,) = backfills(s.handle(BackfillFailed(request_id=bf.request_id)))
    out = s.handle(BackfillFailed(request_id=bf.request_id))
    assert isinstance(out[0], Warn) and emitted_logs(out) == [(9, 0, 0, False)]
    s.handle(UpstreamLost(provider="p2", reason="stale"))
    (bf,) = backfills(s.handle(Subscribed(provider="p1")))
    out = s.handle(BackfillDone(request_id=bf.request_id, from_block=20, to_block=21))
    assert isinstance(out[0], Warn) and s.dropped == 11


def test_logs_without_a_resume_point_just_resubscribe() -> None:
    """A logs stream that never saw a head or a log has nothing to backfill."""
    s = active("logs")
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    assert s.handle(Subscribed(provider="p2")) == []
    assert emitted_logs(s.handle(LogReceived(provider="p2", log=log_entry(1, 0)))) == [
        (1, 0, 0, False)
    ]


def test_logs_window_is_bounded() -> None:
    """Only ``window`` blocks are remembered; older re-deliveries are dropped."""
    s = active("logs", window=3)
    for n in range(1, 8):
        s.handle(LogReceived(provider="p1", log=log_entry(n, 0)))
    assert s.handle(LogReceived(provider="p1", log=log_entry(2, 0))) == []
    assert len(s._logs.blocks) == 3


def test_log_buffer_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past LOG_BUFFER_LIMIT the oldest buffered logs are delivered early."""
    # the tracker reads the limit from its own module (the package only re-exports it)
    monkeypatch.setattr(kernel_logs, "LOG_BUFFER_LIMIT", 3)
    s = active("logs")
    s.handle(HeadSeen(provider="p1", number=1))
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    out: list[Decision] = []
    for n in (5, 4, 3, 2):
        out += s.handle(LogReceived(provider="p1", log=log_entry(n, 0)))
    assert emitted_logs(out) == [(2, 0, 0, False)]


@dataclass
class LogChain:
    """Blocks 1..N with a few logs each (deterministic)."""

    n: int

    def logs(self, block: int) -> list[LogEntry]:
        return [log_entry(block, i) for i in range((block * 7) % 4)]

    def between(self, lo: int, hi: int) -> list[LogEntry]:
        return [e for b in range(max(1, lo), hi + 1) for e in self.logs(b)]


log_step = st.one_of(
    st.tuples(st.just("mine"), st.integers(1, 3)),
    st.tuples(st.just("deliver"), st.integers(0, 2)),
    st.tuples(st.just("answer"), st.just(0)),
    st.tuples(st.just("lose"), st.integers(0, 2)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(log_step, min_size=1, max_size=80))
def test_property_logs_are_exactly_once_and_in_order(steps: list[Any]) -> None:
    """Three upstreams (each an in-order feed from its subscription on, the old one still
    delivering for a while) and catch-up backfills: every log after the subscription is
    delivered once, ordered by (block, index)."""
    lc = LogChain(300)
    s = SubscriptionStream("logs", max_backfill_blocks=1000)
    emitted: list[tuple[int, int]] = []
    queue: list[tuple[Backfill, int]] = []  # with the head when issued
    # per provider: the next block it will deliver (None = not subscribed)
    cursor: dict[str, int | None] = {"p0": None, "p1": None, "p2": None}
    head = 10

    def feed(fact: Any) -> None:
        for dec in s.handle(fact):
            if isinstance(dec, Emit):
                e = parse_log(dec.payload)
                assert e is not None and not dec.removed
                emitted.append(e.position)
            elif isinstance(dec, Backfill):
                queue.append((dec, head))

    def subscribe(p: str) -> None:
        cursor[p] = head + 1
        feed(Subscribed(provider=p, head=head))

    def deliver(p: str) -> None:
        cur = cursor[p]
        if cur is None or cur > head:
            return
        for e in lc.logs(cur):
            feed(LogReceived(provider=p, log=e))
        feed(HeadSeen(provider=p, number=cur))
        cursor[p] = cur + 1

    def answer() -> None:
        bf, to = queue.pop(0)  # the head is read when the backfill starts

        feed(
            BackfillDone(
                request_id=bf.request_id,
                from_block=bf.from_block,
                to_block=to,
                logs=tuple(lc.between(bf.from_block, to)),
            )
        )

    feed(Start())
    subscribe("p0")
    start = head + 1
    for what, arg in steps:
        if what == "mine":
            head += arg
        elif what == "deliver":
            deliver(["p0", "p1", "p2"][arg])
        elif what == "answer" and queue:
            answer()
        elif what == "lose" and s.state is StreamState.ACTIVE:
            old = s.primary or ""
            feed(UpstreamLost(provider=old, reason="ended"))
            if arg == 0:
                cursor[old] = None  # the old connection is gone; otherwise it lingers
            subscribe(["p0", "p1", "p2"][arg])
    # settle: the primary delivers everything up to the head, backfills are answered
    primary = s.primary or ""
    while queue:
        answer()
    while (cursor[primary] or head + 1) <= head:
        deliver(primary)
    assert emitted == sorted(set(emitted))
    assert emitted == [e.position for e in lc.between(start, head)]
    assert s.dropped == 0


@dataclass
class ForkedLogChain:
    """Branch 0 everywhere; after the reorg, branch 1 from ``fork`` on."""

    fork: int
    reorged: bool = False

    def branch(self, block: int) -> int:
        return 1 if self.reorged and block >= self.fork else 0

    def logs(self, block: int, branch: int | None = None) -> list[LogEntry]:
        b = self.branch(block) if branch is None else branch
        return [log_entry(block, i, branch=b) for i in range((block * 7 + b * 3) % 4)]

    def between(self, lo: int, hi: int) -> list[LogEntry]:
        return [e for n in range(max(1, lo), hi + 1) for e in self.logs(n)]


reorg_step = st.one_of(
    st.tuples(st.just("mine"), st.integers(1, 3)),
    st.tuples(st.just("deliver"), st.integers(0, 1)),
    st.tuples(st.just("answer"), st.just(0)),
    st.tuples(st.just("lose"), st.integers(0, 1)),
    st.tuples(st.just("reorg"), st.integers(1, 6)),
    st.tuples(st.just("hint"), st.just(0)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(reorg_step, min_size=1, max_size=60), st.booleans())
def test_property_logs_of_dropped_blocks_are_removed_before_new_ones(
    steps: list[Any], upstream_removes: bool
) -> None:
    """Across a reorg, failovers and backfills, the client's view (logs added minus logs
    removed) stays ordered and ends equal to the canonical chain's logs: every removal
    names a delivered log and comes before the replacement logs."""
    s = SubscriptionStream("logs", max_backfill_blocks=1000)
    lc = ForkedLogChain(fork=0)
    view: list[LogEntry] = []
    queue: list[tuple[Backfill, int]] = []  # with the head when issued
    cursor: dict[str, int | None] = {"p0": None, "p1": None}
    sent: dict[str, list[LogEntry]] = {"p0": [], "p1": []}
    head = 10
    dropped_hashes: list[tuple[int, str]] = []

    def feed(fact: Any) -> None:
        for dec in s.handle(fact):
            if isinstance(dec, Emit):
                e = parse_log(dec.payload)
                assert e is not None
                if dec.removed:
                    assert e in view
                    view.remove(e)
                else:
                    assert e not in view
                    assert not view or view[-1].position < e.position
                    view.append(e)
            elif isinstance(dec, Backfill):
                queue.append((dec, head))

    def subscribe(p: str) -> None:
        cursor[p] = head + 1
        feed(Subscribed(provider=p, head=head))

    def deliver(p: str) -> None:
        cur = cursor[p]
        if cur is None or cur > head:
            return
        for e in lc.logs(cur):
            sent[p].append(e)
            feed(LogReceived(provider=p, log=e))
        feed(HeadSeen(provider=p, number=cur))
        cursor[p] = cur + 1

    def answer() -> None:
        bf, to = queue.pop(0)  # the head is read when the backfill starts
        feed(
            BackfillDone(
                request_id=bf.request_id,
                from_block=bf.from_block,
                to_block=to,
                logs=tuple(lc.between(bf.from_block, to)),
            )
        )

    feed(Start())
    subscribe("p0")
    start = head + 1
    for what, arg in steps:
        if what == "mine":
            head += arg
        elif what == "deliver":
            deliver(f"p{arg}")
        elif what == "answer" and queue:
            answer()
        elif what == "lose" and s.state is StreamState.ACTIVE:
            old = s.primary or ""
            feed(UpstreamLost(provider=old, reason="ended"))
            cursor[old] = None
            subscribe(f"p{arg}")
        elif what == "reorg" and not lc.reorged:
            lc.fork = max(start, head - arg + 1)
            lc.reorged = True
            dropped_hashes = [(n, bhash(n, 0)) for n in range(lc.fork, head + 1)]
            for p, cur in cursor.items():
                if cur is not None and cur > lc.fork:
                    if upstream_removes:
                        for e in [x for x in sent[p] if x.block_number >= lc.fork]:
                            feed(LogReceived(provider=p, log=log_entry(*e.position, removed=True)))
                    cursor[p] = lc.fork
        elif what == "hint" and dropped_hashes:
            feed(BlocksDropped(blocks=tuple(dropped_hashes)))
    if dropped_hashes:
        feed(BlocksDropped(blocks=tuple(dropped_hashes)))
    primary = s.primary or ""
    while queue:
        answer()
    while (cursor[primary] or head + 1) <= head:
        deliver(primary)
    assert view == lc.between(start, head)
    assert s.dropped == 0


def test_logs_rewind_while_a_backfill_runs() -> None:
    """A reorg below the range being fetched triggers a second read from the fork point."""
    s = active("logs")
    s.handle(HeadSeen(provider="p1", number=10))
    for n in range(4, 10):
        s.handle(LogReceived(provider="p1", log=log_entry(n, 0)))
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    (bf,) = backfills(s.handle(Subscribed(provider="p2")))
    assert bf.from_block == 10
    assert s.handle(BlocksDropped(blocks=())) == []
    out = s.handle(BlocksDropped(blocks=((8, bhash(8)), (9, bhash(9)))))
    assert emitted_logs(out) == [(8, 0, 0, True), (9, 0, 0, True)]
    assert backfills(out) == []  # one request at a time
    out = s.handle(BackfillDone(request_id=bf.request_id, from_block=10, to_block=10))
    (bf2,) = backfills(out)
    assert bf2.from_block == 8
    assert s.handle(BackfillDone(request_id=999, from_block=1, to_block=1)) == []
    assert s.handle(BackfillFailed(request_id=999)) == []
    done = BackfillDone(
        request_id=bf2.request_id,
        from_block=8,
        to_block=10,
        logs=(log_entry(8, 0, branch=1), log_entry(9, 0, branch=1), log_entry(10, 0, branch=1)),
    )
    assert emitted_logs(s.handle(done)) == [(8, 0, 1, False), (9, 0, 1, False), (10, 0, 1, False)]


def test_logs_flush_skips_dead_blocks_and_stops_at_a_reorg() -> None:
    """A read in flight during a reorg is followed by another; buffered logs of blocks
    dropped meanwhile are discarded; a conflict inside the buffer withdraws what it
    replaces and waits for the re-read."""
    s = active("logs")
    s.handle(HeadSeen(provider="p1", number=3))
    s.handle(LogReceived(provider="p1", log=log_entry(3, 0)))
    s.handle(LogReceived(provider="p1", log=log_entry(4, 0)))
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    s.handle(LogReceived(provider="p1", log=log_entry(5, 0)))
    (bf,) = backfills(s.handle(Subscribed(provider="p2")))
    assert s.handle(BlocksDropped(blocks=((5, bhash(5)),))) == []
    # the read planned before the reorg is followed by another from its start
    (bf,) = backfills(s.handle(BackfillDone(request_id=bf.request_id, from_block=3, to_block=5)))
    assert bf.from_block == 3
    done = BackfillDone(
        request_id=bf.request_id,
        from_block=3,
        to_block=6,
        logs=(log_entry(3, 0), log_entry(4, 0, branch=1), log_entry(6, 0, branch=1)),
    )
    out = s.handle(done)
    assert emitted_logs(out) == [(4, 0, 0, True)]
    (bf2,) = backfills(out)
    assert bf2.from_block == 4
    assert s._logs.buffering and len(s._logs.buffer) == 3  # 4', 5 (dead) and 6' wait


def test_logs_buffered_for_a_dropped_block_are_discarded() -> None:
    """A live log held during catch-up is not delivered once its block is dropped."""
    s = active("logs")
    s.handle(HeadSeen(provider="p1", number=3))
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    s.handle(LogReceived(provider="p1", log=log_entry(4, 0)))
    s.handle(LogReceived(provider="p1", log=log_entry(5, 0)))
    s.handle(BlocksDropped(blocks=((4, bhash(4)),)))  # before the new upstream: no read yet
    (bf,) = backfills(s.handle(Subscribed(provider="p2")))
    out = s.handle(BackfillDone(request_id=bf.request_id, from_block=3, to_block=5))
    assert emitted_logs(out) == [(5, 0, 0, False)]
    assert s.duplicates == 1
