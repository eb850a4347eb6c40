"""The upstream HTTP/1.1 client: a lean keep-alive connection pool for one provider URL.

Every JSON-RPC call Lasso forwards goes through :meth:`HttpUpstreamPool.request`, so the
per-request Python work is kept to a few microseconds (aiohttp's client costs ~100 µs; see
``docs/performance.md``): one ``transport.write`` of a precomputed header block plus the
body, an ``httptools`` response parser fed from :meth:`asyncio.Protocol.data_received`,
one future owned by the connection, and a ``loop.call_at`` timer per connection for the
deadline, re-armed lazily rather than per request. No task, no ``asyncio.wait_for``, no
logging per request. The connection itself (parser, deadline timer, when it may be
reused) is in :mod:`lasso.net.http_conn`; this module holds the pool and the public
surface, :class:`UpstreamResponse` included.

Connections
    A request takes the most recently used idle connection (LIFO keeps a few connections
    hot and lets the rest age out), opens a new one while fewer than ``max_connections``
    exist, or else waits in a FIFO queue. A finished connection is handed straight to the
    first waiter, or kept idle (at most ``max_idle``; idle ones older than
    ``idle_timeout`` are closed when a request next looks at the pool). A connection is
    closed, never reused, after ``Connection: close``, a timeout, a cancelled request, an
    error, or any byte that does not belong to a response.

Stale keep-alive connections
    A provider may close an idle connection at any moment. If that is noticed while idle
    (EOF or reset) the connection is simply dropped. If it closes just as a request is
    written to it, so that not one byte of response arrives, the request is sent again,
    once, as browsers, curl, httpx and aiohttp do: on a new connection, or, when
    ``max_connections`` are open, on the next one another request hands back (never an
    idle one). This is a replay: the provider may have read the first copy before
    closing. Pass ``retry_stale=False`` when even that is unacceptable. A request whose
    connection closes after any response byte arrived is never retried here.

Errors
    Non-2xx responses are returned, not raised. Failures raise the
    :mod:`lasso.net.errors` tree; ``exc.dispatched`` tells the router whether the
    request may have reached the provider: ``False`` for everything that fails before a
    connection is written to (no free connection, connect errors, the deadline passing
    while connecting, a closed pool), ``True`` for failures on the connection
    (:mod:`lasso.net.http_conn`).

Answer bound
    A response larger than ``max_response_size`` fails (``UpstreamProtocolError``). Code
    that expects small answers lowers that bound for the requests made in its context
    with :data:`ANSWER_BOUND` (the cache's head polls: a block header is never a
    hundred megabytes, however a provider answers), without a parameter through the
    request pipeline; a bound above the pool's does not raise it.

Not thread-safe: a pool belongs to one event loop (bound on first use).
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections import deque
from collections.abc import Coroutine, Iterable, Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote, urlsplit

from lasso.net.errors import (
    PoolClosed,
    PoolTimeout,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamTimeout,
    map_connect_errors,
)

# The connection protocol and the response type live next door (split for size); the
# private names are shared by the two modules only. UpstreamResponse is re-exported here.
from lasso.net.http_conn import _FRAMING_HEADERS, UpstreamResponse, _Connection, _StaleConnection

__all__ = ["ANSWER_BOUND", "UpstreamResponse", "HttpUpstreamPool", "DEFAULT_KEEP_HEADERS"]

ANSWER_BOUND: ContextVar[int | None] = ContextVar("lasso_answer_bound", default=None)
"""Bytes a response may have for requests made in this context (``None``: the pool's
``max_response_size``); set it around calls that expect small answers."""

USER_AGENT = "lasso/0.1"
#: Response headers kept in :attr:`UpstreamResponse.headers` unless told otherwise.
DEFAULT_KEEP_HEADERS = ("content-type", "retry-after")
# Headers the pool owns; a caller setting them would corrupt the framing.
_RESERVED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection"})


def _expire_waiter(fut: asyncio.Future[_Connection | None]) -> None:
    if not fut.done():
        fut.set_exception(PoolTimeout("no connection became free before the deadline"))


class HttpUpstreamPool:
    """Keep-alive HTTP/1.1 connections to one provider URL; POSTs JSON bodies to it.

    Args:
        url: ``http://`` or ``https://`` URL; its path and query are the request target.
            User info (``https://user:pass@host``) becomes a Basic ``Authorization`` header.
        headers: extra request headers (e.g. API keys), sent with every request; they may
            replace ``Host``, ``Content-Type`` or ``User-Agent`` but not framing headers.
        max_connections: open (or opening) connections at most; further requests wait.
        max_idle: idle connections kept at most; the rest are closed when released.
        idle_timeout: idle connections older than this are closed, not reused.
        connect_timeout: bound on DNS + TCP + TLS for a new connection.
        ssl_context: for ``https``; default :func:`ssl.create_default_context`.
        loop: the event loop; by default the running loop at first use.
        keep_headers: response header names to keep in :attr:`UpstreamResponse.headers`.
        max_response_size: bytes (headers and body) a response may have.
        max_waiters: requests that may queue for a connection; beyond, :class:`PoolTimeout`.

    Raises:
        ValueError: unsupported scheme, bad host or path, or a malformed header.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] = {},  # noqa: B006 - read only
        max_connections: int = 256,
        max_idle: int = 64,
        idle_timeout: float = 30.0,
        connect_timeout: float = 5.0,
        ssl_context: ssl.SSLContext | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        keep_headers: Iterable[str] = DEFAULT_KEEP_HEADERS,
        max_response_size: int = 128 * 1024 * 1024,
        max_waiters: int = 4096,
    ) -> None:
        if max_connections < 1 or max_idle < 0 or max_waiters < 0:
            raise ValueError("max_connections must be >= 1, max_idle and max_waiters >= 0")
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"unsupported URL scheme {parts.scheme!r}: {url!r}")
        host = parts.hostname
        if not host:
            raise ValueError(f"URL has no host: {url!r}")
        host.encode("idna")  # a name DNS could never take fails here, not per request
        default_port = 443 if scheme == "https" else 80
        port = parts.port or default_port
        self._host = host
        self._port = port
        self._ssl: ssl.SSLContext | None = None
        if scheme == "https":
            self._ssl = ssl_context if ssl_context is not None else ssl.create_default_context()
        host_text = f"[{host}]" if ":" in host else host
        authority = host_text if port == default_port else f"{host_text}:{port}"
        # Printed in repr and errors; path, query and user info may hold API keys.
        self._origin = f"{scheme}://{host_text}:{port}"

        target = parts.path or "/"
        if parts.query:
            target = f"{target}?{parts.query}"
        if any(c in target for c in " \t\r\n\0"):
            raise ValueError(f"URL path or query has whitespace: {url!r}")
        fields: dict[str, tuple[str, str]] = {
            "host": ("Host", authority),
            "content-type": ("Content-Type", "application/json"),
            "user-agent": ("User-Agent", USER_AGENT),
        }
        if parts.username is not None:
            creds = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            basic = base64.b64encode(creds.encode()).decode("ascii")
            fields["authorization"] = ("Authorization", f"Basic {basic}")
        for name, value in headers.items():
            bad_name = not name or any(c in name for c in ": \t\r\n\0")
            if bad_name or any(c in value for c in "\r\n\0"):
                raise ValueError(f"invalid header {name!r}")
            if name.lower() in _RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is managed by the pool")
            fields[name.lower()] = (name, value)
        lines = "".join(f"{name}: {value}\r\n" for name, value in fields.values())
        self._head = f"POST {target} HTTP/1.1\r\n".encode("ascii") + lines.encode("latin-1")
        self._head += b"Content-Length: "

        self._keep_headers = frozenset(
            {h.lower().encode("ascii") for h in keep_headers} | set(_FRAMING_HEADERS)
        )
        self._max_connections = max_connections
        self._max_idle = max_idle
        self._idle_timeout = idle_timeout
        self._connect_timeout = connect_timeout
        self._max_response_size = max_response_size
        self._max_waiters = max_waiters
        self._loop = loop

        self._idle: deque[_Connection] = deque()  # oldest left, most recent right
        self._conns: set[_Connection] = set()  # established and not yet closed
        self._connecting = 0  # connects in progress, or slots granted to waiters
        self._waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self._closed = False
        self._opened = 0

    # -- stats ---------------------------------------------------------------------------

    @property
    def idle(self) -> int:
        """Connections open and waiting for a request."""
        return len(self._idle)

    @property
    def active(self) -> int:
        """Connections serving a request, or being opened for one."""
        return len(self._conns) + self._connecting - len(self._idle)

    @property
    def total(self) -> int:
        """Connections open or being opened."""
        return len(self._conns) + self._connecting

    @property
    def waiting(self) -> int:
        """Requests queued for a connection."""
        return len(self._waiters)

    @property
    def connections_opened(self) -> int:
        """Connections successfully opened over the pool's life."""
        return self._opened

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return (
            f"<HttpUpstreamPool {self._origin} idle={self.idle} active={self.active} "
            f"total={self.total} opened={self._opened} waiting={self.waiting}{state}>"
        )

    # -- requests ------------------------------------------------------------------------

    def exchange(
        self, body: bytes, tid: bytes, timeout: float, *, replay_safe: bool
    ) -> Coroutine[Any, Any, UpstreamResponse]:
        """The :class:`~lasso.net.transport.UpstreamTransport` seam: :meth:`request`, with a
        stale connection resent on only when the request is ``replay_safe`` (``tid`` is
        already in ``body``; HTTP needs nothing else)."""
        return self.request(body, timeout, retry_stale=replay_safe)

    async def request(
        self, body: bytes, timeout: float, *, retry_stale: bool = True
    ) -> UpstreamResponse:
        """POST ``body`` (JSON) to the pool's URL and return the complete response.

        Args:
            body: the request body, sent as is.
            timeout: seconds for everything: waiting for a connection, connecting,
                sending and receiving the whole response.
            retry_stale: resend once on a new connection if a reused one closes before
                any response byte (see the module docstring).

        Returns:
            The response, whatever its status code.

        Raises:
            UpstreamConnectError: no connection could be made (``dispatched=False``),
                including none within ``connect_timeout``.
            PoolTimeout: no connection became free in time (``dispatched=False``).
            UpstreamTimeout: no complete response in time (``dispatched=True``), or the
                deadline passed while connecting (``dispatched=False``).
            UpstreamDisconnected: closed or reset mid-exchange (``dispatched=True``).
            UpstreamProtocolError: not a valid HTTP response (``dispatched=True``).
            PoolClosed: the pool is (or got) closed.
        """
        if self._closed:
            raise PoolClosed("pool is closed")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        if timeout <= 0:
            raise UpstreamTimeout("deadline already passed", dispatched=False)
        deadline = now + timeout
        payload = b"%b%d\r\n\r\n%b" % (self._head, len(body), body)
        fresh = False
        while True:
            idle = self._idle
            if idle and not fresh:
                expired = now - self._idle_timeout
                while idle and idle[0].last_used <= expired:
                    idle[0]._close()  # removes itself from ``idle``
            if idle and not fresh:
                conn = idle.pop()
                conn.idle = False
            else:
                conn = await self._acquire(deadline)
            conn.last_used = now
            bound = ANSWER_BOUND.get()
            if bound is None or bound > self._max_response_size:
                bound = self._max_response_size
            fut = conn.send(payload, deadline, bound)
            try:
                return await fut
            except _StaleConnection:
                if not retry_stale or fresh:
                    raise UpstreamDisconnected(
                        "reused connection closed before any response byte"
                    ) from None
                fresh = True
            except BaseException:
                if conn._waiter is fut:  # cancelled while the request was in flight
                    conn.abandon()
                raise

    async def _acquire(self, deadline: float) -> _Connection:
        """A connection that is not idle: a new one, or one handed over by a finished request."""
        while True:
            if self._closed:
                raise PoolClosed("pool is closed")
            if len(self._conns) + self._connecting < self._max_connections:
                self._connecting += 1
                return await self._connect(deadline)
            if len(self._waiters) >= self._max_waiters:
                raise PoolTimeout(f"{len(self._waiters)} requests already waiting")
            got = await self._wait_turn(deadline)
            assert self._loop is not None
            if self._loop.time() >= deadline:  # served at the very last instant: too late
                self._give_back(got)
                raise PoolTimeout("no connection became free before the deadline")
            if got is None:  # a slot was reserved for us (``_connecting`` counts it)
                if self._closed:
                    self._connecting -= 1
                    raise PoolClosed("pool is closed")
                return await self._connect(deadline)
            if not got.closed:
                return got
            # Handed a connection that closed before we ran: try again.

    async def _wait_turn(self, deadline: float) -> _Connection | None:
        loop = self._loop
        assert loop is not None
        fut: asyncio.Future[_Connection | None] = loop.create_future()
        self._waiters.append(fut)
        timer = loop.call_at(deadline, _expire_waiter, fut)
        try:
            return await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._give_back(fut.result())  # served, but cancelled before we ran
            else:
                try:
                    self._waiters.remove(fut)
                except ValueError:
                    pass
            raise
        finally:
            timer.cancel()

    async def _connect(self, deadline: float) -> _Connection:
        """Open a connection; the caller has already counted it in ``_connecting``."""
        loop = self._loop
        assert loop is not None
        until = loop.time() + self._connect_timeout
        by_deadline = deadline <= until
        try:
            with map_connect_errors(self._origin):
                try:
                    conn = await self._open(loop, deadline if by_deadline else until)
                except TimeoutError:
                    if not by_deadline:
                        raise  # a connect error: the provider was too slow to accept
                    raise UpstreamTimeout(
                        f"the deadline passed while connecting to {self._origin}",
                        dispatched=False,
                        cause="connect_timeout",
                    ) from None
        except BaseException:
            self._connecting -= 1
            self._grant_slots()
            raise
        self._connecting -= 1
        if conn.closed:  # the provider hung up between connect and now
            self._grant_slots()
            raise UpstreamConnectError(f"{self._origin} closed the connection at once")
        if self._closed:
            conn._close(abort=True)
            raise PoolClosed("pool closed while connecting")
        self._conns.add(conn)
        self._opened += 1
        return conn

    async def _open(self, loop: asyncio.AbstractEventLoop, until: float) -> _Connection:
        # A task plus a timer that cancels it: unlike ``asyncio.timeout`` on 3.11, an
        # expiry racing the result cannot leave a stray cancellation on the caller's task.
        # Connects are rare, so the task is affordable; requests themselves use none.
        ssl_context = self._ssl
        task = loop.create_task(
            loop.create_connection(
                lambda: _Connection(self, loop),
                self._host,
                self._port,
                ssl=ssl_context,
                server_hostname=self._host if ssl_context is not None else None,
            )
        )
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_at(until, expire)
        try:
            _, conn = await task
        except asyncio.CancelledError:
            if task.done() and not task.cancelled() and task.exception() is None:
                task.result()[0].abort()  # connected, but our caller is gone
            current = asyncio.current_task()
            if expired and (current is None or current.cancelling() == 0):
                raise TimeoutError from None
            raise
        finally:
            timer.cancel()
        return conn

    # -- bookkeeping (synchronous, called from protocol callbacks) -----------------------

    def _release(self, conn: _Connection) -> None:
        """A connection finished a response and may be reused."""
        if self._closed:
            conn._close()
            return
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if len(self._idle) >= self._max_idle:
            conn._close()
            return
        conn.idle = True
        self._idle.append(conn)

    def _forget(self, conn: _Connection) -> None:
        """A connection closed (by us or by the provider): free its slot."""
        self._conns.discard(conn)
        if conn.idle:
            conn.idle = False
            self._idle.remove(conn)
        self._grant_slots()

    def _give_back(self, granted: _Connection | None) -> None:
        if granted is None:
            self._connecting -= 1
            self._grant_slots()
        elif not granted.closed:
            self._release(granted)

    def _grant_slots(self) -> None:
        """Let queued requests open connections while there is room."""
        waiters = self._waiters
        while waiters and len(self._conns) + self._connecting < self._max_connections:
            waiter = waiters.popleft()
            if not waiter.done():
                self._connecting += 1
                waiter.set_result(None)

    # -- shutdown ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every connection, fail queued requests and those in flight with PoolClosed.

        Idempotent. Waits (briefly) until the transports have reported closing.
        """
        self._closed = True
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_exception(PoolClosed("pool closed while waiting for a connection"))
        loop = self._loop
        if loop is None or not self._conns:
            self._idle.clear()
            return
        pending: list[asyncio.Future[None]] = []
        for conn in list(self._conns):
            on_lost: asyncio.Future[None] = loop.create_future()
            pending.append(on_lost)
            conn.shutdown(on_lost)
        _, not_done = await asyncio.wait(pending, timeout=2.0)
        for fut in not_done:
            fut.cancel()
