"""The node's upstream WebSocket connections, shared across profiles and kept across reloads.

One :class:`~lasso.net.ws_upstream.UpstreamWs` per upstream *instance* with a ``ws_url``
(the same key as the HTTP pools, :func:`lasso.server.runtime.instance_key`), so every
profile naming the same endpoint shares one connection. :meth:`WsUpstreamRegistry.sync`
runs at start and after every reload: it fills each chain's ``rt.ws`` map (which the
pipeline reads to dispatch over a WS channel), opens connections for new instances and
closes those no longer referenced.

Routing follows the connections: on every connect and drop, each router that references
the instance gets ``set_connected(provider_id, up)``, so a WS channel is a candidate only
while its socket is live (reference §7.5).

Block sync: while connected, an instance whose effective ``subscribe_new_heads`` is true
in any referencing chain (the provider's value, else the chain's
``websocket.subscribe_new_heads``) keeps an upstream ``newHeads`` subscription and feeds
every head's number to ``router.observe_height``: heights, lag and block time stay live
without polling (the HTTP height prober skips providers observed recently).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from time import monotonic
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lasso.config import ChainConfig, ProviderConfig
from lasso.kernel.faults import Fault
from lasso.kernel.router import Channel
from lasso.net.errors import UpstreamError
from lasso.net.ws_upstream import UpstreamWs
from lasso.server.faults import fault_of
from lasso.server.runtime import ChainRuntime, Runtime, instance_key

if TYPE_CHECKING:
    import random

    from lasso.server.metrics import Metrics

__all__ = ["WsUpstreamRegistry", "follows_new_heads"]

log = logging.getLogger("lasso.ws.upstream")

HEAD_RETRY_S = 5.0
"""Pause before retrying a failed newHeads subscription on the same connection."""


def follows_new_heads(chain: ChainConfig, provider: ProviderConfig) -> bool:
    """The effective ``subscribe_new_heads`` of a provider (its own, else the chain's)."""
    if not provider.ws_url:
        return False
    if provider.subscribe_new_heads is not None:
        return provider.subscribe_new_heads
    return chain.subscribe_new_heads


class _HeadFeed:
    """The newHeads subscription of one instance on one connection."""

    __slots__ = ("connection_id", "task", "sub_id")

    def __init__(self, connection_id: int) -> None:
        self.connection_id = connection_id
        self.task: asyncio.Task[None] | None = None
        self.sub_id: str | None = None


class WsUpstreamRegistry:
    """Upstream WebSocket connections keyed by instance.

    Args:
        metrics: the node's metrics; the connection gauges are registered there.
        rng: randomness for the reconnect jitter.
        options: keyword arguments for every :class:`UpstreamWs` (``reconnect_base``,
            ``heartbeat``, ``startup_jitter``...); tests shorten the timings with them.
    """

    def __init__(self, *, metrics: Metrics, rng: random.Random, **options: Any) -> None:
        self.rng = rng
        self.options: dict[str, Any] = {"startup_jitter": 1.0, **options}
        self.head_retry = HEAD_RETRY_S
        self.heads_seen = 0
        # Called with (chain runtime, provider id, head) for every newHeads notification
        # (the response cache keeps its block hashes from them).
        self.head_listeners: list[Callable[[ChainRuntime, str, Any], None]] = []
        self._ups: dict[str, UpstreamWs] = {}
        self._refs: dict[str, list[tuple[ChainRuntime, str]]] = {}
        self._heads: dict[str, _HeadFeed] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._started = False
        metrics.register(self._collect)

    def __repr__(self) -> str:
        live = sum(1 for up in self._ups.values() if up.connected)
        return f"<WsUpstreamRegistry instances={len(self._ups)} connected={live}>"

    def __len__(self) -> int:
        return len(self._ups)

    def __iter__(self) -> Any:
        return iter(self._ups.values())

    # -- lookups ------------------------------------------------------------------------
    def ws_for(self, rt: ChainRuntime, provider_id: str) -> UpstreamWs | None:
        """The upstream connection of ``provider_id`` in chain ``rt`` (live or not)."""
        return rt.ws.get(provider_id)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self, runtime: Runtime) -> None:
        """Open connections for ``runtime`` (call from the running loop)."""
        self._started = True
        self.sync(runtime)

    def sync(self, runtime: Runtime) -> None:
        """Match the connections to ``runtime``: fill ``rt.ws``, flag the routers' WS
        channels, open new instances, close unreferenced ones. No-op before :meth:`start`.
        """
        if not self._started:
            return
        refs: dict[str, list[tuple[ChainRuntime, str]]] = {}
        for rt in runtime.chains():
            for provider in rt.config.providers:
                if not provider.ws_url:
                    continue
                key = instance_key(provider)
                up = self._ups.get(key)
                if up is None:
                    up = self._create(key, provider)
                rt.ws[provider.id] = up
                refs.setdefault(key, []).append((rt, provider.id))
                rt.router.set_connected(provider.id, up.connected)
        self._refs = refs
        for key in [k for k in self._ups if k not in refs]:
            self._stop_heads(key)
            up = self._ups.pop(key)
            task = asyncio.get_running_loop().create_task(up.aclose())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        for key, up in self._ups.items():
            up.start()
            self._update_heads(key)

    async def aclose(self) -> None:
        """Close every connection (subscriptions end with "closed")."""
        self._started = False
        for key in list(self._heads):
            self._stop_heads(key)
        ups = list(self._ups.values())
        self._ups.clear()
        await asyncio.gather(*(up.aclose() for up in ups), *self._closing, return_exceptions=True)

    def _create(self, key: str, provider: ProviderConfig) -> UpstreamWs:
        assert provider.ws_url is not None
        up = UpstreamWs(
            provider.id, provider.ws_url, headers=provider.headers, rng=self.rng, **self.options
        )
        up.add_state_listener(lambda connected: self._on_state(key, up, connected))
        up.add_error_listener(lambda exc: self._on_connect_error(key, up, exc))
        self._ups[key] = up
        return up

    def _health_members(self, key: str) -> list[tuple[ChainRuntime, Channel]]:
        """One WS channel per distinct :class:`~lasso.kernel.faults.ChannelHealth` among
        the referencing chains (channels on the same breaker share one)."""
        seen: set[int] = set()
        out: list[tuple[ChainRuntime, Channel]] = []
        for rt, pid in self._refs.get(key, ()):
            ch = rt.router.channel(pid, "ws")
            if ch is not None and id(ch.health) not in seen:
                seen.add(id(ch.health))
                out.append((rt, ch))
        return out

    def _on_connect_error(self, key: str, up: UpstreamWs, exc: UpstreamError) -> None:
        if self._ups.get(key) is not up:
            return
        fault = fault_of(exc)
        now = monotonic()
        for rt, ch in self._health_members(key):
            rt.router.observe_fault(ch, fault, now)

    def _on_state(self, key: str, up: UpstreamWs, connected: bool) -> None:
        if self._ups.get(key) is not up:
            return  # closed by a reload: its routers are gone
        refs = self._refs.get(key, ())
        for rt, pid in refs:
            rt.router.set_connected(pid, connected)
        now = monotonic()
        for rt, ch in self._health_members(key):
            if connected:
                rt.router.observe_reached(ch, now)
            else:
                rt.router.observe_lost(ch, _lost_fault(up), now)
        log.info(
            "upstream websocket %s",
            "connected" if connected else "disconnected",
            extra={
                "event": "ws.upstream_connected" if connected else "ws.upstream_disconnected",
                "provider": up.provider_id,
                "connection_id": up.connection_id,
            },
        )
        for rt, pid in refs[:1]:
            rt.events.state(
                {
                    "type": "ws_upstream",
                    "chain": rt.key,
                    "provider": pid,
                    "connected": connected,
                    "connection_id": up.connection_id,
                }
            )
        self._update_heads(key)

    # -- newHeads -> block sync ---------------------------------------------------------
    def _update_heads(self, key: str) -> None:
        up = self._ups.get(key)
        if up is None or not up.connected or not self._wants_heads(key):
            self._stop_heads(key)
            return
        feed = self._heads.get(key)
        if feed is not None and feed.connection_id == up.connection_id:
            return
        feed = _HeadFeed(up.connection_id)
        self._heads[key] = feed
        feed.task = asyncio.get_running_loop().create_task(self._follow_heads(key, up, feed))

    def _wants_heads(self, key: str) -> bool:
        for rt, pid in self._refs.get(key, ()):
            provider = rt.config.provider(pid)
            if provider is not None and follows_new_heads(rt.config, provider):
                return True
        return False

    def _stop_heads(self, key: str) -> None:
        feed = self._heads.pop(key, None)
        if feed is None:
            return
        if feed.task is not None:
            feed.task.cancel()
        up = self._ups.get(key)
        if (
            feed.sub_id is not None
            and up is not None
            and up.connected
            and up.connection_id == feed.connection_id
        ):
            task = asyncio.get_running_loop().create_task(up.unsubscribe(feed.sub_id))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def _follow_heads(self, key: str, up: UpstreamWs, feed: _HeadFeed) -> None:
        while self._heads.get(key) is feed and up.connection_id == feed.connection_id:
            try:
                feed.sub_id = await up.subscribe(
                    ["newHeads"], lambda head: self._on_head(key, head), _ignore_end
                )
                return
            except UpstreamError as exc:
                log.debug(
                    "newHeads subscription failed",
                    extra={
                        "event": "ws.heads_failed",
                        "provider": up.provider_id,
                        "error": str(exc),
                    },
                )
            await asyncio.sleep(self.head_retry)

    def _on_head(self, key: str, head: Any) -> None:
        number = head.get("number") if type(head) is dict else None
        if not isinstance(number, str):
            return
        try:
            height = int(number, 16)
        except ValueError:
            return
        self.heads_seen += 1
        now = monotonic()
        for rt, pid in self._refs.get(key, ()):
            rt.router.observe_height(pid, height, now)
            for listener in self.head_listeners:
                listener(rt, pid, head)

    # -- metrics ------------------------------------------------------------------------
    def _collect(self, node: str, now: float) -> Iterable[Metric]:
        up_g = GaugeMetricFamily(
            "lasso_ws_upstream_connected",
            "1 while the upstream WebSocket of a provider is connected",
            labels=["node_id", "chain", "provider"],
        )
        connects = CounterMetricFamily(
            "lasso_ws_upstream_connects",
            "Upstream WebSocket connections established (reconnects included)",
            labels=["node_id", "chain", "provider"],
        )
        seen: set[tuple[str, str]] = set()
        for key, up in self._ups.items():
            for rt, pid in self._refs.get(key, ()):
                if (rt.key, pid) in seen:
                    continue
                seen.add((rt.key, pid))
                up_g.add_metric([node, rt.key, pid], 1.0 if up.connected else 0.0)
                connects.add_metric([node, rt.key, pid], float(up.connects))
        yield up_g
        yield connects


def _lost_fault(up: UpstreamWs) -> Fault:
    return Fault(
        cause="disconnected",
        category="network_error",
        message=f"{up.origin}: websocket connection lost",
        ts=time.time(),
    )


def _ignore_end(reason: str) -> None:
    """The head feed restarts on the next connect; nothing to do when it ends."""
