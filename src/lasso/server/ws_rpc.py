"""JSON-RPC over WebSocket for clients: ``/ws/rpc/...`` (CONTRACT §4, reference §1.3, §7.5).

Routes are the HTTP ones under ``/ws/rpc/``, resolved by the same rule
(:class:`lasso.server.route.RouteResolver`): strategy and provider override from the path,
the query (``strategy``; ``provider_override``, ``provider_id``, ``provider``) and the
``X-Lasso-Provider`` header. An unknown route, profile, chain or provider rejects the
upgrade with the HTTP status and JSON-RPC error body the HTTP endpoint would answer
(404/400), a malformed handshake with 400/405/426.

Each text (or binary) message is one JSON-RPC request or a batch:

* not JSON → ``-32700``; not an object or array, bad ``id``/``jsonrpc``/``method`` →
  ``-32600``; ``eth_chainId`` is answered locally, signing methods with ``-32601``;
* every other request runs through the response cache and coalescing
  (:meth:`lasso.server.cache.ResponseCache.execute`) and the pipeline exactly like an
  HTTP one (same strategies, failover, per-method deadlines), concurrently: answers go
  out as they finish, possibly out of order, as the upstream bytes with the client's id
  restored. Batches (up to ``max_batch`` items, run as over HTTP) are answered in one
  array frame;
* ``eth_subscribe``/``eth_unsubscribe`` go to the subscription manager
  (:class:`lasso.server.subscriptions.SubscriptionManager`); they cannot be batched.

A client may keep any number of requests in flight (CONTRACT §4): once 32 requests (a
batch counts once) or 32 MiB of request bytes are in flight on a connection, Lasso stops
reading it (back-pressure: :meth:`~lasso.net.ws.WsServerConnection.pause_reading`) and
reads on as answers go out; no request is ever refused for capacity. At most 128
subscriptions exist or are being set up per connection; beyond, ``-32008``
"Subscription capacity unavailable". Messages above the node's body limit (8 MB) close
the connection with 1009; the transport rules (keepalive, slow clients) are in
:mod:`lasso.net.ws`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable
from time import monotonic
from typing import TYPE_CHECKING, Any

import orjson

from lasso.auth.client import Refusal, unauthorized
from lasso.auth.session import Session
from lasso.kernel.filters import CREATE_METHODS
from lasso.kernel.methods import WS_ONLY_METHODS
from lasso.net.http_server import HttpRequest, Response, encode_response
from lasso.net.ws import WsServerConnection, accept_handshake
from lasso.net.ws_frames import DEFAULT_CONTROL_FRAMES_PER_S, DEFAULT_FRAMES_PER_READ
from lasso.server.route import Rejection, RouteResolver
from lasso.server.rpc import RpcHandler, batch_too_large, error_body, filter_owner, finish_item
from lasso.server.rpc_envelope import RequestIds, loads_request
from lasso.server.runtime import ChainRuntime
from lasso.server.sticky_filters import FILTER_OWNER

if TYPE_CHECKING:
    from lasso.auth.service import ClientAccess
    from lasso.server.metrics import Metrics
    from lasso.server.subscriptions import SubscriptionManager

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
_BATCHED_SUBSCRIPTION = error_body(
    -32600, "Invalid Request: eth_subscribe and eth_unsubscribe cannot be batched"
)
_SUB_CAPACITY = "Subscription capacity unavailable"
_NOTIFICATION = (
    b'{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":%s,"result":%s}}'
)
_UNSET = object()


def _is_subscription(method: Any) -> bool:
    return type(method) is str and method in WS_ONLY_METHODS


class WsRpcEndpoint:
    """Accepts ``/ws/rpc/...`` upgrades and owns the live client connections.

    The limits are attributes so that an operator (or a test) can tune them before
    connections arrive.

    Args:
        routes: the route resolver (shared with the HTTP endpoint).
        rpc: the HTTP endpoint, whose validation and batch runner messages share.
        metrics: the node's request counters.
        subscriptions: the node's subscription manager.
        max_message: the largest message accepted (the node's body limit).
        access: the node's client access (:mod:`lasso.auth`): subscription caps, and the
            gates sockets are checked against again after a reload.
    """

    def __init__(
        self,
        *,
        routes: RouteResolver,
        rpc: RpcHandler,
        metrics: Metrics,
        subscriptions: SubscriptionManager,
        max_message: int,
        access: ClientAccess | None = None,
    ) -> None:
        self.routes = routes
        self.rpc = rpc
        self.metrics = metrics
        self.subscriptions = subscriptions
        self.access = access
        self.clients: set[WsClient] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self.max_message = max_message
        self.max_inflight = MAX_INFLIGHT
        self.max_inflight_bytes = MAX_INFLIGHT_BYTES
        self.max_subscriptions = MAX_SUBSCRIPTIONS
        self.max_send_buffer = 4 * 1024 * 1024
        self.ping_interval = 30.0
        self.pong_timeout = 5.0
        self.max_missed_pongs = 2
        self.close_timeout = 2.0
        self.control_frames_per_s = DEFAULT_CONTROL_FRAMES_PER_S  # Limits (lasso.net.limits)
        self.frames_per_read = DEFAULT_FRAMES_PER_READ
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
        route = self.routes.resolve(req, websocket=True)
        if isinstance(route, Rejection):
            self._reject(transport, route)
            return None
        session = Session(route.rt.profile, route.rt.key, req.headers, req.query, req.client)
        refusal = session.check(route.gate, monotonic())
        if refusal is not None:  # the profile's client checks (lasso.auth)
            self._reject(transport, refusal)
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
            asyncio.get_running_loop(),
            max_message=self.max_message,
            ping_interval=self.ping_interval,
            pong_timeout=self.pong_timeout,
            max_missed_pongs=self.max_missed_pongs,
            max_send_buffer=self.max_send_buffer,
            close_timeout=self.close_timeout,
            control_frames_per_s=self.control_frames_per_s,
            frames_per_read=self.frames_per_read,
        )
        client = WsClient(
            self, conn, route.rt, route.strategy, route.provider_id, req.path, session
        )
        self.clients.add(client)
        self.metrics.ws_connections += 1
        conn.start(client, rest)
        return conn

    def _reject(self, transport: asyncio.Transport, why: Rejection | Refusal) -> None:
        """Answer an upgrade we will not accept, as the HTTP endpoint would, and close."""
        self.rejected += 1
        if isinstance(why, Refusal):
            answer = Response(why.status, why.body(), headers=why.headers())
        else:
            answer = Response(why.status, error_body(why.code, why.message, b"null", why.data))
        transport.write(encode_response(answer, False))
        transport.close()

    def recheck_clients(self) -> None:
        """After a reload: every socket is checked under its profile's new client rules;
        one they refuse is closed (1008), the others carry on under the new limits."""
        access = self.access
        if access is None:
            return
        now = monotonic()
        for client in list(self.clients):
            session = client.session
            refusal = session.check(access.gate(session.profile), now)
            if refusal is not None:
                client.end(refusal)

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
            asyncio.get_running_loop().call_soon(self._forget_encoding)
        self._enc_obj = result
        self._enc_bytes = data
        return data

    def _forget_encoding(self) -> None:
        self._enc_obj = _UNSET
        self._enc_bytes = b""

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
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
        "conn",
        "inflight",
        "inflight_bytes",
        "sub_ids",
        "pending_subs",
        "closed",
        "_held",
        "session",
        "_expiry",
    )

    def __init__(
        self,
        endpoint: WsRpcEndpoint,
        conn: WsServerConnection,
        rt: ChainRuntime,
        strategy: str,
        provider_id: str | None,
        path: str,
        session: Session,
    ) -> None:
        self.id = next(endpoint._ids)
        self.endpoint = endpoint
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
        self.session = session  # the client's standing (lasso.auth); client None: ungated
        self._expiry: asyncio.TimerHandle | None = None
        expires = session.expires_at()
        if expires is not None:  # a JWT: the socket ends with it
            self._expiry = asyncio.get_running_loop().call_later(
                max(0.0, expires - time.time()), self.end, unauthorized("token_expired")
            )

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
            doc = loads_request(data)
        except ValueError:
            self.conn.send_text(_PARSE_ERROR)
            return
        if type(doc) is dict:
            self._request(doc, data)
        elif type(doc) is list:
            self._batch(doc, data)
        else:
            self.conn.send_text(_NOT_REQUEST)

    def on_close(self, code: int, reason: str) -> None:
        self.closed = True
        self._held.clear()
        if self._expiry is not None:
            self._expiry.cancel()
        self._release_subscriptions(len(self.sub_ids))
        endpoint = self.endpoint
        if self in endpoint.clients:
            endpoint.clients.discard(self)
            endpoint.metrics.ws_connections -= 1
        try:
            endpoint.subscriptions.drop_client(self)
        except Exception:
            log.exception("subscription cleanup failed", extra={"event": "ws.drop_failed"})

    # -- requests -----------------------------------------------------------------------
    def end(self, refusal: Refusal) -> None:
        """Close the socket because its credentials no longer pass (1008)."""
        if not self.closed:
            self.conn.close(1008, refusal.message[:120])

    def _request(self, doc: dict[str, Any], data: bytes) -> None:
        size = len(data)
        item = self.endpoint.rpc.validate_item(
            doc, self.rt, self.provider_id, self.path, RequestIds(data)
        )
        if self.session.client is not None:  # the profile's client checks (lasso.auth)
            if item.method in WS_ONLY_METHODS:
                item.early, item.early_status = None, 200  # served below, over WebSocket
            verdict = self.session.screen((item,), monotonic(), time.time())
            if verdict is not None and not isinstance(verdict, Refusal):
                self._admit(size)  # the wait for Redis holds a slot: back-pressure applies
                self.endpoint.spawn(self._screened(verdict, item, size))
                return
            if verdict is not None:
                self._refused(verdict, item)
                return
        self._dispatch(item, size)

    async def _screened(self, verdict: Awaitable[Refusal | None], item: Any, size: int) -> None:
        try:
            refusal = await verdict
        finally:
            self._done(size)
        if refusal is not None:
            self._refused(refusal, item)
        elif not self.closed:
            self._dispatch(item, size)

    def _refused(self, refusal: Refusal, item: Any) -> None:
        self._reply(item, item.early or refusal.body(item.id_json))
        if refusal.reason == "token_expired":
            self.end(refusal)

    def _dispatch(self, item: Any, size: int) -> None:
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
        self._admit(size)
        self.endpoint.spawn(self._unary(item, size))

    def _admit(self, size: int) -> None:
        """Count a request in flight; at the bound, stop reading the socket."""
        self.inflight += 1
        self.inflight_bytes += size
        endpoint = self.endpoint
        if (
            self.inflight >= endpoint.max_inflight
            or self.inflight_bytes >= endpoint.max_inflight_bytes
        ):
            self.conn.pause_reading()

    def _done(self, size: int) -> None:
        """A request in flight was answered; read on once below the bound."""
        self.inflight -= 1
        self.inflight_bytes -= size
        endpoint = self.endpoint
        if (
            self.inflight < endpoint.max_inflight
            and self.inflight_bytes < endpoint.max_inflight_bytes
        ):
            self.conn.resume_reading()

    async def _unary(self, item: Any, size: int) -> None:
        rt = self.rt
        strategy = self.strategy
        if item.method in CREATE_METHODS:  # this task only
            FILTER_OWNER.set(filter_owner(self.session.client, self.session.peer))
        try:
            t0 = monotonic()
            out, _ = await self.endpoint.rpc.cache.execute(
                rt, item.method, item.params, strategy, self.provider_id
            )
            elapsed = monotonic() - t0
            self.endpoint.metrics.record_request(
                rt, item.method, strategy, out.status, elapsed, out.retries
            )
            if out.hedges or out.hedge_skipped:
                self.endpoint.metrics.record_hedges(rt, out)
            if self.session.client is not None:
                self.session.client.count(out.status)
            rt.events.decision(rt, item.method, strategy, out, elapsed)
            if not item.notification:
                self.conn.send_text(finish_item(out, item.id_json))
        except Exception:
            log.exception("websocket request failed", extra={"event": "ws.request_error"})
            if not item.notification:
                self.conn.send_text(error_body(-32603, "Internal error", item.id_json))
        finally:
            self._done(size)

    def _batch(self, docs: list[Any], data: bytes) -> None:
        size = len(data)
        max_batch = self.endpoint.rpc.max_batch
        if not docs:
            self.conn.send_text(_EMPTY_BATCH)
        elif len(docs) > max_batch:
            self.conn.send_text(batch_too_large(max_batch))
        elif any(type(d) is dict and _is_subscription(d.get("method")) for d in docs):
            self.conn.send_text(_BATCHED_SUBSCRIPTION)
        else:
            self._admit(size)
            self.endpoint.spawn(self._run_batch(docs, data))

    async def _run_batch(self, docs: list[Any], data: bytes) -> None:
        size = len(data)
        FILTER_OWNER.set(filter_owner(self.session.client, self.session.peer))  # this task
        try:
            if self.session.client is not None:
                resp = await self._run_screened_batch(docs, RequestIds(data, docs))
            else:
                resp = await self.endpoint.rpc.run_batch(
                    self.rt,
                    docs,
                    self.strategy,
                    self.provider_id,
                    None,
                    self.path,
                    RequestIds(data, docs),
                )
            if resp.body:  # empty when every item was a notification
                self.conn.send_text(resp.body)
        except Exception:
            log.exception("websocket batch failed", extra={"event": "ws.request_error"})
            self.conn.send_text(error_body(-32603, "Internal error"))
        finally:
            self._done(size)

    async def _run_screened_batch(self, docs: list[Any], ids: RequestIds) -> Response:
        """A batch under the client checks: refused items answered in place."""
        rpc = self.endpoint.rpc
        items = [
            rpc.validate_item(d, self.rt, self.provider_id, self.path, ids, i)
            for i, d in enumerate(docs)
        ]
        verdict = self.session.screen(items, monotonic(), time.time())
        if verdict is not None and not isinstance(verdict, Refusal):
            verdict = await verdict
        if verdict is not None and verdict.reason == "token_expired":
            self.end(verdict)
        client = self.session.client
        return await rpc.run_items(self.rt, items, self.strategy, self.provider_id, None, client)

    # -- subscriptions ------------------------------------------------------------------
    def _subscribe(self, item: Any) -> None:
        manager = self.endpoint.subscriptions
        client, access = self.session.client, self.endpoint.access
        if client is not None and access is not None:
            refusal = access.acquire_subscription(client)  # the client's cap (lasso.auth)
            if refusal is not None:
                self._reply(item, refusal.body(item.id_json))
                return
        if len(self.sub_ids) + self.pending_subs >= self.endpoint.max_subscriptions:
            self._reply(item, error_body(-32008, _SUB_CAPACITY, item.id_json))
        elif not isinstance(item.params, list):
            self._reply(
                item,
                error_body(-32602, "Invalid params: eth_subscribe takes an array", item.id_json),
            )
        else:
            self.pending_subs += 1
            self.endpoint.spawn(self._run_subscribe(manager, item))
            return
        if client is not None:
            client.count("rpc_error")
            self._release_subscriptions(1)  # refused above: not held

    async def _run_subscribe(self, manager: SubscriptionManager, item: Any) -> None:
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
        self.endpoint.metrics.record_request(
            self.rt, "eth_subscribe", self.strategy, status, monotonic() - t0, 0
        )
        if self.session.client is not None:
            self.session.client.count(status)
            if sub_id is None or self.closed:
                self._release_subscriptions(1)
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
        ok = False
        if sub_id in self.sub_ids:
            ok = self.endpoint.subscriptions.unsubscribe(self, sub_id)
            self.sub_ids.discard(sub_id)
            self._release_subscriptions(1)
        if self.session.client is not None:
            self.session.client.count("success")
        self._reply(
            item,
            b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (item.id_json, b"true" if ok else b"false"),
        )

    def _release_subscriptions(self, n: int) -> None:
        """``n`` fewer subscriptions held under the client's cap (lasso.auth)."""
        client, access = self.session.client, self.endpoint.access
        if n and client is not None and access is not None:
            access.release_subscription(client, n)

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
