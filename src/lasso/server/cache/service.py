"""The response cache and request coalescing around the execution of one JSON-RPC item.

:meth:`ResponseCache.execute` wraps the pipeline's ``execute`` (the *inner* executor,
injected): HTTP single calls and batch items and WebSocket unary calls and batch items
all come through it. For one item:

1. :func:`~lasso.kernel.cache_policy.classify` says what the answer depends on. Never
   cacheable (writes, filters, subscriptions, ``pending``, unknown methods): straight to
   the inner executor, through the coalescer when the method is a read
   (:func:`~lasso.kernel.methods.is_replay_safe`) and the chain coalesces.
2. A cacheable item looks in the chain's memory store and serves a stored answer that
   :func:`~lasso.kernel.cache_policy.valid` still holds true: ``hit``, no upstream call.
   ``Cache-Control: no-cache`` skips this read and coalescing (``bypass``: the item
   makes its own upstream call, and its answer is stored); a provider-pinned route
   skips the read and never stores.
3. Otherwise the item is coalesced with identical ones in flight; the one call looks in
   Redis (when configured, not for head answers), then takes a
   :func:`~lasso.kernel.cache_policy.ticket`, calls upstream, and stores the answer if
   :func:`~lasso.kernel.cache_policy.admit` allows.

The result is ``(outcome, cache)`` where ``cache`` is ``"hit"``, ``"miss"``,
``"bypass"`` or ``None`` (not cacheable): it becomes ``X-Lasso-Cache`` and the ``cache``
field of ``include_meta``. A hit's outcome carries the stored ``result`` bytes in an
envelope with a placeholder id; the caller splices the client's id in exactly as it does
for upstream bytes (:func:`lasso.server.rpc.finish_item`).

Keys are the method and the canonical params (:func:`~lasso.kernel.cache_policy.normalize`,
sorted object keys); coalescing keys add the pinned provider.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from time import monotonic
from typing import Any, Protocol

import orjson

from lasso.kernel.cache_policy import (
    Depends,
    Kind,
    Request,
    Stamp,
    Verify,
    admit,
    classify,
    normalize,
    ticket,
    valid,
)
from lasso.kernel.methods import is_replay_safe
from lasso.net.redis_link import RedisUnavailable
from lasso.server.cache.chain import ChainCache
from lasso.server.cache.redis_store import RedisStore, redis_key
from lasso.server.pipeline import Outcome
from lasso.server.rpc_envelope import LARGE_RESULT
from lasso.server.runtime import ChainRuntime

__all__ = ["ResponseCache", "Inner", "cache_key", "result_bytes", "HIT_TID"]

log = logging.getLogger("lasso.cache")

HIT_TID = b'"lasso-cache"'
"""The placeholder id of a hit's envelope (replaced by the client's id)."""
FINAL_TTL_S = 24 * 3600
"""How long a final or static answer lives in Redis (Redis evicts earlier under its
``maxmemory`` policy)."""
MIN_ANCHORED_TTL_S = 60
MAX_ANCHORED_TTL_S = 3600


class Inner(Protocol):
    """The executor the cache wraps (:func:`lasso.server.pipeline.execute`)."""

    def __call__(
        self,
        rt: ChainRuntime,
        method: str,
        params: Any,
        strategy: str,
        provider_id: str | None,
    ) -> Awaitable[Outcome]: ...


def cache_key(method: str, params: Any) -> bytes:
    """The cache key of ``method(params)``: equal for requests that must get equal answers."""
    if not params:
        return method.encode() + b"\x00[]"
    return method.encode() + b"\x00" + orjson.dumps(normalize(params), option=orjson.OPT_SORT_KEYS)


def result_bytes(body: bytes, doc: dict[str, Any], tid: bytes = b"") -> bytes:
    """The raw ``result`` of an upstream answer ``body`` (parsed as ``doc``; ``tid``: the
    id Lasso sent it with).

    Sliced from the body when ``result`` is its last member (what nodes send), so the
    bytes are the provider's; re-encoded otherwise.
    """
    if len(doc) == 3:
        head = b'{"jsonrpc":"2.0","id":' + tid + b',"result":'
        if tid and body.startswith(head) and body.endswith(b"}"):
            return body[len(head) : -1]  # the usual layout, compact
        at = body.find(b'"result"')
        head = body[:at]
        if at > 0 and b'"jsonrpc"' in head and b'"id"' in head:
            raw = body[at + 8 :].strip()
            if raw[:1] == b":" and raw[-1:] == b"}":
                return raw[1:-1].strip()
    return orjson.dumps(doc["result"])


def _serves_head(rt: ChainRuntime, req: Request, stamp: Stamp) -> bool:
    """May a stored head answer go out without breaking the served head (CONTRACT §8)?

    An answer that *is* the head (``eth_blockNumber``, the ``latest`` block) was stored
    with its value as the stamp's head: it may be served unless the chain has served a
    higher head since (then it is a miss, and the pipeline answers), and serving it counts
    as serving that head, so no later answer falls below it. Other head answers (state at
    ``latest``, fees) name no block and are served as they are.
    """
    if req.head_value or (req.tag == "latest" and req.verify is Verify.BLOCK):
        return rt.router.head.accept_tag_block("latest", stamp.number)
    return True


def _hit(result: bytes) -> Outcome:
    out = Outcome([])
    out.body = b'{"jsonrpc":"2.0","id":"lasso-cache","result":' + result + b"}"
    out.tid = HIT_TID
    return out


class ResponseCache:
    """The node's response cache and coalescer (one per node).

    Args:
        inner: the executor to wrap.
        redis: the shared store, or ``None`` for memory only.
        clock: monotonic seconds.
        wall: wall-clock seconds (compared with block timestamps).
    """

    def __init__(
        self,
        inner: Inner,
        *,
        redis: RedisStore | None = None,
        clock: Callable[[], float] = monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.inner = inner
        self.redis = redis
        self.clock = clock
        self.wall = wall
        self.chains: dict[tuple[str, int], ChainCache] = {}

    def __repr__(self) -> str:
        return f"<ResponseCache chains={len(self.chains)} redis={self.redis!r}>"

    # -- per chain ------------------------------------------------------------------------
    def chain(self, rt: ChainRuntime) -> ChainCache:
        """The cache state of ``rt``'s chain (made on first use, kept across reloads)."""
        config = rt.config
        cc = self.chains.get((rt.profile, config.chain_id))
        if cc is None:
            cc = self.chains[(rt.profile, config.chain_id)] = ChainCache(rt.profile, config)
        elif cc.config is not config:
            cc.reconfigure(config)
        return cc

    def retain(self, live: Iterable[tuple[str, int]]) -> None:
        """Forget chains no longer served (after a reload)."""
        keep = set(live)
        for key in [k for k in self.chains if k not in keep]:
            del self.chains[key]

    # -- the wrapper ----------------------------------------------------------------------
    async def execute(
        self,
        rt: ChainRuntime,
        method: str,
        params: Any,
        strategy: str,
        provider_id: str | None,
        *,
        no_cache: bool = False,
    ) -> tuple[Outcome, str | None]:
        """Serve one JSON-RPC item (see the module docstring). Never raises for upstream
        faults, like the inner executor."""
        served = self.serve(rt, method, params, strategy, provider_id, no_cache=no_cache)
        if isinstance(served, tuple):
            return served
        return await served

    def serve(
        self,
        rt: ChainRuntime,
        method: str,
        params: Any,
        strategy: str,
        provider_id: str | None,
        *,
        no_cache: bool = False,
    ) -> tuple[Outcome, str | None] | Awaitable[tuple[Outcome, str | None]]:
        """:meth:`execute`, answering a hit synchronously: the result is ``(outcome,
        cache)`` at once, or an awaitable of it (callers that can answer without a task,
        such as the HTTP handler, use this)."""
        config = rt.config
        cc = self.chain(rt)
        req = classify(method, params)
        if req.depends is Depends.NEVER or not config.cache.enabled:  # never cacheable
            if no_cache or not config.coalesce or not is_replay_safe(method):
                return self._alone(rt, method, params, strategy, provider_id)
            return self._coalesced(rt, cc, method, params, strategy, provider_id)
        now = self.clock()
        cc.last_used = now  # the head watch keeps the chain's window while it is used
        key = cache_key(method, params)
        if provider_id is not None:  # a pinned provider: its own answer, never stored
            status = "bypass"
        elif no_cache:  # its own upstream call: no stored answer, no shared call
            cc.count(method, "bypass")
            return self._fill(rt, cc, req, key, method, params, strategy, None, "bypass")
        else:
            entry = cc.store.get(key)
            if entry is not None:
                head = cc.head(rt.router.state.max_height)
                stamp = entry[1]
                if valid(stamp, head=head, window=cc.window, now=now) and (
                    stamp.kind is not Kind.HEAD or _serves_head(rt, req, stamp)
                ):
                    cc.count(method, "hit")
                    return _hit(entry[0]), "hit"
            status = "miss"
        return self._shared(rt, cc, req, key, method, params, strategy, provider_id, status)

    def _coalesced(
        self,
        rt: ChainRuntime,
        cc: ChainCache,
        method: str,
        params: Any,
        strategy: str,
        provider_id: str | None,
    ) -> Awaitable[tuple[Outcome, str | None]]:
        """A never-cacheable shareable read (or any read when the chain's cache is off):
        coalesced. A plain function: the coalescer's coroutine is the only one this adds."""
        ckey = cache_key(method, params)
        if provider_id is not None:
            ckey += b"\x01" + provider_id.encode()

        def counted(out: Outcome, shared: bool) -> tuple[Outcome, str | None]:
            cc.count(method, "uncached")  # /api/cache's requests count every coalesced one
            if shared:
                cc.count_coalesced(method)
            return out, None

        return cc.coalescer.run_then(
            ckey, lambda: self.inner(rt, method, params, strategy, provider_id), counted
        )

    async def _alone(
        self, rt: ChainRuntime, method: str, params: Any, strategy: str, provider_id: str | None
    ) -> tuple[Outcome, str | None]:
        """Its own upstream call, neither cached nor coalesced."""
        return await self.inner(rt, method, params, strategy, provider_id), None

    def _shared(
        self,
        rt: ChainRuntime,
        cc: ChainCache,
        req: Request,
        key: bytes,
        method: str,
        params: Any,
        strategy: str,
        provider_id: str | None,
        status: str,
    ) -> Awaitable[tuple[Outcome, str | None]]:
        """A miss (or a pinned bypass): one call per group of identical items in flight.
        A plain function: the coalescer's coroutine is the only one this adds."""

        def fill() -> Awaitable[tuple[Outcome, str]]:
            return self._fill(rt, cc, req, key, method, params, strategy, provider_id, status)

        def counted(answer: tuple[Outcome, str], shared: bool) -> tuple[Outcome, str | None]:
            cc.count(method, answer[1])
            if shared:
                cc.count_coalesced(method)
            return answer

        if not rt.config.coalesce:
            return self._counted(cc, method, fill())
        ckey = key if provider_id is None else key + b"\x01" + provider_id.encode()
        return cc.coalescer.run_then(ckey, fill, counted)

    @staticmethod
    async def _counted(
        cc: ChainCache, method: str, filled: Awaitable[tuple[Outcome, str]]
    ) -> tuple[Outcome, str | None]:
        out, status = await filled
        cc.count(method, status)
        return out, status

    async def _fill(
        self,
        rt: ChainRuntime,
        cc: ChainCache,
        req: Request,
        key: bytes,
        method: str,
        params: Any,
        strategy: str,
        provider_id: str | None,
        status: str,
    ) -> tuple[Outcome, str]:
        """The one call of a coalesced group: Redis, then upstream, then store."""
        state = rt.router.state
        redis = self.redis
        rkey = b""
        if redis is not None and provider_id is None and req.depends is not Depends.HEAD:
            rkey = redis_key(cc.redis_prefix, key)
            if status == "miss":
                try:
                    shared = await redis.get(rkey)
                except RedisUnavailable:
                    shared = None
                if shared is not None:
                    now = self.clock()
                    head = cc.head(state.max_height)
                    if valid(shared[1], head=head, window=cc.window, now=now):
                        cc.store.put(key, shared[0], shared[1])
                        return _hit(shared[0]), "hit"
        stamp = None
        if provider_id is None:
            now = self.clock()
            depends = req.depends
            head = cc.head(state.max_height)
            finalized = None
            ttl = 0.0
            if depends is Depends.HEAD:
                ttl = self._head_ttl(cc, head, rt.config.block_time_ms)
                if method == "eth_getLogs" and head is not None:
                    # Its tags are resolved by the splitter from the providers' consensus
                    # and the served head: an answer that stops below the head it would be
                    # stored at is not stored.
                    if rt.router.head.resolve("latest", state.consensus(now)) != head:
                        ttl = 0.0
            elif depends is not Depends.STATIC:
                finalized = cc.finality.height(state.consensus(now), now)
            stamp = ticket(
                req, head=head, finalized=finalized, window=cc.window, now=now, ttl_s=ttl
            )
            if stamp is None and req.number is not None and depends is Depends.BLOCK:
                if finalized is not None and finalized < req.number:
                    cc.want_hash(req.number)  # the head watch walks the window down
        out = await self.inner(rt, method, params, strategy, provider_id)
        if out.body is not None and out.status == "success":
            try:
                self._store(rt, cc, req, key, rkey, stamp, out, method)
            except Exception:  # a storage bug must never fail the answer
                log.exception("caching an answer failed", extra={"event": "cache.error"})
        return out, status

    def _store(
        self,
        rt: ChainRuntime,
        cc: ChainCache,
        req: Request,
        key: bytes,
        rkey: bytes,
        stamp: Stamp | None,
        out: Outcome,
        method: str,
    ) -> None:
        body = out.body
        assert body is not None
        if stamp is None and req.verify is not Verify.BLOCK:
            return  # not storable, and no block to learn from
        if len(body) > cc.store.max_bytes // 8:
            cc.store.discard(key)  # as put() would: the older answer under the key goes
            return  # more than an entry may hold: not parsed whole just to be refused
        if type(body) is not bytes:  # a large answer, received as a bytearray
            body = bytes(body)
        doc = out.doc  # as the pipeline parsed it to judge it: not parsed twice
        if type(doc) is not dict or doc.get("result") is LARGE_RESULT:
            try:  # a large answer (judged by its envelope), or one Lasso made
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                return
        if not isinstance(doc, dict) or "result" not in doc:
            return
        result = doc["result"]
        pid = out.provider_id
        if req.verify is Verify.BLOCK and isinstance(result, dict) and pid is not None:
            self._learn_block(cc, req, result, pid)  # a canonical block by number or hash
        if stamp is None:
            return
        state = rt.router.state
        now = self.clock()
        kind = stamp.kind
        if kind is Kind.HEAD or kind is Kind.ANCHORED:
            block = stamp.number
        elif kind is Kind.FINAL:
            block = req.number if req.number is not None else stamp.number
        else:
            block = -1  # static, or decided by the answer (which names a block it has)
        has = pid is None or block < 0 or state.has_block(pid, block, now)
        kept = admit(
            req,
            stamp,
            result,
            head=cc.head(state.max_height),
            window=cc.window,
            provider_has_block=has,
        )
        if kept is None:
            return
        raw = result_bytes(body, doc, out.tid)
        cc.store.put(key, raw, kept)
        if self.redis is not None and rkey and kept.kind is not Kind.HEAD:
            self.redis.put(rkey, raw, kept, self._redis_ttl(cc, kept, state.block_time_ms))

    def _learn_block(self, cc: ChainCache, req: Request, block: dict[str, Any], pid: str) -> None:
        """A block in an answer feeds the window (it may only extend it) and, for the
        ``finalized`` tag, the provider's finality report."""
        number, block_hash, parent = block.get("number"), block.get("hash"), block.get("parentHash")
        if not (isinstance(number, str) and isinstance(block_hash, str)):
            return
        try:
            n = int(number, 16)
        except ValueError:
            return
        parent_hash = parent.lower() if isinstance(parent, str) else None
        cc.observe_block(n, block_hash.lower(), parent_hash, head=False)
        if req.tag == "finalized":
            cc.finality.report(pid, n, self.clock())

    def _head_ttl(self, cc: ChainCache, head: int | None, block_time_ms: int | None) -> float:
        """How long a head answer may be served: the chain's realtime TTL, cut at the
        moment the block after ``head`` is due when the chain declares a regular block
        time of at least a second (``block_time_ms``; timestamps have whole seconds) and
        the node knows a head block's timestamp: that timestamp plus one block time per
        block from it to ``head``, plus one. While that block is overdue, head answers
        are not cached (it may be out before the node hears of it)."""
        ttl = cc.ttl_s
        known = cc.head_time
        if known is None or head is None or known[0] > head or (block_time_ms or 0) < 1000:
            return ttl
        assert block_time_ms is not None
        due = known[1] + (head - known[0] + 1) * block_time_ms / 1000.0 - self.wall()
        return min(ttl, due)

    @staticmethod
    def _redis_ttl(cc: ChainCache, stamp: Stamp, block_time_ms: float) -> int:
        if stamp.kind is not Kind.ANCHORED:
            return FINAL_TTL_S
        span = 2 * cc.finality.depth * block_time_ms / 1000.0
        return int(min(MAX_ANCHORED_TTL_S, max(MIN_ANCHORED_TTL_S, span)))
