"""Keeping each chain's block window and finality fed (docs/caching.md, "Knowing the chain").

Blocks reach a chain's :class:`~lasso.kernel.blockwindow.BlockWindow` from

* ``newHeads`` of the upstream WebSockets (:meth:`HeadWatch.on_head`, called by the
  upstream registry for every head): a head source;
* block answers passing through the cache (they may only extend the window);
* this watch's background calls, for chains that served a cacheable request in the last
  :data:`IDLE_S` seconds, through the same executor as clients (routing, breakers and
  failover apply; answers never come from the cache):

  - ``eth_getBlockByNumber("latest", false)`` when the node knows a height the window
    has not reached, and every half block while no ``newHeads`` arrived for two blocks
    (a reorg that keeps the height is seen no later than that); at most every
    :data:`MIN_LATEST_S`;
  - ``eth_getBlockByNumber("finalized", false)`` every :func:`finalized_interval`: the
    answering provider's finality report (an error or ``null`` withdraws it: the chain's
    ``finality_depth`` applies);
  - ``eth_getBlockByHash(h, false)`` walk-back fetches the window asks for
    (:meth:`~lasso.kernel.blockwindow.BlockWindow.wanted`), one after the other: to
    reconnect blocks known before a gap or a reorg, and down to the lowest unfinalized
    block a request asked about (:attr:`~.chain.ChainCache.walk_target`). Nothing is
    fetched for blocks nobody asked about.

At most one background call per chain is in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from lasso.net.http_client import ANSWER_BOUND
from lasso.net.http_conn import LARGE_ANSWER
from lasso.server.cache.chain import ChainCache
from lasso.server.cache.service import ResponseCache
from lasso.server.runtime import ChainRuntime

__all__ = [
    "HeadWatch",
    "IDLE_S",
    "TICK_S",
    "WALK_BATCH",
    "block_of",
    "finalized_interval",
    "header_of",
]

log = logging.getLogger("lasso.cache")

TICK_S = 0.1
IDLE_S = 300.0
MIN_LATEST_S = 0.2
WALK_BATCH = 16
"""Walk-back fetches one background job makes in a row."""


def finalized_interval(block_time_ms: float) -> float:
    """Seconds between finalized-tag polls: four blocks, within 2 to 30 s."""
    return min(30.0, max(2.0, 4 * block_time_ms / 1000.0))


def block_of(body: bytes | bytearray | None) -> tuple[int, str, str | None, int | None] | None:
    """``(number, hash, parentHash, timestamp)`` of the block in an answer body, or
    ``None`` (also for an answer past ``LARGE_ANSWER``: a block with transaction hashes
    is far smaller, and a hostile provider's huge answer is not parsed whole)."""
    if body is None or len(body) > LARGE_ANSWER:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    result = doc.get("result") if isinstance(doc, dict) else None
    return header_of(result)


def header_of(block: Any) -> tuple[int, str, str | None, int | None] | None:
    """``(number, hash, parentHash, timestamp)`` of a block or header object, or ``None``."""
    if type(block) is not dict:
        return None
    number, block_hash, parent = block.get("number"), block.get("hash"), block.get("parentHash")
    stamp = block.get("timestamp")
    if not (isinstance(number, str) and isinstance(block_hash, str)):
        return None
    try:
        n = int(number, 16)
        ts = int(stamp, 16) if isinstance(stamp, str) else None
    except ValueError:
        return None
    return n, block_hash.lower(), parent.lower() if isinstance(parent, str) else None, ts


class HeadWatch:
    """Feeds the cache's chains (see the module docstring).

    Args:
        cache: the node's response cache (its chains and its inner executor).
        resolve: ``(profile, chain key) -> ChainRuntime`` of the current runtime, or
            ``None`` when the chain is no longer served.
    """

    def __init__(
        self,
        cache: ResponseCache,
        resolve: Callable[[str, str], ChainRuntime | None],
        *,
        tick_s: float = TICK_S,
        idle_s: float = IDLE_S,
    ) -> None:
        self.cache = cache
        self.resolve = resolve
        self.tick_s = tick_s
        self.idle_s = idle_s
        self.heads_seen = 0
        self._last_latest: dict[tuple[str, int], float] = {}
        self._last_final: dict[tuple[str, int], float] = {}
        self._busy: set[tuple[str, int]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<HeadWatch busy={len(self._busy)} heads_seen={self.heads_seen}>"

    # -- newHeads -----------------------------------------------------------------------
    def on_head(self, rt: ChainRuntime, provider_id: str, head: Any) -> None:
        """A ``newHeads`` notification from ``provider_id`` on ``rt``'s chain."""
        if not rt.config.cache.enabled:
            return
        header = header_of(head)
        if header is None:
            return
        self.heads_seen += 1
        cc = self.cache.chain(rt)
        cc.last_head = self.cache.clock()
        cc.observe_head(*header)

    # -- background ---------------------------------------------------------------------
    async def run(self) -> None:
        """Tick until cancelled; background calls in flight are cancelled with it."""
        clock = self.cache.clock
        try:
            while True:
                self.tick(clock())
                await asyncio.sleep(self.tick_s)
        finally:
            for task in list(self._tasks):
                task.cancel()

    def tick(self, now: float) -> None:
        """Start the background calls that are due (at most one per chain)."""
        for key, cc in list(self.cache.chains.items()):
            if key in self._busy or now - cc.last_used > self.idle_s:
                continue
            if not cc.config.cache.enabled:
                continue
            rt = self.resolve(cc.profile, cc.key)
            if rt is None:
                continue
            job = self._due(key, cc, rt, now)
            if job is not None:
                self._busy.add(key)
                task = asyncio.get_running_loop().create_task(self._run_job(key, job))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _due(self, key: tuple[str, int], cc: ChainCache, rt: ChainRuntime, now: float) -> Any:
        state = rt.router.state
        block_s = state.block_time_ms / 1000.0
        head = state.max_height
        top = cc.window.top
        behind = head is not None and (top is None or top < head)
        unfed = now - cc.last_head > max(2 * block_s, 1.0)
        if behind or unfed:
            if now - self._last_latest.get(key, float("-inf")) >= max(MIN_LATEST_S, block_s / 2):
                self._last_latest[key] = now
                return self._poll_latest(cc, rt)
        if now - self._last_final.get(key, float("-inf")) >= finalized_interval(
            state.block_time_ms
        ):
            self._last_final[key] = now
            return self._poll_finalized(cc, rt)
        want = self._wanted(cc, rt, now)
        if want is not None:
            cc.window.fetched()
            return self._walk(cc, rt, want)
        return None

    def _wanted(self, cc: ChainCache, rt: ChainRuntime, now: float) -> str | None:
        """The next walk-back fetch: to reconnect a detached segment, or down to the
        lowest unfinalized block a request asked about (never to finalized blocks)."""
        state = rt.router.state
        floor = cc.finality.height(state.consensus(now), now)
        target = cc.walk_target
        bottom = cc.window.bottom
        if target is not None and (
            bottom is None or bottom <= target or (floor is not None and target <= floor)
        ):
            cc.walk_target = target = None  # reached, or final by now
        return cc.window.wanted(floor, target)

    async def _run_job(self, key: tuple[str, int], job: Any) -> None:
        try:
            await job
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug here must not stop the watch
            log.exception("cache head watch failed", extra={"event": "cache.watch_error"})
        finally:
            self._busy.discard(key)

    async def _call(self, cc: ChainCache, rt: ChainRuntime, kind: str, params: list[Any]) -> Any:
        cc.polls[kind] = cc.polls.get(kind, 0) + 1
        method = "eth_getBlockByHash" if kind == "walk" else "eth_getBlockByNumber"
        strategy = rt.config.default_strategy
        bound = ANSWER_BOUND.set(LARGE_ANSWER)  # a header: a huge answer is cut, not read
        try:
            return await self.cache.inner(rt, method, params, strategy, None)
        finally:
            ANSWER_BOUND.reset(bound)

    async def _poll_latest(self, cc: ChainCache, rt: ChainRuntime) -> None:
        out = await self._call(cc, rt, "latest", ["latest", False])
        block = block_of(out.body)
        if block is not None:
            if out.provider_id is not None:  # a height sample, as eth_blockNumber gives
                rt.router.observe_height(out.provider_id, block[0], self.cache.clock())
            cc.observe_head(*block)

    async def _poll_finalized(self, cc: ChainCache, rt: ChainRuntime) -> None:
        out = await self._call(cc, rt, "finalized", ["finalized", False])
        pid = out.provider_id
        if pid is None:
            return
        block = block_of(out.body)
        if block is None:
            cc.finality.forget(pid)  # no finalized tag there: depth applies
        else:
            cc.finality.report(pid, block[0], self.cache.clock())

    async def _walk(self, cc: ChainCache, rt: ChainRuntime, want: str | None) -> None:
        """Walk-back fetches, one after the other, up to :data:`WALK_BATCH` per job."""
        for _ in range(WALK_BATCH):
            if want is None:
                return
            out = await self._call(cc, rt, "walk", [want, False])
            block = block_of(out.body)
            if block is None or block[1] != want:
                cc.window.fetch_failed()
                return
            cc.observe_block(block[0], block[1], block[2], False)
            want = self._wanted(cc, rt, self.cache.clock())
            if want is not None:
                cc.window.fetched()
