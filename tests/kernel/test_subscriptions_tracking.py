"""Bounded sets, counters and the pending-transaction dedupe (kernel/subscriptions/tracking.py)."""

from __future__ import annotations

from lasso.kernel.subscriptions import (
    BackfillDone,
    BackfillFailed,
    BlocksDropped,
    Emit,
    HeadReceived,
    LogReceived,
    Subscribed,
    TxReceived,
    UpstreamLost,
)
from lasso.kernel.subscriptions.tracking import Counters, LruSet, TxTracker

from kernel_subscriptions_support import (
    T1,
    T2,
    active,
    header,
    log_entry,
)


def test_pending_transactions_dedupe() -> None:
    """Pending transaction hashes are delivered once; other kinds ignore foreign facts."""
    s = active("newPendingTransactions")
    out = s.handle(TxReceived(provider="p1", tx_hash=T1, payload=T1))
    out += s.handle(TxReceived(provider="p2", tx_hash=T1, payload=T1))
    out += s.handle(TxReceived(provider="p1", tx_hash=T2, payload=T2))
    assert [d.payload for d in out if isinstance(d, Emit)] == [T1, T2]
    assert s.duplicates == 1
    assert s.handle(HeadReceived(provider="p1", header=header(1))) == []
    assert s.handle(LogReceived(provider="p1", log=log_entry(1, 0))) == []
    assert s.handle(BlocksDropped(blocks=())) == []
    assert s.handle(BackfillDone(request_id=1, from_block=1, to_block=1)) == []
    assert s.handle(BackfillFailed(request_id=1)) == []
    s.handle(UpstreamLost(provider="p1", reason="ended"))
    assert s.handle(Subscribed(provider="p2")) == []
    h = active("newHeads")
    assert h.handle(TxReceived(provider="p1", tx_hash=T1, payload=T1)) == []


def test_lru_set_forgets_its_oldest_member() -> None:
    """Past its limit the set drops the least recently added member; re-adding refreshes."""
    seen = LruSet(2)
    seen.add("a")
    seen.add("b")
    seen.add("a")  # now the newest
    seen.add("c")
    assert "a" in seen and "c" in seen and "b" not in seen
    seen.discard("a")
    seen.discard("never added")
    assert "a" not in seen and "c" in seen


def test_tx_tracker_window_and_shared_counters() -> None:
    """The transaction dedupe remembers max(64 × window, 1024) hashes and counts into Counters."""
    counters = Counters()
    txs = TxTracker(2, counters)
    assert (counters.duplicates, counters.dropped, counters.backfilled) == (0, 0, 0)
    hashes = [f"0x{n:064x}" for n in range(1025)]
    for h in hashes:
        assert txs.on_tx(h, h) == [Emit(payload=h)]
    assert txs.on_tx(hashes[0], hashes[0]) == [Emit(payload=hashes[0])]  # forgotten
    assert txs.on_tx(hashes[-1], hashes[-1]) == []
    assert counters.duplicates == 1
