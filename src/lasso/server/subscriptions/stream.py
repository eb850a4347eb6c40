"""One shared upstream subscription: :class:`Stream`, the adapter around the kernel.

A stream is a thin adapter around the pure
:class:`~lasso.kernel.subscriptions.SubscriptionStream`: upstream callbacks, timers and
backfill answers become facts (:meth:`Stream.feed`); its decisions become frames to
clients and IO (:meth:`Stream.apply`):

* ``Emit`` — :func:`~lasso.server.subscriptions.fanout.fan_out` to the stream's clients.
* ``Dropped`` — the manager hands the reorg to the chain's logs streams.
* ``Resubscribe`` — :func:`~lasso.server.subscriptions.upstream.subscribe_loop`.
* ``Backfill`` — :func:`~lasso.server.subscriptions.backfill.backfill`.
* ``Degraded`` — :func:`~lasso.server.subscriptions.failover.degraded` (retry later).
* ``Warn`` — a log line.

The state the other modules of the package read and write (the live upstream, the old
ones still overlapping, timers, counters) lives here, one place for all of it.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import TYPE_CHECKING, Any

from lasso.kernel.subscriptions import (
    Backfill,
    Close,
    Decision,
    Degraded,
    Dropped,
    Emit,
    Fact,
    Resubscribe,
    SubscriptionKey,
    SubscriptionStream,
    Warn,
)
from lasso.server.subscriptions.backfill import backfill
from lasso.server.subscriptions.failover import degraded
from lasso.server.subscriptions.fanout import fan_out
from lasso.server.subscriptions.upstream import subscribe_loop

if TYPE_CHECKING:
    from lasso.server.runtime import ChainRuntime
    from lasso.server.subscriptions.fanout import SubscriptionClient
    from lasso.server.subscriptions.manager import SubscriptionManager
    from lasso.server.subscriptions.upstream import Upstream

__all__ = ["Stream", "StreamKey"]

log = logging.getLogger("lasso.subscriptions")

StreamKey = tuple[str, str, str | None, SubscriptionKey]
"""(profile, chain, provider override, key): what clients share one stream by."""


class Stream:
    """One shared upstream subscription of (profile, chain, override, key)."""

    def __init__(
        self, mgr: SubscriptionManager, skey: StreamKey, rt: ChainRuntime, key: SubscriptionKey
    ) -> None:
        self.mgr = mgr
        self.skey = skey
        self.profile, self.chain, self.override = skey[0], skey[1], skey[2]
        self.key = key
        self.kind = key.kind
        self.params = key.params()
        self._rt_cache = rt
        self.machine = SubscriptionStream(
            key.kind, max_backfill_blocks=max(1, rt.config.max_backfill_blocks)
        )
        self.clients: dict[str, SubscriptionClient] = {}
        self.prefixes: dict[str, bytes] = {}
        self.internal = 0  # logs streams holding this newHeads stream
        self.waiters = 0  # first subscribers waiting for the upstream
        self.heads: Stream | None = None  # a logs stream's newHeads stream
        self.upstream: Upstream | None = None
        self.olds: list[Upstream] = []
        self.want: frozenset[str] | None = None
        self.sub_task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.retry_handle: asyncio.TimerHandle | None = None
        self.grace_handle: asyncio.TimerHandle | None = None
        self.watch_handle: asyncio.TimerHandle | None = None
        self.retries = 0
        self.ready = asyncio.Event()
        self.closed = False
        self.last_head_at = monotonic()
        self.last_head_number: int | None = None
        self.failovers = 0
        self.slow_drops = 0
        self.malformed = 0

    def __repr__(self) -> str:
        up = self.upstream.provider if self.upstream is not None else None
        return (
            f"<Stream {self.profile}/{self.chain} {self.key.canonical} upstream={up} "
            f"clients={len(self.clients)} internal={self.internal} {self.machine!r}>"
        )

    @property
    def refs(self) -> int:
        return len(self.clients) + self.internal + self.waiters

    def rt(self) -> ChainRuntime:
        """The chain runtime of the current profile generation (reloads swap it)."""
        prof = self.mgr.runtime().profiles.get(self.profile)
        rt = prof.chains.get(self.chain) if prof is not None else None
        if rt is not None:
            self._rt_cache = rt
        return self._rt_cache

    # -- facts and decisions ------------------------------------------------------------
    def feed(self, fact: Fact) -> None:
        if not self.closed:
            self.apply(self.machine.handle(fact))

    def apply(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Emit):
                fan_out(self, d)
            elif isinstance(d, Dropped):
                self.mgr._blocks_dropped(self, d.blocks)
            elif isinstance(d, Resubscribe):
                self.want = d.exclude
                if self.sub_task is None or self.sub_task.done():
                    self.sub_task = self.spawn(subscribe_loop(self))
            elif isinstance(d, Backfill):
                self.spawn(backfill(self, d))
            elif isinstance(d, Degraded):
                degraded(self, d.reason)
            elif isinstance(d, Warn):
                log.warning(
                    d.message,
                    extra={
                        "event": "subscription.warning",
                        "chain": self.chain,
                        "kind": self.kind,
                    },
                )

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def release(self, up: Upstream) -> None:
        """Stop listening to ``up`` and unsubscribe it upstream (in the background)."""
        up.live = False
        if up.sub_id is not None:
            self.mgr._spawn(up.ws.unsubscribe(up.sub_id))

    # -- teardown ------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.feed(Close())
        self.closed = True
        for handle in (self.retry_handle, self.grace_handle, self.watch_handle):
            if handle is not None:
                handle.cancel()
        for task in list(self.tasks):
            task.cancel()
        for up in [self.upstream, *self.olds]:
            if up is not None:
                self.release(up)
        self.upstream = None
        self.olds.clear()
        self.ready.set()
