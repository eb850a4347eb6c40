"""The in-memory answer store: an LRU bounded in bytes, one per chain.

Each entry is the raw ``result`` bytes of an answer and the
:class:`~lasso.kernel.cache_policy.Stamp` that says when it is still true. The byte
count of an entry is its key, its result and a fixed overhead for the Python objects
around them, so ``max_bytes`` bounds the process's memory for the chain's cache (within
the overhead estimate). An answer larger than an eighth of the budget is not kept: one
huge block must not flush everything else.
"""

from __future__ import annotations

from collections import OrderedDict

from lasso.kernel.cache_policy import Kind, Stamp

__all__ = ["MemoryStore", "ENTRY_OVERHEAD"]

ENTRY_OVERHEAD = 240
"""Bytes counted per entry beyond its key and result (dict slot, tuple, stamp, bytes headers)."""


class MemoryStore:
    """Answers by key, least recently used first out.

    Args:
        max_bytes: the budget (0 keeps nothing).

    Attributes:
        bytes: bytes counted now. ``evictions``: entries pushed out to make room.
    """

    __slots__ = ("max_bytes", "bytes", "evictions", "_entries", "_anchored")

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._entries: OrderedDict[bytes, tuple[bytes, Stamp, int]] = OrderedDict()
        self._anchored: dict[int, set[bytes]] = {}  # anchor height -> keys

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> tuple[bytes, Stamp] | None:
        """The entry under ``key`` (now the most recently used), or ``None``."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0], entry[1]

    def put(self, key: bytes, result: bytes, stamp: Stamp) -> bool:
        """Store ``result`` under ``key`` (replacing any entry); False if it does not fit."""
        size = len(key) + len(result) + ENTRY_OVERHEAD
        if size > self.max_bytes // 8:
            self.discard(key)
            return False
        entries = self._entries
        if key in entries:
            self.discard(key)
        while self.bytes + size > self.max_bytes and entries:
            old_key, _ = next(iter(entries.items()))
            self.discard(old_key)
            self.evictions += 1
        entries[key] = (result, stamp, size)
        self.bytes += size
        if stamp.kind is Kind.ANCHORED:
            self._anchored.setdefault(stamp.number, set()).add(key)
        return True

    def discard(self, key: bytes) -> None:
        """Remove ``key`` if present."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self.bytes -= entry[2]
        stamp = entry[1]
        if stamp.kind is Kind.ANCHORED:
            keys = self._anchored.get(stamp.number)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._anchored[stamp.number]

    def drop_anchored_from(self, height: int) -> int:
        """Remove every entry anchored at ``height`` or above (a reorg replaced those
        blocks: the entries can never be served again). Returns how many went."""
        doomed = [k for h, keys in self._anchored.items() if h >= height for k in keys]
        for key in doomed:
            self.discard(key)
        return len(doomed)

    def resize(self, max_bytes: int) -> None:
        """Change the budget, evicting what no longer fits."""
        self.max_bytes = max_bytes
        while self.bytes > max_bytes and self._entries:
            self.discard(next(iter(self._entries)))
            self.evictions += 1

    def clear(self) -> None:
        self._entries.clear()
        self._anchored.clear()
        self.bytes = 0

    def __repr__(self) -> str:
        return (
            f"<MemoryStore entries={len(self._entries)} bytes={self.bytes}/{self.max_bytes}"
            f" evictions={self.evictions}>"
        )
