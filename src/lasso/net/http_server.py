"""The client-facing HTTP/1.1 server: an ``asyncio.Protocol`` driven by httptools.

This is the hot path, so it stays small: parse a request, hand it to the application's
``handle`` callable, write the answer. ``handle`` returns a :class:`Response` directly when
it can answer synchronously (validation errors, local methods, the API) or an awaitable
when it has to call an upstream; only the latter costs a task.

Requests pipelined on one connection are answered strictly in order. Bodies over the
configured limit are refused with 413 before they are buffered. Idle keep-alive
connections and stalled requests are closed by a periodic sweep rather than a timer per
request. A WebSocket upgrade (``Upgrade: websocket``) is handed to ``app.upgrade``
together with the transport and any bytes already read.

A :class:`StreamingResponse` (server-sent events for the dashboard) is written with
chunked transfer encoding from an async iterator of bytes, one chunk per item, waiting
for the transport to drain when the client reads slowly; the connection stays in order
(later pipelined requests wait) and the stream ends when the iterator does, when the
client goes away, or when the server drains.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, cast

import httptools

from lasso.net.busypoll import BusyPoller

__all__ = ["HttpRequest", "Response", "StreamingResponse", "HttpServer", "Application"]


class HttpRequest:
    """One parsed HTTP request. Header names are lower-cased ``str``; values ``str``."""

    __slots__ = ("method", "path", "query", "headers", "body", "client", "keep_alive")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        client: str,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.client = client
        self.keep_alive = keep_alive

    def __repr__(self) -> str:
        return f"<HttpRequest {self.method} {self.path} body={len(self.body)}B>"


@dataclass(slots=True)
class Response:
    """An HTTP response. ``headers`` are extra header lines beyond the defaults."""

    status: int
    body: bytes = b""
    content_type: bytes = b"application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class StreamingResponse(Response):
    """A response whose body is produced over time by ``stream`` (chunked encoding).

    The server closes ``stream`` (``aclose``) when the client goes away or the server
    drains; an exception raised by it cuts the connection without a final chunk.
    """

    stream: AsyncIterator[bytes] | None = None


HandleResult = Response | Awaitable[Response]


class Application(Protocol):
    def handle(self, request: HttpRequest) -> HandleResult: ...

    def upgrade(
        self, request: HttpRequest, transport: asyncio.Transport, rest: bytes
    ) -> asyncio.Protocol | None: ...


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in _REASONS.items()
}
_COMMON = b"Access-Control-Allow-Origin: *\r\nServer: lasso\r\n"


def encode_response(resp: Response, keep_alive: bool, head: bool = False) -> bytes:
    """Serialize ``resp`` into one buffer (status line, headers, body; no body for HEAD)."""
    status_line = _STATUS_LINES.get(resp.status) or b"HTTP/1.1 %d Unknown\r\n" % resp.status
    parts = [status_line, _COMMON]
    if resp.status != 204 and resp.status != 304:
        parts.append(
            b"Content-Type: %s\r\nContent-Length: %d\r\n" % (resp.content_type, len(resp.body))
        )
    for name, value in resp.headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
    parts.append(b"\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    if resp.status != 204 and resp.status != 304 and not head:
        parts.append(resp.body)
    return b"".join(parts)


def encode_stream_head(resp: Response, keep_alive: bool) -> bytes:
    """Status line and headers of a chunked response (the body follows in chunks)."""
    status_line = _STATUS_LINES.get(resp.status) or b"HTTP/1.1 %d Unknown\r\n" % resp.status
    parts = [status_line, _COMMON, b"Content-Type: %s\r\n" % resp.content_type]
    parts.append(b"Transfer-Encoding: chunked\r\n")
    for name, value in resp.headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
    parts.append(b"\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    return b"".join(parts)


class _Conn(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "server",
        "app",
        "loop",
        "transport",
        "parser",
        "client",
        "_url",
        "_headers",
        "_body",
        "_body_size",
        "_queue",
        "_busy",
        "_closing",
        "_rejected",
        "last_activity",
        "in_request",
        "_paused",
        "_current",
        "_drain_waiter",
        "_stream_task",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.app = server.app
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = ""
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._body_size = 0
        self._queue: deque[HttpRequest] = deque()
        self._busy = False
        self._closing = False
        self._rejected = False
        self.last_activity = self.loop.time()
        self.in_request = False
        self._paused = False
        self._current: HttpRequest | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._stream_task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not TCP (unix socket)
                pass
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if isinstance(peer, tuple) else ""
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None
        self._closing = True
        self._wake_writer()
        if self._stream_task is not None:
            self._stream_task.cancel()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.loop.time()
        if self._rejected:
            return
        poller = self.server.poller
        if poller is not None:
            poller.activity()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args else len(data)
            self._upgrade(data[offset:])
        except httptools.HttpParserError:
            self._reject(
                400,
                _rpc_error(-32700, "Parse error: malformed HTTP request"),
            )

    def pause_writing(self) -> None:
        self._paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self._closing:
            self.transport.resume_reading()
        self._wake_writer()

    def _wake_writer(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- httptools callbacks ----------------------------------------------------------
    def on_message_begin(self) -> None:
        self.in_request = True
        self._url = b""
        self._headers = {}
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        if len(self._headers) >= 100:
            self._reject(431, b'{"error":"too many headers"}')
            return
        self._headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        cl = self._headers.get("content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                self._reject(
                    400,
                    _rpc_error(-32600, "Invalid Request: bad Content-Length"),
                )
                return
            if n > self.server.max_body:
                self._reject(413, _TOO_LARGE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.server.max_body:
            self._reject(413, _TOO_LARGE)
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._rejected:
            return
        self.in_request = False
        url = httptools.parse_url(self._url)
        path = url.path.decode("utf-8", "replace") if url.path else "/"
        query = url.query.decode("utf-8", "replace") if url.query else ""
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        req = HttpRequest(
            self.parser.get_method().decode("latin-1"),
            path,
            query,
            self._headers,
            body,
            self.client,
            bool(self.parser.should_keep_alive()),
        )
        if self.parser.should_upgrade():
            # Upgrade requests are finished in _upgrade (HttpParserUpgrade follows).
            self._queue.append(req)
            return
        if self._busy:
            self._queue.append(req)
            return
        self._dispatch(req)

    # -- request handling -------------------------------------------------------------
    def _dispatch(self, req: HttpRequest) -> None:
        try:
            result = self.app.handle(req)
        except Exception:  # a bug must never become a hung connection
            self.server.on_error(req)
            result = Response(500, _INTERNAL)
        if isinstance(result, Response):
            if result.__class__ is StreamingResponse:
                self._start_stream(result, req)
                return
            self._write(result, req.keep_alive, req.method == "HEAD")
            return
        self._busy = True
        self._current = req
        self.server.inflight += 1
        coro = result if asyncio.iscoroutine(result) else _await(result)
        self.loop.create_task(coro).add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[Response]) -> None:
        req = self._current
        self._current = None
        self.server.inflight -= 1
        self._busy = False
        assert req is not None
        if task.cancelled():
            resp = Response(503, _UNAVAILABLE)
        else:
            exc = task.exception()
            if exc is not None:
                self.server.on_error(req, exc)
                resp = Response(500, _INTERNAL)
            else:
                resp = task.result()
        if resp.__class__ is StreamingResponse:
            self._start_stream(resp, req)
            return
        self._write(resp, req.keep_alive, req.method == "HEAD")
        while self._queue and not self._busy and self.transport is not None:
            self._dispatch(self._queue.popleft())

    # -- streaming responses (server-sent events; never on the JSON-RPC path) ---------
    def _start_stream(self, resp: StreamingResponse, req: HttpRequest) -> None:
        transport = self.transport
        stream = resp.stream
        if transport is None and stream is not None:  # the client left: release the producer
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                self.loop.create_task(aclose())
            return
        if transport is None or stream is None:
            self._write(resp, req.keep_alive, req.method == "HEAD")
            return
        keep = req.keep_alive and not self.server.draining
        transport.write(encode_stream_head(resp, keep))
        self.last_activity = self.loop.time()
        self._busy = True  # pipelined requests wait for the stream's end
        task = self.loop.create_task(self._pump(stream))
        self._stream_task = task
        self.server.streams.add(task)
        task.add_done_callback(lambda t: self._on_stream_done(t, req, keep))

    async def _pump(self, stream: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in stream:
                transport = self.transport
                if transport is None or self._closing:
                    return
                if chunk:
                    transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.last_activity = self.loop.time()
                if self._paused and not await self._writable():
                    return
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _writable(self) -> bool:
        """Wait for the transport to drain; false (and the connection aborted) when the
        client reads nothing for ``request_timeout`` or goes away."""
        waiter: asyncio.Future[None] = self.loop.create_future()
        self._drain_waiter = waiter
        try:
            await asyncio.wait_for(waiter, self.server.request_timeout)
        except TimeoutError:
            if self.transport is not None:
                self._closing = True
                self.transport.abort()
            return False
        return self.transport is not None

    def _on_stream_done(self, task: asyncio.Task[None], req: HttpRequest, keep: bool) -> None:
        self.server.streams.discard(task)
        self._stream_task = None
        self._busy = False
        transport = self.transport
        if transport is None or self._closing:
            return
        if not task.cancelled() and task.exception() is not None:
            # A broken producer: cut the body short so the client sees an error.
            self.server.on_error(req, task.exception())
            self._closing = True
            transport.close()
            return
        transport.write(b"0\r\n\r\n")
        self.last_activity = self.loop.time()
        if not keep or task.cancelled() or self.server.draining:
            self._closing = True
            transport.close()
            return
        while self._queue and not self._busy and self.transport is not None:
            self._dispatch(self._queue.popleft())

    def _write(self, resp: Response, keep_alive: bool, head: bool = False) -> None:
        transport = self.transport
        if transport is None:
            return
        server = self.server
        keep = keep_alive and not server.draining
        transport.write(encode_response(resp, keep, head))
        self.last_activity = self.loop.time()
        if server.poller is not None:
            server.poller.activity()
        if not keep:
            self._closing = True
            transport.close()

    def _reject(self, status: int, body: bytes) -> None:
        """Answer an unreadable request and close: the stream cannot be resynchronised."""
        if self._rejected:
            return
        self._rejected = True
        if self.transport is not None:
            self.transport.write(encode_response(Response(status, body), False))
            self.transport.close()

    def _upgrade(self, rest: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        req = self._queue.pop() if self._queue else None
        if req is None:
            self._reject(400, b'{"error":"bad upgrade"}')
            return
        proto = None
        try:
            proto = self.app.upgrade(req, transport, rest)
        except Exception:
            self.server.on_error(req)
        if proto is None:
            if not transport.is_closing():
                self._reject(400, b'{"error":"upgrade not supported on this path"}')
            return
        self.server.connections.discard(self)
        transport.set_protocol(proto)
        self._rejected = True  # this protocol object is finished

    def close_if_idle(self, now: float, idle_timeout: float, request_timeout: float) -> None:
        if self.transport is None or self._busy:
            return
        limit = request_timeout if self.in_request else idle_timeout
        if now - self.last_activity > limit:
            self.transport.close()


def _rpc_error(code: int, message: str) -> bytes:
    return b'{"jsonrpc":"2.0","error":{"code":%d,"message":"%s"},"id":null}' % (
        code,
        message.encode(),
    )


_TOO_LARGE = _rpc_error(-32600, "Invalid Request: request body too large")
_INTERNAL = _rpc_error(-32603, "Internal error")
_UNAVAILABLE = _rpc_error(-32000, "Server shutting down")


async def _await(aw: Awaitable[Response]) -> Response:
    return await aw


class HttpServer:
    """Owns the listening sockets and the set of live connections.

    Args:
        app: the application (``handle`` and ``upgrade``).
        max_body: request bodies above this many bytes are answered 413.
        idle_timeout: keep-alive connections idle this long are closed.
        request_timeout: a request whose headers/body have not completed after this long
            is dropped (slow clients).
        busy_poll_us: keep the loop polling this long after each request and response
            (:mod:`lasso.net.busypoll`); 0 lets it sleep as usual.
    """

    def __init__(
        self,
        app: Application,
        *,
        max_body: int = 8_000_000,
        idle_timeout: float = 75.0,
        request_timeout: float = 30.0,
        on_error: Callable[..., Any] | None = None,
        busy_poll_us: int = 0,
    ) -> None:
        self.app = app
        self.busy_poll_us = busy_poll_us
        self.poller: BusyPoller | None = None
        self.max_body = max_body
        self.idle_timeout = idle_timeout
        self.request_timeout = request_timeout
        self.loop = asyncio.get_event_loop()
        self.connections: set[_Conn] = set()
        self.inflight = 0
        self.draining = False
        self.streams: set[asyncio.Task[None]] = set()
        self._servers: list[asyncio.base_events.Server] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._on_error = on_error

    def on_error(self, req: HttpRequest, exc: BaseException | None = None) -> None:
        if self._on_error is not None:
            self._on_error(req, exc)

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on ``host:port``; returns the bound port (useful with port 0)."""
        self.loop = asyncio.get_running_loop()
        if self.busy_poll_us and self.poller is None:
            self.poller = BusyPoller(self.loop, self.busy_poll_us / 1e6)
        srv = await self.loop.create_server(
            lambda: _Conn(self), host, port, reuse_address=True, reuse_port=reuse_port, backlog=1024
        )
        self._servers.append(srv)
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())
        sock = srv.sockets[0]
        return int(sock.getsockname()[1])

    async def _sweep(self) -> None:
        interval = min(5.0, self.idle_timeout / 2, self.request_timeout / 2)
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for conn in list(self.connections):
                conn.close_if_idle(now, self.idle_timeout, self.request_timeout)

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), close."""
        self.draining = True
        for srv in self._servers:
            srv.close()
        streams = list(self.streams)
        for stream in streams:  # streams never finish on their own: end them (final chunk)
            stream.cancel()
        if streams:
            await asyncio.wait(streams, timeout=min(1.0, timeout))
        deadline = self.loop.time() + timeout
        while self.inflight > 0 and self.loop.time() < deadline:
            await asyncio.sleep(0.01)  # bounded shutdown poll, not a test wait
        await self.close()

    async def close(self) -> None:
        for srv in self._servers:
            srv.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for srv in self._servers:
            try:
                await asyncio.wait_for(srv.wait_closed(), 1.0)
            except (TimeoutError, asyncio.CancelledError):  # pragma: no cover
                pass
        self._servers.clear()

    def __repr__(self) -> str:
        return (
            f"<HttpServer connections={len(self.connections)} inflight={self.inflight}"
            f" draining={self.draining}>"
        )
