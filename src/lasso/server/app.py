"""The application object: one per node, holding every live dependency.

``LassoApp`` is what the HTTP server calls. It owns the current :class:`Runtime` (built
from the profiles and swapped atomically on reload), the upstream pools and breakers that
survive reloads, the metrics, and the background tasks (block-height probes). Nothing in
Lasso is a module-level singleton.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from lasso import __version__
from lasso.config import ProfileConfig
from lasso.kernel.breaker import BreakerConfig
from lasso.kernel.router import BreakerRegistry
from lasso.net.http_server import HttpRequest, HttpServer, Response
from lasso.net.redis_link import RedisLink
from lasso.server import api
from lasso.server.cache import HeadWatch, RedisStore, ResponseCache
from lasso.server.cache import report as cache_report
from lasso.server.events import EventBus
from lasso.server.metrics import Metrics
from lasso.server.pipeline import execute
from lasso.server.rpc import RpcHandler
from lasso.server.runtime import ChainRuntime, PoolRegistry, Runtime
from lasso.server.subscriptions import SubscriptionManager
from lasso.server.ws_rpc import WsRpcEndpoint
from lasso.server.ws_upstreams import WsUpstreamRegistry

if TYPE_CHECKING:
    from lasso.cluster.transport import ClusterNode
    from lasso.cluster.view import ClusterView
    from lasso.server.shared_state import SharedTable
    from lasso.server.workers import WorkerSnapshots

__all__ = ["LassoApp", "Settings"]

log = logging.getLogger("lasso")


class Settings:
    """Node-level settings (not per profile)."""

    def __init__(
        self,
        *,
        node_id: str = "local",
        host: str = "127.0.0.1",
        port: int = 4000,
        max_body: int = 8_000_000,
        probes: bool = True,
        cluster_url: str | None = None,
        default_profile: str = "public",
        cluster_interval_s: float | None = None,
        instance_id: str | None = None,
        worker_index: int | None = None,
        shared_state: str | None = None,
        worker_dir: str | None = None,
        busy_poll_us: int = 0,
        redis_url: str | None = None,
    ) -> None:
        # LASSO_REDIS_URL (lasso.net.redis_link.redis_url_from_env): node-wide state shared
        # with every node and worker on that Redis (the response cache); None: in memory.
        self.redis_url = redis_url
        # Opt-in busy polling after I/O (lasso.net.busypoll); 0 = off.
        self.busy_poll_us = busy_poll_us
        # --workers N (lasso.server.workers): this worker's index, the shared-memory table's
        # name and the directory where workers leave their metrics snapshots; None alone.
        self.worker_index = worker_index
        self.shared_state = shared_state
        self.worker_dir = worker_dir
        # Clustering (lasso.cluster): heartbeat interval (None: LASSO_CLUSTER_INTERVAL_MS,
        # else 1 s) and this process's identity within its region (None: hostname-random).
        self.cluster_interval_s = cluster_interval_s
        self.instance_id = instance_id
        self.default_profile = default_profile
        self.node_id = node_id
        self.host = host
        self.port = port
        self.max_body = max_body
        self.probes = probes
        self.cluster_url = cluster_url


_CORS_PREFLIGHT = Response(
    204,
    headers=[
        ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
        (
            "Access-Control-Allow-Headers",
            "Content-Type, Authorization, X-Requested-With, X-Lasso-Provider, "
            "X-Lasso-Transport, X-Lasso-Include-Meta, Cache-Control",
        ),
        ("Access-Control-Expose-Headers", "X-Lasso-Request-Id, X-Lasso-Meta, X-Lasso-Cache"),
        ("Access-Control-Max-Age", "86400"),
    ],
)


class LassoApp:
    """A Lasso node.

    Args:
        profiles: the validated profiles to serve.
        settings: node settings.
        rng: randomness for strategies and breaker jitter (seed it in tests).
    """

    def __init__(
        self,
        profiles: Mapping[str, ProfileConfig],
        settings: Settings | None = None,
        *,
        rng: random.Random | None = None,
        breaker_config: BreakerConfig | None = None,
        ws_upstream_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self.node_id = self.settings.node_id
        self.rng = rng or random.Random()
        self.loop = asyncio.get_event_loop()
        self.started_wall = time.time()
        self.pools = PoolRegistry()
        self.breakers = BreakerRegistry(breaker_config or BreakerConfig(), self.rng)
        self.events = EventBus(self.node_id)
        self.runtime = Runtime(
            profiles,
            pools=self.pools,
            breakers=self.breakers,
            rng=self.rng,
            default_profile=self.settings.default_profile,
            events=self.events,
        )
        self.metrics = Metrics(self.node_id)
        self.shared_table: SharedTable | None = None
        self.snapshots: WorkerSnapshots | None = None
        if self.settings.shared_state:
            from lasso.server.shared_state import SharedTable
            from lasso.server.workers import WorkerSnapshots

            self.shared_table = SharedTable(self.settings.shared_state)
            self.shared_table.attach(self.runtime)
            if self.settings.worker_dir and self.settings.worker_index is not None:
                self.snapshots = WorkerSnapshots(
                    self.settings.worker_dir, self.settings.worker_index
                )
                self.metrics.peer_snapshots = self.snapshots.peers
        # One Redis link for the node when LASSO_REDIS_URL is set, for every feature that
        # keeps node-wide state there; the response cache and coalescing wrap the pipeline.
        self.redis = RedisLink(self.settings.redis_url) if self.settings.redis_url else None
        self.cache = ResponseCache(
            execute, self.loop, redis=RedisStore(self.redis) if self.redis is not None else None
        )
        self.cache_watch = HeadWatch(self.cache, self._chain_runtime)
        self.metrics.extra_collectors.append(cache_report.collector(self.cache))
        self.rpc = RpcHandler(self)
        # WebSocket: the client endpoint (/ws/rpc/...) and the upstream connections
        # (started by start_background; options such as reconnect_base reach UpstreamWs).
        self.ws = WsRpcEndpoint(self)
        self.ws_upstreams = WsUpstreamRegistry(self, **(ws_upstream_options or {}))
        self.ws_upstreams.head_listeners.append(self.cache_watch.on_head)
        # Shared, gap-free client subscriptions (eth_subscribe over /ws/rpc/...).
        self.subscriptions = SubscriptionManager(self)
        self.server = HttpServer(
            self,
            max_body=self.settings.max_body,
            on_error=self._on_error,
            busy_poll_us=self.settings.busy_poll_us,
        )
        self.port: int | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        # Set before start_background() to join a cluster over another exchange (the
        # multi-node demo); otherwise settings.cluster_url starts one over NATS.
        self.cluster: ClusterNode | None = None
        self.cluster_view: ClusterView | None = None

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Bind and serve; returns the port. Call from a running loop."""
        self.loop = asyncio.get_running_loop()
        self.cache.loop = self.loop
        self.port = await self.server.start(
            host if host is not None else self.settings.host,
            port if port is not None else self.settings.port,
            reuse_port=self.settings.worker_index is not None,  # --workers N share the port
        )
        return self.port

    async def start_background(self) -> None:
        """Start the background work: upstream WebSockets, block-height probes (cheap,
        idle providers only)."""
        self.ws_upstreams.start(self.runtime)
        self._tasks.append(self.loop.create_task(self.cache_watch.run()))
        if self.settings.probes:
            from lasso.probes.heights import HeightProber

            self.prober = HeightProber(self)
            self._tasks.append(self.loop.create_task(self.prober.run()))
        if self.cluster is None and self.settings.cluster_url:
            from lasso.cluster.transport import ClusterNode

            self.cluster = ClusterNode.over_nats(self, self.settings.cluster_url)
        if self.cluster is not None:  # observability only: never awaits the exchange
            self.cluster_view = self.cluster.view
            self.cluster.start()
        if self.snapshots is not None:
            self._tasks.append(self.loop.create_task(self.snapshots.run(self)))

    async def reload(self, profiles: Mapping[str, ProfileConfig]) -> None:
        """Swap in a new profile set. In-flight requests finish on the old one."""
        new = Runtime(
            profiles,
            pools=self.pools,
            breakers=self.breakers,
            rng=self.rng,
            generation=self.runtime.generation + 1,
            default_profile=self.settings.default_profile,
            events=self.events,
        )
        if self.shared_table is not None:
            self.shared_table.attach(new)
        self.runtime = new
        self.cache.retain((rt.profile, rt.config.chain_id) for rt in new.chains())
        self.ws_upstreams.sync(new)
        await self.pools.retain_only(new.instance_keys)
        log.info(
            "profiles reloaded",
            extra={
                "event": "config.reloaded",
                "generation": new.generation,
                "profiles": sorted(new.profiles),
            },
        )

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Drain in-flight requests (bounded), then close everything."""
        await self.server.drain(drain_timeout)
        await self.ws.aclose()
        await self.subscriptions.aclose()
        if self.cluster is not None:
            await self.cluster.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self.ws_upstreams.aclose()
        await self.pools.aclose()
        if self.cache.redis is not None:
            await self.cache.redis.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.snapshots is not None:
            self.snapshots.write(self)

    # -- request dispatch -------------------------------------------------------------
    def handle(self, req: HttpRequest) -> Response | Awaitable[Response]:
        method = req.method
        if method == "POST":
            if req.path.startswith("/rpc/"):
                return self.rpc.handle(req)
            return api.not_found(req)
        if method == "GET" or method == "HEAD":
            return api.route(self, req)
        if method == "OPTIONS":
            return _CORS_PREFLIGHT
        return Response(
            405, b'{"error":"method not allowed"}', headers=[("Allow", "GET, POST, OPTIONS")]
        )

    def upgrade(
        self, req: HttpRequest, transport: asyncio.Transport, rest: bytes
    ) -> asyncio.Protocol | None:
        """Serve ``/ws/rpc/...`` (:mod:`lasso.server.ws_rpc`); other paths get a 404."""
        return self.ws.upgrade(req, transport, rest)

    def _on_error(self, req: HttpRequest, exc: BaseException | None = None) -> None:
        log.error(
            "unhandled error serving request",
            exc_info=exc if exc is not None else True,
            extra={"event": "server.error", "path": req.path},
        )

    def _chain_runtime(self, profile: str, chain: str) -> ChainRuntime | None:
        """The current runtime's chain ``chain`` of ``profile`` (None once it is gone)."""
        prof = self.runtime.profiles.get(profile)
        return prof.chains.get(chain) if prof is not None else None

    # -- info -------------------------------------------------------------------------
    def uptime(self) -> float:
        return time.time() - self.started_wall

    @property
    def version(self) -> str:
        return __version__

    def __repr__(self) -> str:
        return f"<LassoApp node={self.node_id} port={self.port} {self.runtime!r}>"
