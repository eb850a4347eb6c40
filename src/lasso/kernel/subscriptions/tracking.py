"""Bookkeeping shared by the stream's trackers: bounded sets, counters and retry limits.

Also the newPendingTransactions tracker, which is nothing but a bounded dedupe set.
"""

from __future__ import annotations

from collections import OrderedDict

from lasso.kernel.subscriptions.events import Decision, Emit

__all__ = ["MAX_ATTEMPTS", "REORG_WALK", "Counters", "LruSet", "TxTracker"]

MAX_ATTEMPTS = 3
"""Backfills tried for one unresolved head before the stream accepts the gap."""
REORG_WALK = 32
"""Blocks fetched per step when walking back to a fork point."""


class LruSet:
    """A bounded set forgetting its oldest members."""

    __slots__ = ("_items", "_limit")

    def __init__(self, limit: int) -> None:
        self._items: OrderedDict[str, None] = OrderedDict()
        self._limit = limit

    def __contains__(self, item: str) -> bool:
        return item in self._items

    def add(self, item: str) -> None:
        self._items[item] = None
        self._items.move_to_end(item)
        if len(self._items) > self._limit:
            self._items.popitem(last=False)

    def discard(self, item: str) -> None:
        self._items.pop(item, None)


class Counters:
    """The counts a stream reports (duplicates, dropped, backfilled), shared by its trackers."""

    __slots__ = ("duplicates", "dropped", "backfilled")

    def __init__(self) -> None:
        self.duplicates = 0  # upstream events not delivered: already delivered or superseded
        self.dropped = 0  # events clients will never see (skipped ranges, flushed buffers)
        self.backfilled = 0  # blocks recovered by backfill


class TxTracker:
    """newPendingTransactions: dedupe only."""

    def __init__(self, window: int, counters: Counters) -> None:
        self.seen = LruSet(max(64 * window, 1024))
        self.c = counters

    def on_tx(self, tx_hash: str, payload: object) -> list[Decision]:
        if tx_hash in self.seen:
            self.c.duplicates += 1
            return []
        self.seen.add(tx_hash)
        return [Emit(payload=payload)]
