"""The shared answer store: Redis, through the node's :class:`~lasso.net.redis_link.RedisLink`.

With ``LASSO_REDIS_URL`` every node and worker pointing at one Redis shares the answers
whose truth does not depend on what one node has seen of the head: static and final
ones, and answers anchored to a block hash (each reader checks the anchor against its own
block window, so an entry another node wrote on a chain this node has seen replaced is
never served here). Head answers stay in each node's memory.

A value is ``b"L1"``, the stamp's kind (1 byte), its number (8 bytes, big-endian), its
block hash (32 bytes, zeros when none) and then the raw ``result`` bytes: a hit splices
them into the client's answer without re-encoding.

Reads wait for Redis (bounded by the link's short timeout); writes never do: they queue
(bounded by count and by bytes, those being sent included; beyond, dropped and counted)
and one task sends them in pipelined batches.
Every fault ends in :class:`~lasso.net.redis_link.RedisUnavailable` from the link, which
the caller counts and serves without Redis; the link's breaker stops trying while Redis
is down and finds it again by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import deque
from typing import Any

from lasso.kernel.cache_policy import Kind, Stamp
from lasso.net.redis_link import RedisLink, RedisUnavailable

__all__ = [
    "RedisStore",
    "decode",
    "encode",
    "redis_key",
    "MAX_PENDING_WRITES",
    "MAX_PENDING_BYTES",
    "BATCH",
]

log = logging.getLogger("lasso.cache")

MAGIC = b"L1"
_HEADER = 2 + 1 + 8 + 32
MAX_PENDING_WRITES = 2048
"""Writes queued for Redis; beyond, a write is dropped (and counted)."""
MAX_PENDING_BYTES = 64 * 1024 * 1024
"""Bytes of the writes queued or being sent, by default (``max_redis_pending_bytes`` of
:class:`~lasso.net.limits.Limits`); beyond, a write is dropped (and counted)."""
BATCH = 128
"""Writes sent in one pipeline."""
_ZERO_HASH = bytes(32)


def redis_key(prefix: bytes, key: bytes) -> bytes:
    """The Redis key of a cache key: the chain's prefix and a 128-bit digest."""
    return prefix + hashlib.blake2b(key, digest_size=16).hexdigest().encode()


def encode(result: bytes, stamp: Stamp) -> bytes:
    """A stored value (see the module docstring). HEAD stamps are never encoded."""
    if stamp.kind is Kind.HEAD or stamp.kind is Kind.ANSWER:
        raise ValueError(f"{stamp.kind.name} answers are not shared")
    block_hash = bytes.fromhex(stamp.block_hash[2:]) if stamp.block_hash else _ZERO_HASH
    if len(block_hash) != 32:
        raise ValueError("block hash must be 32 bytes")
    number = max(0, stamp.number)
    return MAGIC + bytes((int(stamp.kind),)) + number.to_bytes(8, "big") + block_hash + result


def decode(value: bytes) -> tuple[bytes, Stamp] | None:
    """The result and stamp of a stored value; ``None`` for anything else."""
    if len(value) < _HEADER or value[:2] != MAGIC:
        return None
    try:
        kind = Kind(value[2])
    except ValueError:
        return None
    if kind is Kind.HEAD or kind is Kind.ANSWER:
        return None
    number = int.from_bytes(value[3:11], "big")
    raw_hash = value[11:43]
    block_hash = "0x" + raw_hash.hex() if kind is Kind.ANCHORED else None
    return value[_HEADER:], Stamp(kind, number=number, block_hash=block_hash)


class RedisStore:
    """Reads and queued writes of shared answers.

    Args:
        link: the node's Redis link.
        max_pending_bytes: bytes of the writes queued or being sent (keys and values);
            a write that would go beyond is dropped.

    Attributes:
        errors: reads and write batches Redis did not serve. ``dropped``: writes dropped
        because the queue was full (:data:`MAX_PENDING_WRITES` writes or
        ``max_pending_bytes``) or Redis was down. ``pending_bytes``: the bytes held now.
        ``reads``/``hits``/``writes``.
    """

    def __init__(self, link: RedisLink, *, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.link = link
        self.max_pending_bytes = max_pending_bytes
        self.pending_bytes = 0
        self.reads = 0
        self.hits = 0
        self.writes = 0
        self.errors = 0
        self.dropped = 0
        self._pending: deque[tuple[bytes, bytes, int]] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def get(self, rkey: bytes) -> tuple[bytes, Stamp] | None:
        """The entry under ``rkey`` (a :func:`redis_key`), or ``None``.

        Raises:
            RedisUnavailable: Redis did not answer in time, or is down.
        """
        self.reads += 1
        try:
            value = await self.link.call(lambda c: c.get(rkey))
        except RedisUnavailable:
            self.errors += 1
            raise
        if value is None:
            return None
        entry = decode(value)
        if entry is not None:
            self.hits += 1
        return entry

    def put(self, rkey: bytes, result: bytes, stamp: Stamp, ttl_s: int) -> None:
        """Queue a write (returns at once). Dropped when the queue is full (by count, or
        by bytes: those queued and those being sent) or Redis is known to be down."""
        size = len(rkey) + _HEADER + len(result)
        if (
            len(self._pending) >= MAX_PENDING_WRITES
            or self.pending_bytes + size > self.max_pending_bytes
            or not self.link.available()
        ):
            self.dropped += 1
            return
        self._pending.append((rkey, encode(result, stamp), max(1, ttl_s)))
        self.pending_bytes += size
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._writer())
        self._wake.set()

    async def _writer(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [pending.popleft() for _ in range(min(BATCH, len(pending)))]
            size = sum(len(rkey) + len(value) for rkey, value, _ in batch)

            async def send(client: Any, batch: list[tuple[bytes, bytes, int]] = batch) -> Any:
                pipe = client.pipeline(transaction=False)
                for rkey, value, ttl in batch:
                    pipe.set(rkey, value, ex=ttl)
                return await pipe.execute()

            try:
                await self.link.call(send)
                self.writes += len(batch)
            except RedisUnavailable:
                self.errors += 1
                self.dropped += len(batch)
            finally:  # the batch's bytes are held until its send is over
                self.pending_bytes -= size
            del batch, send  # not held while the writer waits for more

    async def aclose(self) -> None:
        """Stop the writer (queued writes are dropped)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self._pending.clear()
        self.pending_bytes = 0

    def __repr__(self) -> str:
        return (
            f"<RedisStore reads={self.reads} hits={self.hits} writes={self.writes}"
            f" pending={len(self._pending)} ({self.pending_bytes} B) errors={self.errors}"
            f" dropped={self.dropped}>"
        )
