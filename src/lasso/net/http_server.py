"""The client-facing HTTP/1.1 server: an ``asyncio.Protocol`` driven by httptools.

This is the hot path, so it stays small: parse a request, hand it to the application's
``handle`` callable, write the answer. ``handle`` returns a :class:`Response` directly when
it can answer synchronously (validation errors, local methods, the API) or an awaitable
when it has to call an upstream; only the latter costs a task.

Requests pipelined on one connection are answered strictly in order. A WebSocket upgrade
(``Upgrade: websocket``) is handed to ``app.upgrade`` together with the transport and any
bytes already read. A :class:`StreamingResponse` (server-sent events for the dashboard) is
written with chunked encoding from an async iterator, waiting for the transport to drain
when the client reads slowly; later pipelined requests wait for its end.

Hostile clients are bounded (:class:`~lasso.net.limits.Limits`, docs/operations.md#limits):

* **Request head**: the request line over ``max_header_line`` bytes is refused with 414;
  a header line over it, a head over ``max_head`` bytes, or more than ``max_headers``
  header lines (repeats counted) with 431. The head is counted while it arrives: input is
  fed to httptools in pieces no larger than what the head may still grow by, so no head
  is ever buffered beyond the limit (httptools joins a header's pieces with ``+=``; the
  bound keeps that linear in practice).
* **Deadlines from the first byte**: the headers must be complete ``head_timeout`` after
  the request's first byte (after the connection opened, for its first request), the
  body ``request_timeout`` after it; 408 beyond. An idle keep-alive connection closes
  after ``keepalive_timeout``. A sweep checks every connection about once a second
  (no timer per request).
* **Pipelining**: at most ``max_pipeline`` requests are queued or in flight per
  connection; beyond, the connection's input is held unparsed and reading pauses until
  answers go out. Reading also pauses while the client does not read its answers (the
  transport's write buffer is above its high-water mark).
* **Bodies** over ``max_body`` are refused with 413 as soon as ``Content-Length`` (or the
  bytes received) says so. ``Expect: 100-continue`` is answered ``100 Continue`` when the
  body is acceptable, so clients do not wait to send it.
* **Lingering close**: every early refusal (400, 408, 413, 414, 431) writes its JSON-RPC
  error with ``Connection: close``, shuts the write side, and keeps reading and
  discarding for up to ``lingering_time`` (``lingering_timeout`` without data ends it
  sooner), so a client that writes its whole body before reading (Python's urllib,
  requests) reads the refusal rather than a connection reset. At most ``max_body +
  max_head`` bytes are discarded (as much as an accepted request could have been), or
  the announced ``Content-Length`` up to four times ``max_body``; beyond, the connection
  is reset.
* **Connections**: :class:`~lasso.net.listener.Acceptor` caps the open connections (HTTP
  and upgraded WebSockets); at the cap, when another client waits, it evicts a
  connection that serves nothing (:meth:`_Conn.evict_rank`): a lingering close or a
  trickle (a head still incomplete ``EVICT_STALLED_S`` after its first byte, a body under
  ``EVICT_MIN_RATE``) first, else the oldest connection silent for ``EVICT_IDLE_S``; with
  none, it stops accepting for a moment.

On close every per-connection buffer (queued requests, held input, body pieces) is
dropped explicitly, so nothing waits for the garbage collector.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from itertools import islice
from typing import Any, Protocol, cast

import httptools

from lasso.net.busypoll import BusyPoller
from lasso.net.http_messages import (
    LARGE_BODY,
    HttpRequest,
    Response,
    StreamingResponse,
    encode_head,
    encode_response,
    encode_stream_head,
    rpc_error,
)
from lasso.net.limits import Limits, connection_cap, raise_open_file_limit
from lasso.net.listener import Acceptor, Slot, bind_sockets

__all__ = [
    "HttpRequest",
    "Response",
    "StreamingResponse",
    "HttpServer",
    "Application",
    "encode_response",
    "EVICT_STALLED_S",
    "EVICT_IDLE_S",
]

EVICT_STALLED_S = 0.1
"""At the connection cap, a request head still incomplete this long after its first byte
is a trickle, and may be evicted: a client's head arrives in one go."""
EVICT_IDLE_S = 1.0
"""At the connection cap, a connection silent this long since it opened, or since its
last answer, may be evicted when no trickle can be."""
EVICT_MIN_RATE = 16 * 1024
"""Bytes per second under which a body still arriving counts as stalled, at the cap."""
_PARSER_STOPS = (httptools.HttpParserError, httptools.HttpParserUpgrade)  # unrelated classes
_QUANTUM = 8192  # bytes fed to the parser at once when a read is large
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TOO_LARGE = rpc_error(-32600, "Invalid Request: request body too large")
_INTERNAL = rpc_error(-32603, "Internal error")
_UNAVAILABLE = rpc_error(-32000, "Server shutting down")
_MALFORMED = rpc_error(-32700, "Parse error: malformed HTTP request")
_URI_TOO_LONG = rpc_error(-32600, "Invalid Request: request line too long")
_HEADER_TOO_LARGE = rpc_error(-32600, "Invalid Request: header line too long")
_HEAD_TOO_LARGE = rpc_error(-32600, "Invalid Request: request headers too large")
_TOO_MANY_HEADERS = rpc_error(-32600, "Invalid Request: too many request headers")
_TIMEOUT = rpc_error(-32600, "Invalid Request: request not received in time")
_BAD_LENGTH = rpc_error(-32600, "Invalid Request: bad Content-Length")

HandleResult = Response | Awaitable[Response]


class Application(Protocol):
    def handle(self, request: HttpRequest) -> HandleResult: ...

    def upgrade(
        self, request: HttpRequest, transport: asyncio.Transport, rest: bytes
    ) -> asyncio.Protocol | None:
        """Take the connection over, returning its new protocol (or None after answering).

        The connection keeps its place under the connection cap until it closes: a
        returned protocol with an ``on_lost`` attribute gets it set to a callable it must
        call once when the connection is gone; for any other protocol the place is
        given back at once.
        """
        ...


class _Refused(Exception):
    """Raised inside a parser callback after the request was refused: stop parsing."""


class _Conn(asyncio.Protocol):
    """One client connection."""

    __slots__ = (
        "server",
        "app",
        "loop",
        "transport",
        "parser",
        "client",
        "slot",
        "_url",
        "_headers",
        "_nheaders",
        "_body",
        "_body_size",
        "_queue",
        "_busy",
        "_closing",
        "_rejected",
        "_pending_reject",
        "_eof",
        "_in_body",
        "_head_left",
        "_head_reset",
        "_held",
        "_read_paused",
        "_linger_until",
        "_linger_left",
        "last_activity",
        "started",
        "in_request",
        "served",
        "_paused",
        "_current",
        "_drain_waiter",
        "_stream_task",
    )

    def __init__(self, server: HttpServer, slot: Slot | None) -> None:
        self.server = server
        self.app = server.app
        self.loop = server.loop
        self.slot = slot
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = ""
        self._url = b""
        self._headers: dict[str, str] = {}
        self._nheaders = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._queue: deque[HttpRequest] = deque()
        self._busy = False
        self._closing = False
        self._rejected = False
        self._pending_reject: bytes | None = None
        self._eof = False
        self._in_body = False
        self._head_left = server.max_head
        self._head_reset = False
        self._held: list[bytes] | None = None
        self._read_paused = False
        self._linger_until = 0.0
        self._linger_left = server.max_body + server.max_head
        now = self.loop.time()
        self.last_activity = now
        self.started = now  # the head deadline of the first request runs from the opening
        self.in_request = False
        self.served = 0
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
        self.server.connections[self] = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.pop(self, None)
        if self.slot is not None:
            self.slot.release()
        self.transport = None
        self._closing = True
        # Drop every buffer now: a flood's leftovers must not wait for a full collection.
        self._queue.clear()
        self._held = None
        self._body = []
        self._headers = {}
        self._url = b""
        self._wake_writer()
        if self._stream_task is not None:
            self._stream_task.cancel()

    def data_received(self, data: bytes) -> None:
        if self._rejected:  # lingering close: read and discard
            self.last_activity = self.loop.time()
            self._linger_left -= len(data)
            if self._linger_left < 0 and self.transport is not None and self._linger_until:
                self._linger_until = 0.0
                self.transport.abort()  # more than any request could have been: stop
            elif self._linger_until:
                self._yield_read()
            return
        poller = self.server.poller
        if poller is not None:
            poller.activity()
        if self._held is not None:  # input waits for answers to go out
            self._held.append(data)
            return
        n = len(data)
        if n <= _QUANTUM and (self._in_body or n <= self._head_left):
            in_head = not self._in_body
            self._head_reset = False
            try:
                self.parser.feed_data(data)
            except _PARSER_STOPS as exc:
                self._parse_failed(exc, data, data, 0)
                return
            if in_head and not self._head_reset and not self._rejected:
                self._head_left -= n  # every byte belonged to one unfinished head
        else:
            self._feed_pieces(data)

    def eof_received(self) -> bool:
        # A client may shut its side after its last request: answer it, then close. A
        # stream (server-sent events) has no end to wait for: its viewer is gone.
        self._eof = True
        if self._stream_task is not None:
            return False
        return self._busy or bool(self._queue) or self._held is not None

    def pause_writing(self) -> None:
        self._paused = True
        self._sync_reading()

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writer()
        self._release_held()

    def _wake_writer(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- feeding the parser -----------------------------------------------------------
    def _feed(self, piece: bytes | memoryview, data: bytes, end: int) -> bool:
        """Parse ``piece`` (``data[end + len(piece):]`` follows it); False once the
        connection is refused or upgraded (the rest of ``data`` is not ours to parse)."""
        try:
            self.parser.feed_data(piece)
        except _PARSER_STOPS as exc:
            self._parse_failed(exc, piece, data, end)
            return False
        return not self._rejected

    def _parse_failed(
        self, exc: Exception, piece: bytes | memoryview, data: bytes, end: int
    ) -> None:
        """The parser stopped in ``piece``: an upgrade, a refusal raised by one of our
        callbacks, or malformed input."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            offset = exc.args[0] if exc.args else len(piece)
            self._upgrade(bytes(piece[offset:]) + data[end + len(piece) :])
        elif isinstance(exc, httptools.HttpParserCallbackError):
            if not self._rejected:  # a bug in a callback: never a hung connection
                self._reject(500, _INTERNAL)
        else:
            self._reject(400, _MALFORMED)

    def _feed_pieces(self, data: bytes) -> None:
        """A large read: feed it in pieces, so that the head budget and the pipelining
        bound are checked between them; then let others have the loop."""
        self._yield_read()
        mv = memoryview(data)
        n = len(data)
        pos = 0
        while pos < n:
            if self._must_hold():
                self._hold(bytes(mv[pos:]))
                return
            in_head = not self._in_body
            step = _QUANTUM if not in_head else min(_QUANTUM, self._head_left)
            if step <= 0:
                self._reject(431, _HEAD_TOO_LARGE)
                return
            piece = mv[pos : pos + step]
            self._head_reset = False
            if not self._feed(piece, data, pos):
                return
            if in_head and not self._head_reset:
                self._head_left -= len(piece)
            pos += len(piece)

    def _yield_read(self) -> None:
        """Read no more this loop turn (libuv reads up to 32 times per wake-up): a large
        body or a discarded one shares the loop with everyone else."""
        transport = self.transport
        if transport is not None and not self._read_paused:
            self._read_paused = True
            transport.pause_reading()
            self.loop.call_soon(self._sync_reading)

    def _must_hold(self) -> bool:
        return self._paused or len(self._queue) + self._busy >= self.server.max_pipeline

    def _hold(self, rest: bytes) -> None:
        self._held = [rest] if rest else []
        self._sync_reading()

    def _release_held(self) -> None:
        """Parse held input once answers went out; read again when all of it is parsed."""
        held = self._held
        if held is None or self._must_hold() or self.transport is None:
            self._sync_reading()
            return
        self._held = None
        if self.in_request:  # the client sent this long ago; its deadline restarts now
            self.started = self.loop.time()
        data = b"".join(held)
        if data:
            self._feed_pieces(data)
        self._sync_reading()

    def _sync_reading(self) -> None:
        transport = self.transport
        if transport is None or (self._closing and not self._linger_until):
            return
        pause = not self._rejected and (self._paused or self._held is not None)
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # -- httptools callbacks ----------------------------------------------------------
    def on_message_begin(self) -> None:
        # The per-request state was reset when the previous request completed.
        self.in_request = True
        self.started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        if len(self._url) + len(url) > self.server.max_header_line:
            self._reject(414, _URI_TOO_LONG)
            raise _Refused
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        server = self.server
        self._nheaders += 1
        if self._nheaders > server.max_headers:
            self._reject(431, _TOO_MANY_HEADERS)
            raise _Refused
        if len(name) + len(value) + 4 > server.max_header_line:
            self._reject(431, _HEADER_TOO_LARGE)
            raise _Refused
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._in_body = True
        self._head_reset = True
        self._head_left = self.server.max_head
        headers = self._headers
        cl = headers.get("content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                self._reject(400, _BAD_LENGTH)
                raise _Refused from None
            if n > self.server.max_body:
                self._reject(413, _TOO_LARGE)
                raise _Refused
        expect = headers.get("expect")
        if expect is not None and expect.lower() == "100-continue":
            # Only when nothing is ahead of it: an interim answer must not overtake one.
            transport = self.transport
            if transport is not None and not self._busy and not self._queue:
                if self.parser.get_http_version() == "1.1":
                    transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.server.max_body:
            self._reject(413, _TOO_LARGE)
            raise _Refused
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.in_request = False
        self._in_body = False
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
        # Reset for the next request now: an idle connection keeps no old body.
        self._url = b""
        self._headers = {}
        self._nheaders = 0
        self._body = []
        self._body_size = 0
        if self.parser.should_upgrade():
            # Upgrade requests are finished in _upgrade (HttpParserUpgrade follows).
            self._queue.append(req)
            return
        if self._busy:
            self._queue.append(req)
            if len(self._queue) + 1 >= self.server.max_pipeline:
                self._sync_reading_for_queue()
            return
        self._dispatch(req)

    def _sync_reading_for_queue(self) -> None:
        # The pipelining bound is reached at a request boundary: hold (pause) from here.
        if self._held is None:
            self._hold(b"")

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
        self._next()

    def _next(self) -> None:
        """Answer queued requests in order, then a pending refusal, then read on."""
        queue = self._queue
        while queue and not self._busy and self.transport is not None:
            self._dispatch(queue.popleft())
        if self._busy or self.transport is None:
            return
        if self._pending_reject is not None:
            self._send_refusal(self._pending_reject)
            return
        if self._eof and not self._closing:
            self._closing = True
            self.transport.close()
            return
        if self._held is not None:
            self._release_held()

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
        self._next()

    def _write(self, resp: Response, keep_alive: bool, head: bool = False) -> None:
        transport = self.transport
        if transport is None:
            return
        server = self.server
        keep = keep_alive and not server.draining
        if len(resp.body) < LARGE_BODY or head:
            transport.write(encode_response(resp, keep, head))
        else:  # a large upstream answer: no copy of it into one buffer with the head
            transport.writelines((encode_head(resp, keep), resp.body))
        self.last_activity = self.loop.time()
        self.served += 1
        if server.poller is not None:
            server.poller.activity()
        if not keep:
            self._closing = True
            transport.close()

    # -- refusals and lingering close -------------------------------------------------
    def _reject(self, status: int, body: bytes) -> None:
        """Refuse the request being read: the stream cannot be resynchronised, so the
        answer closes the connection (after any answers still owed, in order)."""
        if self._rejected:
            return
        self._rejected = True
        self.in_request = False
        self._held = None
        self._body = []
        wire = encode_response(Response(status, body), False)
        if self._busy or self._queue:
            self._pending_reject = wire
        else:
            self._send_refusal(wire)

    def _send_refusal(self, wire: bytes) -> None:
        self._pending_reject = None
        transport = self.transport
        if transport is None:
            return
        transport.write(wire)
        self._closing = True
        if self._eof or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()  # the answer, then FIN; keep reading what the client sends
        self._linger_left = self._linger_budget()
        now = self.loop.time()
        self.last_activity = now
        self._linger_until = now + self.server.lingering_time
        if self._read_paused:
            self._read_paused = False
            transport.resume_reading()

    def _linger_budget(self) -> int:
        """Bytes to discard at most after a refusal: as much as an accepted request could
        hold, or the body the client announced (up to four times that)."""
        server = self.server
        budget = server.max_body + server.max_head
        announced = self._headers.get("content-length", "")
        if announced.isdigit():
            budget = max(budget, min(int(announced) + server.max_head, 4 * server.max_body))
        return budget

    def _upgrade(self, rest: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        req = self._queue.pop() if self._queue else None
        if req is None or self._busy or self._queue:
            self._reject(400, rpc_error(-32600, "Invalid Request: bad upgrade"))
            return
        proto = None
        try:
            proto = self.app.upgrade(req, transport, rest)
        except Exception:
            self.server.on_error(req)
        if proto is None:
            if not transport.is_closing():
                self._reject(400, rpc_error(-32601, "Upgrade not supported on this path"))
            return
        self.server.connections.pop(self, None)
        slot, self.slot = self.slot, None
        if slot is not None:
            if hasattr(proto, "on_lost"):
                proto.on_lost = slot.release
            else:
                slot.release()
        transport.set_protocol(proto)
        self._rejected = True  # this protocol object is finished
        self._closing = True

    # -- deadlines (from the server's sweep) ------------------------------------------
    def check(self, now: float) -> None:
        """Close or refuse the connection if one of its deadlines has passed."""
        transport = self.transport
        if transport is None:
            return
        server = self.server
        if self._linger_until:
            if now >= self._linger_until or now - self.last_activity >= server.lingering_timeout:
                self._linger_until = 0.0
                transport.abort()
            return
        if self._rejected or self._held is not None:  # held input: the wait is ours
            return
        if self.in_request:
            limit = server.request_timeout if self._in_body else server.head_timeout
            if now - self.started >= limit:
                self._reject(408, _TIMEOUT)
            return
        if self._busy or self._queue or self._held is not None:
            return
        if self.served == 0:  # opened, and not one byte of a request after head_timeout
            if now - self.started >= server.head_timeout:
                self._closing = True
                transport.close()
        elif now - self.last_activity >= server.keepalive_timeout:
            self._closing = True
            transport.close()

    def evict_rank(self, now: float) -> int | None:
        """How good a victim this connection is when room must be made at the cap: 0 a
        lingering close, 1 a head still incomplete ``evict_stalled`` after its first byte
        or a body arriving slower than ``EVICT_MIN_RATE`` (a trickle), 2 a connection
        silent ``evict_idle`` since it opened or since its last answer; None: it is
        serving a request, or too young to judge."""
        if self.transport is None:
            return None
        if self._linger_until:
            return 0
        if self._busy or self._queue or self._held is not None:
            return None
        server = self.server
        if self._in_body:  # an upload still flowing at a decent rate is kept
            elapsed = now - self.started
            stalled = elapsed >= server.evict_stalled
            return 1 if stalled and self._body_size < EVICT_MIN_RATE * elapsed else None
        if self.in_request:  # a client's head arrives at once; a trickle never completes
            return 1 if now - self.started >= server.evict_stalled else None
        since = self.started if self.served == 0 else self.last_activity
        return 2 if now - since >= server.evict_idle else None

    def evict(self) -> None:
        """Close now and give the place under the cap back at once."""
        if self.slot is not None:
            self.slot.release()
            self.slot = None
        self._closing = True
        if self.transport is not None:
            self.transport.abort()


async def _await(aw: Awaitable[Response]) -> Response:
    return await aw


class HttpServer:
    """Owns the listening sockets, the accept loop and the set of live connections.

    Args:
        app: the application (``handle`` and ``upgrade``).
        max_body: request bodies above this many bytes are answered 413.
        limits: the hostile-client bounds (:class:`~lasso.net.limits.Limits`).
        idle_timeout, request_timeout: override ``limits.keepalive_timeout`` and
            ``limits.request_timeout`` (tests).
        on_error: called with the request (and the exception) when the application fails.
        busy_poll_us: keep the loop polling this long after each request and response
            (:mod:`lasso.net.busypoll`); 0 lets it sleep as usual.
    """

    def __init__(
        self,
        app: Application,
        *,
        max_body: int = 8_000_000,
        limits: Limits | None = None,
        idle_timeout: float | None = None,
        request_timeout: float | None = None,
        on_error: Callable[..., Any] | None = None,
        busy_poll_us: int = 0,
    ) -> None:
        limits = limits or Limits()
        if idle_timeout is not None or request_timeout is not None:
            changes: dict[str, float] = {}
            if idle_timeout is not None:
                changes["keepalive_timeout"] = idle_timeout
            if request_timeout is not None:
                changes["request_timeout"] = request_timeout
                changes["head_timeout"] = min(limits.head_timeout, request_timeout)
            limits = limits.with_changes(changes)
        self.app = app
        self.limits = limits
        self.busy_poll_us = busy_poll_us
        self.poller: BusyPoller | None = None
        self.max_body = max_body
        # Copied out of ``limits``: read per request, one attribute lookup each.
        self.max_header_line = limits.max_header_line
        self.max_head = limits.max_head
        self.max_headers = limits.max_headers
        self.max_pipeline = limits.max_pipeline
        self.head_timeout = limits.head_timeout
        self.request_timeout = limits.request_timeout
        self.keepalive_timeout = limits.keepalive_timeout
        self.idle_timeout = limits.keepalive_timeout
        self.lingering_time = limits.lingering_time
        self.lingering_timeout = limits.lingering_timeout
        self.evict_stalled = EVICT_STALLED_S
        self.evict_idle = EVICT_IDLE_S
        self.loop = asyncio.get_event_loop()
        self.connections: dict[_Conn, None] = {}  # in opening order (eviction scans it)
        self.inflight = 0
        self.draining = False
        self.streams: set[asyncio.Task[None]] = set()
        self.acceptor: Acceptor | None = None
        self.open_files = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._on_error = on_error

    def on_error(self, req: HttpRequest, exc: BaseException | None = None) -> None:
        if self._on_error is not None:
            self._on_error(req, exc)

    @property
    def cap(self) -> int:
        """Connections accepted at most (0 before :meth:`start`)."""
        return self.acceptor.cap if self.acceptor is not None else 0

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen on ``host:port``; returns the bound port (useful with port 0).

        The first call raises the open-file soft limit to the hard limit and derives the
        connection cap from it (:func:`~lasso.net.limits.connection_cap`).
        """
        self.loop = asyncio.get_running_loop()
        if self.busy_poll_us and self.poller is None:
            self.poller = BusyPoller(self.loop, self.busy_poll_us / 1e6)
        if self.acceptor is None:
            self.open_files = raise_open_file_limit()
            cap = connection_cap(self.limits.max_connections, self.open_files)
            self.acceptor = Acceptor(
                self.loop,
                lambda slot: _Conn(self, slot),
                cap,
                evict=self._evict_one,
                retry_s=min(0.25, self.evict_stalled),
            )
        socks = bind_sockets(host, port, reuse_port=reuse_port, backlog=1024)
        for sock in socks:
            self.acceptor.listen(sock)
        if self._sweeper is None:
            self._sweeper = self.loop.create_task(self._sweep())
        return int(socks[0].getsockname()[1])

    def _evict_one(self) -> bool:
        """Close the best victim (:meth:`_Conn.evict_rank`) among the oldest connections:
        the first lingering or trickling one, else the oldest silent one."""
        now = self.loop.time()
        conns = self.connections
        best: _Conn | None = None
        best_rank = 3
        for conn in list(islice(conns, 256)):
            rank = conn.evict_rank(now)
            if rank is None:  # serving: to the back, so the next scan starts elsewhere
                conns.pop(conn, None)
                conns[conn] = None
            elif rank < best_rank:
                best, best_rank = conn, rank
                if rank <= 1:
                    break
        if best is None:
            return False
        conns.pop(best, None)
        best.evict()
        return True

    async def _sweep(self) -> None:
        interval = min(1.0, self.head_timeout / 4, self.keepalive_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = self.loop.time()
            for conn in list(self.connections):
                conn.check(now)

    async def drain(self, timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``timeout``), close."""
        self.draining = True
        if self.acceptor is not None:
            self.acceptor.close()
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
        if self.acceptor is not None:
            self.acceptor.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def __repr__(self) -> str:
        return (
            f"<HttpServer connections={len(self.connections)} inflight={self.inflight}"
            f" draining={self.draining} {self.acceptor!r}>"
        )
