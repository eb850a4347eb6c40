"""logs: the per-block window of emitted logs, reorg removal and catch-up buffering.

Logs are deduplicated by ``(blockHash, logIndex)`` and delivered by ``(blockNumber,
logIndex)``. While a catch-up backfill runs, live logs wait in a bounded buffer and are
merged with it; on a reorg the logs already emitted for the dropped blocks are re-sent with
``removed: true`` before any new one.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from lasso.kernel.subscriptions.events import (
    Backfill,
    BackfillDone,
    BlockRefs,
    Decision,
    Emit,
    LogEntry,
    Warn,
)
from lasso.kernel.subscriptions.tracking import MAX_ATTEMPTS, REORG_WALK, Counters, LruSet

__all__ = ["LOG_BUFFER_LIMIT", "LogTracker"]

LOG_BUFFER_LIMIT = 10_000
"""Live logs held while a catch-up backfill runs; past it the oldest are flushed early."""


class LogTracker:
    """logs: per-block window of emitted logs, reorg removal, catch-up buffering."""

    def __init__(self, cap: int, window: int, counters: Counters) -> None:
        self.cap = cap
        self.window = window
        self.c = counters
        self.blocks: OrderedDict[str, tuple[int, dict[int, LogEntry]]] = OrderedDict()
        self.dead = LruSet(4 * window)
        self.floor = -1  # logs of blocks below this were forgotten: treat as delivered
        self.high: int | None = None
        self.buffering = False
        self.buffer: list[tuple[LogEntry, bool]] = []
        self.head_mark: dict[str, int] = {}
        self.resume_from: int | None = None
        self.outstanding: Backfill | None = None
        self.attempts = 0
        self.stale = False  # the read in flight no longer covers everything

    def on_log(self, entry: LogEntry, trusted: bool) -> list[Decision]:
        if entry.removed:
            if entry.block_hash in self.blocks:
                return self._remove([entry.block_hash], entry.block_number, False)
            self.c.duplicates += 1
            return []
        if entry.block_hash in self.dead:
            self.c.duplicates += 1
            return []
        if self.buffering:
            return self._hold(entry, trusted)
        return self._accept(entry, trusted)

    def _hold(self, entry: LogEntry, trusted: bool) -> list[Decision]:
        self.buffer.append((entry, trusted))
        if len(self.buffer) <= LOG_BUFFER_LIMIT:
            return []
        # Best effort: deliver the oldest now rather than grow without bound.
        self.buffer.sort(key=lambda e: e[0].position)
        first, ok = self.buffer.pop(0)
        return self._accept(first, ok)

    def _accept(self, entry: LogEntry, trusted: bool) -> list[Decision]:
        block = self.blocks.get(entry.block_hash)
        if block is None:
            if entry.block_number < self.floor:
                self.c.duplicates += 1
                return []
            if self.high is not None and entry.block_number <= self.high:
                # A new block at or below one we delivered: the old ones were reorged out.
                if not trusted:
                    self.c.duplicates += 1
                    return []
                n = entry.block_number
                replaced = [bh for bh, (m, _) in self.blocks.items() if m == n]
                above = [bh for bh, (m, _) in self.blocks.items() if m > n]
                out = self._remove(replaced, n, False, above)
                return out + self._hold(entry, trusted)
            block = (entry.block_number, {})
            self.blocks[entry.block_hash] = block
            while len(self.blocks) > self.window:
                _, (n, _) = self.blocks.popitem(last=False)
                self.floor = max(self.floor, n)
        elif entry.log_index in block[1]:
            self.c.duplicates += 1
            return []
        block[1][entry.log_index] = entry
        if self.high is None or entry.block_number > self.high:
            self.high = entry.block_number
        return [Emit(payload=entry.payload)]

    def _remove(
        self, dead: Iterable[str], lowest: int, exact: bool, doubtful: Iterable[str] = ()
    ) -> list[Decision]:
        """Re-send the emitted logs of dropped blocks with ``removed: true``, ascending.

        ``dead`` blocks are known to be off the chain and never delivered again;
        ``doubtful`` ones (emitted above a replaced block, maybe from the new branch
        already) are withdrawn too, to keep the order, and come back if the re-read finds
        them. Then the logs are re-read from the fork point on: an upstream that was lost
        (or a node that does not re-send logs after a reorg) would otherwise leave the new
        branch's logs out. Live logs wait in the buffer meanwhile, so no new log precedes
        a removal. The newHeads stream knows the fork point (``exact``); logs alone only
        show the lowest dropped block *with logs*, so the re-read starts just above the
        highest block still standing below it (at most :data:`REORG_WALK` blocks lower).
        """
        gone: list[LogEntry] = []
        for bh, is_dead in [(h, True) for h in dead] + [(h, False) for h in doubtful]:
            if is_dead:
                self.dead.add(bh)
            block = self.blocks.pop(bh, None)
            if block is not None:
                gone.extend(block[1].values())
        gone.sort(key=lambda e: e.position)
        live = [n for n, _ in self.blocks.values()]
        self.high = max(live) if live else None
        start = lowest
        if not exact:
            below = [n for n in live if n < lowest]
            start = max(max(below) + 1 if below else lowest, lowest - REORG_WALK)
        for p, mark in self.head_mark.items():
            self.head_mark[p] = min(mark, start)
        self.resume_from = start if self.resume_from is None else min(self.resume_from, start)
        self.buffering = True
        self.stale = self.outstanding is not None  # it may have read the old branch
        return [Emit(payload=e.payload, removed=True) for e in gone]

    def on_dropped(self, blocks: BlockRefs) -> list[Decision]:
        blocks = tuple(b for b in blocks if b[1] not in self.dead)  # news only
        if not blocks:
            return []
        return self._remove([bh for _, bh in blocks], min(n for n, _ in blocks), True)

    def on_loss(self, provider: str) -> None:
        """Open the gap: buffer live logs and remember where to resume."""
        mark = self.head_mark.get(provider)
        if mark is None:
            mark = self.high
        if mark is not None:
            self.resume_from = mark if self.resume_from is None else min(self.resume_from, mark)
        self.buffering = True
        # A read in flight was planned before this loss: it may stop short of what the
        # lost upstream now fails to deliver, so it is followed by another one.
        self.stale = self.outstanding is not None

    def catch_up(
        self, exclude: frozenset[str], next_id: int, primary: str | None
    ) -> list[Decision]:
        if self.outstanding is not None:
            return []
        if self.resume_from is None:
            return self._flush()
        # Never start above what the live upstream has delivered: a lagging primary's
        # older blocks would otherwise look like a reorg below the backfilled ones.
        start = min(self.resume_from, self.head_mark.get(primary or "", self.resume_from))
        self.resume_from = start
        self.attempts += 1
        self.outstanding = Backfill(
            request_id=next_id, from_block=start, to_block=None, exclude=exclude
        )
        return [self.outstanding]

    def on_backfill(
        self, done: BackfillDone, requested: Backfill, primary: str | None
    ) -> list[Decision]:
        self.outstanding = None
        self.attempts = 0
        self.c.backfilled += max(0, done.to_block - done.from_block + 1)
        self.buffer.extend((e, True) for e in done.logs)
        if self.stale or (self.resume_from is not None and self.resume_from < requested.from_block):
            # A loss or a reorg arrived meanwhile: read again, from the lowest point (the
            # catch-up set ``resume_from`` to this request's start; it only went down).
            self.stale = False
            return []
        self.resume_from = None
        if primary is not None:
            # The live upstream covers what follows the catch-up range.
            self.head_mark[primary] = max(self.head_mark.get(primary, -1), done.to_block + 1)
        out: list[Decision] = []
        if done.from_block > requested.from_block:
            skipped = done.from_block - requested.from_block
            self.c.dropped += skipped
            out.append(
                Warn(
                    message=f"logs of blocks {requested.from_block}..{done.from_block - 1} "
                    f"exceed max_backfill_blocks={self.cap} and are skipped"
                )
            )
        return out + self._flush()

    def on_backfill_failed(
        self, exclude: frozenset[str], next_id: int, primary: str | None
    ) -> list[Decision]:
        self.outstanding = None
        if self.attempts < MAX_ATTEMPTS:
            return self.catch_up(exclude, next_id, primary)
        start = self.resume_from
        self.resume_from = None
        self.attempts = 0
        return [Warn(message=f"logs from block {start} could not be backfilled")] + self._flush()

    def _flush(self) -> list[Decision]:
        self.buffering = False
        items = sorted(self.buffer, key=lambda e: e[0].position)
        self.buffer = []
        out: list[Decision] = []
        for k, (entry, trusted) in enumerate(items):
            if self.buffering:  # a reorg inside the batch: the rest waits for the re-read
                self.buffer.extend(items[k:])
                break
            if entry.block_hash in self.dead:
                self.c.duplicates += 1
                continue
            out += self._accept(entry, trusted)
        return out
