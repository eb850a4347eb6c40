"""One upstream HTTP/1.1 keep-alive connection: the protocol under the pool.

:class:`_Connection` is the :class:`asyncio.Protocol` behind each connection of
:class:`~lasso.net.http_client.HttpUpstreamPool`; it carries one request at a time.
:meth:`_Connection.send` writes the request the pool built with one ``transport.write``
and returns a future the connection owns; an ``httptools`` response parser fed from
:meth:`_Connection.data_received` resolves it. No task, no ``asyncio.wait_for``, no
logging per request.

Deadline timer
    One ``loop.call_at`` timer per connection, re-armed lazily rather than per request.
    It stays armed across requests: ``send`` replaces it only when none is armed or the
    new deadline is earlier, and when it fires before the deadline of the request now in
    flight (it was armed for an earlier one) it moves itself there. A busy connection
    re-arms about once per timeout instead of creating and cancelling a timer per request
    (~2 µs on uvloop, a third of the whole request). When it fires for the request in
    flight, that request fails with ``UpstreamTimeout`` and the connection is closed.

Reuse
    After a complete response that the provider keeps alive, the connection goes back to
    the pool (``HttpUpstreamPool._release``). It is closed instead, never reused, after
    ``Connection: close``, a timeout, a cancelled request (``abandon``), an error, or any
    byte that does not belong to a response: bytes after a complete response, or bytes on
    an idle connection, mean the stream is out of step. Informational (1xx) responses are
    skipped.

Closed under a request
    A reused connection that closes before one byte of the response arrived fails the
    request with the private ``_StaleConnection``; the pool decides whether to send it
    again (see :mod:`lasso.net.http_client`). A body with neither ``Content-Length`` nor
    chunked framing that a clean EOF ends is a complete response (RFC 9112 §6.3). Any
    other close is ``UpstreamDisconnected``.

Errors
    A request fails here only once its bytes were written, so with ``dispatched=True``:
    ``UpstreamTimeout``, ``UpstreamDisconnected``, ``UpstreamProtocolError`` (not HTTP,
    larger than ``max_response_size``, or a protocol switch) and ``PoolClosed`` (the pool
    closed under it). Non-2xx responses are responses, not errors.

Memory
    A response over ``max_response_size`` fails as soon as its ``Content-Length`` says so
    (before any body byte is kept), else when the bytes pass it. The body's pieces are
    kept in a list and joined once, when the response is complete (a one-piece body is
    not copied at all). Past its first MiB (:data:`LARGE_ANSWER`) an answer is read one
    piece per loop turn (reading paused until the next turn), so a large or hostile one
    shares the loop with everyone else, and its pieces are moved into one ``bytearray``
    as they arrive, which becomes the body: it grows in place (``realloc`` remaps large
    blocks rather than copying them), so a large answer is held once, never as pieces
    plus their join. A response that fails or is abandoned (timeout, reset, cut off,
    oversize, cancelled) drops its bytes at once rather than leaving them to the garbage
    collector.

``_Connection``, ``_StaleConnection`` and ``_FRAMING_HEADERS`` are shared with
:mod:`lasso.net.http_client` only: the pool drives a connection through ``send``,
``abandon``, ``shutdown`` and ``_close``, and the connection reports back through the pool's
``_release`` and ``_forget``. The two modules are one component split for size; a
connection reads its pool's attributes directly, with no indirection on the hot path.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, NamedTuple, cast

import httptools

from lasso.net.errors import (
    PoolClosed,
    UpstreamDisconnected,
    UpstreamProtocolError,
    UpstreamTimeout,
)

if TYPE_CHECKING:
    from lasso.net.http_client import HttpUpstreamPool

__all__ = ["LARGE_ANSWER", "UpstreamResponse"]

LARGE_ANSWER = 1 << 20
"""Bytes of one answer past which each read yields the loop and the body is a bytearray."""
# Always kept: they tell a close-delimited body from a truncated one.
_FRAMING_HEADERS = (b"content-length", b"transfer-encoding")


class UpstreamResponse(NamedTuple):
    """A complete HTTP response, whatever its status.

    ``headers`` holds only the configured names (lower-cased) plus ``content-length`` /
    ``transfer-encoding`` when present; a repeated header keeps its last value.
    """

    status: int
    body: bytes | bytearray  # a bytearray past LARGE_ANSWER; never written to after
    headers: dict[bytes, bytes]


class _StaleConnection(Exception):
    """A reused connection closed before any response byte: the request may be resent."""


class _TrailingData(Exception):
    """Bytes after a complete response: the connection cannot be trusted any more."""


class _Refused(Exception):
    """Raised in a parser callback that failed the request: stop parsing."""


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses one response at a time.

    All state changes happen in protocol callbacks or synchronous calls from the pool;
    a request awaits ``_waiter``, the future the connection resolves.
    """

    __slots__ = (
        "_pool",
        "_loop",
        "_transport",
        "_parser",
        "_waiter",
        "_timer",
        "_timer_at",
        "_deadline",
        "_chunks",
        "_big",
        "_headers",
        "_keep",
        "_received",
        "_max_size",
        "_headers_done",
        "_complete",
        "_status",
        "_keep_alive",
        "_on_lost",
        "on_body",
        "reused",
        "idle",
        "closed",
        "last_used",
    )

    def __init__(self, pool: HttpUpstreamPool, loop: asyncio.AbstractEventLoop) -> None:
        self._pool = pool
        self._loop = loop
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[UpstreamResponse] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._deadline = 0.0
        self._chunks: list[bytes] = []
        self._big: bytearray | None = None  # the body so far, once past LARGE_ANSWER
        # httptools looks callbacks up once: the list's own append runs without a frame.
        self.on_body = self._chunks.append
        self._headers: dict[bytes, bytes] = {}
        self._keep = pool._keep_headers
        self._max_size = pool._max_response_size
        self._received = 0
        self._headers_done = False
        self._complete = False
        self._status = 0
        self._keep_alive = False
        self._on_lost: asyncio.Future[None] | None = None
        self.reused = False
        self.idle = False
        self.closed = False
        self.last_used = 0.0
        self._parser = httptools.HttpResponseParser(self)

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement the interface without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:  # asyncio and uvloop set it already; be explicit, once per connection
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Nobody asked: an unsolicited answer means the stream is out of step.
            self._close(abort=True)
            return
        received = self._received + len(data)
        self._received = received
        if received > self._max_size:
            self._fail(UpstreamProtocolError(f"response larger than {self._max_size} bytes"))
            return
        large = received > LARGE_ANSWER
        if large and self._transport is not None:
            # A large answer: one read per loop turn, so that it cannot hold the loop
            # for a burst of reads (libuv reads up to 32 times per wake-up).
            self._transport.pause_reading()
            self._loop.call_soon(self._resume_reading)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # llhttp stops after a 101, or a bodiless response carrying Upgrade headers.
            if self._complete:
                self._finish(reuse=False)
            else:
                self._fail(UpstreamProtocolError("provider switched protocols"))
            return
        except httptools.HttpParserError as exc:
            if self._waiter is None:  # a callback already failed the request
                return
            if self._complete:  # the response itself was fine; what followed was not
                self._finish(reuse=False)
            else:
                self._fail(UpstreamProtocolError(f"invalid HTTP response: {exc}"))
            return
        if self._complete:
            self._finish(reuse=self._keep_alive)
        elif large and self._chunks:
            self._spill()

    def _spill(self) -> None:
        """Move the body's pieces into the growing bytearray (each piece freed at once)."""
        big = self._big
        if big is None:
            big = self._big = bytearray()
        for piece in self._chunks:
            big += piece
        self._chunks.clear()

    def _take_body(self) -> bytes | bytearray:
        """The complete body, handed over: the connection keeps no reference to it."""
        chunks = self._chunks
        if self._big is None:
            body = b"".join(chunks)  # one piece: that piece itself, no copy
            chunks.clear()
            return body
        self._spill()
        big, self._big = self._big, None
        assert big is not None
        return big

    def _resume_reading(self) -> None:
        if not self.closed and self._transport is not None:
            self._transport.resume_reading()

    def eof_received(self) -> bool:
        self._lost(None)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost(exc)
        on_lost = self._on_lost
        if on_lost is not None and not on_lost.done():
            on_lost.set_result(None)

    # -- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._complete:
            raise _TrailingData
        self._chunks.clear()
        self._big = None
        self._headers = {}
        self._headers_done = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in self._keep:
            self._headers[name] = value

    def on_headers_complete(self) -> None:
        self._headers_done = True
        length = self._headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self._max_size:
            # Announced too large: refuse before one byte of it is buffered.
            self._fail(UpstreamProtocolError(f"response larger than {self._max_size} bytes"))
            raise _Refused

    def on_message_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 200:  # 1xx (103 Early Hints...): the real response follows
            self._headers_done = False
            return
        self._status = status
        # Only reliable here: llhttp resets its flags once the message is done.
        self._keep_alive = parser.should_keep_alive()
        self._complete = True

    # -- driven by the pool -------------------------------------------------------------

    def send(
        self, payload: bytes, deadline: float, max_size: int
    ) -> asyncio.Future[UpstreamResponse]:
        """Write one request; the returned future resolves to its response or error (a
        response over ``max_size`` bytes is one)."""
        loop = self._loop
        fut: asyncio.Future[UpstreamResponse] = loop.create_future()
        self._waiter = fut
        self._max_size = max_size
        self._received = 0
        self._headers_done = False
        self._deadline = deadline
        # One timer per connection, re-armed lazily: it stays armed across requests and,
        # when it fires early for the current request, moves to that request's deadline.
        # Creating and cancelling a timer per request costs ~2 µs on uvloop, a third of
        # the whole request; this way a busy connection re-arms about once per timeout.
        timer = self._timer
        if timer is None or self._timer_at > deadline:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline
        assert self._transport is not None
        self._transport.write(payload)
        return fut

    def abandon(self) -> None:
        """The caller gave up (cancelled): the response is unwanted, so is the connection."""
        self._waiter = None
        self._release_buffers()
        self._close(abort=True)

    def shutdown(self, on_lost: asyncio.Future[None]) -> None:
        """Pool closing: fail any request in flight and close, resolving ``on_lost``."""
        self._on_lost = on_lost
        self._fail(PoolClosed("pool closed with the request in flight", dispatched=True))

    def _on_timer(self) -> None:
        self._timer = None
        if self._waiter is None:  # idle, or the request it was armed for is long done
            return
        deadline = self._deadline
        if deadline > self._loop.time():  # armed for an earlier request: move it
            self._timer = self._loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline
            return
        self._fail(
            UpstreamTimeout(f"{self._pool._origin}: no complete response before the deadline")
        )

    def _finish(self, reuse: bool) -> None:
        waiter = self._waiter
        self._waiter = None
        self._complete = False
        self.reused = True
        if self._big is None:  # _take_body inlined: the hot path
            chunks = self._chunks
            response = UpstreamResponse(self._status, b"".join(chunks), self._headers)
            chunks.clear()
        else:
            response = UpstreamResponse(self._status, self._take_body(), self._headers)
        if waiter is not None and not waiter.done():
            waiter.set_result(response)
        if reuse:
            self._pool._release(self)
        else:
            self._close()

    def _fail(self, exc: Exception) -> None:
        waiter = self._waiter
        self._waiter = None
        self._release_buffers()
        self._close(abort=True)
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.closed:
            self.closed = True
            self._pool._forget(self)
        waiter = self._waiter
        if waiter is None:
            return
        self._waiter = None
        if waiter.done():
            return
        if self._received == 0 and self.reused:
            waiter.set_exception(_StaleConnection())
        elif (
            exc is None
            and self._headers_done
            and not (_FRAMING_HEADERS[0] in self._headers or _FRAMING_HEADERS[1] in self._headers)
        ):
            # Neither Content-Length nor chunked: the body ran until the close (RFC 9112 §6.3).
            status = self._parser.get_status_code()
            waiter.set_result(UpstreamResponse(status, self._take_body(), self._headers))
        else:
            self._release_buffers()
            reason = f": {exc}" if exc is not None else ""
            waiter.set_exception(
                UpstreamDisconnected(f"connection closed before a complete response{reason}")
            )

    def _release_buffers(self) -> None:
        """Drop a failed response's bytes now: the connection and its parser reference
        each other, so without this they would wait for a full garbage collection."""
        self._chunks.clear()
        self._big = None
        self._headers = {}

    def _close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self._transport
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()
        self._pool._forget(self)
