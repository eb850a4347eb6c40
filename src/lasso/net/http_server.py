"""The client-facing HTTP/1.1 server: an ``asyncio.Protocol`` driven by httptools.

This is the hot path, so it stays small: parse a request, hand it to the application's
``handle`` callable, write the answer. The module is the server (listening sockets, the
connection cap, the deadline sweep, draining); a connection is a
:class:`~lasso.net.server_conn.ServerConn`, whose reading half is
:class:`~lasso.net.request_reader.RequestReader`. ``handle`` returns a :class:`Response`
directly when it can answer synchronously (validation errors, local methods, the API) or
an awaitable when it has to call an upstream; only the latter costs a task.

Requests pipelined on one connection are answered strictly in order. An HTTP/1.0 request
is kept alive only with ``Connection: keep-alive``, and its answer then says so (HTTP/1.0
assumes a close otherwise). A WebSocket upgrade
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
* **Lingering close**: every early refusal (400, 408, 413, 414, 431, 501) writes its JSON-RPC
  error with ``Connection: close``, shuts the write side, and keeps reading and
  discarding for up to ``lingering_time`` (``lingering_timeout`` without data ends it
  sooner), so a client that writes its whole body before reading (Python's urllib,
  requests) reads the refusal rather than a connection reset. At most ``max_body +
  max_head`` bytes are discarded (as much as an accepted request could have been), or
  the announced ``Content-Length`` up to four times ``max_body``; beyond, the connection
  is reset.
* **Connections**: :class:`~lasso.net.listener.Acceptor` caps the open connections (HTTP
  and upgraded WebSockets); at the cap, when another client waits, it evicts a
  connection that serves nothing (:meth:`ServerConn.evict_rank`): a lingering close or a
  trickle (a head still incomplete ``EVICT_STALLED_S`` after its first byte, a body under
  ``EVICT_MIN_RATE``) first, else the oldest connection silent for ``EVICT_IDLE_S``; with
  none, it stops accepting for a moment.

On close every per-connection buffer (queued requests, held input, body pieces) is
dropped explicitly, so nothing waits for the garbage collector.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from itertools import islice
from typing import Any, Protocol

from lasso.net.busypoll import BusyPoller
from lasso.net.http_messages import (
    Body,
    HttpRequest,
    Pieces,
    Response,
    StreamingResponse,
    encode_response,
)
from lasso.net.limits import Limits, connection_cap, raise_open_file_limit
from lasso.net.listener import Acceptor, bind_sockets
from lasso.net.server_conn import EVICT_IDLE_S, EVICT_STALLED_S, ServerConn

__all__ = [
    "Body",
    "HttpRequest",
    "Pieces",
    "Response",
    "StreamingResponse",
    "HttpServer",
    "Application",
    "encode_response",
    "EVICT_STALLED_S",
    "EVICT_IDLE_S",
]

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
        self.connections: dict[ServerConn, None] = {}  # in opening order (eviction scans it)
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
                lambda slot: ServerConn(self, slot),
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
        """Close the best victim (:meth:`ServerConn.evict_rank`) among the oldest connections:
        the first lingering or trickling one, else the oldest silent one."""
        now = self.loop.time()
        conns = self.connections
        best: ServerConn | None = None
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
