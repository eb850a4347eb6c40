"""Upstream WebSocket connections: one kept-alive, reconnecting link per provider ``ws_url``.

:class:`UpstreamWs` owns at most one live connection to a provider's WebSocket endpoint and
keeps it up for as long as it runs:

* **Connect and reconnect.** The first connect waits a random startup jitter (at most
  ``startup_jitter``). After a connection that was up for ``stable_after`` seconds drops,
  the next attempt is immediate; every failed attempt after that waits
  ``min(reconnect_base × attempts, reconnect_cap)`` plus up to ``reconnect_jitter``
  seconds (reference §7.5: 5 s × attempts, capped at 30 s, plus 0-1 s).
* **Heartbeat.** A ping every ``heartbeat`` seconds; a ping still unanswered at the next
  beat means the link is dead: it is aborted and the reconnect logic takes over.
* **Requests** are correlated by their JSON-RPC ``id``: ours (a counter) for
  :meth:`UpstreamWs.request`, the pipeline's private transport id for
  :meth:`UpstreamWs.request_raw`. At most ``max_pending`` requests wait at a time. A
  frame that is not JSON drops the link (its pending requests fail, it reconnects).
* **Subscriptions** are dispatched by the upstream subscription id. ``on_end`` is called
  exactly once for each subscription when it can no longer deliver (the link dropped or
  the object was closed); notifications for ids nobody holds are unsubscribed once.
* **State listeners** hear ``True`` on every (re)connect and ``False`` on every drop; the
  registry in :mod:`lasso.server.ws_upstreams` uses them to move WS channels in and out
  of routing.

The link is a :class:`lasso.net.ws.WsClientLink` (the client side of RFC 6455 on
``websockets.client.ClientProtocol``, with the frame fast path) on a plain
``asyncio.Protocol``: no task and no ``asyncio.wait_for`` per request, one timer per
pending request for its deadline.

Errors follow :mod:`lasso.net.errors`: :class:`~lasso.net.errors.UpstreamNotConnected` when
there is no live link (nothing sent), :class:`~lasso.net.errors.PoolTimeout` when too many
requests are pending (nothing sent), :class:`~lasso.net.errors.UpstreamTimeout` and
:class:`~lasso.net.errors.UpstreamDisconnected` once sent,
:class:`~lasso.net.errors.UpstreamRpcError` for a JSON-RPC error answer to
:meth:`UpstreamWs.request`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from websockets.client import ClientProtocol
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from lasso.net.errors import (
    PoolTimeout,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamNotConnected,
    UpstreamProtocolError,
    UpstreamRpcError,
    UpstreamTimeout,
    map_connect_errors,
)
from lasso.net.http_client import USER_AGENT, UpstreamResponse
from lasso.net.ws import WsClientLink
from lasso.net.ws_frames import WIRE_LOG

__all__ = ["ErrorListener", "UpstreamWs", "StateListener"]

log = logging.getLogger("lasso.ws.upstream")

StateListener = Callable[[bool], None]
ErrorListener = Callable[[UpstreamError], None]
_NO_HEADERS: Mapping[str, str] = {}


class _Sub:
    __slots__ = ("on_event", "on_end", "confirmed", "ended")

    def __init__(self, on_event: Callable[[Any], None], on_end: Callable[[str], None]) -> None:
        self.on_event = on_event
        self.on_end = on_end
        self.confirmed = False  # subscribe() returned it to its caller
        self.ended = False


class _Pending:
    __slots__ = ("fut", "raw", "sub", "timer")

    def __init__(
        self, fut: asyncio.Future[Any], raw: bool, sub: _Sub | None, timer: asyncio.TimerHandle
    ) -> None:
        self.fut = fut
        self.raw = raw
        self.sub = sub
        self.timer = timer


class UpstreamWs:
    """One upstream WebSocket connection to a provider's ``ws_url``, kept alive and reconnected.

    Args:
        provider_id: for logs and errors.
        url: ``ws://`` or ``wss://`` URL. User info becomes Basic auth.
        headers: extra handshake headers (API keys).
        reconnect_base: seconds per failed attempt in the backoff (5 s in production;
            tests pass a few milliseconds).
        reconnect_cap: largest backoff before jitter.
        reconnect_jitter: up to this many random seconds on top of each backoff.
        startup_jitter: the first connect waits up to this long (spreads a fleet's start).
        heartbeat: seconds between pings; 0 disables them.
        stable_after: a connection up this long resets the backoff.
        connect_timeout: bound on TCP + TLS + handshake.
        max_pending: requests waiting for an answer at most.
        max_message: largest incoming message in bytes.
        ssl_context: for ``wss``; default :func:`ssl.create_default_context`.
        rng: randomness for the jitters.

    Raises:
        ValueError: for a URL that is not ``ws``/``wss``.
    """

    def __init__(
        self,
        provider_id: str,
        url: str,
        *,
        headers: Mapping[str, str] = _NO_HEADERS,
        reconnect_base: float = 5.0,
        reconnect_cap: float = 30.0,
        reconnect_jitter: float = 1.0,
        startup_jitter: float = 0.0,
        heartbeat: float = 15.0,
        stable_after: float = 5.0,
        connect_timeout: float = 10.0,
        max_pending: int = 256,
        max_message: int = 128 * 1024 * 1024,
        ssl_context: ssl.SSLContext | None = None,
        rng: random.Random | None = None,
    ) -> None:
        try:
            self._uri = parse_uri(url)
        except InvalidURI as exc:
            raise ValueError(f"not a WebSocket URL: {url!r}") from exc
        self.provider_id = provider_id
        self.url = url
        self.headers = dict(headers)
        self.reconnect_base = reconnect_base
        self.reconnect_cap = reconnect_cap
        self.reconnect_jitter = reconnect_jitter
        self.startup_jitter = startup_jitter
        self.heartbeat = heartbeat
        self.stable_after = stable_after
        self.connect_timeout = connect_timeout
        self.max_pending = max_pending
        self.max_message = max_message
        self._ssl = (ssl_context or ssl.create_default_context()) if self._uri.secure else None
        self._rng = rng or random.Random()
        # Printed in logs and errors; the path and query may carry API keys.
        self._origin = f"{'wss' if self._uri.secure else 'ws'}://{self._uri.host}:{self._uri.port}"

        self.connection_id = 0
        self.connects = 0
        self.connect_failures = 0
        self.heartbeat_failures = 0
        self.bad_frames = 0
        self.last_error: str | None = None
        self._link: WsClientLink | None = None
        self._pending: dict[Any, _Pending] = {}
        self._subs: dict[str, _Sub] = {}
        self._ignored: set[str] = set()  # subscription ids whose late notifications we drop
        self._listeners: list[StateListener] = []
        self._error_listeners: list[ErrorListener] = []
        self._ids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- state --------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Live and usable now."""
        link = self._link
        return link is not None and link.open

    @property
    def origin(self) -> str:
        """``ws(s)://host:port``: how logs and errors name the upstream (never its path or
        query, which may carry an API key)."""
        return self._origin

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def subscriptions(self) -> int:
        return len(self._subs)

    def add_state_listener(self, fn: StateListener) -> None:
        """Call ``fn(True)`` on every (re)connect and ``fn(False)`` on every drop."""
        self._listeners.append(fn)

    def add_error_listener(self, fn: ErrorListener) -> None:
        """Call ``fn(exc)`` after every failed connect attempt (``exc.cause`` says why)."""
        self._error_listeners.append(fn)

    def reconnect_delay(self, attempts: int) -> float:
        """Seconds to wait before connect attempt number ``attempts + 1`` (0: at once)."""
        if attempts <= 0:
            return 0.0
        base = min(self.reconnect_base * attempts, self.reconnect_cap)
        return base + self._rng.random() * self.reconnect_jitter

    def __repr__(self) -> str:
        return (
            f"<UpstreamWs {self.provider_id} {self._origin} connected={self.connected}"
            f" connection_id={self.connection_id} pending={len(self._pending)}"
            f" subscriptions={len(self._subs)} failures={self.connect_failures}>"
        )

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        """Start connecting in the background (call from a running loop; idempotent)."""
        if self._task is None and not self._closed:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run(), name=f"ws-upstream-{self.provider_id}")

    async def aclose(self) -> None:
        """Stop reconnecting, fail pending requests, end subscriptions ("closed")."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        if self.startup_jitter > 0:
            await asyncio.sleep(self._rng.random() * self.startup_jitter)
        attempts = 0
        while not self._closed:
            delay = self.reconnect_delay(attempts)
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                link = await self._open(loop)
            except UpstreamError as exc:
                attempts += 1
                self.connect_failures += 1
                self.last_error = str(exc)
                log.debug(
                    "upstream websocket connect failed",
                    extra={
                        "event": "ws.upstream_connect_failed",
                        "provider": self.provider_id,
                        "error": str(exc),
                        "attempts": attempts,
                    },
                )
                for fn in list(self._error_listeners):
                    try:
                        fn(exc)
                    except Exception:
                        log.exception("websocket error listener failed")
                continue
            up_at = loop.time()
            self._attach(link)
            try:
                await link.lost
            finally:
                if self._closed:  # cancelled by aclose()
                    link.close()
                self._detach(link, "closed" if self._closed else "connection lost")
            attempts = 0 if loop.time() - up_at >= self.stable_after else attempts + 1

    async def _open(self, loop: asyncio.AbstractEventLoop) -> WsClientLink:
        uri = self._uri
        proto = ClientProtocol(uri, max_size=self.max_message, logger=WIRE_LOG)
        link = WsClientLink(
            self._on_message,
            proto,
            self.headers,
            loop,
            user_agent=USER_AGENT,
            on_dead=self._on_heartbeat_missed,
        )
        try:
            with map_connect_errors(self._origin):
                async with asyncio.timeout(self.connect_timeout):
                    await loop.create_connection(
                        lambda: link,
                        uri.host,
                        uri.port,
                        ssl=self._ssl,
                        server_hostname=uri.host if self._ssl is not None else None,
                    )
                    await link.ready
        except BaseException:
            link.abort()
            raise
        return link

    def _attach(self, link: WsClientLink) -> None:
        self._link = link
        self.connection_id += 1
        self.connects += 1
        self.last_error = None
        link.start_heartbeat(self.heartbeat)
        self._notify(True)

    def _detach(self, link: WsClientLink, reason: str) -> None:
        if self._link is link:
            self._link = None
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.timer.cancel()
            if not p.fut.done():
                p.fut.set_exception(UpstreamDisconnected(f"{self._origin}: websocket {reason}"))
        subs, self._subs = self._subs, {}
        self._ignored.clear()
        for sub in subs.values():
            sub.ended = True
            if sub.confirmed:
                try:
                    sub.on_end(reason)
                except Exception:
                    log.exception("subscription on_end callback failed")
        self._notify(False)

    def _on_heartbeat_missed(self) -> None:
        self.heartbeat_failures += 1
        log.info(
            "upstream websocket missed a heartbeat, reconnecting",
            extra={"event": "ws.upstream_heartbeat_missed", "provider": self.provider_id},
        )

    def _notify(self, up: bool) -> None:
        for fn in list(self._listeners):
            try:
                fn(up)
            except Exception:
                log.exception("websocket state listener failed")

    # -- requests -----------------------------------------------------------------------
    async def request(self, method: str, params: Any, timeout: float) -> Any:
        """Call ``method`` and return its ``result`` (decoded JSON).

        Raises:
            UpstreamNotConnected: no live connection (nothing sent).
            PoolTimeout: ``max_pending`` requests already wait (nothing sent).
            UpstreamTimeout: no answer within ``timeout`` seconds.
            UpstreamDisconnected: the connection dropped before the answer.
            UpstreamRpcError: the provider answered with a JSON-RPC error.
            UpstreamProtocolError: an answer with neither result nor error.
        """
        rid = next(self._ids)
        payload = orjson.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
        return await self._wait(rid, self._send(rid, payload, timeout, False, None))

    async def request_raw(self, body: bytes, tid: bytes, timeout: float) -> UpstreamResponse:
        """Send an encoded JSON-RPC request whose id is ``tid`` (JSON text); return the
        answer frame untouched, as a status-200 :class:`UpstreamResponse` (the pipeline
        judges it like an HTTP body).

        Raises:
            The errors of :meth:`request` except :class:`UpstreamRpcError`.
        """
        key = tid[1:-1].decode()  # the pipeline's ids are plain quoted ASCII
        fut = self._send(key, body, timeout, True, None)
        result: UpstreamResponse = await self._wait(key, fut)
        return result

    async def subscribe(
        self,
        params: list[Any],
        on_event: Callable[[Any], None],
        on_end: Callable[[str], None],
        timeout: float = 10.0,
    ) -> str:
        """``eth_subscribe(params)``; returns the upstream subscription id.

        ``on_event(result)`` runs for each ``eth_subscription`` notification (the decoded
        ``result``), in order, possibly before this coroutine returns (notifications that
        arrived right behind the answer are never dropped). ``on_end(reason)`` runs once
        when the subscription can no longer deliver ("connection lost", "closed"); not
        after :meth:`unsubscribe`, and not when this call raises.

        Raises:
            The errors of :meth:`request`; :class:`UpstreamProtocolError` when the answer
            carries no subscription id.
        """
        rid = next(self._ids)
        payload = orjson.dumps(
            {"jsonrpc": "2.0", "id": rid, "method": "eth_subscribe", "params": params}
        )
        sub = _Sub(on_event, on_end)
        fut = self._send(rid, payload, timeout, False, sub)
        try:
            sub_id: str = await self._wait(rid, fut)
        except BaseException:
            # Cancelled after the answer registered it: nobody will ever hold this id.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._abandon(fut.result())
            raise
        if sub.ended:
            raise UpstreamDisconnected(f"{self._origin}: websocket dropped while subscribing")
        sub.confirmed = True
        return sub_id

    async def unsubscribe(self, sub_id: str) -> None:
        """Stop delivering ``sub_id`` and ``eth_unsubscribe`` it upstream (best effort,
        never raises)."""
        if self._subs.pop(sub_id, None) is None:
            return
        self._ignore(sub_id)
        if not self.connected:
            return
        try:
            await self.request("eth_unsubscribe", [sub_id], 5.0)
        except UpstreamError:
            pass

    def _send(
        self, key: Any, payload: bytes, timeout: float, raw: bool, sub: _Sub | None
    ) -> asyncio.Future[Any]:
        link = self._link
        if link is None or not link.open:
            raise UpstreamNotConnected(f"{self._origin}: websocket not connected")
        if len(self._pending) >= self.max_pending:
            raise PoolTimeout(f"{self._origin}: {len(self._pending)} requests already pending")
        if timeout <= 0:
            raise UpstreamTimeout("deadline already passed", dispatched=False)
        link.send_text(payload)  # no await before the entry exists: no answer can slip by
        loop = link.loop
        fut: asyncio.Future[Any] = loop.create_future()
        timer = loop.call_later(timeout, self._expire, key, timeout)
        self._pending[key] = _Pending(fut, raw, sub, timer)
        return fut

    async def _wait(self, key: Any, fut: asyncio.Future[Any]) -> Any:
        try:
            return await fut
        except asyncio.CancelledError:
            p = self._pending.get(key)
            if p is not None and p.fut is fut:
                del self._pending[key]
                p.timer.cancel()
            raise

    def _expire(self, key: Any, timeout: float) -> None:
        p = self._pending.pop(key, None)
        if p is not None and not p.fut.done():
            p.fut.set_exception(UpstreamTimeout(f"{self._origin}: no answer within {timeout:g}s"))

    def _abandon(self, sub_id: str) -> None:
        if self._subs.pop(sub_id, None) is not None and self._loop is not None:
            self._ignore(sub_id)
            self._loop.create_task(self._unsubscribe_quietly(sub_id))

    def _ignore(self, sub_id: str) -> None:
        if len(self._ignored) >= 1024:
            self._ignored.clear()
        self._ignored.add(sub_id)

    async def _unsubscribe_quietly(self, sub_id: str) -> None:
        try:
            await self.request("eth_unsubscribe", [sub_id], 5.0)
        except UpstreamError:
            pass

    # -- incoming -----------------------------------------------------------------------
    def _on_message(self, data: bytes) -> None:
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            # Nothing to correlate it with, and a stream that carries garbage cannot be
            # trusted: drop the link (its requests fail over, it reconnects), as the HTTP
            # pool never reuses a connection that sent bytes outside a response.
            self.bad_frames += 1
            log.info(
                "undecodable upstream websocket frame, reconnecting",
                extra={"event": "ws.upstream_bad_frame", "provider": self.provider_id},
            )
            if self._link is not None:
                self._link.abort()
            return
        if type(doc) is dict:
            self._dispatch(doc, data)
        elif type(doc) is list:  # a batch answer: we never send one, but be lenient
            for item in doc:
                if type(item) is dict:
                    self._dispatch(item, None)

    def _dispatch(self, doc: dict[str, Any], data: bytes | None) -> None:
        method = doc.get("method")
        if method is None:
            rid = doc.get("id")
            if type(rid) is not int and type(rid) is not str:
                return
            p = self._pending.pop(rid, None)
            if p is None:
                return  # timed out or cancelled: the late answer is dropped
            p.timer.cancel()
            fut = p.fut
            if fut.done():
                return
            if p.raw:
                body = data if data is not None else orjson.dumps(doc)
                fut.set_result(UpstreamResponse(200, body, {}))
                return
            err = doc.get("error")
            if err is not None:
                fut.set_exception(_rpc_error(err))
                return
            if "result" not in doc:
                fut.set_exception(UpstreamProtocolError("answer without result or error"))
                return
            result = doc["result"]
            sub = p.sub
            if sub is not None:
                if not isinstance(result, str) or not result:
                    fut.set_exception(UpstreamProtocolError("eth_subscribe answer has no id"))
                    return
                # Registered now, before any later frame is read: nothing can slip by.
                self._subs[result] = sub
            fut.set_result(result)
        elif method == "eth_subscription":
            params = doc.get("params")
            if type(params) is not dict:
                return
            sid = params.get("subscription")
            if not isinstance(sid, str):
                return
            sub = self._subs.get(sid)
            if sub is None:
                if sid not in self._ignored:
                    self._ignore(sid)
                    if self._loop is not None:
                        self._loop.create_task(self._unsubscribe_quietly(sid))
                return
            try:
                sub.on_event(params.get("result"))
            except Exception:
                log.exception("subscription on_event callback failed")


def _rpc_error(err: Any) -> UpstreamError:
    if isinstance(err, dict) and isinstance(err.get("code"), int):
        message = err.get("message")
        return UpstreamRpcError(
            err["code"], message if isinstance(message, str) else "", err.get("data")
        )
    return UpstreamProtocolError(f"malformed error object: {err!r:.200}")
