"""The shared store on a real redis-server: values, queued writes, an outage and recovery."""

from __future__ import annotations

import pytest

from lasso.kernel.cache_policy import Kind, Stamp
from lasso.net.redis_link import RedisLink, RedisUnavailable
from lasso.server.cache.redis_store import RedisStore, decode, encode, redis_key

from redis_support import RedisServer
from support import eventually

ANCHORED = Stamp(Kind.ANCHORED, number=1234, block_hash="0x" + "ab" * 32)


class StepClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_values_round_trip() -> None:
    """Final, static and anchored stamps survive encoding with the raw result bytes."""
    for stamp in (Stamp(Kind.FINAL), Stamp(Kind.STATIC), ANCHORED):
        result, back = decode(encode(b'{"a":1}', stamp)) or (b"", None)
        assert result == b'{"a":1}' and back is not None
        assert back.kind is stamp.kind and back.block_hash == stamp.block_hash
    assert decode(encode(b"1", ANCHORED)) == (b"1", ANCHORED)


def test_head_stamps_are_never_shared_and_junk_is_refused() -> None:
    """Head answers stay per node; foreign or truncated values decode to nothing."""
    with pytest.raises(ValueError):
        encode(b"1", Stamp(Kind.HEAD, number=5))
    with pytest.raises(ValueError):
        encode(b"1", Stamp(Kind.ANCHORED, number=5, block_hash="0x1234"))
    assert decode(b"junk") is None
    assert decode(b"L1" + bytes((3,)) + bytes(40)) is None  # a HEAD kind byte
    assert decode(b"L1" + bytes((9,)) + bytes(40)) is None
    assert decode(b"XX" + bytes(41)) is None


def test_keys_are_prefixed_digests() -> None:
    """A key is the chain prefix and a fixed-size digest of the cache key."""
    a = redis_key(b"lasso:c1:p:1:", b"eth_getBalance\x00[...]")
    assert a.startswith(b"lasso:c1:p:1:") and len(a) == len(b"lasso:c1:p:1:") + 32
    assert a != redis_key(b"lasso:c1:p:1:", b"eth_getBalance\x00[..]")


async def test_writes_are_queued_and_read_back(redis: RedisServer) -> None:
    """put() returns at once; the writer sends it; get() finds it with its TTL set."""
    link = RedisLink(redis.url, op_timeout=1.0)
    store = RedisStore(link)
    try:
        store.put(b"k1", b'"0x1"', ANCHORED, 60)
        await eventually(lambda: store.writes == 1)
        assert await store.get(b"k1") == (b'"0x1"', ANCHORED)
        assert await store.get(b"nope") is None
        assert store.hits == 1 and store.reads == 2
        ttl = int(redis.command("TTL", "k1").strip().lstrip(b":"))
        assert 0 < ttl <= 60
    finally:
        await store.aclose()
        await link.aclose()


async def test_outage_fails_fast_then_recovers(redis: RedisServer) -> None:
    """With Redis gone, reads raise RedisUnavailable (counted) and writes are dropped;
    once it is back and the breaker's trial is due, reads and writes work again."""
    clock = StepClock()
    link = RedisLink(redis.url, op_timeout=0.3, clock=clock)
    store = RedisStore(link)
    try:
        store.put(b"k", b"1", Stamp(Kind.FINAL), 60)
        await eventually(lambda: store.writes == 1)
        redis.stop()
        for _ in range(3):
            with pytest.raises(RedisUnavailable):
                await store.get(b"k")
        assert store.errors >= 3 and not link.available()
        store.put(b"k2", b"2", Stamp(Kind.FINAL), 60)
        assert store.dropped >= 1
        with pytest.raises(RedisUnavailable):
            await store.get(b"k")  # refused at once while the link is open
        redis.start()
        clock.now += 1.1
        assert await store.get(b"k") is None  # Redis restarted empty, but it answers
        store.put(b"k3", b"3", Stamp(Kind.FINAL), 60)
        await eventually(lambda: store.writes >= 2)
        assert await store.get(b"k3") == (b"3", Stamp(Kind.FINAL))
        assert "RedisStore" in repr(store)
    finally:
        redis.start()
        await store.aclose()
        await link.aclose()


async def test_pending_writes_are_bounded_by_bytes(redis: RedisServer) -> None:
    """Writes queued beyond max_pending_bytes are dropped and counted; once the writer
    has sent the queue, its bytes are free again and writes are queued once more."""
    link = RedisLink(redis.url, op_timeout=1.0)
    value = b'"' + b"a" * 1000 + b'"'
    size = len(redis_key(b"p:", b"k0")) + len(encode(value, ANCHORED))
    store = RedisStore(link, max_pending_bytes=3 * size)
    try:
        for i in range(5):  # put() never yields: nothing is sent before the loop runs
            store.put(redis_key(b"p:", b"k%d" % i), value, ANCHORED, 60)
        assert store.pending_bytes == 3 * size and store.dropped == 2
        await eventually(lambda: store.writes == 3 and store.pending_bytes == 0)
        assert await store.get(redis_key(b"p:", b"k2")) == (value, ANCHORED)
        assert await store.get(redis_key(b"p:", b"k3")) is None  # dropped, never sent
        store.put(redis_key(b"p:", b"k3"), value, ANCHORED, 60)
        await eventually(lambda: store.writes == 4)
        assert await store.get(redis_key(b"p:", b"k3")) == (value, ANCHORED)
        assert f"({store.pending_bytes} B)" in repr(store)
    finally:
        await store.aclose()
        await link.aclose()


async def test_one_write_over_the_byte_bound_is_dropped_alone(redis: RedisServer) -> None:
    """An answer larger than the whole bound is never queued; smaller ones still are."""
    link = RedisLink(redis.url, op_timeout=1.0)
    store = RedisStore(link, max_pending_bytes=4096)
    try:
        store.put(b"big", b"1" * 4096, Stamp(Kind.FINAL), 60)
        store.put(b"small", b"2", Stamp(Kind.FINAL), 60)
        assert store.dropped == 1
        await eventually(lambda: store.writes == 1)
        assert await store.get(b"big") is None
        assert await store.get(b"small") == (b"2", Stamp(Kind.FINAL))
    finally:
        await store.aclose()
        await link.aclose()


async def test_bytes_being_sent_count_until_the_send_is_over(redis: RedisServer) -> None:
    """A batch's bytes stay counted while Redis has not answered it (here: Redis paused),
    so a stalled Redis cannot make the node hold more than the bound."""
    link = RedisLink(redis.url, op_timeout=30.0)
    store = RedisStore(link, max_pending_bytes=100)
    try:
        assert await store.get(b"a") is None  # the link is connected
        redis.command("CLIENT", "PAUSE", "30000", "WRITE")  # ended below, not waited for
        store.put(b"a", b"1" * 40, Stamp(Kind.FINAL), 60)  # 1 + 43 + 40 bytes
        await eventually(lambda: "pending=0 " in repr(store))  # taken: now being sent
        assert store.pending_bytes == 84 and store.writes == 0
        store.put(b"b", b"1" * 40, Stamp(Kind.FINAL), 60)
        assert store.dropped == 1
        redis.command("CLIENT", "UNPAUSE")
        await eventually(lambda: store.writes == 1 and store.pending_bytes == 0)
    finally:
        redis.command("CLIENT", "UNPAUSE")
        await store.aclose()
        await link.aclose()
