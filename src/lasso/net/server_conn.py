"""One client connection of the HTTP server: requests answered in order, refusals,
streams, deadlines and eviction.

:class:`ServerConn` extends the reading half (:class:`~lasso.net.request_reader.
RequestReader`) with everything that answers: it hands each request to the application
(``handle`` returns a :class:`~lasso.net.http_messages.Response`, or an awaitable that
costs a task), writes answers strictly in request order (a large body after its head,
never copied into one buffer with it), streams a
:class:`~lasso.net.http_messages.StreamingResponse` with chunked encoding and
back-pressure, hands an ``Upgrade`` request to ``app.upgrade``, and refuses what the
reader cannot accept: the JSON-RPC error with ``Connection: close``, after any answers
still owed, then a lingering close (the write side shut, what the client still sends
read and discarded within ``lingering_time``, ``lingering_timeout`` and a byte budget).

The server's sweep calls :meth:`ServerConn.check` about once a second (deadlines: 408 for
a head or request not received in time, close for a silent or idle connection), and its
eviction asks :meth:`ServerConn.evict_rank` which connection can go when the cap is full.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable
from typing import TYPE_CHECKING, cast

from lasso.net.http_messages import (
    LARGE_BODY,
    HttpRequest,
    Pieces,
    Response,
    StreamingResponse,
    encode_head,
    encode_response,
    encode_stream_head,
    rpc_error,
)
from lasso.net.listener import Slot
from lasso.net.request_reader import _INTERNAL, RequestReader

if TYPE_CHECKING:
    from lasso.net.http_server import HttpServer

__all__ = ["ServerConn", "EVICT_STALLED_S", "EVICT_IDLE_S", "EVICT_MIN_RATE"]

EVICT_STALLED_S = 0.1
"""At the connection cap, a request head still incomplete this long after its first byte
is a trickle, and may be evicted: a client's head arrives in one go."""
EVICT_IDLE_S = 1.0
"""At the connection cap, a connection silent this long since it opened, or since its
last answer, may be evicted when no trickle can be."""
EVICT_MIN_RATE = 16 * 1024
"""Bytes per second under which a body still arriving counts as stalled, at the cap."""
_UNAVAILABLE = rpc_error(-32000, "Server shutting down")
_TIMEOUT = rpc_error(-32600, "Invalid Request: request not received in time")


class ServerConn(RequestReader):
    """One client connection (the protocol of an accepted socket)."""

    __slots__ = (
        "app",
        "slot",
        "_pending_reject",
        "_eof",
        "served",
        "_current",
        "_drain_waiter",
        "_stream_task",
    )

    def __init__(self, server: HttpServer, slot: Slot | None) -> None:
        super().__init__(server)
        self.app = server.app
        self.slot = slot  # the place under the connection cap, given back on close
        self._pending_reject: bytes | None = None  # a refusal waiting for earlier answers
        self._eof = False  # the client shut its side: close after the answers owed
        self.served = 0
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
            self._write(result, req)
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
        try:
            resp = task.result()  # one call for the usual case (a Response)
        except asyncio.CancelledError:
            resp = Response(503, _UNAVAILABLE)
        except BaseException as exc:  # as task.exception() would give it: never re-raised
            self.server.on_error(req, exc)
            resp = Response(500, _INTERNAL)
        if resp.__class__ is StreamingResponse:
            self._start_stream(resp, req)
            return
        self._write(resp, req)
        if self._queue or self._pending_reject is not None or self._eof or self._held is not None:
            self._next()  # else nothing waits: the usual keep-alive answer costs no call

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
            self._write(resp, req)
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

    def _write(self, resp: Response, req: HttpRequest) -> None:
        """Write the answer to ``req`` (no body for ``HEAD``); close unless kept alive."""
        transport = self.transport
        if transport is None:
            return
        server = self.server
        keep = req.keep_alive and not server.draining
        head = req.method == "HEAD"
        body = resp.body
        if len(body) < LARGE_BODY or head:
            transport.write(encode_response(resp, keep, head, req.http10))
        elif isinstance(body, Pieces):  # an answer spliced around the client's id
            transport.writelines((encode_head(resp, keep, req.http10), *body.parts))
        else:  # a large upstream answer: no copy of it into one buffer with the head
            transport.writelines((encode_head(resp, keep, req.http10), body))
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
