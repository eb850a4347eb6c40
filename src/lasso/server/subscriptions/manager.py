"""The node's client subscriptions: :class:`SubscriptionManager`.

Clients asking for the same thing on the same chain (profile, chain, provider override
and normalized params, see :func:`lasso.kernel.subscriptions.parse_subscription`) share
one :class:`~lasso.server.subscriptions.stream.Stream`: one upstream subscription for N
clients. The last client leaving starts a grace period (:attr:`SubscriptionManager.grace_s`)
before the upstream is unsubscribed.

Every logs stream also holds a reference on its chain's newHeads stream: reorgs found
there (``Dropped``) reach the logs streams, and heads seen per provider mark how far each
provider's logs have been delivered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Callable, Iterable
from functools import partial
from time import monotonic
from typing import TYPE_CHECKING, Any

from lasso.kernel.breaker import BreakerState
from lasso.kernel.subscriptions import (
    BlocksDropped,
    HeadSeen,
    Start,
    StreamState,
    SubscriptionKey,
    SubscriptionParamsError,
    parse_subscription,
)
from lasso.server.subscriptions.failover import lose, schedule_retry
from lasso.server.subscriptions.fanout import frame_prefix
from lasso.server.subscriptions.metrics import collect, counters
from lasso.server.subscriptions.stream import Stream, StreamKey
from lasso.server.ws_upstreams import follows_new_heads

if TYPE_CHECKING:
    from lasso.net.ws_upstream import UpstreamWs
    from lasso.server.events import EventBus
    from lasso.server.metrics import Metrics
    from lasso.server.runtime import ChainRuntime, Runtime
    from lasso.server.subscriptions.fanout import SubscriptionClient

__all__ = ["SubscriptionError", "SubscriptionManager"]

log = logging.getLogger("lasso.subscriptions")


class SubscriptionError(Exception):
    """An ``eth_subscribe`` the node refuses; answer it with ``code`` and ``message``.

    ``-32602``: bad params, an unsupported kind, or a provider override that cannot serve
    it; ``-32000``: no provider can serve it now.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class SubscriptionManager:
    """Client subscriptions of one node, shared per (profile, chain, override, key).

    Args:
        runtime: the runtime serving now (reloads swap it; streams re-read their chain).
        metrics: the node's metrics: subscription counts, and the stream families.
        events: the node's event bus (circuit openings move streams off a provider).

    Attributes (tune them before clients arrive; tests shorten them):
        grace_s: seconds an upstream subscription outlives its last client (30).
        establish_timeout_s: how long a first ``eth_subscribe`` waits for an upstream (5).
        subscribe_timeout_s: bound on one upstream ``eth_subscribe`` call (10).
        overlap_s: how long a stale or circuit-open upstream keeps delivering after a
            failover, deduplicated (5).
        stale_timeout_s: newHeads staleness; ``None`` uses the chain's
            ``websocket.new_heads_timeout_ms``.
        circuit_check_s: how often a stream checks its provider's circuits (1).
        retry_base_s, retry_cap_s: the degraded backoff, ``base × 2^n`` up to ``cap``.
    """

    def __init__(
        self, *, runtime: Callable[[], Runtime], metrics: Metrics, events: EventBus
    ) -> None:
        self.runtime = runtime
        self.metrics = metrics
        self.grace_s = 30.0
        self.establish_timeout_s = 5.0
        self.subscribe_timeout_s = 10.0
        self.overlap_s = 5.0
        self.stale_timeout_s: float | None = None
        self.circuit_check_s = 1.0
        self.retry_base_s = 0.1
        self.retry_cap_s = 5.0
        self._streams: dict[StreamKey, Stream] = {}
        self._subs: dict[str, tuple[SubscriptionClient, Stream]] = {}
        self._by_client: dict[int, set[str]] = {}
        self._retired: dict[tuple[str, str, str], int] = {}
        self._watched: weakref.WeakSet[UpstreamWs] = weakref.WeakSet()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        metrics.register(partial(collect, self))
        events.subscribe(self._on_bus_event)

    def __repr__(self) -> str:
        return (
            f"<SubscriptionManager streams={len(self._streams)} "
            f"client_subscriptions={len(self._subs)} clients={len(self._by_client)}>"
        )

    @property
    def streams(self) -> list[Stream]:
        return list(self._streams.values())

    # -- the endpoint's side -------------------------------------------------------------
    async def subscribe(self, client: SubscriptionClient, params: list[Any]) -> str:
        """Subscribe ``client`` (``eth_subscribe`` with ``params``).

        Returns:
            The client subscription id: 16 lowercase hex characters, the same for the life
            of the subscription whatever happens upstream.

        Raises:
            SubscriptionError: ``-32602`` for bad params, an unsupported kind or an override
                provider that cannot serve it; ``-32000`` when no provider can serve it.
        """
        if self._closed:
            raise SubscriptionError(-32000, "Node is shutting down")
        rt = client.rt
        try:
            key = parse_subscription(params)
        except SubscriptionParamsError as exc:
            raise SubscriptionError(-32602, f"Invalid subscription parameters: {exc}") from None
        override = client.provider_id
        self._check_providers(rt, key, override)
        skey: StreamKey = (rt.profile, rt.key, override, key)
        stream = self._streams.get(skey) or self._open(skey, rt, key)
        if stream.grace_handle is not None:
            stream.grace_handle.cancel()
            stream.grace_handle = None
        if not stream.ready.is_set():
            stream.waiters += 1
            try:
                async with asyncio.timeout(self.establish_timeout_s):
                    await stream.ready.wait()
            except TimeoutError:
                pass
            finally:
                stream.waiters -= 1
            if stream.closed or not stream.ready.is_set():
                self._maybe_release(stream)
                raise SubscriptionError(
                    -32000, f"No provider available for {key.kind} subscriptions on {rt.key}"
                )
        sub_id = os.urandom(8).hex()
        while sub_id in self._subs:  # pragma: no cover - 64 random bits
            sub_id = os.urandom(8).hex()
        stream.clients[sub_id] = client
        stream.prefixes[sub_id] = frame_prefix(sub_id)
        self._subs[sub_id] = (client, stream)
        self._by_client.setdefault(client.id, set()).add(sub_id)
        counts = self.metrics.subscriptions
        mkey = (rt.key, key.kind)
        counts[mkey] = counts.get(mkey, 0) + 1
        return sub_id

    def unsubscribe(self, client: SubscriptionClient, sub_id: str) -> bool:
        """End ``client``'s subscription ``sub_id``; False if it has none by that id."""
        entry = self._subs.get(sub_id)
        if entry is None or entry[0] is not client:
            return False
        self._remove(sub_id)
        return True

    def drop_client(self, client: SubscriptionClient) -> None:
        """End every subscription of ``client`` (its socket closed)."""
        for sub_id in list(self._by_client.get(client.id, ())):
            self._remove(sub_id)

    async def aclose(self) -> None:
        """Unsubscribe every upstream (best effort, bounded) and stop all timers."""
        self._closed = True
        for stream in list(self._streams.values()):
            self._close(stream)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)

    # -- internals (streams call these too) ------------------------------------------------
    def _check_providers(
        self, rt: ChainRuntime, key: SubscriptionKey, override: str | None
    ) -> None:
        chain = rt.config
        if override is not None:
            p = chain.provider(override)
            if p is None or not p.ws_url:
                raise SubscriptionError(
                    -32602, f"Provider '{override}' has no ws_url: it cannot serve subscriptions"
                )
            if key.kind == "newHeads" and not follows_new_heads(chain, p):
                raise SubscriptionError(
                    -32602, f"Provider '{override}' does not serve newHeads (subscribe_new_heads)"
                )
            return
        if not any(
            p.ws_url and (key.kind != "newHeads" or follows_new_heads(chain, p))
            for p in chain.providers
        ):
            raise SubscriptionError(
                -32000, f"No WebSocket provider configured for {key.kind} on {rt.key}"
            )

    def _open(self, skey: StreamKey, rt: ChainRuntime, key: SubscriptionKey) -> Stream:
        stream = Stream(self, skey, rt, key)
        self._streams[skey] = stream
        if key.kind == "logs":
            heads_key = parse_subscription(["newHeads"])
            hkey: StreamKey = (skey[0], skey[1], skey[2], heads_key)
            heads = self._streams.get(hkey)
            if heads is None:
                try:
                    self._check_providers(rt, heads_key, skey[2])
                except SubscriptionError:
                    heads = None  # no newHeads feed on this chain: logs go without hints
                else:
                    heads = self._open(hkey, rt, heads_key)
            if heads is not None:
                heads.internal += 1
                if heads.grace_handle is not None:
                    heads.grace_handle.cancel()
                    heads.grace_handle = None
                stream.heads = heads
        stream.feed(Start())
        return stream

    def _remove(self, sub_id: str) -> None:
        entry = self._subs.pop(sub_id, None)
        if entry is None:
            return
        client, stream = entry
        stream.clients.pop(sub_id, None)
        stream.prefixes.pop(sub_id, None)
        mine = self._by_client.get(client.id)
        if mine is not None:
            mine.discard(sub_id)
            if not mine:
                del self._by_client[client.id]
        counts = self.metrics.subscriptions
        mkey = (stream.chain, stream.kind)
        counts[mkey] = max(0, counts.get(mkey, 0) - 1)
        self._maybe_release(stream)

    def _maybe_release(self, stream: Stream) -> None:
        if stream.refs or stream.closed or stream.grace_handle is not None:
            return
        if not stream.ready.is_set() or self._closed:
            self._close(stream)  # never served anyone: nothing to keep warm
            return
        stream.grace_handle = asyncio.get_running_loop().call_later(
            self.grace_s, self._grace_over, stream
        )

    def _grace_over(self, stream: Stream) -> None:
        stream.grace_handle = None
        if stream.refs == 0:
            self._close(stream)

    def _close(self, stream: Stream) -> None:
        if self._streams.get(stream.skey) is stream:
            del self._streams[stream.skey]
        for name, n in counters(stream):
            k = (stream.chain, stream.kind, name)
            self._retired[k] = self._retired.get(k, 0) + n
        stream.close()
        heads, stream.heads = stream.heads, None
        if heads is not None:
            heads.internal -= 1
            self._maybe_release(heads)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _related(self, stream: Stream, kind: str) -> Iterable[Stream]:
        for other in list(self._streams.values()):
            if (
                other.kind == kind
                and other.profile == stream.profile
                and other.chain == stream.chain
                and other.override == stream.override
            ):
                yield other

    def _blocks_dropped(self, heads: Stream, blocks: tuple[tuple[int, str], ...]) -> None:
        log.info(
            "reorg: %d blocks dropped",
            len(blocks),
            extra={"event": "subscription.reorg", "chain": heads.chain, "from_block": blocks[0][0]},
        )
        heads.rt().events.state(
            {
                "type": "subscription_reorg",
                "chain": heads.chain,
                "from_block": blocks[0][0],
                "dropped": len(blocks),
            }
        )
        for stream in self._related(heads, "logs"):
            stream.feed(BlocksDropped(blocks=blocks))

    def _head_seen(self, heads: Stream, provider: str, number: int) -> None:
        for stream in self._related(heads, "logs"):
            stream.feed(HeadSeen(provider=provider, number=number))

    def _chain_tip(self, stream: Stream) -> int | None:
        heads = stream.heads
        if heads is not None and heads.machine.tip is not None:
            return heads.machine.tip
        return stream.rt().router.state.consensus(monotonic())

    @staticmethod
    def _provider_open(rt: ChainRuntime, provider: str, now: float) -> bool:
        """The provider's WebSocket circuit is open. *Decision*: only the WS breaker
        counts; an open HTTP circuit (say after backfills hit it while it was down) says
        nothing about a live subscription socket and must not keep it out for 60 s."""
        ch = rt.router.channel(provider, "ws")
        return ch is not None and ch.breaker.state(now) is BreakerState.OPEN

    def _watch_connections(self, rt: ChainRuntime) -> None:
        """Retry degraded streams as soon as one of the chain's upstreams connects."""
        for ws in rt.ws.values():
            if ws not in self._watched:
                self._watched.add(ws)
                ws.add_state_listener(partial(self._on_ws_state, weakref.ref(ws)))

    def _on_ws_state(self, ref: weakref.ref[UpstreamWs], connected: bool) -> None:
        ws = ref()
        if not connected or ws is None or self._closed:
            return
        for stream in list(self._streams.values()):
            if stream.machine.state is StreamState.DEGRADED and ws in stream.rt().ws.values():
                schedule_retry(stream, 0.0)

    def _on_bus_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "circuit" or event.get("to") != "open":
            return
        if event.get("transport") != "ws":
            return
        for stream in list(self._streams.values()):
            up = stream.upstream
            if up is not None and stream.chain == event.get("chain"):
                if up.provider == event.get("provider"):
                    lose(stream, "circuit open", keep=True)
