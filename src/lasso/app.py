"""The composition root: builds one node's components and wires them together.

:class:`LassoApp` is the only place that knows every component. It builds them in
dependency order and hands each one what it uses through its constructor: the node's
identity (:class:`~lasso.server.node.NodeInfo`), the metrics to register collectors with,
the event bus, the *current runtime* as a callable (:meth:`LassoApp.current_runtime`, the
runtime being swapped on reload), the cluster status (a
:class:`~lasso.server.node.Standalone` null object when the node is alone). No component
imports this module or holds the app; only the entry points (``lasso.cli``,
``lasso.demo``, ``lasso.demo_cluster``) and tests create it. The import contracts in
``pyproject.toml`` (``lint-imports``) keep it that way; ``docs/architecture.md`` draws the
layers.

It lives above ``lasso.server`` rather than in it because it wires the packages that sit
on top of the server core (``lasso.probes``, ``lasso.cluster``, ``lasso.dashboard``):
inside ``lasso.server`` it would make the server import them back.

The app is also what the HTTP server calls (:class:`lasso.net.http_server.Application`):
``POST /rpc/...`` goes to the JSON-RPC endpoint, ``GET``/``HEAD`` to the operations API
(which mounts the dashboard), WebSocket upgrades to the WebSocket endpoint. Nothing in
Lasso is a module-level singleton.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Mapping
from typing import Any

from lasso import __version__
from lasso.auth import ClientAccess
from lasso.cluster.transport import ClusterNode, Exchange
from lasso.config import ProfileConfig
from lasso.dashboard.hub import DashboardHub
from lasso.dashboard.routes import Dashboard
from lasso.kernel.breaker import BreakerConfig
from lasso.kernel.router import BreakerRegistry
from lasso.net.http_server import HttpRequest, HttpServer, Response
from lasso.net.limits import Limits
from lasso.net.redis_link import RedisLink
from lasso.probes.heights import HeightProber
from lasso.server.api import OpsApi
from lasso.server.cache import HeadWatch, RedisStore, ResponseCache
from lasso.server.cache import report as cache_report
from lasso.server.consistency_state import NodeConsistency
from lasso.server.events import EventBus
from lasso.server.limits import BATCH_CONCURRENCY, DEFAULT_MAX_BATCH, NODE_BATCH_CONCURRENCY
from lasso.server.metrics import Metrics
from lasso.server.node import ClusterStatus, NodeInfo, Standalone
from lasso.server.pipeline import execute
from lasso.server.route import RouteResolver
from lasso.server.rpc import RpcHandler
from lasso.server.runtime import ChainRuntime, PoolRegistry, Runtime
from lasso.server.shared_state import SharedTable
from lasso.server.subscriptions import SubscriptionManager
from lasso.server.workers import WorkerSnapshots
from lasso.server.ws_rpc import WsRpcEndpoint
from lasso.server.ws_upstreams import WsUpstreamRegistry

__all__ = ["LassoApp", "Settings", "install_uvloop"]

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
        default_profile: str | None = None,
        cluster_interval_s: float | None = None,
        instance_id: str | None = None,
        worker_index: int | None = None,
        shared_state: str | None = None,
        worker_dir: str | None = None,
        busy_poll_us: int = 0,
        max_batch: int = DEFAULT_MAX_BATCH,
        batch_concurrency: int = BATCH_CONCURRENCY,
        batch_node_concurrency: int = NODE_BATCH_CONCURRENCY,
        limits: Limits | None = None,
        redis_url: str | None = None,
        workers: int = 1,
    ) -> None:
        # Transport limits against hostile clients and upstreams (lasso.net.limits).
        self.limits = limits or Limits()
        # JSON-RPC batches (lasso.server.limits): items per batch, items of one batch in
        # flight, batch items in flight on the node.
        if min(max_batch, batch_concurrency, batch_node_concurrency) < 1:
            raise ValueError("max_batch and the batch concurrency bounds must be at least 1")
        self.max_batch = max_batch
        self.batch_concurrency = batch_concurrency
        self.batch_node_concurrency = batch_node_concurrency
        # LASSO_REDIS_URL: one Redis link for the node, shared by the features that keep
        # node-wide state there (client limits); None: each process keeps its own.
        self.redis_url = redis_url
        # Worker processes of this node (--workers N): without Redis each enforces 1/N of
        # a client limit.
        self.workers = workers
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
        # Routes without /profile/<slug>: this one, else public, else the only profile
        # (lasso.config.default_profile_slug); LASSO_DEFAULT_PROFILE sets it in `serve`.
        self.default_profile = default_profile
        self.node_id = node_id
        self.host = host
        self.port = port
        self.max_body = max_body
        self.probes = probes
        self.cluster_url = cluster_url


def install_uvloop() -> None:
    """Run the node on uvloop when it is installed (it is a dependency)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep working without it
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


_CORS_PREFLIGHT = Response(
    204,
    headers=[
        ("Access-Control-Allow-Methods", "GET, POST, OPTIONS"),
        (
            "Access-Control-Allow-Headers",
            "Content-Type, Authorization, X-Requested-With, X-Lasso-Provider, "
            "X-Lasso-Include-Meta, X-Lasso-Api-Key, Cache-Control",
        ),
        (
            "Access-Control-Expose-Headers",
            "X-Lasso-Request-Id, X-Lasso-Meta, Retry-After, X-Lasso-Cache",
        ),
        ("Access-Control-Max-Age", "86400"),
    ],
)


class LassoApp:
    """A Lasso node: every component, built and wired.

    Args:
        profiles: the validated profiles to serve.
        settings: node settings.
        rng: randomness for strategies and breaker jitter (seed it in tests).
        breaker_config: the circuit breakers' configuration.
        ws_upstream_options: keyword arguments for every upstream WebSocket (tests shorten
            its timings).
        cluster_exchange: join a cluster over this exchange (the multi-node demo, tests);
            without it, ``settings.cluster_url`` joins one over NATS, else the node is
            standalone.
        redis: the node's Redis link (tests pass one with their own timeouts); without
            it, ``settings.redis_url`` opens one, else the node runs without Redis.

    Raises:
        ValueError: for settings that cannot work (a bad ``LASSO_CLUSTER_INTERVAL_MS``).
    """

    def __init__(
        self,
        profiles: Mapping[str, ProfileConfig],
        settings: Settings | None = None,
        *,
        rng: random.Random | None = None,
        breaker_config: BreakerConfig | None = None,
        ws_upstream_options: Mapping[str, Any] | None = None,
        cluster_exchange: Exchange | None = None,
        redis: RedisLink | None = None,
    ) -> None:
        self.settings = settings = settings or Settings()
        self.node = NodeInfo(
            node_id=settings.node_id,
            version=__version__,
            started_wall=time.time(),
            worker_index=settings.worker_index,
        )
        self.node_id = self.node.node_id
        self.rng = rng or random.Random()
        # Routing state: pools and breakers outlive reloads; the runtime is swapped.
        self.pools = PoolRegistry(max_response_size=settings.limits.max_upstream_response)
        self.breakers = BreakerRegistry(breaker_config or BreakerConfig(), self.rng)
        self.events = EventBus(self.node_id)
        # Served heads, filter tables and the getLogs chunk bound: across reloads too.
        self.consistency = NodeConsistency()
        self.runtime = self._build_runtime(profiles, generation=1)
        # --workers N: node-wide routing state and the other workers' metrics.
        self.shared_table: SharedTable | None = None
        self.snapshots: WorkerSnapshots | None = None
        if settings.shared_state:
            self.shared_table = SharedTable(settings.shared_state)
            self.shared_table.attach(self.runtime)
            if settings.worker_dir and settings.worker_index is not None:
                self.snapshots = WorkerSnapshots(settings.worker_dir, settings.worker_index)
        self.metrics = Metrics(
            self.node,
            self.current_runtime,
            peer_snapshots=self.snapshots.peers if self.snapshots is not None else None,
        )
        self.metrics.register(self.consistency.collect)
        # One Redis link for the node (LASSO_REDIS_URL), for every feature that uses it.
        if redis is None and settings.redis_url:
            redis = RedisLink(settings.redis_url)
        self.redis = redis
        # The response cache and coalescing around the pipeline (docs/caching.md), its
        # answers shared through Redis when the node has a link; the head watch keeps each
        # chain's block hashes and finality known.
        store = None
        if self.redis is not None:
            store = RedisStore(
                self.redis, max_pending_bytes=settings.limits.max_redis_pending_bytes
            )
        self.cache = ResponseCache(execute, redis=store)
        self.cache_watch = HeadWatch(self.cache, self._chain_runtime)
        peers = self.snapshots.peers if self.snapshots is not None else None
        self.metrics.register(cache_report.collector(self.cache, peers))
        if self.snapshots is not None:
            self.snapshots.include("cache", lambda: cache_report.snapshot(self.cache))
        # Client keys, scopes and limits (lasso.auth): a gate for each profile that asks.
        self.clients = ClientAccess(
            profiles,
            redis=self.redis,
            instance=f"{self.node_id}/{os.getpid()}/{os.urandom(3).hex()}",
            share=1.0 / max(1, settings.workers),
            peer_snapshots=self.snapshots.peers if self.snapshots is not None else None,
        )
        self.metrics.register(self.clients.collect)
        if self.snapshots is not None:
            self.snapshots.include("clients", self.clients.snapshot)
        # Background work, started by start_background().
        self.ws_upstreams = WsUpstreamRegistry(
            metrics=self.metrics,
            rng=self.rng,
            **{"max_message": settings.limits.max_upstream_response, **(ws_upstream_options or {})},
        )
        self.ws_upstreams.head_listeners.append(self.cache_watch.on_head)
        self.prober: HeightProber | None = None
        if settings.probes:
            self.prober = HeightProber(
                runtime=self.current_runtime, metrics=self.metrics, rng=self.rng
            )
        self.cluster = self._cluster(cluster_exchange)
        self.cluster_status: ClusterStatus = (
            self.cluster.view if self.cluster is not None else Standalone(self.node_id)
        )
        # Client-facing endpoints.
        self.subscriptions = SubscriptionManager(
            runtime=self.current_runtime, metrics=self.metrics, events=self.events
        )
        self.routes = RouteResolver(self.current_runtime, gates=self.clients.gate)
        self.rpc = RpcHandler(
            routes=self.routes,
            metrics=self.metrics,
            cache=self.cache,
            max_batch=settings.max_batch,
            batch_concurrency=settings.batch_concurrency,
            batch_node_concurrency=settings.batch_node_concurrency,
        )
        self.ws = WsRpcEndpoint(
            routes=self.routes,
            rpc=self.rpc,
            metrics=self.metrics,
            subscriptions=self.subscriptions,
            max_message=settings.max_body,
            access=self.clients,
        )
        self.ws.control_frames_per_s = settings.limits.ws_control_frames_per_s
        self.ws.frames_per_read = settings.limits.ws_frames_per_read
        self.dashboard = Dashboard(
            DashboardHub(
                node=self.node,
                runtime=self.current_runtime,
                events=self.events,
                metrics=self.metrics,
                cluster=self.cluster_status,
            )
        )
        self.api = OpsApi(
            node=self.node,
            runtime=self.current_runtime,
            metrics=self.metrics,
            cluster=self.cluster_status,
            pages=self.dashboard.route,
            clients=self.clients.view,
            cache=self._cache_view,
        )
        self.server = HttpServer(
            self,
            max_body=settings.max_body,
            limits=settings.limits,
            on_error=self._on_error,
            busy_poll_us=settings.busy_poll_us,
        )
        self.port: int | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    def _build_runtime(self, profiles: Mapping[str, ProfileConfig], generation: int) -> Runtime:
        return Runtime(
            profiles,
            pools=self.pools,
            breakers=self.breakers,
            rng=self.rng,
            generation=generation,
            default_profile=self.settings.default_profile,
            events=self.events,
            consistency=self.consistency,
        )

    def _chain_runtime(self, profile: str, chain: str) -> ChainRuntime | None:
        """The current runtime's chain ``chain`` of ``profile`` (None once it is gone)."""
        prof = self.runtime.profiles.get(profile)
        return prof.chains.get(chain) if prof is not None else None

    def _cache_view(self, profile: str) -> dict[str, Any]:
        peers = self.snapshots.peers if self.snapshots is not None else None
        return cache_report.view(self.cache, profile, peers)

    def _cluster(self, exchange: Exchange | None) -> ClusterNode | None:
        settings = self.settings
        kw: dict[str, Any] = {
            "node": self.node,
            "metrics": self.metrics,
            "runtime": self.current_runtime,
            "interval_s": settings.cluster_interval_s,
            "instance": settings.instance_id,
        }
        if exchange is not None:
            return ClusterNode(exchange, **kw)
        if settings.cluster_url:
            return ClusterNode.over_nats(settings.cluster_url, **kw)
        return None

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, host: str | None = None, port: int | None = None) -> int:
        """Bind and serve; returns the port. Call from a running loop."""
        self.port = await self.server.start(
            host if host is not None else self.settings.host,
            port if port is not None else self.settings.port,
            reuse_port=self.settings.worker_index is not None,  # --workers N share the port
        )
        return self.port

    async def start_background(self) -> None:
        """Start the background work: upstream WebSockets, block-height probes (cheap,
        idle providers only), the cluster heartbeat, the workers' metrics snapshots."""
        loop = asyncio.get_running_loop()
        self.ws_upstreams.start(self.runtime)
        self.clients.start()
        self._tasks.append(loop.create_task(self.cache_watch.run()))
        if self.prober is not None:
            self._tasks.append(loop.create_task(self.prober.run()))
        if self.cluster is not None:  # observability only: never awaits the exchange
            self.cluster.start()
        if self.snapshots is not None:
            run = self.snapshots.run(self.metrics, self.current_runtime)
            self._tasks.append(loop.create_task(run))

    async def reload(self, profiles: Mapping[str, ProfileConfig]) -> None:
        """Swap in a new profile set. In-flight requests finish on the old one."""
        new = self._build_runtime(profiles, generation=self.runtime.generation + 1)
        if self.shared_table is not None:
            self.shared_table.attach(new)
        self.runtime = new
        self.cache.retain((rt.profile, rt.config.chain_id) for rt in new.chains())
        self.clients.reload(profiles)  # new keys and limits at once, with the runtime
        self.ws.recheck_clients()  # open sockets: the new rules, or closed (1008)
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
        """Leave the cluster, drain in-flight requests (bounded), then close everything."""
        if self.cluster is not None:  # first: a long drain must not delay or lose it
            await self.cluster.leave()
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
        await self.clients.aclose()
        if self.cache.redis is not None:
            await self.cache.redis.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.snapshots is not None:
            self.snapshots.write(self.metrics, self.runtime)

    # -- what the HTTP server calls ---------------------------------------------------
    def handle(self, req: HttpRequest) -> Response | Awaitable[Response]:
        method = req.method
        if method == "POST" and (req.path.startswith("/rpc/") or req.path == "/rpc"):
            return self.rpc.handle(req)
        if method == "GET" or method == "HEAD":
            return self.api.route(req)
        if method == "OPTIONS":
            return _CORS_PREFLIGHT
        return self.api.other_method(req)  # 405 with Allow, or 404

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

    # -- info -------------------------------------------------------------------------
    def current_runtime(self) -> Runtime:
        """The runtime serving now (:meth:`reload` swaps it); components get this method."""
        return self.runtime

    def __repr__(self) -> str:
        return f"<LassoApp node={self.node_id} port={self.port} {self.runtime!r}>"
