"""Cluster transport: heartbeats and snapshots over NATS (or an in-process hub).

:class:`ClusterNode` is a background task of the node. Every heartbeat interval it builds
this node's :class:`~lasso.cluster.snapshot.NodeSnapshot`, publishes it on
:data:`SUBJECT` and expires silent members; the subscription feeds every snapshot it
receives into the :class:`~lasso.cluster.view.ClusterView`. Nothing here is on the
request path: routing never reads the view and never waits for the exchange.

The exchange is a narrow seam (:class:`Exchange`) with two implementations:

* :class:`NatsExchange`: nats-py, reconnecting forever in the background (start-up never
  waits for NATS); publishing is skipped while disconnected, since a stale snapshot is
  worth nothing once a fresh one follows;
* :class:`MemoryHub` / :class:`MemoryExchange`: several nodes of one process (``lasso
  demo --nodes N`` without a NATS server, and tests).

The exchange counts as working only while our own heartbeats come back to us (NATS
delivers a publisher's messages to its own subscriptions), which checks the whole round
trip rather than only the TCP connection.

Leaving: :meth:`ClusterNode.leave` stops the heartbeat and publishes a leave notice,
flushed to the server; the others drop the member at once. The app calls it first thing
on shutdown, before draining, so neither a long drain nor the SIGKILL that ends a
Kubernetes grace period can lose it, and no heartbeat can follow it (NATS keeps one
publisher's messages in order). The replacement process, with the same ``node_id`` and the
same or a new instance, joins with its first heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable
from time import monotonic, time
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lasso.cluster.snapshot import SCHEMA, NodeSnapshot, build_snapshot
from lasso.cluster.view import MISSED_HEARTBEATS, ClusterView

if TYPE_CHECKING:
    from lasso.server.metrics import Metrics
    from lasso.server.node import NodeInfo
    from lasso.server.runtime import Runtime

__all__ = [
    "SUBJECT",
    "ClusterNode",
    "Exchange",
    "MemoryExchange",
    "MemoryHub",
    "NatsExchange",
    "redact_url",
]

log = logging.getLogger("lasso.cluster")

SUBJECT = "lasso.cluster.v1.snapshot"
"""The NATS subject every node publishes to and subscribes to."""

DEFAULT_INTERVAL_S = 1.0
Handler = Callable[[bytes], None]


class Exchange(Protocol):
    """Publish/subscribe on one subject; what :class:`ClusterNode` needs of a transport."""

    name: str

    async def run(self, subject: str, handler: Handler) -> None:
        """Connect (retrying as long as it takes) and subscribe ``handler`` to
        ``subject``; return once subscribed. Cancelling it abandons the attempt."""

    def is_connected(self) -> bool: ...

    def max_payload(self) -> int: ...

    async def publish(self, subject: str, data: bytes) -> None: ...

    async def flush(self, timeout_s: float) -> None: ...

    async def close(self) -> None: ...


def redact_url(url: str) -> str:
    """``url`` with any user and password removed (for logs and the API)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, ""))


class NatsExchange:
    """A NATS connection (nats-py) that reconnects forever.

    Args:
        url: one server URL or several separated by commas (``nats://``, ``tls://``,
            ``ws://``, ``wss://``; credentials may be given as ``nats://user:pass@host``).
        reconnect_wait_s: pause between connection attempts to the same server.
        name: the client name shown by the NATS server's monitoring.
    """

    name = "nats"

    def __init__(self, url: str, *, reconnect_wait_s: float = 1.0, name: str = "lasso") -> None:
        self.servers = [u.strip() for u in url.split(",") if u.strip()]
        self.reconnect_wait_s = reconnect_wait_s
        self.client_name = name
        self.last_error: str | None = None
        self._nc: Any = None
        self._closing = False

    def check(self) -> None:
        """Raises ValueError when the URL cannot name a NATS server."""
        if not self.servers:
            raise ValueError("the cluster URL names no server")
        for server in self.servers:
            parts = urlsplit(server)
            if parts.scheme not in ("nats", "tls", "ws", "wss") or not parts.hostname:
                raise ValueError(
                    f"cluster URL {redact_url(server)!r}: expected nats://host:port or tls://"
                )
            try:
                parts.port  # noqa: B018 - raises on a port out of range or not a number
            except ValueError:
                raise ValueError(
                    f"cluster URL {redact_url(server)!r}: the port is not a number 0-65535"
                ) from None

    async def run(self, subject: str, handler: Handler) -> None:
        from nats.aio.client import Client

        self.check()

        async def on_error(exc: Exception) -> None:
            msg = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if msg != self.last_error:
                log.warning(
                    "cluster exchange error",
                    extra={"event": "cluster.exchange_error", "error": msg},
                )
            self.last_error = msg

        async def on_disconnected() -> None:
            if not self._closing:
                log.warning(
                    "cluster exchange disconnected", extra={"event": "cluster.disconnected"}
                )

        async def on_reconnected() -> None:
            self.last_error = None
            log.info("cluster exchange reconnected", extra={"event": "cluster.reconnected"})

        async def on_message(msg: Any) -> None:
            handler(msg.data)

        nc = Client()
        self._nc = nc
        await nc.connect(
            servers=self.servers,
            name=self.client_name,
            allow_reconnect=True,
            max_reconnect_attempts=-1,  # forever, the initial connection included
            reconnect_time_wait=self.reconnect_wait_s,  # type: ignore[arg-type]
            connect_timeout=2,
            ping_interval=5,
            max_outstanding_pings=2,
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
        self.last_error = None
        log.info(
            "cluster exchange connected",
            extra={"event": "cluster.connected", "servers": [redact_url(s) for s in self.servers]},
        )
        await nc.subscribe(subject, cb=on_message)

    def is_connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    def max_payload(self) -> int:
        if self._nc is None:
            return 1 << 20
        return int(self._nc.max_payload or (1 << 20))

    async def publish(self, subject: str, data: bytes) -> None:
        await self._nc.publish(subject, data)

    async def flush(self, timeout_s: float) -> None:
        if self.is_connected():
            await self._nc.flush(timeout=timeout_s)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None and not nc.is_closed:
            self._closing = True
            try:
                await nc.close()
            finally:
                self._closing = False


class MemoryHub:
    """An in-process exchange shared by several nodes of one process.

    For ``lasso demo --nodes N`` without a NATS server, and for tests: delivery is
    asynchronous (next loop iteration), to every subscriber including the publisher, as
    with NATS.
    """

    def __init__(self) -> None:
        self._subs: dict[str, list[Handler]] = {}
        self.up = True  # set false to simulate an outage

    def exchange(self) -> MemoryExchange:
        return MemoryExchange(self)

    def deliver(self, subject: str, data: bytes) -> None:
        if not self.up:
            return
        loop = asyncio.get_running_loop()
        for handler in list(self._subs.get(subject, ())):
            loop.call_soon(handler, data)

    def subscribe(self, subject: str, handler: Handler) -> None:
        self._subs.setdefault(subject, []).append(handler)

    def unsubscribe(self, subject: str, handler: Handler) -> None:
        subs = self._subs.get(subject, [])
        if handler in subs:
            subs.remove(handler)


class MemoryExchange:
    """One node's endpoint on a :class:`MemoryHub`."""

    name = "memory"

    def __init__(self, hub: MemoryHub) -> None:
        self.hub = hub
        self.last_error: str | None = None
        self._subs: list[tuple[str, Handler]] = []

    async def run(self, subject: str, handler: Handler) -> None:
        self.hub.subscribe(subject, handler)
        self._subs.append((subject, handler))

    def is_connected(self) -> bool:
        return self.hub.up

    def max_payload(self) -> int:
        return 1 << 20

    async def publish(self, subject: str, data: bytes) -> None:
        self.hub.deliver(subject, data)

    async def flush(self, timeout_s: float) -> None:
        return None

    async def close(self) -> None:
        for subject, handler in self._subs:
            self.hub.unsubscribe(subject, handler)
        self._subs.clear()


def default_instance_id() -> str:
    """``LASSO_INSTANCE_ID``, else ``<hostname>-<random>`` (a pod name in Kubernetes)."""
    env = os.environ.get("LASSO_INSTANCE_ID")
    if env:
        return env
    return f"{socket.gethostname()[:40]}-{secrets.token_hex(3)}"


def default_interval_s() -> float:
    """``LASSO_CLUSTER_INTERVAL_MS`` in seconds, else 1 s."""
    raw = os.environ.get("LASSO_CLUSTER_INTERVAL_MS")
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = int(raw) / 1000.0
    except ValueError:
        raise ValueError(f"LASSO_CLUSTER_INTERVAL_MS={raw!r} is not an integer") from None
    if not 0.05 <= value <= 60:
        raise ValueError("LASSO_CLUSTER_INTERVAL_MS must be between 50 and 60000")
    return value


class ClusterNode:
    """The cluster background task of one node, and its :class:`ClusterView`.

    Args:
        exchange: where heartbeats go (see :class:`Exchange`).
        node: this node's identity.
        metrics: its request counters; the node's cluster families are registered there
            while it runs.
        runtime: the runtime serving now (reloads swap it), read at every heartbeat.
        interval_s: heartbeat interval (default: ``LASSO_CLUSTER_INTERVAL_MS``, else 1 s).
        instance: process identity within the region (default
            :func:`default_instance_id`).
    """

    def __init__(
        self,
        exchange: Exchange,
        *,
        node: NodeInfo,
        metrics: Metrics,
        runtime: Callable[[], Runtime],
        interval_s: float | None = None,
        instance: str | None = None,
    ) -> None:
        self.exchange = exchange
        self.node = node
        self.metrics = metrics
        self._runtime = runtime
        self.interval_s = interval_s or default_interval_s()
        self.instance = instance or default_instance_id()
        self.seq = 0
        self.view = ClusterView(
            self.local_snapshot,
            node_id=node.node_id,
            instance=self.instance,
            exchange=exchange.name,
            interval_s=self.interval_s,
        )
        self.sent = 0
        self.received = 0
        self.invalid = 0
        self.last_echo: float | None = None
        self._task: asyncio.Task[None] | None = None
        self._connect: asyncio.Task[None] | None = None
        self._subscribed = False
        self.left = False

    @classmethod
    def over_nats(
        cls,
        url: str,
        *,
        node: NodeInfo,
        metrics: Metrics,
        runtime: Callable[[], Runtime],
        interval_s: float | None = None,
        instance: str | None = None,
    ) -> ClusterNode:
        """A node on the NATS server(s) of ``url`` (``LASSO_CLUSTER_URL``); the other
        arguments are the constructor's."""
        exchange = NatsExchange(url, name=f"lasso-{node.node_id}")
        cluster = cls(
            exchange,
            node=node,
            metrics=metrics,
            runtime=runtime,
            interval_s=interval_s,
            instance=instance,
        )
        exchange.reconnect_wait_s = max(0.1, min(2.0, cluster.interval_s))
        return cluster

    def local_snapshot(self) -> NodeSnapshot:
        return build_snapshot(
            self.node,
            self.metrics,
            self._runtime(),
            instance=self.instance,
            seq=self.seq,
            interval_s=self.interval_s,
            now=monotonic(),
            wall=time(),
        )

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting and heartbeating in the background; returns at once."""
        loop = asyncio.get_running_loop()
        self.metrics.register(self.collect)
        self._connect = loop.create_task(self._connect_forever())
        self._task = loop.create_task(self._heartbeat())

    async def leave(self) -> bool:
        """Stop heartbeating and tell the others this process is going (idempotent).

        The view keeps receiving the others' heartbeats. Returns whether the notice
        reached the server (else the others see this process go silent).
        """
        if self.left:
            return False
        self.left = True
        await self._cancel_tasks()
        if not (self._subscribed and self.exchange.is_connected()):
            return False
        try:
            await self.exchange.publish(SUBJECT, self._leave_message())
            await asyncio.wait_for(self.exchange.flush(1.0), 2.0)
        except Exception as exc:  # the others notice the silence anyway
            log.warning(
                "cluster leave notice not sent",
                extra={"event": "cluster.leave_failed", "error": repr(exc)},
            )
            return False
        log.info("left the cluster", extra={"event": "cluster.left", "instance": self.instance})
        return True

    async def _cancel_tasks(self) -> None:
        for task in (self._task, self._connect):
            if task is not None:
                task.cancel()
        for task in (self._task, self._connect):
            if task is not None:
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass

    async def stop(self, *, leave: bool = True) -> None:
        """Stop heartbeating and close the exchange; with ``leave`` (unless
        :meth:`leave` already ran) tell the others first."""
        if leave:
            await self.leave()
        else:
            await self._cancel_tasks()
        try:
            await asyncio.wait_for(self.exchange.close(), 2.0)
        except Exception as exc:
            log.debug("exchange close failed", extra={"error": repr(exc)})
        self.metrics.unregister(self.collect)

    async def _connect_forever(self) -> None:
        wait = max(0.1, min(2.0, self.interval_s))
        while True:
            try:
                await self.exchange.run(SUBJECT, self._on_message)
                self._subscribed = True
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bad URL or a refused auth: keep trying, loudly
                msg = f"{type(exc).__name__}: {exc}"
                if msg != self.view.last_error:
                    log.error(
                        "cluster exchange unavailable",
                        extra={"event": "cluster.connect_failed", "error": msg},
                    )
                self.view.last_error = msg
                await self.exchange.close()
                await asyncio.sleep(wait * 5)

    async def _heartbeat(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad tick end the heartbeat
                log.exception("cluster heartbeat failed", extra={"event": "cluster.tick_failed"})
            await asyncio.sleep(self.interval_s)

    async def tick(self) -> None:
        """One heartbeat: publish our snapshot, refresh the connection state, expire."""
        self.seq += 1
        view = self.view
        if self._subscribed and self.exchange.is_connected():
            data = self.encode(self.local_snapshot())
            await self.exchange.publish(SUBJECT, data)
            self.sent += 1
        echo_ok = (
            self.last_echo is not None
            and monotonic() - self.last_echo < MISSED_HEARTBEATS * self.interval_s
        )
        self._set_connected(self._subscribed and self.exchange.is_connected() and echo_ok)
        err = getattr(self.exchange, "last_error", None)
        if err:
            view.last_error = err
        for identity in view.expire():
            log.info(
                "cluster member forgotten",
                extra={"event": "cluster.forgotten", "member": identity},
            )

    def _set_connected(self, connected: bool) -> None:
        if connected != self.view.connected:
            log.info(
                "cluster view " + ("aggregating" if connected else "local only (degraded)"),
                extra={"event": "cluster.view_connected", "connected": connected},
            )
            self.view.connected = connected

    def encode(self, snap: NodeSnapshot) -> bytes:
        """The wire bytes of ``snap``, without method rows if too large for the exchange."""
        data = orjson.dumps(snap.to_wire())
        if len(data) > self.exchange.max_payload():
            data = orjson.dumps(snap.without_methods().to_wire())
        return data

    def _leave_message(self) -> bytes:
        return orjson.dumps(
            {"v": SCHEMA, "type": "leave", "node_id": self.node.node_id, "instance": self.instance}
        )

    def _on_message(self, data: bytes) -> None:
        try:
            raw = orjson.loads(data)
            kind = raw.get("type") if isinstance(raw, dict) else None
            if kind == "leave":
                node_id, instance = str(raw.get("node_id")), str(raw.get("instance"))
                if instance != self.instance and self.view.leave(node_id, instance):
                    log.info(
                        "cluster member left",
                        extra={"event": "cluster.member_left", "member": f"{node_id}/{instance}"},
                    )
                return
            if isinstance(raw, dict) and raw.get("instance") == self.instance:
                if raw.get("node_id") == self.node.node_id:
                    self.last_echo = monotonic()  # the round trip works
                    self._set_connected(self._subscribed)
                    return
            snap = NodeSnapshot.from_wire(raw)
        except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
            self.invalid += 1
            if self.invalid == 1 or self.invalid % 1000 == 0:
                log.warning(
                    "invalid cluster message dropped",
                    extra={
                        "event": "cluster.invalid_message",
                        "count": self.invalid,
                        "error": str(exc)[:200],
                    },
                )
            return
        self.received += 1
        self.view.observe(snap)

    # -- metrics -------------------------------------------------------------------------
    def collect(self, node: str, now: float) -> Iterable[Metric]:
        """Prometheus families (registered with the node's metrics at start)."""
        del now
        view = self.view
        nodes = GaugeMetricFamily(
            "lasso_cluster_nodes",
            "Cluster members seen by this node, by region and status",
            labels=["node_id", "region", "status"],
        )
        by = view.region_counts()
        for region in view.regions():
            for status in ("responding", "unresponsive"):
                nodes.add_metric([node, region, status], float(by.get((region, status), 0)))
        yield nodes
        connected = GaugeMetricFamily(
            "lasso_cluster_connected",
            "1 while the cluster exchange works (our heartbeats come back), else 0",
            labels=["node_id", "exchange"],
        )
        connected.add_metric([node, self.exchange.name], 1.0 if view.connected else 0.0)
        yield connected
        messages = CounterMetricFamily(
            "lasso_cluster_messages",
            "Cluster heartbeat messages: sent, received from others, invalid (dropped)",
            labels=["node_id", "direction"],
        )
        messages.add_metric([node, "sent"], self.sent)
        messages.add_metric([node, "received"], self.received)
        messages.add_metric([node, "invalid"], self.invalid)
        yield messages

    def __repr__(self) -> str:
        view = self.view
        c = view.counts()
        return (
            f"<ClusterNode {self.node.node_id}/{self.instance} exchange={self.exchange.name} "
            f"connected={self.view.connected} responding={c['responding']} "
            f"unresponsive={c['unresponsive']} departed={view.departed}>"
        )
