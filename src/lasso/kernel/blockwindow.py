"""The chain as this node knows it: recent block hashes linked to the head, and finality.

The response cache (docs/caching.md) keeps an answer about an unfinalized block only
together with the hash of a block it depends on, and serves it only while that hash is
still the one :class:`BlockWindow` holds for that height. This module decides what the
node believes the canonical chain is.

:class:`BlockWindow` holds a **linked segment**: blocks ``bottom..top`` where each
block's ``parentHash`` is the hash of the block below. A block hash commits to every
block below it, so a hash at height ``n`` in the segment means that blocks ``0..n`` are
ancestors of the segment's top, whatever the node has or has not seen of them.

Blocks come in from head sources (``newHeads``, polls of the latest block) and from
elsewhere (block answers passing through, walk-back fetches, :meth:`BlockWindow.wanted`).
For a block ``(n, hash, parent)``:

====================================  ==================================================
what                                  effect
====================================  ==================================================
extends the top (parent = top hash)   head source: appended
already held with the same hash       nothing (may learn its parent; a parent that is
                                      not the block held below is a reorg below it)
held with another hash                head source: **reorg**: heights from the fork
                                      evidence up are replaced; the epoch goes up; the
                                      segment below the evidence becomes *detached*
``n == top + 1``, parent differs      head source: reorg of the top, as above
beyond ``top + 1`` (a gap)            head source: a new segment ``{n, n-1}``; the old
                                      one detached
the parent of ``bottom``              prepended (walk-back)
anything else                         ignored: it cannot be linked to the head, or it
                                      is not a head source

A block from anywhere but a head source never replaces what the window holds nor moves
its top: an answer computed before a reorg may arrive after the node has seen the reorg,
and a block fetched by hash may be a side block.
====================================  ==================================================

A *detached* segment is the previous linked segment whose link to the new top is not
known yet. It is never used to validate anything; walk-back fetches the parents of the
new segment's bottom until one of them is a block of the detached segment (then the
detached blocks below it are ancestors again and rejoin the segment) or the walk ends
(budget, failures, or below the finalized height): then it is dropped.

:class:`Finality` turns finalized-tag reports per provider and the head into the
height at or below which blocks are final.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BlockWindow", "Finality", "MAX_WALK", "WINDOW_CAPACITY", "FINALITY_FRESH_S"]

WINDOW_CAPACITY = 1024
"""Blocks held in the linked segment (the lowest go first)."""
MAX_WALK = 128
"""Walk-back fetches after one reset (a gap or a reorg) before the walk stops."""
MAX_WALK_FAILURES = 3
"""Walk-back fetches that found nothing before the detached segment is dropped."""
FINALITY_FRESH_S = 600.0
"""A provider's finalized-tag report counts for this long."""


class BlockWindow:
    """Recent block hashes linked to the newest head (see the module docstring).

    Args:
        capacity: most blocks held in the linked segment.
        max_walk: most walk-back fetches asked for after each reset.

    Attributes:
        epoch: bumped on every reorg the window sees (a known hash replaced).
        reorgs: reorgs seen.
    """

    __slots__ = (
        "_hash",
        "_parent",
        "_height",
        "_detached",
        "top",
        "bottom",
        "epoch",
        "reorgs",
        "capacity",
        "max_walk",
        "_walk_left",
        "_walk_failures",
    )

    def __init__(self, capacity: int = WINDOW_CAPACITY, max_walk: int = MAX_WALK) -> None:
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2, got {capacity}")
        self.capacity = capacity
        self.max_walk = max_walk
        self._hash: dict[int, str] = {}
        self._parent: dict[int, str | None] = {}
        self._height: dict[str, int] = {}
        self._detached: dict[int, tuple[str, str | None]] = {}
        self.top: int | None = None
        self.bottom: int | None = None
        self.epoch = 0
        self.reorgs = 0
        self._walk_left = max_walk
        self._walk_failures = 0

    # -- reads --------------------------------------------------------------------------

    def hash_at(self, number: int) -> str | None:
        """The hash of block ``number`` in the linked segment, ``None`` if not held."""
        return self._hash.get(number)

    def height_of(self, block_hash: str) -> int | None:
        """The height of ``block_hash`` (lowercase) in the linked segment, or ``None``."""
        return self._height.get(block_hash)

    def __len__(self) -> int:
        return len(self._hash)

    @property
    def detached(self) -> int:
        """Blocks waiting in the detached segment."""
        return len(self._detached)

    # -- inputs -------------------------------------------------------------------------

    def observe(
        self, number: int, block_hash: str, parent_hash: str | None, *, head: bool = True
    ) -> int | None:
        """Take in one block (hashes in lowercase ``0x`` hex).

        Args:
            head: the block comes from a head source (``newHeads``, a poll of the latest
                block): it may extend the top, replace held blocks or start a new
                segment. A block from anywhere else (an answer passing through, a
                walk-back fetch) may only confirm a held block or be the parent of the
                bottom (its hash is fixed by the block above it): an answer computed
                before a reorg can arrive after it and must not undo it, and a block
                served by hash may be a side block that must not become the head.

        Returns:
            The lowest height whose hash the window held and now knows to be replaced
            (fork evidence: the caller drops what it anchored there and above), or
            ``None`` when nothing known was replaced.
        """
        top = self.top
        if top is None or self.bottom is None:
            if head:
                self._reset(number, block_hash, parent_hash)
                self._merge()
            return None
        held = self._hash.get(number)
        if held is not None:
            if held == block_hash:
                if parent_hash is not None and self._parent.get(number) is None:
                    return self._learn_parent(number, parent_hash)
                return None
            return self._fork_at(number, block_hash, parent_hash) if head else None
        if number == top + 1:
            if not head:
                return None  # a newer head is for head sources to announce
            if parent_hash == self._hash[top]:
                self._put(number, block_hash, parent_hash)
                self.top = number
                self._trim()
                return None
            if parent_hash is None:  # no link known: a new segment (no evidence of a fork)
                self._restart(number, block_hash, None)
                return None
            # The top was replaced: the fork is at the top or below.
            self._restart(number, block_hash, parent_hash, replaced=top)
            self._fork_seen()
            return top
        if number > top + 1:
            if head:
                self._restart(number, block_hash, parent_hash)
            return None
        bottom = self.bottom
        if number == bottom - 1 and self._parent.get(bottom) == block_hash:
            self._put(number, block_hash, parent_hash)
            self.bottom = number
            self._walk_failures = 0
            self._merge()
            return None
        return None  # below the segment and not its parent: cannot be linked to the head

    def wanted(self, floor: int | None, target: int | None = None) -> str | None:
        """The hash of the block to fetch next (``eth_getBlockByHash``), or ``None``.

        Args:
            floor: the finalized height: the window never walks to it or below (the
                cache needs no hashes there), and a detached segment that was not
                reconnected above it is dropped.
            target: the lowest height a caller needs a hash for (``None``: none).

        Walk-back runs while a detached segment waits to be reconnected, or while the
        segment's bottom is above ``target``; within the walk budget and the capacity.
        """
        bottom = self.bottom
        if bottom is None or self._walk_left <= 0 or len(self._hash) >= self.capacity:
            self._detached.clear()
            return None
        if floor is not None and bottom - 1 <= floor:
            self._detached.clear()  # everything below is final: nothing to reconnect
            return None
        if not self._detached and (target is None or bottom <= target):
            return None
        parent = self._parent.get(bottom)
        return parent if parent is not None else self._hash[bottom]

    def fetched(self) -> None:
        """A walk-back fetch was sent (spends the budget)."""
        self._walk_left -= 1

    def fetch_failed(self) -> None:
        """A walk-back fetch found nothing (the block is gone or the provider lags)."""
        self._walk_failures += 1
        if self._walk_failures >= MAX_WALK_FAILURES:
            self._detached.clear()
            self._walk_left = 0

    # -- internals ----------------------------------------------------------------------

    def _put(self, number: int, block_hash: str, parent_hash: str | None) -> None:
        """Hold a block at a height not held (callers drop a replaced one first)."""
        self._hash[number] = block_hash
        self._parent[number] = parent_hash
        self._height[block_hash] = number

    def _learn_parent(self, number: int, parent_hash: str) -> int | None:
        self._parent[number] = parent_hash
        below = self._hash.get(number - 1)
        if below is not None and below != parent_hash:
            # The block below is not this block's parent: it was replaced. What is under
            # it waits, detached, for a walk-back to link it again.
            self._detached = {
                k: (h, self._parent.get(k)) for k, h in self._hash.items() if k < number - 1
            }
            for k in [k for k in self._hash if k < number]:
                self._drop(k)
            self.bottom = number
            self._fork_seen()
            self._merge()
            return number - 1
        if below is None and number == self.bottom:
            self._merge()
        return None

    def _drop(self, number: int) -> None:
        old = self._hash.pop(number, None)
        self._parent.pop(number, None)
        if old is not None and self._height.get(old) == number:
            del self._height[old]

    def _reset(self, number: int, block_hash: str, parent_hash: str | None) -> None:
        self._hash.clear()
        self._parent.clear()
        self._height.clear()
        self._put(number, block_hash, parent_hash)
        if parent_hash is not None and number > 0:
            self._put(number - 1, parent_hash, None)
            self.bottom = number - 1
        else:
            self.bottom = number
        self.top = number
        self._walk_left = self.max_walk
        self._walk_failures = 0

    def _restart(
        self, number: int, block_hash: str, parent_hash: str | None, replaced: int | None = None
    ) -> None:
        """Start a new segment at ``number``; the old one waits, detached, without the
        heights ``>= replaced`` (known to be replaced)."""
        self._detached = {
            k: (h, self._parent.get(k))
            for k, h in self._hash.items()
            if replaced is None or k < replaced
        }
        self._reset(number, block_hash, parent_hash)
        self._merge()

    def _fork_at(self, number: int, block_hash: str, parent_hash: str | None) -> int:
        """A held height has another hash now: drop it and everything above it."""
        below = self._hash.get(number - 1)
        for k in [k for k in self._hash if k >= number]:
            self._drop(k)
        self._fork_seen()
        if below is not None and parent_hash == below:
            self._put(number, block_hash, parent_hash)  # the fork is exactly at number
            self.top = number
            return number
        # The parent changed too (or is unknown): what is below is not known to link.
        evidence = number - 1 if below is not None and parent_hash is not None else number
        self._restart(number, block_hash, parent_hash, replaced=evidence)
        return evidence

    def _fork_seen(self) -> None:
        self.epoch += 1
        self.reorgs += 1
        self._walk_left = self.max_walk
        self._walk_failures = 0

    def _merge(self) -> None:
        """Rejoin the detached blocks below ``bottom`` when ``bottom`` links to them."""
        detached = self._detached
        bottom = self.bottom
        if not detached or bottom is None:
            return
        parent = self._parent.get(bottom)
        below = detached.get(bottom - 1)
        if parent is not None and below is not None and below[0] == parent:
            # The detached segment is linked in itself: its blocks below are ancestors.
            k = bottom - 1
            while k in detached and len(self._hash) < self.capacity:
                h, p = detached[k]
                self._put(k, h, p)
                self.bottom = k
                k -= 1
            detached.clear()
        elif not any(k < bottom for k in detached):
            detached.clear()  # nothing left below to reconnect with

    def _trim(self) -> None:
        while len(self._hash) > self.capacity and self.bottom is not None:
            self._drop(self.bottom)
            self.bottom += 1

    def __repr__(self) -> str:
        return (
            f"<BlockWindow {self.bottom}..{self.top} held={len(self._hash)}"
            f" detached={len(self._detached)} epoch={self.epoch}>"
        )


@dataclass(slots=True)
class _Report:
    number: int
    at: float


class Finality:
    """The height at or below which blocks are final.

    The chain's ``finalized`` tag where providers give it: the lowest of the providers'
    reports from the last :data:`FINALITY_FRESH_S` seconds (conservative: a lagging
    provider lowers it, an over-eager one cannot raise it), never above the head. Without
    a fresh report, ``finality_depth`` blocks below the consensus head.

    Args:
        depth: ``cache.finality_depth``.
    """

    __slots__ = ("depth", "_reports", "fresh_s")

    def __init__(self, depth: int, fresh_s: float = FINALITY_FRESH_S) -> None:
        if depth < 1:
            raise ValueError(f"finality depth must be positive, got {depth}")
        self.depth = depth
        self.fresh_s = fresh_s
        self._reports: dict[str, _Report] = {}

    def report(self, provider: str, number: int, now: float) -> None:
        """``provider`` answered ``eth_getBlockByNumber("finalized")`` with block ``number``."""
        self._reports[provider] = _Report(number, now)

    def forget(self, provider: str) -> None:
        """``provider`` does not answer the finalized tag (or is gone)."""
        self._reports.pop(provider, None)

    def height(self, head: int | None, now: float) -> int | None:
        """The finalized height, or ``None`` when nothing is known to be final.

        Args:
            head: the chain's consensus head, ``None`` when unknown.
            now: monotonic seconds.
        """
        tagged: int | None = None
        for rep in self._reports.values():
            if now - rep.at <= self.fresh_s and (tagged is None or rep.number < tagged):
                tagged = rep.number
        if tagged is not None:
            return tagged if head is None or tagged <= head else head
        if head is None or head - self.depth < 0:
            return None
        return head - self.depth

    def __repr__(self) -> str:
        return f"<Finality depth={self.depth} reports={len(self._reports)}>"
