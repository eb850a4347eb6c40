"""SubscriptionStream: lifecycle facts applied, data routed by kind (subscriptions/stream.py)."""

from __future__ import annotations

from lasso.kernel.subscriptions import (
    BlocksDropped,
    Close,
    Degraded,
    HeadReceived,
    HeadSeen,
    LogReceived,
    NoProvider,
    Resubscribe,
    Retry,
    Start,
    StreamState,
    Subscribed,
    SubscribeFailed,
    SubscriptionStream,
    UpstreamLost,
)

from kernel_subscriptions_support import (
    active,
    backfills,
    bhash,
    header,
    log_entry,
    numbers,
)


def test_lifecycle_failover_degrade_and_close() -> None:
    """Subscribe failures exclude providers; no provider degrades; retry clears exclusions."""
    s = SubscriptionStream("newHeads")
    assert s.handle(Start()) == [Resubscribe(exclude=frozenset())]
    assert s.handle(SubscribeFailed(provider="p1")) == [Resubscribe(exclude=frozenset({"p1"}))]
    assert s.handle(NoProvider()) == [Degraded(reason="no provider can take the subscription")]
    assert s.state is StreamState.DEGRADED
    assert s.handle(Retry()) == [Resubscribe(exclude=frozenset())]
    assert s.handle(Subscribed(provider="p2")) == []
    assert s.state is StreamState.ACTIVE and s.primary == "p2"
    assert s.handle(UpstreamLost(provider="p1", reason="ended")) == []  # not the primary
    assert s.state is StreamState.ACTIVE
    out = s.handle(UpstreamLost(provider="p2", reason="stale"))
    assert out[0] == Resubscribe(exclude=frozenset({"p2"}))
    assert s.state is StreamState.SUBSCRIBING and s.primary is None
    assert s.handle(Close()) == []
    assert s.state is StreamState.CLOSED
    assert s.handle(HeadReceived(provider="p2", header=header(1))) == []
    assert "closed" in repr(s)


def test_repr_summarizes_live_state() -> None:
    """The repr names kind, state, primary, tip, pending heads, buffered logs and counters."""
    s = active()
    s.handle(HeadReceived(provider="p1", header=header(1)))
    s.handle(HeadReceived(provider="p1", header=header(1)))
    assert repr(s) == (
        "<SubscriptionStream newHeads active primary=p1 tip=1 pending=0 buffered=0 dup=1 "
        "dropped=0 backfilled=0>"
    )
    assert s.tip == 1 and SubscriptionStream("logs").tip is None


def test_data_facts_reach_only_the_tracker_of_their_kind() -> None:
    """A heads stream ignores logs and drop markers; a logs stream ignores heads."""
    heads = active("newHeads")
    assert heads.handle(LogReceived(provider="p1", log=log_entry(1, 0))) == []
    assert heads.handle(BlocksDropped(blocks=((1, bhash(1)),))) == []
    assert heads.duplicates == 0
    logs = active("logs")
    assert logs.handle(HeadReceived(provider="p1", header=header(1))) == []
    assert logs.tip is None
    assert logs.handle(HeadSeen(provider="p1", number=3)) == []  # a marker, no output


def test_only_the_primary_is_trusted() -> None:
    """Data from a provider other than the primary may extend the tip but never reorg it."""
    s = active()
    for n in (1, 2):
        s.handle(HeadReceived(provider="p1", header=header(n)))
    fork = header(2, branch=1, parent_branch=0)
    assert s.handle(HeadReceived(provider="p2", header=fork)) == []
    assert s.duplicates == 1
    assert numbers(s.handle(HeadReceived(provider="p2", header=header(3)))) == [3]
    out = s.handle(HeadReceived(provider="p1", header=header(3, branch=1)))
    assert numbers(out) == [] and s.tip == 3  # the primary's fork waits for its ancestors
    (bf,) = backfills(out)
    assert bf.to_block == 2  # the walk-back fetches 2' from a backfill, not from p2
