"""One chain's cache state: its answers, its view of the chain, its counters.

A :class:`ChainCache` exists per (profile, chain id) that has seen a request, and lives
across reloads (a reload that changes the chain's ``cache`` section reconfigures it).
It holds the memory store, the coalescer, the block window and finality that decide
what is still true, the Redis key prefix, and the counters behind the metrics and the
dashboard.
"""

from __future__ import annotations

from typing import Any

from lasso.config import ChainConfig
from lasso.kernel.blockwindow import BlockWindow, Finality
from lasso.kernel.methods import KNOWN_METHODS
from lasso.server.cache.coalesce import Coalescer
from lasso.server.cache.memory import MemoryStore

__all__ = ["ChainCache", "RESULTS"]

RESULTS = ("hit", "miss", "bypass")
"""The ``result`` label of ``lasso_cache_requests_total``."""


class ChainCache:
    """The cache of one chain of one profile.

    Args:
        profile: the profile slug.
        config: the chain's configuration (``cache``, ``coalesce``, ``block_time_ms``).

    Attributes:
        requests: ``(method, result) -> count`` of cacheable requests.
        coalesced: ``method -> count`` of requests answered by another's upstream call.
        reorgs: reorgs the block window saw. ``polls``: ``kind -> count`` of head polls.
        last_used: monotonic time of the last request (the head watch idles after).
        last_head: monotonic time of the last ``newHeads`` notification.
        walk_target: the lowest block a request needed a hash for and the window did not
            hold: the head watch walks the window down to it.
        head_time: ``(number, timestamp)`` of the newest head a head source announced
            (the timestamp says when the next block is due).
    """

    __slots__ = (
        "profile",
        "chain_id",
        "key",
        "config",
        "store",
        "window",
        "finality",
        "coalescer",
        "redis_prefix",
        "requests",
        "coalesced",
        "reorgs",
        "dropped_on_reorg",
        "polls",
        "last_used",
        "last_head",
        "walk_target",
        "head_time",
        "ttl_s",
    )

    def __init__(self, profile: str, config: ChainConfig) -> None:
        self.profile = profile
        self.chain_id = config.chain_id
        self.store = MemoryStore(config.cache.max_bytes)
        self.window = BlockWindow()
        self.finality = Finality(config.cache.finality_depth)
        self.coalescer: Coalescer[Any] = Coalescer()
        self.redis_prefix = f"lasso:c1:{profile}:{config.chain_id}:".encode()
        self.requests: dict[tuple[str, str], int] = {}
        self.coalesced: dict[str, int] = {}
        self.reorgs = 0
        self.dropped_on_reorg = 0
        self.polls: dict[str, int] = {}
        self.last_used = float("-inf")
        self.last_head = float("-inf")  # the last newHeads notification
        self.walk_target: int | None = None  # the lowest unfinalized block asked about
        self.head_time: tuple[int, int] | None = None  # (number, timestamp) of the head
        self.key = config.key
        self.config = config
        self.ttl_s = config.cache.realtime_ttl_s(config.block_time_ms)

    def reconfigure(self, config: ChainConfig) -> None:
        """Take a reloaded configuration of the same chain (the answers stay)."""
        if config.cache.max_bytes != self.store.max_bytes:
            self.store.resize(config.cache.max_bytes)
        if config.cache.finality_depth != self.finality.depth:
            self.finality.depth = config.cache.finality_depth
        if not config.cache.enabled:
            self.store.clear()
        self.key = config.key
        self.config = config
        self.ttl_s = config.cache.realtime_ttl_s(config.block_time_ms)

    def count(self, method: str, result: str) -> None:
        """One request and how the cache answered it (hot path): ``hit``, ``miss``,
        ``bypass``, or ``uncached`` (a never-cacheable read that went through coalescing)."""
        key = (method if method in KNOWN_METHODS else "other", result)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1

    def count_coalesced(self, method: str) -> None:
        m = method if method in KNOWN_METHODS else "other"
        self.coalesced[m] = self.coalesced.get(m, 0) + 1

    def head(self, known: int | None) -> int | None:
        """The newest head this node knows: the routers' highest height (``known``) or a
        newer head a head source announced."""
        announced = self.head_time
        if announced is not None and (known is None or announced[0] > known):
            return announced[0]
        return known

    def want_hash(self, number: int) -> None:
        """A request about unfinalized block ``number`` found no hash for it."""
        bottom = self.window.bottom
        if bottom is not None and number < bottom:
            target = self.walk_target
            self.walk_target = number if target is None else min(target, number)

    def observe_head(
        self, number: int, block_hash: str, parent: str | None, timestamp: int | None
    ) -> None:
        """A block from a head source (``newHeads``, a poll of the latest block)."""
        self.observe_block(number, block_hash, parent, True)
        current = self.head_time
        if timestamp is not None and (current is None or number >= current[0]):
            self.head_time = (number, timestamp)

    def observe_block(self, number: int, block_hash: str, parent: str | None, head: bool) -> None:
        """Feed the window one block; a reorg drops the entries anchored at or above it."""
        evidence = self.window.observe(number, block_hash, parent, head=head)
        if evidence is not None:
            self.reorgs += 1
            self.dropped_on_reorg += self.store.drop_anchored_from(evidence)

    def __repr__(self) -> str:
        return (
            f"<ChainCache {self.profile}/{self.key} {self.store!r} {self.window!r}"
            f" in_flight={len(self.coalescer)}>"
        )
