"""The dashboard's live stream: one shared producer, many bounded viewers.

Every open dashboard is a :class:`Viewer` of a :class:`Feed` (one per ``(profile, node)``
being watched). One task per node, running only while someone watches, does all the work:

* every ``flush_s`` (200 ms) it drains the events the :class:`~lasso.server.events.EventBus`
  handed over (sampled routing decisions, failovers, errors, breaker transitions), keeps
  the last ``max_events`` per profile, encodes them once and hands the same bytes to each
  viewer of that profile;
* every ``tick_s`` (1 s) it builds each feed's snapshot once (:mod:`lasso.dashboard.views`),
  encodes it once and hands it to the feed's viewers.

A viewer's queue holds at most ``queue_len`` messages and drops the oldest, so a browser
that stops reading costs a bounded amount of memory, and the HTTP server's backpressure
(:class:`~lasso.net.http_server.StreamingResponse`) keeps the socket buffer bounded too.
With no viewer the hub is not subscribed to the event bus at all: the request path pays
nothing for a dashboard nobody looks at.

Messages are server-sent events (``event: <name>`` + one ``data:`` line of JSON):
``hello`` once (profiles, cluster, latency history, recent events), ``snapshot`` every
tick, ``events`` when there are some.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from time import monotonic, time
from typing import TYPE_CHECKING, Any

import orjson

from lasso.dashboard import views
from lasso.dashboard.views import HISTORY_POINTS, RateTracker

if TYPE_CHECKING:
    from lasso.server.events import EventBus
    from lasso.server.metrics import Metrics
    from lasso.server.node import ClusterStatus, NodeInfo
    from lasso.server.runtime import Runtime

__all__ = [
    "DashboardHub",
    "Feed",
    "TooManyViewers",
    "UnknownNode",
    "UnknownProfile",
    "Viewer",
    "ViewerStream",
]

log = logging.getLogger("lasso.dashboard")

TICK_S = 1.0
FLUSH_S = 0.2
MAX_EVENTS_PER_FLUSH = 100
QUEUE_LEN = 64
MAX_VIEWERS = 64
RECENT_EVENTS = 50


class UnknownProfile(LookupError):
    """The stream names a profile this node does not serve."""


class UnknownNode(LookupError):
    """The stream names a node the cluster view does not know."""


class TooManyViewers(RuntimeError):
    """The node already serves :data:`MAX_VIEWERS` streams."""


def _without(doc: Any, key: str) -> Any:
    if isinstance(doc, dict) and key in doc:
        return {k: v for k, v in doc.items() if k != key}
    return doc


def sse(event: str, doc: Any) -> bytes:
    """One server-sent event: ``event:`` line, one JSON ``data:`` line, blank line."""
    return b"event: %s\ndata: %s\n\n" % (event.encode(), orjson.dumps(doc, default=str))


class Viewer:
    """One open stream: a bounded queue of encoded messages and a wake-up flag."""

    __slots__ = ("feed", "queue", "wake", "dropped", "closed", "_hub")

    def __init__(self, hub: DashboardHub, feed: Feed, queue_len: int) -> None:
        self._hub = hub
        self.feed = feed
        self.queue: deque[bytes] = deque(maxlen=queue_len)
        self.wake = asyncio.Event()
        self.dropped = 0
        self.closed = False

    def push(self, data: bytes) -> None:
        """Queue ``data``; the oldest message goes when the queue is full."""
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(data)
        self.wake.set()

    def stream(self) -> ViewerStream:
        """The bytes to send, as they come (see :class:`ViewerStream`)."""
        return ViewerStream(self)

    def close(self) -> None:
        """Leave the hub (idempotent); a waiting stream ends."""
        self._hub.close(self)

    def __repr__(self) -> str:
        return f"<Viewer {self.feed.key} queued={len(self.queue)} dropped={self.dropped}>"


class ViewerStream:
    """Async iterator over a viewer's queued messages, joined per wake-up.

    ``aclose`` leaves the hub even if iteration never started (a client that went away
    before its stream began), so a viewer cannot leak.
    """

    __slots__ = ("viewer",)

    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer

    def __aiter__(self) -> ViewerStream:
        return self

    async def __anext__(self) -> bytes:
        v = self.viewer
        while not v.queue:
            if v.closed:
                raise StopAsyncIteration
            v.wake.clear()
            await v.wake.wait()
        out = b"".join(v.queue)
        v.queue.clear()
        return out

    async def aclose(self) -> None:
        self.viewer.close()


class Feed:
    """What one ``(profile, node)`` stream shows: its viewers, rates and chart history.

    ``node`` is ``None`` for the default view (the cluster aggregate when clustered, this
    node otherwise).
    """

    __slots__ = ("profile", "node", "viewers", "tracker", "history", "last", "key")

    def __init__(self, profile: str, node: str | None) -> None:
        self.profile = profile
        self.node = node
        self.key = (profile, node)
        self.viewers: set[Viewer] = set()
        self.tracker = RateTracker()
        self.history: dict[tuple[str, str], deque[tuple[float, float | None]]] = {}
        self.last: bytes | None = None

    def record(self, doc: dict[str, Any]) -> None:
        """Append this tick's latency points to the chart history."""
        ts = doc["ts"]
        live = set()
        for chain in doc["chains"]:
            for p in chain["providers"]:
                key = (chain["chain"], p["id"])
                live.add(key)
                ring = self.history.get(key)
                if ring is None:
                    ring = self.history[key] = deque(maxlen=HISTORY_POINTS)
                ring.append((ts, p["lat_ms"]))
        for key in [k for k in self.history if k not in live]:
            del self.history[key]

    def history_doc(self) -> dict[str, dict[str, list[tuple[float, float | None]]]]:
        out: dict[str, dict[str, list[tuple[float, float | None]]]] = {}
        for (chain, pid), ring in self.history.items():
            out.setdefault(chain, {})[pid] = list(ring)
        return out

    def __repr__(self) -> str:
        return f"<Feed {self.profile}/{self.node or '*'} viewers={len(self.viewers)}>"


class DashboardHub:
    """Shared producer of the dashboard stream for one node.

    Args:
        node: this node's identity.
        runtime: the runtime serving now (reloads swap it).
        events: the node's event bus (subscribed to only while someone watches).
        metrics: the node's request counters (the page's request figures).
        cluster: the cluster status (:class:`~lasso.server.node.Standalone` alone).
        tick_s: snapshot period.
        flush_s: event batch period.
        queue_len: messages kept per viewer before the oldest is dropped.
        max_viewers: streams served at once; more are refused.
    """

    def __init__(
        self,
        *,
        node: NodeInfo,
        runtime: Callable[[], Runtime],
        events: EventBus,
        metrics: Metrics,
        cluster: ClusterStatus,
        tick_s: float = TICK_S,
        flush_s: float = FLUSH_S,
        queue_len: int = QUEUE_LEN,
        max_viewers: int = MAX_VIEWERS,
        max_events: int = MAX_EVENTS_PER_FLUSH,
    ) -> None:
        self.node = node
        self.runtime = runtime
        self.events = events
        self.metrics = metrics
        self.cluster_status = cluster
        self.tick_s = tick_s
        self.flush_s = flush_s
        self.queue_len = queue_len
        self.max_viewers = max_viewers
        self.max_events = max_events
        self.feeds: dict[tuple[str, str | None], Feed] = {}
        self.viewers = 0
        self.ticks = 0
        self.events_dropped = 0
        self._pending: deque[dict[str, Any]] = deque(maxlen=4 * max_events)
        self._unsubscribe: Any = None
        self._task: asyncio.Task[None] | None = None
        self._cluster_cache: dict[tuple[str, str, str | None], tuple[float, Any]] = {}
        self._last_cluster_error: str | None = None

    # -- viewers ------------------------------------------------------------------------
    def open(self, profile: str | None, node: str | None) -> Viewer:
        """A new viewer of ``profile`` (default profile when empty) as seen from ``node``
        (``None``: the default view). Its queue starts with ``hello`` and a snapshot.

        Raises:
            UnknownProfile, UnknownNode, TooManyViewers.
        """
        slug, node = self.resolve(profile, node)
        if self.viewers >= self.max_viewers:
            raise TooManyViewers(self.max_viewers)
        feed = self.feeds.get((slug, node))
        if feed is None:
            feed = self.feeds[(slug, node)] = Feed(slug, node)
        viewer = Viewer(self, feed, self.queue_len)
        feed.viewers.add(viewer)
        self.viewers += 1
        try:
            if feed.last is None:
                feed.last = self._snapshot_bytes(feed, monotonic(), time())
            viewer.push(b"retry: 2000\n\n" + sse("hello", self._hello(feed)) + feed.last)
        except BaseException:
            self.close(viewer)
            raise
        if self._unsubscribe is None:
            self._unsubscribe = self.events.subscribe(self._on_event)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return viewer

    def resolve(self, profile: str | None, node: str | None) -> tuple[str, str | None]:
        """The feed key of a stream request: the profile's slug and the node to show
        (``None`` for the default view).

        Raises:
            UnknownProfile, UnknownNode.
        """
        runtime = self.runtime()
        prof = runtime.profile(profile)
        if prof is None and profile is None and runtime.profiles:
            prof = runtime.profiles[min(runtime.profiles)]  # no default profile: the first
        if prof is None:
            raise UnknownProfile(profile)
        if node is not None and node != self.node.node_id and node not in self.node_ids():
            raise UnknownNode(node)
        if node == self.node.node_id and not self._clustered():
            node = None
        return prof.config.slug, node

    def close(self, viewer: Viewer) -> None:
        """Forget ``viewer``; the last one out stops the producer and unsubscribes."""
        feed = viewer.feed
        if viewer not in feed.viewers:
            return
        feed.viewers.discard(viewer)
        viewer.closed = True
        viewer.wake.set()  # a waiting stream ends
        self.viewers -= 1
        if not feed.viewers:
            feed.last = None  # keep the history and rates; rebuild the snapshot on return
            if self.runtime().profile(feed.profile) is None:  # removed by a reload
                del self.feeds[feed.key]
        if self.viewers == 0:
            if self._unsubscribe is not None:
                self._unsubscribe()
                self._unsubscribe = None
            self._pending.clear()
            task, self._task = self._task, None
            if task is not None and task is not asyncio.current_task():
                task.cancel()

    # -- the producer -------------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        # Called synchronously from the request path: one append, nothing else.
        self._pending.append(event)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.tick_s
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                self.flush_events()
                if loop.time() >= next_tick:
                    next_tick += self.tick_s
                    if next_tick < loop.time():  # fell behind (a stalled loop): resync
                        next_tick = loop.time() + self.tick_s
                    self.tick()
            except Exception:  # the dashboard must never take the node down
                log.exception("dashboard tick failed", extra={"event": "dashboard.error"})

    def flush_events(self) -> None:
        """Send the pending events, grouped by profile, at most ``max_events`` each."""
        if not self._pending:
            return
        pending = list(self._pending)
        self._pending.clear()
        by_profile: dict[str | None, list[dict[str, Any]]] = {}
        for event in pending:
            by_profile.setdefault(event.get("profile"), []).append(event)
        # Events without a profile (a shared upstream's WebSocket) go to every profile.
        shared = by_profile.pop(None, [])
        if shared:
            for feed in self.feeds.values():
                if feed.viewers:
                    by_profile.setdefault(feed.profile, [])
            for key in [k for k in by_profile if k is not None]:
                by_profile[key] = sorted(
                    by_profile[key] + shared, key=lambda e: float(e.get("ts") or 0.0)
                )
        local = self.node.node_id
        for slug, events in by_profile.items():
            dropped = max(0, len(events) - self.max_events)
            self.events_dropped += dropped
            data: bytes | None = None
            for feed in self.feeds.values():
                if feed.profile != slug or not feed.viewers or feed.node not in (None, local):
                    continue
                if data is None:
                    data = sse("events", {"events": events[-self.max_events :], "dropped": dropped})
                for viewer in feed.viewers:
                    viewer.push(data)

    def tick(self) -> None:
        """Build, encode and send one snapshot per watched feed."""
        self.ticks += 1
        t, wall = monotonic(), time()
        for feed in list(self.feeds.values()):
            if not feed.viewers:
                continue
            feed.last = self._snapshot_bytes(feed, t, wall)
            for viewer in feed.viewers:
                viewer.push(feed.last)

    # -- building -----------------------------------------------------------------------
    def _snapshot_bytes(self, feed: Feed, t: float, wall: float) -> bytes:
        doc = self.snapshot(feed, t, wall)
        feed.record(doc)
        return sse("snapshot", doc)

    def snapshot(self, feed: Feed, t: float, wall: float) -> dict[str, Any]:
        """The page's data for ``feed`` at this instant (records into its rate tracker).

        Standalone, and for this node of a cluster, figures come from this node's routers.
        The default view of a clustered node is the cluster aggregate and ``node=<id>``
        drills into one region, both from the cluster view; if that fails the page gets
        this node's figures and a ``cluster_error``.
        """
        me = self.node.node_id
        prof = self.runtime().profile(feed.profile)
        cluster = self._cluster()
        doc: dict[str, Any] = {
            "ts": round(wall, 3),
            "node_id": me,
            "profile": feed.profile,
            "node": feed.node,
            "scope": "node",
            "profiles": self._profiles(),
            "cluster": cluster,
            "chains": [],
            "viewers": self.viewers,
            "sampled_out": self.events.sampled_out,
        }
        if prof is None:
            doc["error"] = f"profile {feed.profile!r} is no longer served"
            return doc
        clustered = bool(cluster["enabled"])
        remote = feed.node is not None and feed.node != me
        use_cluster = clustered and (remote or feed.node is None)
        if use_cluster:
            doc["scope"] = "cluster" if feed.node is None else "node"
        chains = []
        for key, rt in prof.chains.items():
            mdoc = self._cluster_doc(feed.profile, key, feed.node, t) if use_cluster else None
            if isinstance(mdoc, dict) and "providers" in mdoc:
                snap, counters = views.from_cluster_document(mdoc)
                snap["block_time_ms"] = rt.router.state.block_time_ms
                view_doc = views.chain_view(
                    snap,
                    config=rt.config,
                    counters=counters,
                    tracker=feed.tracker,
                    t=t,
                    profile=feed.profile,
                    requests=_without(mdoc.get("chain_performance"), "by_node"),
                )
                view_doc["coverage"] = mdoc.get("coverage")
                chains.append(view_doc)
                continue
            if use_cluster:
                doc["cluster_error"] = str(
                    (mdoc or {}).get("error") or self._last_cluster_error or "no cluster data"
                )
                doc["scope"] = "node"  # fell back to this node's own figures
            requests = self.metrics.chain_summary(rt.profile, key)
            chains.append(views.local_chain_view(rt, tracker=feed.tracker, t=t, requests=requests))
        doc["chains"] = chains
        if clustered:
            aggregates = [self._cluster_doc(feed.profile, key, None, t) for key in prof.chains]
            regions = [str(n.get("node_id")) for n in cluster["nodes"]]
            doc["regions"] = views.fastest_by_region(
                [d for d in aggregates if isinstance(d, dict) and "providers" in d],
                dict.fromkeys(regions),
            )
        return doc

    def _cluster_doc(self, slug: str, chain: str, node: str | None, t: float) -> Any:
        """The cluster status' ``chain_metrics``, at most once per tick per (profile, chain,
        node): feeds of one profile share it."""
        key = (slug, chain, node)
        cached = self._cluster_cache.get(key)
        if cached is not None and cached[0] == t:
            return cached[1]
        try:
            doc = self.cluster_status.chain_metrics(slug, chain, node=node)
        except Exception as exc:  # another subsystem: the page falls back to local data
            self._last_cluster_error = f"{type(exc).__name__}: {exc}"
            log.warning(
                "cluster metrics unavailable for the dashboard",
                extra={"event": "dashboard.cluster_error", "error": self._last_cluster_error},
            )
            doc = None
        if len(self._cluster_cache) > 256:
            self._cluster_cache.clear()
        self._cluster_cache[key] = (t, doc)
        return doc

    def _hello(self, feed: Feed) -> dict[str, Any]:
        node, events = self.node, self.events
        recent = [
            e
            for e in list(events.decisions)[-RECENT_EVENTS:]
            + list(events.state_events)[-RECENT_EVENTS:]
            if e.get("profile") in (feed.profile, None)
        ]
        if feed.node not in (None, node.node_id):
            recent = []  # another region's view: this node's events do not belong there
        recent.sort(key=lambda e: e.get("ts", 0.0))
        return {
            "node_id": node.node_id,
            "version": node.version,
            "uptime_s": int(node.uptime()),
            "profile": feed.profile,
            "node": feed.node,
            "tick_s": self.tick_s,
            "flush_s": self.flush_s,
            "history": feed.history_doc(),
            "events": recent[-RECENT_EVENTS:],
        }

    def _profiles(self) -> list[dict[str, Any]]:
        return [
            {"slug": slug, "name": p.config.name, "chains": list(p.chains)}
            for slug, p in self.runtime().profiles.items()
        ]

    def _clustered(self) -> bool:
        return bool(self._cluster()["enabled"])

    def _cluster(self) -> dict[str, Any]:
        summary = dict(self.cluster_status.summary())
        summary["nodes"] = self.cluster_status.nodes()
        summary.setdefault("enabled", False)
        return summary

    def node_ids(self) -> set[str]:
        return {str(n.get("node_id")) for n in self.cluster_status.nodes()}

    def __repr__(self) -> str:
        return (
            f"<DashboardHub feeds={len(self.feeds)} viewers={self.viewers} ticks={self.ticks}"
            f" events_dropped={self.events_dropped}>"
        )
