"""The memory store: an LRU of answers bounded in bytes, with reorg eviction."""

from __future__ import annotations

from lasso.kernel.cache_policy import Kind, Stamp
from lasso.server.cache.memory import ENTRY_OVERHEAD, MemoryStore

FINAL = Stamp(Kind.FINAL)


def anchored(n: int) -> Stamp:
    return Stamp(Kind.ANCHORED, number=n, block_hash=f"0x{n:064x}")


def test_get_put_and_byte_count() -> None:
    """Stored answers come back; the byte count is key + result + overhead."""
    store = MemoryStore(10_000)
    assert store.get(b"k") is None
    assert store.put(b"k", b'"0x1"', FINAL)
    assert store.get(b"k") == (b'"0x1"', FINAL)
    assert store.bytes == 1 + 5 + ENTRY_OVERHEAD and len(store) == 1
    store.put(b"k", b'"0x22"', FINAL)  # replaced, counted once
    assert store.bytes == 1 + 6 + ENTRY_OVERHEAD and len(store) == 1


def test_least_recently_used_goes_first() -> None:
    """Over budget, the entry used longest ago is evicted; a get refreshes an entry."""
    size = 2 + 10 + ENTRY_OVERHEAD
    store = MemoryStore(size * 8 + 10)
    for i in range(8):
        store.put(b"k%d" % i, b"x" * 10, FINAL)
    store.get(b"k0")
    store.put(b"k8", b"x" * 10, FINAL)
    assert store.get(b"k1") is None and store.get(b"k0") is not None
    assert store.evictions == 1 and store.bytes <= store.max_bytes


def test_an_answer_over_an_eighth_of_the_budget_is_not_kept() -> None:
    """One huge answer never flushes the cache; a stale smaller one under its key goes."""
    store = MemoryStore(8 * (ENTRY_OVERHEAD + 100))
    store.put(b"big", b"x", FINAL)
    assert not store.put(b"big", b"x" * 200, FINAL)
    assert store.get(b"big") is None and store.bytes == 0


def test_zero_budget_keeps_nothing() -> None:
    """max_bytes 0 stores nothing."""
    store = MemoryStore(0)
    assert not store.put(b"k", b"1", FINAL)
    assert len(store) == 0


def test_reorg_drops_entries_anchored_at_or_above() -> None:
    """drop_anchored_from(h) removes anchored entries from h up, and nothing else."""
    store = MemoryStore(1_000_000)
    for n in (10, 11, 12):
        store.put(b"a%d" % n, b"1", anchored(n))
    store.put(b"f", b"1", FINAL)
    assert store.drop_anchored_from(11) == 2
    assert store.get(b"a10") is not None and store.get(b"f") is not None
    assert store.get(b"a11") is None and store.get(b"a12") is None
    store.put(b"a10", b"2", FINAL)  # re-stored as final: no longer indexed as anchored
    assert store.drop_anchored_from(0) == 0


def test_resize_and_clear() -> None:
    """A smaller budget evicts down to it; clear empties the store."""
    store = MemoryStore(100_000)
    for i in range(20):
        store.put(b"k%02d" % i, b"x" * 100, FINAL)
    store.resize(3 * (3 + 100 + ENTRY_OVERHEAD))
    assert len(store) == 3 and store.get(b"k19") is not None
    store.clear()
    assert len(store) == 0 and store.bytes == 0


def test_repr() -> None:
    """The repr shows entries, bytes and evictions."""
    store = MemoryStore(1000)
    assert repr(store) == "<MemoryStore entries=0 bytes=0/1000 evictions=0>"
