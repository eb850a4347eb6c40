"""JSON-RPC over WebSocket for clients: ``/ws/rpc/...`` (CONTRACT §4, reference §1.3, §7.5).

Route grammar (the HTTP one under ``/ws/rpc/``, :func:`lasso.server.rpc.parse_rpc_path`)::

    /ws/rpc[/profile/<profile>]/<chain>
    /ws/rpc[/profile/<profile>]/<strategy>/<chain>
    /ws/rpc[/profile/<profile>]/provider/<provider_id>/<chain>
    /ws/rpc[/profile/<profile>]/<chain>/<provider_id>

plus the query parameters ``strategy`` and ``provider_id``. An unknown route, profile,
chain or provider rejects the upgrade with the HTTP status and JSON-RPC error body the
HTTP endpoint would answer (404/400), a malformed handshake with 400/405/426.

Each text (or binary) message is one JSON-RPC request or a batch:

* not JSON → ``-32700``; not an object or array, bad ``id``/``jsonrpc``/``method`` →
  ``-32600``; ``eth_chainId`` is answered locally, signing methods with ``-32601``;
* every other request runs through the response cache and coalescing
  (:meth:`lasso.server.cache.ResponseCache.execute`) and the pipeline exactly like an
  HTTP one (same cache, strategies, failover, per-method deadlines), concurrently: answers go
  out as they finish, possibly out of order, as the upstream bytes with the client's id
  restored. Batches (up to 50 items, 4 in flight) are answered in one array frame;
* ``eth_subscribe``/``eth_unsubscribe`` go to ``app.subscriptions`` (the subscription
  manager); they cannot be batched.

Per connection at most 32 requests (a batch counts once) and 32 MiB of request bytes are
in flight, and 128 subscriptions exist or are being set up; beyond, ``-32008`` "Local
request capacity unavailable" / "Subscription capacity unavailable". Messages above the
node's body limit (8 MB) close the connection with 1009; the transport rules (keepalive,
slow clients) are in :mod:`lasso.net.ws`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from lasso.config import canonical_strategy
from lasso.kernel.methods import WS_ONLY_METHODS
from lasso.net.http_server import HttpRequest, Response, encode_response
from lasso.net.ws import WsServerConnection, accept_handshake
from lasso.server.rpc import MAX_BATCH, error_body, finish_item, parse_rpc_path
from lasso.server.runtime import ChainRuntime

if TYPE_CHECKING:
    from lasso.server.app import LassoApp

__all__ = ["WsClient", "WsRpcEndpoint", "MAX_INFLIGHT", "MAX_SUBSCRIPTIONS"]

log = logging.getLogger("lasso.ws")

MAX_INFLIGHT = 32
MAX_INFLIGHT_BYTES = 32 * 1024 * 1024
MAX_SUBSCRIPTIONS = 128
MAX_HELD = 1024
"""Notifications held per connection while a subscribe answer is still on its way."""

_PARSE_ERROR = error_body(-32700, "Parse error: Invalid JSON")
_NOT_REQUEST = error_body(-32600, "Invalid Request: expected a JSON-RPC object or array")
_EMPTY_BATCH = error_body(-32600, "Invalid Request: empty batch")
_BATCH_TOO_LARGE = error_body(-32600, f"Invalid Request: batch too large (max {MAX_BATCH})")
_BATCHED_SUBSCRIPTION = error_body(
    -32600, "Invalid Request: eth_subscribe and eth_unsubscribe cannot be batched"
)
_CAPACITY = "Local request capacity unavailable"
_SUB_CAPACITY = "Subscription capacity unavailable"
_NOTIFICATION = (
    b'{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":%s,"result":%s}}'
)
_UNSET = object()


class WsRpcEndpoint:
    """Accepts ``/ws/rpc/...`` upgrades and owns the live client connections.

    The limits are attributes so that an operator (or a test) can tune them before
    connections arrive.
    """

    def __init__(self, app: LassoApp) -> None:
        self.app = app
        self.clients: set[WsClient] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.max_message = app.settings.max_body
        self.max_inflight = MAX_INFLIGHT
        self.max_inflight_bytes = MAX_INFLIGHT_BYTES
        self.max_subscriptions = MAX_SUBSCRIPTIONS
        self.max_send_buffer = 4 * 1024 * 1024
        self.ping_interval = 30.0
        self.pong_timeout = 5.0
        self.max_missed_pongs = 2
        self.close_timeout = 2.0
        self.accepted = 0
        self.rejected = 0
        self._ids = itertools.count(1)
        self._enc_obj: Any = _UNSET
        self._enc_bytes = b""

    def __repr__(self) -> str:
        return (
            f"<WsRpcEndpoint clients={len(self.clients)} tasks={len(self.tasks)}"
            f" accepted={self.accepted} rejected={self.rejected}>"
        )

    # -- upgrade ------------------------------------------------------------------------
    def upgrade(
        self, req: HttpRequest, transport: asyncio.Transport, rest: bytes
    ) -> asyncio.Protocol | None:
        """Resolve the route, complete the handshake and start serving frames.

        Returns the connection protocol, or None after writing a rejection.
        """
        route = parse_rpc_path(req.path, "/ws/rpc/")
        if route is None:
            self._reject(transport, 404, -32601, f"No WebSocket JSON-RPC route at {req.path}")
            return None
        runtime = self.app.runtime
        profile = runtime.profile(route.profile)
        if profile is None:
            self._reject(
                transport,
                404,
                -32000,
                f"Profile '{route.profile or runtime.default_profile}' not found",
                {"error_type": "profile_not_found", "available_profiles": sorted(runtime.profiles)},
            )
            return None
        rt = profile.resolve(route.chain)
        if rt is None:
            self._reject(
                transport,
                400,
                -32602,
                f"Unsupported chain: Unknown chain '{route.chain}' "
                f"in profile '{profile.config.slug}'",
                {"available_chains": sorted(profile.chains)},
            )
            return None
        strategy = route.strategy or rt.config.default_strategy
        provider_id = route.provider_id
        if req.query:
            qs = parse_qs(req.query)
            if provider_id is None:
                provider_id = (qs.get("provider_id") or qs.get("provider_override") or [""])[0]
                provider_id = provider_id or None
            if route.strategy is None:
                strategy = canonical_strategy((qs.get("strategy") or [""])[0]) or strategy
        if provider_id is not None and rt.config.provider(provider_id) is None:
            self._reject(
                transport,
                400,
                -32602,
                f"Provider '{provider_id}' not found for chain '{rt.key}'",
                {"available_providers": [p.id for p in rt.config.providers]},
            )
            return None
        ok, answer = accept_handshake(req)
        transport.write(answer)
        if not ok:
            self.rejected += 1
            transport.close()
            return None
        self.accepted += 1
        conn = WsServerConnection(
            transport,
            self.app.loop,
            max_message=self.max_message,
            ping_interval=self.ping_interval,
            pong_timeout=self.pong_timeout,
            max_missed_pongs=self.max_missed_pongs,
            max_send_buffer=self.max_send_buffer,
            close_timeout=self.close_timeout,
        )
        client = WsClient(self, conn, rt, strategy, provider_id, req.path)
        self.clients.add(client)
        self.app.metrics.ws_connections += 1
        conn.start(client, rest)
        return conn

    def _reject(
        self, transport: asyncio.Transport, status: int, code: int, message: str, data: Any = None
    ) -> None:
        """Answer an upgrade we will not accept, as the HTTP endpoint would, and close."""
        self.rejected += 1
        body = error_body(code, message, b"null", data)
        transport.write(encode_response(Response(status, body), False))
        transport.close()

    # -- shared helpers -----------------------------------------------------------------
    def encode_result(self, result: Any) -> bytes:
        """``orjson.dumps(result)``, encoded once per fan-out: the last object is
        remembered by identity until the loop's next iteration, so one event sent to many
        clients in one go is encoded once (and an object mutated later is encoded again).
        """
        if result is self._enc_obj:
            return self._enc_bytes
        data = orjson.dumps(result)
        if self._enc_obj is _UNSET:
            self.app.loop.call_soon(self._forget_encoding)
        self._enc_obj = result
        self._enc_bytes = data
        return data

    def _forget_encoding(self) -> None:
        self._enc_obj = _UNSET
        self._enc_bytes = b""

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self.app.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def aclose(self, timeout: float = 1.0) -> None:
        """Close every client (1001 "going away"), wait for them (bounded), stop tasks."""
        for client in list(self.clients):
            client.conn.close(1001, "server shutting down")
        deadline = monotonic() + timeout
        while self.clients and monotonic() < deadline:
            await asyncio.sleep(0.01)  # bounded shutdown poll, not a test wait
        for client in list(self.clients):
            client.conn.abort()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


class WsClient:
    """One client connection, bound to one chain (and maybe one provider).

    Attributes:
        id: unique per node.
        rt: the chain this socket is bound to (of the runtime current at connect time).
        provider_id: the provider override of the path, or None.
        strategy: the routing strategy of the path.
    """

    __slots__ = (
        "id",
        "rt",
        "provider_id",
        "strategy",
        "path",
        "endpoint",
        "app",
        "conn",
        "inflight",
        "inflight_bytes",
        "sub_ids",
        "pending_subs",
        "closed",
        "_held",
    )

    def __init__(
        self,
        endpoint: WsRpcEndpoint,
        conn: WsServerConnection,
        rt: ChainRuntime,
        strategy: str,
        provider_id: str | None,
        path: str,
    ) -> None:
        self.id = next(endpoint._ids)
        self.endpoint = endpoint
        self.app = endpoint.app
        self.conn = conn
        self.rt = rt
        self.strategy = strategy
        self.provider_id = provider_id
        self.path = path
        self.inflight = 0
        self.inflight_bytes = 0
        self.sub_ids: set[str] = set()
        self.pending_subs = 0
        self.closed = False
        self._held: deque[tuple[str, bytes]] = deque()

    def __repr__(self) -> str:
        return (
            f"<WsClient {self.id} {self.rt.profile}/{self.rt.key} inflight={self.inflight}"
            f" subscriptions={len(self.sub_ids)} closed={self.closed}>"
        )

    # -- the subscription manager's side ------------------------------------------------
    def send_notification(self, sub_id: str, result: Any) -> bool:
        """Queue an ``eth_subscription`` notification for ``sub_id``.

        Returns False if the client is gone or was just dropped as too slow (more than
        ``max_send_buffer`` bytes waiting for it; see :mod:`lasso.net.ws`). Notifications
        for a subscription whose ``eth_subscribe`` answer has not been sent yet are held
        and sent right after it.
        """
        if self.closed:
            return False
        frame = _NOTIFICATION % (orjson.dumps(sub_id), self.endpoint.encode_result(result))
        if self.pending_subs and sub_id not in self.sub_ids:
            if len(self._held) >= MAX_HELD:
                return False
            self._held.append((sub_id, frame))
            return True
        return self.conn.push_text(frame)

    def send_raw(self, frame: bytes) -> bool:
        """Queue a complete JSON text frame (same policy as :meth:`send_notification`)."""
        if self.closed:
            return False
        return self.conn.push_text(frame)

    # -- WsHandler ----------------------------------------------------------------------
    def on_message(self, data: bytes) -> None:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.conn.send_text(_PARSE_ERROR)
            return
        if type(doc) is dict:
            self._request(doc, len(data))
        elif type(doc) is list:
            self._batch(doc, len(data))
        else:
            self.conn.send_text(_NOT_REQUEST)

    def on_close(self, code: int, reason: str) -> None:
        self.closed = True
        self._held.clear()
        endpoint = self.endpoint
        if self in endpoint.clients:
            endpoint.clients.discard(self)
            self.app.metrics.ws_connections -= 1
        manager = getattr(self.app, "subscriptions", None)
        if manager is not None:
            try:
                manager.drop_client(self)
            except Exception:
                log.exception("subscription cleanup failed", extra={"event": "ws.drop_failed"})

    # -- requests -----------------------------------------------------------------------
    def _request(self, doc: dict[str, Any], size: int) -> None:
        item = self.app.rpc.validate_item(doc, self.rt, self.provider_id, self.path)
        method = item.method
        if method in WS_ONLY_METHODS:
            if method == "eth_subscribe":
                self._subscribe(item)
            else:
                self._unsubscribe(item)
            return
        if item.early is not None:
            if not (item.notification and item.early_status == 200):
                self.conn.send_text(item.early)
            return
        if not self._admit(size):
            if not item.notification:
                self.conn.send_text(error_body(-32008, _CAPACITY, item.id_json))
            return
        self.endpoint.spawn(self._unary(item, size))

    def _admit(self, size: int) -> bool:
        endpoint = self.endpoint
        if (
            self.inflight >= endpoint.max_inflight
            or self.inflight_bytes + size > endpoint.max_inflight_bytes
        ):
            return False
        self.inflight += 1
        self.inflight_bytes += size
        return True

    async def _unary(self, item: Any, size: int) -> None:
        rt = self.rt
        strategy = self.strategy
        try:
            t0 = monotonic()
            out, _ = await self.app.cache.execute(
                rt, item.method, item.params, strategy, self.provider_id
            )
            elapsed = monotonic() - t0
            self.app.metrics.record_request(
                rt, item.method, strategy, out.status, elapsed, out.retries
            )
            rt.events.decision(rt, item.method, strategy, out, elapsed)
            if not item.notification:
                self.conn.send_text(finish_item(out, item.id_json))
        except Exception:
            log.exception("websocket request failed", extra={"event": "ws.request_error"})
            if not item.notification:
                self.conn.send_text(error_body(-32603, "Internal error", item.id_json))
        finally:
            self.inflight -= 1
            self.inflight_bytes -= size

    def _batch(self, docs: list[Any], size: int) -> None:
        if not docs:
            self.conn.send_text(_EMPTY_BATCH)
        elif len(docs) > MAX_BATCH:
            self.conn.send_text(_BATCH_TOO_LARGE)
        elif any(type(d) is dict and d.get("method") in WS_ONLY_METHODS for d in docs):
            self.conn.send_text(_BATCHED_SUBSCRIPTION)
        elif not self._admit(size):
            self.conn.send_text(error_body(-32008, _CAPACITY))
        else:
            self.endpoint.spawn(self._run_batch(docs, size))

    async def _run_batch(self, docs: list[Any], size: int) -> None:
        try:
            resp = await self.app.rpc.run_batch(
                self.rt, docs, self.strategy, self.provider_id, None, self.path
            )
            if resp.body:  # empty when every item was a notification
                self.conn.send_text(resp.body)
        except Exception:
            log.exception("websocket batch failed", extra={"event": "ws.request_error"})
            self.conn.send_text(error_body(-32603, "Internal error"))
        finally:
            self.inflight -= 1
            self.inflight_bytes -= size

    # -- subscriptions ------------------------------------------------------------------
    def _subscribe(self, item: Any) -> None:
        manager = getattr(self.app, "subscriptions", None)
        if manager is None:
            self._reply(item, error_body(-32601, "Subscriptions are not available", item.id_json))
        elif len(self.sub_ids) + self.pending_subs >= self.endpoint.max_subscriptions:
            self._reply(item, error_body(-32008, _SUB_CAPACITY, item.id_json))
        elif not isinstance(item.params, list):
            self._reply(
                item,
                error_body(-32602, "Invalid params: eth_subscribe takes an array", item.id_json),
            )
        else:
            self.pending_subs += 1
            self.endpoint.spawn(self._run_subscribe(manager, item))

    async def _run_subscribe(self, manager: Any, item: Any) -> None:
        sub_id: str | None = None
        t0 = monotonic()
        try:
            sub_id = await manager.subscribe(self, item.params)
            reply = b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (item.id_json, orjson.dumps(sub_id))
            status = "success"
        except Exception as exc:
            code, message = getattr(exc, "code", None), getattr(exc, "message", None)
            if isinstance(code, int) and isinstance(message, str):  # a SubscriptionError
                reply = error_body(code, message, item.id_json)
                status = "rpc_error"
            else:
                log.exception("eth_subscribe failed", extra={"event": "ws.subscribe_error"})
                reply = error_body(-32603, "Internal error", item.id_json)
                status = "error"
        finally:
            self.pending_subs -= 1
        self.app.metrics.record_request(
            self.rt, "eth_subscribe", self.strategy, status, monotonic() - t0, 0
        )
        if self.closed:  # gone while subscribing: drop_client() ran before this existed
            if sub_id is not None:
                manager.unsubscribe(self, sub_id)
            return
        if sub_id is not None:
            self.sub_ids.add(sub_id)
        self._reply(item, reply)
        self._release_held()

    def _unsubscribe(self, item: Any) -> None:
        params = item.params
        if not (isinstance(params, list) and params and isinstance(params[0], str)):
            self._reply(
                item,
                error_body(-32602, "Invalid params: expected [subscription_id]", item.id_json),
            )
            return
        sub_id = params[0]
        manager = getattr(self.app, "subscriptions", None)
        ok = False
        if sub_id in self.sub_ids and manager is not None:
            ok = bool(manager.unsubscribe(self, sub_id))
            self.sub_ids.discard(sub_id)
        self._reply(
            item,
            b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (item.id_json, b"true" if ok else b"false"),
        )

    def _reply(self, item: Any, body: bytes) -> None:
        if not item.notification:
            self.conn.send_text(body)

    def _release_held(self) -> None:
        """Send held notifications whose subscription is now announced, in order."""
        held = self._held
        if not held:
            return
        keep: deque[tuple[str, bytes]] = deque()
        for sub_id, frame in held:
            if sub_id in self.sub_ids:
                self.conn.push_text(frame)
            elif self.pending_subs:
                keep.append((sub_id, frame))
        self._held = keep
