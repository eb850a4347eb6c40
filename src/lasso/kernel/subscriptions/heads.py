"""newHeads: the canonical chain window, pending heads, gap fill and the reorg walk-back.

Heads are deduplicated by hash and delivered by number with parent-hash linkage. A gap
above the tip is filled by a :class:`Backfill` (capped at ``max_backfill_blocks``, the
older blocks skipped with a :class:`Warn`); a head whose parent is not the block emitted
below it is a reorg, whose ancestors are fetched back to the fork point.
"""

from __future__ import annotations

from collections import OrderedDict

from lasso.kernel.subscriptions.events import (
    Backfill,
    BackfillDone,
    Decision,
    Dropped,
    Emit,
    Header,
    Warn,
)
from lasso.kernel.subscriptions.tracking import MAX_ATTEMPTS, REORG_WALK, Counters, LruSet

__all__ = ["HeadTracker"]


class HeadTracker:
    """newHeads: canonical chain window, pending heads, gap fill and reorg walk-back."""

    def __init__(self, cap: int, window: int, counters: Counters) -> None:
        self.cap = cap
        self.window = window
        self.c = counters
        self.canon: OrderedDict[int, Header] = OrderedDict()  # emitted, by number, ascending
        self.by_hash: dict[str, int] = {}
        self.recent = LruSet(4 * window)  # emitted hashes, canonical or aged out
        self.pending: dict[str, tuple[int, Header, bool]] = {}  # hash → (seq, header, backfill)
        self.seq = 0
        self.outstanding: Backfill | None = None
        self.attempts = 0
        self.last_bottom: str | None = None
        self.skip_floor: int | None = None
        self.catch_up = False
        self.anchor: int | None = None  # first block owed, before any head was emitted

    @property
    def tip(self) -> Header | None:
        return next(reversed(self.canon.values())) if self.canon else None

    def on_head(self, h: Header, trusted: bool) -> list[Decision]:
        if h.hash in self.by_hash or h.hash in self.recent or h.hash in self.pending:
            self.c.duplicates += 1
            return []
        tip = self.tip
        if not trusted:
            # Another provider (an old upstream kept for overlap): it may extend the tip only.
            if tip is not None and h.number == tip.number + 1 and h.parent_hash == tip.hash:
                return self._emit_path([h], set())
            self.c.duplicates += 1
            return []
        oldest = next(iter(self.canon)) if tip is not None else self.anchor
        if oldest is not None and h.number < oldest:
            self.c.duplicates += 1  # older than everything we remember (or owe)
            return []
        self._add_pending(h, False)
        return []

    def _add_pending(self, h: Header, backfill: bool) -> None:
        self.seq += 1
        self.pending[h.hash] = (self.seq, h, backfill)
        limit = self.cap + self.window
        if len(self.pending) > limit:
            lowest = sorted(self.pending.values(), key=lambda e: (e[1].number, e[0]))
            for _, old, _ in lowest[: len(self.pending) - limit]:
                del self.pending[old.hash]

    def _emit_path(self, path: list[Header], from_backfill: set[str]) -> list[Decision]:
        out: list[Decision] = []
        for h in path:
            self.canon[h.number] = h
            self.by_hash[h.hash] = h.number
            self.recent.add(h.hash)
            self.pending.pop(h.hash, None)
            if h.hash in from_backfill:
                self.c.backfilled += 1
            out.append(Emit(payload=h.payload))
        while len(self.canon) > self.window:
            _, old = self.canon.popitem(last=False)
            del self.by_hash[old.hash]
        # Pending heads at or below the new tip lost to the branch just emitted.
        top = path[-1].number
        for key in [k for k, (_, h, _) in self.pending.items() if h.number <= top]:
            del self.pending[key]
        return out

    def _rollback(self, fork: int) -> Dropped:
        dropped: list[tuple[int, str]] = []
        while self.canon and next(reversed(self.canon)) >= fork:
            _, h = self.canon.popitem(last=True)
            del self.by_hash[h.hash]
            self.recent.discard(h.hash)  # a later flip back may re-emit it
            dropped.append((h.number, h.hash))
        dropped.reverse()
        return Dropped(blocks=tuple(dropped))

    def resolve(self, exclude: frozenset[str], next_id: int) -> list[Decision]:
        """Emit whatever links to the canonical tip; ask for what is missing.

        Before the first head the tip is virtual: ``anchor - 1`` (the chain head when the
        subscription started), or nothing at all without an anchor (the first head is the
        baseline).
        """
        out: list[Decision] = []
        while self.pending:
            tip = self.tip
            _, target, _ = max(self.pending.values(), key=lambda e: (e[1].number, e[0]))
            path = [target]
            while path[-1].parent_hash in self.pending and len(path) <= len(self.pending):
                path.append(self.pending[path[-1].parent_hash][1])
            bottom = path[-1]
            path.reverse()
            backfilled = {h.hash for h in path if self.pending[h.hash][2]}
            anchor = self.anchor
            if tip is None and (anchor is None or bottom.number <= anchor):
                # The baseline: the first head at the anchor (heads below it never get
                # here: nobody is owed them).
                out += self._emit_path(path, backfilled)
                continue
            if tip is not None and self.by_hash.get(bottom.parent_hash) == bottom.number - 1:
                if bottom.number <= tip.number:
                    out.append(self._rollback(bottom.number))
                out += self._emit_path(path, backfilled)
                self._progress()
                continue
            # Unresolved: a gap above the tip, or a reorg whose ancestors we lack. Meanwhile
            # a head that extends the tip (a live one inside the gap) goes out at once.
            if tip is not None:
                child = next(
                    (e for e in self.pending.values() if e[1].parent_hash == tip.hash), None
                )
                if child is not None:
                    out += self._emit_path([child[1]], {child[1].hash} if child[2] else set())
                    continue
            if self.outstanding is not None:
                break
            if bottom.hash != self.last_bottom:
                self.last_bottom = bottom.hash
                self.attempts = 0
            tip_n = tip.number if tip is not None else (anchor or 0) - 1
            lowest = next(iter(self.canon)) if self.canon else tip_n + 1
            gap = bottom.number > tip_n + 1
            floor_reached = self.skip_floor is not None and bottom.number <= self.skip_floor
            walk_exhausted = not gap and bottom.number - 1 < lowest
            if self.attempts >= MAX_ATTEMPTS or (gap and floor_reached) or walk_exhausted:
                out += self._accept_discontinuity(bottom, tip_n)
                out += self._emit_path(path, backfilled)
                self._progress()
                continue
            hi = bottom.number - 1
            if gap:
                lo = tip_n + 1
                if hi - lo + 1 > self.cap:
                    lo = hi - self.cap + 1
                    self.skip_floor = lo
                    out.append(
                        Warn(
                            message=f"gap of {hi - tip_n} blocks exceeds "
                            f"max_backfill_blocks={self.cap}: blocks {tip_n + 1}.."
                            f"{lo - 1} are skipped"
                        )
                    )
            else:
                lo = max(lowest, hi - REORG_WALK + 1)
            self.attempts += 1
            self.outstanding = Backfill(
                request_id=next_id, from_block=lo, to_block=hi, exclude=exclude
            )
            out.append(self.outstanding)
            return out
        if self.catch_up and self.outstanding is None:
            tip = self.tip
            start = tip.number + 1 if tip is not None else self.anchor
            if start is not None:
                self.catch_up = False
                self.outstanding = Backfill(
                    request_id=next_id, from_block=start, to_block=None, exclude=exclude
                )
                out.append(self.outstanding)
        return out

    def _progress(self) -> None:
        self.attempts = 0
        self.last_bottom = None

    def _accept_discontinuity(self, bottom: Header, tip_n: int) -> list[Decision]:
        """Best effort: emit ``bottom`` without a link (skipping a gap, or an unknown fork)."""
        self.skip_floor = None
        if bottom.number > tip_n:
            skipped = bottom.number - tip_n - 1
            self.c.dropped += skipped
            return [Warn(message=f"blocks {tip_n + 1}..{bottom.number - 1} are skipped")]
        lowest = next(iter(self.canon))
        fork = max(bottom.number, lowest)
        return [
            Warn(message=f"reorg fork point below block {bottom.number} not found"),
            self._rollback(fork),
        ]

    def on_backfill(self, done: BackfillDone, requested: Backfill) -> list[Decision]:
        out: list[Decision] = []
        if done.from_block > requested.from_block:
            self.skip_floor = done.from_block
            out.append(
                Warn(
                    message=f"catch-up of {done.to_block - requested.from_block + 1} blocks "
                    f"exceeds max_backfill_blocks={self.cap}: blocks {requested.from_block}.."
                    f"{done.from_block - 1} are skipped"
                )
            )
        # Keep what fills a gap above the tip, and the ancestors of waiting heads (a reorg
        # walk); a block at or below the tip that nothing waits for is not a reason to
        # reorg (the backfill provider may sit on another fork).
        tip = self.tip
        lowest = next(iter(self.canon)) if self.canon else (self.anchor or 0)
        fetched = {
            h.hash: h for h in done.headers if h.hash not in self.by_hash and h.number >= lowest
        }
        keep = {k for k, h in fetched.items() if tip is None or h.number > tip.number}
        for _, waiting, _ in list(self.pending.values()):
            parent = waiting.parent_hash
            while parent in fetched and parent not in keep:
                keep.add(parent)
                parent = fetched[parent].parent_hash
        for h in done.headers:
            if h.hash in keep:
                self._add_pending(h, True)
        return out
