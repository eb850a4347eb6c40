"""Tests of the upstream keep-alive pool, through real sockets on 127.0.0.1.

Each test starts a small raw asyncio HTTP server (``Server``) whose answers it scripts,
so a provider can misbehave on demand: close, reset, stall, send garbage. Waits are on
events under a deadline, never on sleeps; ``MS`` scales the few real timeouts
(``LASSO_TEST_TIME_FACTOR=5`` on a slow machine). Every async test also runs on uvloop
(``test_on_uvloop``). The last section feeds the connection protocol directly, byte by
byte and with generated input.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import os
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.net.errors import (
    PoolClosed,
    PoolTimeout,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from lasso.net.http_client import HttpUpstreamPool, UpstreamResponse, _Connection

MS = 0.001 * float(os.environ.get("LASSO_TEST_TIME_FACTOR", "1"))
DEADLINE = 5000 * MS  # bound on any single wait for an event
SLACK = 0.002  # uvloop's clock ticks in whole milliseconds


# -- a scriptable provider ----------------------------------------------------------------


@dataclass
class Request:
    conn: ServerConn
    seq: int  # 0 for the first request on its connection
    target: bytes
    headers: dict[bytes, bytes]
    body: bytes


Handler = Callable[["ServerConn", Request], Awaitable[None]]


async def echo(conn: ServerConn, req: Request) -> None:
    conn.respond(200, req.body, [(b"Content-Type", b"application/json")])


class ServerConn(asyncio.Protocol):
    """One accepted connection; helpers write well-formed or broken answers."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.index = len(server.conns)
        server.conns.append(self)
        self.parser = httptools.HttpRequestParser(self)
        self.seen = 0
        self.lost = asyncio.Event()
        self.eof = asyncio.Event()
        self._reset_message()

    def _reset_message(self) -> None:
        self._target = b""
        self._headers: dict[bytes, bytes] = {}
        self._body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.abort()

    def eof_received(self) -> bool:
        self.eof.set()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof.set()
        self.lost.set()

    def on_url(self, url: bytes) -> None:
        self._target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        req = Request(self, self.seen, self._target, self._headers, b"".join(self._body))
        self.seen += 1
        self._reset_message()
        self.server.requests.append(req)
        self.server.arrived.put_nowait(req)
        task = asyncio.ensure_future(self.server.handler(self, req))
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    def write(self, data: bytes) -> None:
        self.transport.write(data)

    def respond(
        self,
        status: int = 200,
        body: bytes = b"",
        headers: list[tuple[bytes, bytes]] | None = None,
        reason: bytes = b"OK",
    ) -> None:
        lines = b"".join(b"%s: %s\r\n" % h for h in headers or [])
        self.write(
            b"HTTP/1.1 %d %s\r\n%sContent-Length: %d\r\n\r\n%s"
            % (status, reason, lines, len(body), body)
        )

    def reset(self) -> None:
        """Close with RST instead of FIN."""
        sock = self.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


class Server:
    """A raw HTTP/1.1 server on 127.0.0.1:0 that answers through ``handler``."""

    def __init__(self, handler: Handler = echo, ssl_context: ssl.SSLContext | None = None):
        self.handler = handler
        self.ssl_context = ssl_context
        self.conns: list[ServerConn] = []
        self.requests: list[Request] = []
        self.arrived: asyncio.Queue[Request] = asyncio.Queue()
        self.tasks: set[asyncio.Future[None]] = set()

    async def __aenter__(self) -> Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ServerConn(self), "127.0.0.1", 0, ssl=self.ssl_context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if self.ssl_context else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/rpc/key?x=1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for conn in self.conns:
            if hasattr(conn, "transport"):  # absent if the TLS handshake failed
                conn.transport.abort()
        for task in list(self.tasks):
            task.cancel()
        await self._server.wait_closed()

    async def next_request(self) -> Request:
        async with asyncio.timeout(DEADLINE):
            return await self.arrived.get()


@asynccontextmanager
async def open_pool(url: str, **kwargs: Any) -> AsyncIterator[HttpUpstreamPool]:
    pool = HttpUpstreamPool(url, **kwargs)
    try:
        yield pool
    finally:
        await pool.aclose()


async def within(aw: Awaitable[Any]) -> Any:
    """Await ``aw`` under the test deadline."""
    async with asyncio.timeout(DEADLINE):
        return await aw


async def one_loop_pass() -> None:
    """Let tasks created before this call take their first step (ordering, not timing)."""
    await asyncio.sleep(0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Gate:
    """A handler that holds every request until the test lets it through."""

    def __init__(self) -> None:
        self.open = asyncio.Event()

    async def __call__(self, conn: ServerConn, req: Request) -> None:
        await self.open.wait()
        conn.respond(200, req.body)


# -- keep-alive and concurrency -----------------------------------------------------------


async def test_sequential_requests_share_one_connection() -> None:
    """Twenty sequential requests travel over a single kept-alive TCP connection."""
    async with Server() as srv, open_pool(srv.url) as pool:
        for i in range(20):
            resp = await pool.request(b'{"id":%d}' % i, DEADLINE)
            assert resp == UpstreamResponse(
                200,
                b'{"id":%d}' % i,
                {
                    b"content-type": b"application/json",
                    b"content-length": str(len(resp.body)).encode(),
                },
            )
        assert len(srv.conns) == 1
        assert pool.connections_opened == 1
        assert (pool.idle, pool.active, pool.total) == (1, 0, 1)


async def test_request_line_and_headers() -> None:
    """The request carries path and query, Host, JSON content type, length and custom headers."""
    async with Server() as srv, open_pool(srv.url, headers={"X-Api-Key": "k1"}) as pool:
        await pool.request(b"[1,2]", DEADLINE)
        req = srv.requests[0]
        assert req.target == b"/rpc/key?x=1"
        assert req.headers[b"host"] == b"127.0.0.1:%d" % srv.port
        assert req.headers[b"content-type"] == b"application/json"
        assert req.headers[b"content-length"] == b"5"
        assert req.headers[b"user-agent"] == b"lasso/0.1"
        assert req.headers[b"x-api-key"] == b"k1"
        assert req.body == b"[1,2]"


async def test_user_info_becomes_basic_authorization() -> None:
    """Credentials in the URL are sent as a Basic Authorization header, never printed."""
    async with Server() as srv:
        url = srv.url.replace("http://", "http://user:p%40ss@")
        async with open_pool(url) as pool:
            await pool.request(b"{}", DEADLINE)
            expected = b"Basic " + base64.b64encode(b"user:p@ss")
            assert srv.requests[0].headers[b"authorization"] == expected
            assert "user" not in repr(pool) and "key" not in repr(pool)


async def test_concurrent_requests_open_at_most_max_connections() -> None:
    """Ten concurrent requests use four connections; the other six queue, then all finish."""
    gate = Gate()
    async with Server(gate) as srv, open_pool(srv.url, max_connections=4) as pool:
        tasks = [asyncio.create_task(pool.request(b"%d" % i, DEADLINE)) for i in range(10)]
        for _ in range(4):
            await srv.next_request()
        assert (pool.total, pool.active, pool.waiting) == (4, 4, 6)
        gate.open.set()
        results = await within(asyncio.gather(*tasks))
        assert [r.body for r in results] == [b"%d" % i for i in range(10)]
        assert len(srv.conns) == 4
        assert pool.connections_opened == 4
        assert (pool.idle, pool.active, pool.waiting) == (4, 0, 0)


async def test_waiters_are_served_in_fifo_order() -> None:
    """With one connection, queued requests reach the provider in the order they queued."""
    gate = Gate()
    async with Server(gate) as srv, open_pool(srv.url, max_connections=1) as pool:
        first = asyncio.create_task(pool.request(b"A", DEADLINE))
        await srv.next_request()
        rest = [asyncio.create_task(pool.request(b, DEADLINE)) for b in (b"B", b"C", b"D")]
        await one_loop_pass()
        assert pool.waiting == 3
        gate.open.set()
        await within(asyncio.gather(first, *rest))
        assert [r.body for r in srv.requests] == [b"A", b"B", b"C", b"D"]
        assert len(srv.conns) == 1


async def test_timeout_covers_the_wait_for_a_connection() -> None:
    """A request queued past its deadline fails with PoolTimeout, not dispatched."""
    gate = Gate()
    async with Server(gate) as srv, open_pool(srv.url, max_connections=1) as pool:
        first = asyncio.create_task(pool.request(b"A", DEADLINE))
        await srv.next_request()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(PoolTimeout) as info:
            await within(pool.request(b"B", 100 * MS))
        assert loop.time() - t0 >= 100 * MS - SLACK
        assert info.value.dispatched is False
        assert isinstance(info.value, UpstreamTimeout)
        assert pool.waiting == 0
        gate.open.set()
        assert (await within(first)).body == b"A"
        assert (pool.idle, pool.total) == (1, 1)
        assert [r.body for r in srv.requests] == [b"A"]


async def test_full_wait_queue_fails_fast() -> None:
    """Beyond max_waiters a request fails at once with PoolTimeout."""
    gate = Gate()
    async with Server(gate) as srv:
        async with open_pool(srv.url, max_connections=1, max_waiters=1) as pool:
            first = asyncio.create_task(pool.request(b"A", DEADLINE))
            await srv.next_request()
            second = asyncio.create_task(pool.request(b"B", DEADLINE))
            await one_loop_pass()
            with pytest.raises(PoolTimeout, match="already waiting"):
                await pool.request(b"C", DEADLINE)
            gate.open.set()
            await within(asyncio.gather(first, second))


async def test_max_idle_bounds_kept_connections() -> None:
    """Connections beyond max_idle are closed when their request finishes."""
    gate = Gate()
    async with Server(gate) as srv, open_pool(srv.url, max_idle=1) as pool:
        tasks = [asyncio.create_task(pool.request(b"x", DEADLINE)) for _ in range(3)]
        for _ in range(3):
            await srv.next_request()
        gate.open.set()
        await within(asyncio.gather(*tasks))
        assert (pool.idle, pool.total) == (1, 1)
        await within(asyncio.gather(*(c.lost.wait() for c in srv.conns[1:])))


async def test_idle_connection_older_than_idle_timeout_is_replaced() -> None:
    """A connection idle longer than idle_timeout is closed and a fresh one is used."""
    async with Server() as srv, open_pool(srv.url, idle_timeout=0.0) as pool:
        await pool.request(b"1", DEADLINE)
        await pool.request(b"2", DEADLINE)
        assert len(srv.conns) == 2
        assert pool.total == 1
        await within(srv.conns[0].lost.wait())


async def test_idle_connection_within_idle_timeout_is_reused_after_clock_jump() -> None:
    """Lazy expiry compares the loop clock: 29 s idle reuses, 31 s idle reconnects."""
    loop = asyncio.get_running_loop()
    real_time = loop.time
    shift = 0.0
    loop.time = lambda: real_time() + shift  # type: ignore[method-assign]
    try:
        async with Server() as srv, open_pool(srv.url, idle_timeout=30.0) as pool:
            await pool.request(b"1", DEADLINE)
            shift += 29.0
            await pool.request(b"2", DEADLINE)
            assert len(srv.conns) == 1
            shift += 31.0
            await pool.request(b"3", DEADLINE)
            assert len(srv.conns) == 2
    finally:
        del loop.time


# -- response framing ---------------------------------------------------------------------


async def test_chunked_response() -> None:
    """A chunked body is reassembled."""

    async def chunked(conn: ServerConn, req: Request) -> None:
        conn.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )

    async with Server(chunked) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"{}", DEADLINE)).body == b"hello world"
        assert (await pool.request(b"{}", DEADLINE)).body == b"hello world"
        assert len(srv.conns) == 1


async def test_chunked_response_one_byte_per_write() -> None:
    """A chunked response written one byte per TCP write parses the same."""
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nRetry-After: 3\r\n\r\n"
        b"3\r\nabc\r\n1\r\nd\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def trickle(conn: ServerConn, req: Request) -> None:
        for i in range(len(raw)):
            conn.write(raw[i : i + 1])
            await one_loop_pass()

    async with Server(trickle) as srv, open_pool(srv.url) as pool:
        resp = await pool.request(b"{}", DEADLINE)
        assert resp.body == b"abcd"
        assert resp.headers[b"retry-after"] == b"3"
        assert (await pool.request(b"{}", DEADLINE)).body == b"abcd"
        assert len(srv.conns) == 1


async def test_connection_close_response_is_not_reused() -> None:
    """After a `Connection: close` response the connection is closed, not pooled."""

    async def closing(conn: ServerConn, req: Request) -> None:
        conn.respond(200, b"bye", [(b"Connection", b"close")])

    async with Server(closing) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"{}", DEADLINE)).body == b"bye"
        assert (pool.idle, pool.total) == (0, 0)
        assert (await pool.request(b"{}", DEADLINE)).body == b"bye"
        assert len(srv.conns) == 2


async def test_http10_close_delimited_body() -> None:
    """A body without length or chunking runs until the provider closes."""

    async def old(conn: ServerConn, req: Request) -> None:
        conn.write(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":')
        conn.write(b"1}")
        conn.transport.close()

    async with Server(old) as srv, open_pool(srv.url) as pool:
        resp = await pool.request(b"{}", DEADLINE)
        assert resp == UpstreamResponse(200, b'{"a":1}', {b"content-type": b"application/json"})
        assert pool.total == 0


async def test_non_2xx_statuses_are_returned_with_body_and_headers() -> None:
    """503 and 429 come back as responses with their bodies and Retry-After."""

    async def busy(conn: ServerConn, req: Request) -> None:
        if req.body == b"429":
            conn.respond(429, b"slow down", [(b"Retry-After", b"7")], b"Too Many Requests")
        else:
            conn.respond(503, b"maintenance", reason=b"Service Unavailable")

    async with Server(busy) as srv, open_pool(srv.url) as pool:
        resp = await pool.request(b"429", DEADLINE)
        assert (resp.status, resp.body, resp.headers[b"retry-after"]) == (429, b"slow down", b"7")
        resp = await pool.request(b"503", DEADLINE)
        assert (resp.status, resp.body) == (503, b"maintenance")
        assert len(srv.conns) == 1


async def test_204_and_empty_bodies() -> None:
    """204 (no body at all) and a zero Content-Length both give b'' and keep the connection."""

    async def empty(conn: ServerConn, req: Request) -> None:
        if conn.seen == 1:
            conn.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            conn.respond(200, b"")

    async with Server(empty) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"{}", DEADLINE))[:2] == (204, b"")
        assert (await pool.request(b"{}", DEADLINE))[:2] == (200, b"")
        assert len(srv.conns) == 1


async def test_informational_response_is_skipped() -> None:
    """A 103 Early Hints before the real answer is ignored."""

    async def hints(conn: ServerConn, req: Request) -> None:
        conn.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        conn.respond(200, b"real")

    async with Server(hints) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"{}", DEADLINE))[:2] == (200, b"real")
        assert (await pool.request(b"{}", DEADLINE))[:2] == (200, b"real")


async def test_upgrade_headers_on_a_normal_response_are_harmless() -> None:
    """A 200 carrying Connection: upgrade / Upgrade headers is an ordinary response."""

    async def odd(conn: ServerConn, req: Request) -> None:
        headers = [(b"Connection", b"upgrade"), (b"Upgrade", b"h2c")]
        conn.respond(200, b"ok" if req.body != b"empty" else b"", headers)

    async with Server(odd) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"{}", DEADLINE))[:2] == (200, b"ok")
        assert (await pool.request(b"empty", DEADLINE))[:2] == (200, b"")


async def test_switching_protocols_is_a_protocol_error() -> None:
    """A 101 Switching Protocols answer to a POST is a protocol error."""

    async def switch(conn: ServerConn, req: Request) -> None:
        conn.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n")

    async with Server(switch) as srv, open_pool(srv.url) as pool:
        with pytest.raises(UpstreamProtocolError) as info:
            await pool.request(b"{}", DEADLINE)
        assert info.value.dispatched is True
        assert pool.total == 0


async def test_bytes_after_a_complete_response_spoil_the_connection() -> None:
    """Trailing bytes in the same write: the response is returned, the connection closed."""

    async def extra(conn: ServerConn, req: Request) -> None:
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")

    async with Server(extra) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"{}", DEADLINE)).body == b"ok"
        assert pool.total == 0
        await within(srv.conns[0].lost.wait())


async def test_unsolicited_bytes_on_an_idle_connection_close_it() -> None:
    """Bytes arriving while no request is in flight close that idle connection."""

    async with Server() as srv, open_pool(srv.url) as pool:
        await pool.request(b"{}", DEADLINE)
        assert pool.idle == 1
        srv.conns[0].write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await within(srv.conns[0].lost.wait())
        assert pool.total == 0
        assert (await pool.request(b"{}", DEADLINE)).body == b"{}"
        assert len(srv.conns) == 2


async def test_oversized_response_is_refused() -> None:
    """A response larger than max_response_size fails and closes the connection."""

    async def big(conn: ServerConn, req: Request) -> None:
        conn.respond(200, b"x" * 10_000)

    async with Server(big) as srv, open_pool(srv.url, max_response_size=5_000) as pool:
        with pytest.raises(UpstreamProtocolError, match="larger than"):
            await pool.request(b"{}", DEADLINE)
        assert pool.total == 0


# -- provider closes, resets, stalls or talks nonsense -----------------------------------


async def test_fin_on_idle_connection_drops_it() -> None:
    """A provider closing an idle connection removes it; the next request reconnects cleanly."""

    async def answer_then_fin(conn: ServerConn, req: Request) -> None:
        conn.respond(200, req.body)
        conn.transport.write_eof()

    async with Server(answer_then_fin) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"1", DEADLINE)).body == b"1"
        # Our FIN back proves the pool saw the provider's FIN and dropped the connection.
        await within(srv.conns[0].eof.wait())
        assert (pool.idle, pool.total) == (0, 0)
        assert (await pool.request(b"2", DEADLINE)).body == b"2"
        assert len(srv.conns) == 2


async def test_stale_connection_closed_without_answer_is_retried_once() -> None:
    """A reused connection closed with zero response bytes is retried on a new one."""

    async def close_second(conn: ServerConn, req: Request) -> None:
        if req.seq == 0:
            conn.respond(200, req.body)
        else:
            conn.transport.close()

    async with Server(close_second) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"1", DEADLINE)).body == b"1"
        assert (await pool.request(b"2", DEADLINE)).body == b"2"
        assert [(r.conn.index, r.body) for r in srv.requests] == [(0, b"1"), (0, b"2"), (1, b"2")]


async def test_stale_retry_happens_only_once() -> None:
    """If the retry also closes without an answer the request fails as dispatched."""

    async def only_first(conn: ServerConn, req: Request) -> None:
        if conn.index == 0 and req.seq == 0:
            conn.respond(200, req.body)
        else:
            conn.transport.close()

    async with Server(only_first) as srv, open_pool(srv.url) as pool:
        await pool.request(b"1", DEADLINE)
        with pytest.raises(UpstreamDisconnected) as info:
            await pool.request(b"2", DEADLINE)
        assert info.value.dispatched is True
        assert len(srv.requests) == 3
        assert pool.total == 0


async def test_stale_retry_can_be_disabled() -> None:
    """With retry_stale=False a stale connection fails the request at once."""

    async def close_second(conn: ServerConn, req: Request) -> None:
        if req.seq == 0:
            conn.respond(200, req.body)
        else:
            conn.transport.close()

    async with Server(close_second) as srv, open_pool(srv.url) as pool:
        await pool.request(b"1", DEADLINE)
        with pytest.raises(UpstreamDisconnected):
            await pool.request(b"2", DEADLINE, retry_stale=False)
        assert len(srv.requests) == 2


async def test_no_retry_once_response_bytes_arrived() -> None:
    """A reused connection that closes after part of a response is not retried."""

    async def partial_second(conn: ServerConn, req: Request) -> None:
        if req.seq == 0:
            conn.respond(200, req.body)
        else:
            conn.write(b"HTTP/1.1 200 OK\r\n")
            conn.transport.close()

    async with Server(partial_second) as srv, open_pool(srv.url) as pool:
        await pool.request(b"1", DEADLINE)
        with pytest.raises(UpstreamDisconnected) as info:
            await pool.request(b"2", DEADLINE)
        assert info.value.dispatched is True
        assert len(srv.conns) == 1 and len(srv.requests) == 2


async def test_fresh_connection_closed_without_answer_is_not_retried() -> None:
    """Closing a brand-new connection without an answer is UpstreamDisconnected, no retry."""

    async def hang_up(conn: ServerConn, req: Request) -> None:
        conn.transport.close()

    async with Server(hang_up) as srv, open_pool(srv.url) as pool:
        with pytest.raises(UpstreamDisconnected):
            await pool.request(b"1", DEADLINE)
        assert len(srv.requests) == 1


async def test_reset_mid_response() -> None:
    """An RST in the middle of a body raises UpstreamDisconnected, dispatched."""

    async def reset(conn: ServerConn, req: Request) -> None:
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        conn.reset()

    async with Server(reset) as srv, open_pool(srv.url) as pool:
        with pytest.raises(UpstreamDisconnected) as info:
            await pool.request(b"{}", DEADLINE)
        assert info.value.dispatched is True
        assert pool.total == 0


async def test_reset_mid_close_delimited_body_is_not_a_response() -> None:
    """A close-delimited body cut by RST (not FIN) is a disconnect, not a short body."""

    async def reset(conn: ServerConn, req: Request) -> None:
        conn.write(b"HTTP/1.0 200 OK\r\n\r\npartial")
        conn.reset()

    async with Server(reset) as srv, open_pool(srv.url) as pool:
        with pytest.raises(UpstreamDisconnected):
            await pool.request(b"{}", DEADLINE)


async def test_garbage_response_is_a_protocol_error() -> None:
    """Non-HTTP bytes raise UpstreamProtocolError and close the connection."""

    async def garbage(conn: ServerConn, req: Request) -> None:
        conn.write(b"hello, this is not HTTP\r\n\r\n")

    async with Server(garbage) as srv, open_pool(srv.url) as pool:
        with pytest.raises(UpstreamProtocolError) as info:
            await pool.request(b"{}", DEADLINE)
        assert info.value.dispatched is True
        assert pool.total == 0
        await within(srv.conns[0].lost.wait())


async def test_refused_connection() -> None:
    """A closed port raises UpstreamConnectError, not dispatched, and frees the slot."""
    async with open_pool(f"http://127.0.0.1:{free_port()}/", max_connections=1) as pool:
        for _ in range(2):
            with pytest.raises(UpstreamConnectError) as info:
                await pool.request(b"{}", DEADLINE)
            assert info.value.dispatched is False
            assert isinstance(info.value.__cause__, OSError)
        assert (pool.total, pool.connections_opened) == (0, 0)


async def test_unresolvable_host() -> None:
    """A name that cannot resolve raises UpstreamConnectError."""
    async with open_pool("http://does-not-exist.invalid/") as pool:
        with pytest.raises(UpstreamConnectError):
            await pool.request(b"{}", DEADLINE)


async def test_silent_provider_times_out() -> None:
    """A provider that never answers gives UpstreamTimeout after `timeout`; connection closed."""

    async def silent(conn: ServerConn, req: Request) -> None:
        pass

    async with Server(silent) as srv, open_pool(srv.url) as pool:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(UpstreamTimeout) as info:
            await within(pool.request(b"{}", 100 * MS))
        assert 100 * MS - SLACK <= loop.time() - t0 < DEADLINE
        assert info.value.dispatched is True
        assert pool.total == 0
        await within(srv.conns[0].lost.wait())


async def test_timeout_of_a_reused_connection_is_its_own() -> None:
    """On a reused connection each request gets its own deadline, shorter or longer."""

    async def silent_second(conn: ServerConn, req: Request) -> None:
        if req.seq == 0:
            conn.respond(200, req.body)

    async with Server(silent_second) as srv, open_pool(srv.url) as pool:
        loop = asyncio.get_running_loop()
        await pool.request(b"1", 50 * MS)  # arms the connection's timer for +50 ms
        t0 = loop.time()
        with pytest.raises(UpstreamTimeout):
            await within(pool.request(b"2", 150 * MS))
        assert 150 * MS - SLACK <= loop.time() - t0 < DEADLINE
        assert len(srv.conns) == 1

    async with Server(silent_second) as srv, open_pool(srv.url) as pool:
        await pool.request(b"1", DEADLINE)  # arms the timer far away
        t0 = loop.time()
        with pytest.raises(UpstreamTimeout):
            await within(pool.request(b"2", 50 * MS))
        assert 50 * MS - SLACK <= loop.time() - t0 < DEADLINE / 2


async def test_silent_listener_connect_times_out() -> None:
    """A connect that never completes fails after connect_timeout or the deadline, undispatched."""
    # A listening socket that never accepts; fill its backlog so further SYNs go unanswered.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        url = f"http://127.0.0.1:{port}/"
        async with open_pool(url, connect_timeout=100 * MS) as pool:
            with pytest.raises(UpstreamConnectError, match="timed out") as info:
                await within(pool.request(b"{}", DEADLINE))
            assert info.value.dispatched is False
            assert pool.total == 0
        # When the request's deadline comes first it is a timeout, still not dispatched.
        async with open_pool(url, connect_timeout=DEADLINE) as pool:
            with pytest.raises(UpstreamTimeout) as timeout_info:
                await within(pool.request(b"{}", 100 * MS))
            assert timeout_info.value.dispatched is False
            assert pool.total == 0
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_caller_cancellation_closes_the_connection() -> None:
    """Cancelling a request in flight closes its connection and frees the slot."""

    async def silent(conn: ServerConn, req: Request) -> None:
        pass

    async with Server(silent) as srv, open_pool(srv.url) as pool:
        task = asyncio.create_task(pool.request(b"{}", DEADLINE))
        await srv.next_request()
        assert pool.active == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (pool.total, pool.idle) == (0, 0)
        await within(srv.conns[0].lost.wait())


async def test_cancelled_waiter_leaves_the_queue() -> None:
    """Cancelling a queued request removes it; the connection goes to the next one."""
    gate = Gate()
    async with Server(gate) as srv, open_pool(srv.url, max_connections=1) as pool:
        first = asyncio.create_task(pool.request(b"A", DEADLINE))
        await srv.next_request()
        doomed = asyncio.create_task(pool.request(b"B", DEADLINE))
        third = asyncio.create_task(pool.request(b"C", DEADLINE))
        await one_loop_pass()
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert pool.waiting == 1
        gate.open.set()
        await within(asyncio.gather(first, third))
        assert [r.body for r in srv.requests] == [b"A", b"C"]
        assert pool.total == 1


async def test_mixed_faults_leave_the_pool_consistent() -> None:
    """Under concurrent load and random faults every call ends cleanly and nothing leaks."""
    import random

    rng = random.Random(1234)

    async def chaos(conn: ServerConn, req: Request) -> None:
        roll = rng.random()
        if roll < 0.5:
            conn.respond(200, req.body)
        elif roll < 0.6:
            conn.respond(200, req.body, [(b"Connection", b"close")])
        elif roll < 0.7:
            conn.reset()
        elif roll < 0.8:
            conn.transport.close()
        elif roll < 0.9:
            conn.write(b"garbage\r\n\r\n")
        # else: silence, until the request's deadline

    async with Server(chaos) as srv, open_pool(srv.url, max_connections=8, max_idle=4) as pool:

        async def call(i: int) -> object:
            try:
                return await pool.request(b"%d" % i, 200 * MS)
            except UpstreamError as exc:
                return exc

        outcomes = await within(asyncio.gather(*(call(i) for i in range(300))))
        ok = [o for o in outcomes if isinstance(o, UpstreamResponse)]
        assert ok and len(ok) < len(outcomes)
        assert all(isinstance(o, UpstreamResponse | UpstreamError) for o in outcomes)
        assert (pool.active, pool.waiting) == (0, 0)
        assert pool.total == pool.idle <= 4
        assert pool.connections_opened <= len(srv.conns)


# -- TLS ----------------------------------------------------------------------------------


def tls_files() -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made once per test session."""
    cached: tuple[Path, Path] | None = getattr(tls_files, "cached", None)
    if cached is not None:
        return cached
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="lasso-tls-"))
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    tls_files.cached = (cert, key)  # type: ignore[attr-defined]
    return cert, key


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = tls_files()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


async def test_tls_keep_alive() -> None:
    """https: the handshake verifies the certificate against the URL host; reuse works."""
    server_ctx, client_ctx = tls_contexts()
    async with (
        Server(ssl_context=server_ctx) as srv,
        open_pool(srv.url, ssl_context=client_ctx) as pool,
    ):
        for i in range(3):
            assert (await pool.request(b"%d" % i, DEADLINE)).body == b"%d" % i
        assert len(srv.conns) == 1


async def test_tls_untrusted_certificate_is_a_connect_error() -> None:
    """The default context rejects a self-signed certificate: UpstreamConnectError."""
    server_ctx, _ = tls_contexts()
    async with Server(ssl_context=server_ctx) as srv, open_pool(srv.url) as pool:
        with pytest.raises(UpstreamConnectError, match="TLS") as info:
            await pool.request(b"{}", DEADLINE)
        assert info.value.dispatched is False
        assert isinstance(info.value.__cause__, ssl.SSLError)


# -- lifecycle and introspection ----------------------------------------------------------


async def test_aclose_fails_in_flight_and_queued_requests() -> None:
    """aclose fails the request in flight (dispatched) and the queued one (not dispatched)."""
    gate = Gate()
    async with Server(gate) as srv:
        pool = HttpUpstreamPool(srv.url, max_connections=1)
        flying = asyncio.create_task(pool.request(b"A", DEADLINE))
        await srv.next_request()
        queued = asyncio.create_task(pool.request(b"B", DEADLINE))
        await one_loop_pass()
        await within(pool.aclose())
        with pytest.raises(PoolClosed) as fly_info:
            await flying
        with pytest.raises(PoolClosed) as queue_info:
            await queued
        assert (fly_info.value.dispatched, queue_info.value.dispatched) == (True, False)
        assert fly_info.value.provider_fault is False
        with pytest.raises(PoolClosed):
            await pool.request(b"C", DEADLINE)
        assert (pool.total, pool.idle, pool.waiting) == (0, 0, 0)
        assert repr(pool).endswith(" closed>")
        await within(srv.conns[0].lost.wait())


async def test_aclose_closes_idle_connections() -> None:
    """aclose closes idle connections and is idempotent."""
    async with Server() as srv:
        pool = HttpUpstreamPool(srv.url)
        await pool.request(b"{}", DEADLINE)
        await pool.aclose()
        await pool.aclose()
        await within(srv.conns[0].lost.wait())
        assert pool.total == 0


async def test_repr_summarizes_live_state() -> None:
    """repr shows origin (no path or credentials) and connection counts."""
    gate = Gate()
    async with Server(gate) as srv, open_pool(srv.url, max_connections=2) as pool:
        origin = f"http://127.0.0.1:{srv.port}"
        assert repr(pool) == (
            f"<HttpUpstreamPool {origin} idle=0 active=0 total=0 opened=0 waiting=0>"
        )
        tasks = [asyncio.create_task(pool.request(b"x", DEADLINE)) for _ in range(3)]
        await srv.next_request()
        await srv.next_request()
        assert repr(pool) == (
            f"<HttpUpstreamPool {origin} idle=0 active=2 total=2 opened=2 waiting=1>"
        )
        gate.open.set()
        await within(asyncio.gather(*tasks))
        assert repr(pool) == (
            f"<HttpUpstreamPool {origin} idle=2 active=0 total=2 opened=2 waiting=0>"
        )


def test_invalid_configuration_is_rejected() -> None:
    """Bad schemes, hosts and header values raise ValueError at construction."""
    for url in ("ftp://h/", "http:///path", "ws://h/"):
        with pytest.raises(ValueError):
            HttpUpstreamPool(url)
    for headers in ({"X-A": "a\r\nInjected: 1"}, {"Bad:Name": "v"}, {"Content-Length": "1"}):
        with pytest.raises(ValueError):
            HttpUpstreamPool("http://h/", headers=headers)
    with pytest.raises(ValueError):
        HttpUpstreamPool("http://h/", max_connections=0)


async def test_timeout_must_be_positive() -> None:
    """A non-positive timeout fails before anything is sent."""
    async with open_pool("http://127.0.0.1:1/") as pool:
        with pytest.raises(UpstreamTimeout) as info:
            await pool.request(b"{}", 0)
        assert info.value.dispatched is False


# -- every async scenario again on uvloop -------------------------------------------------

_SCENARIOS = sorted(
    name
    for name, fn in list(globals().items())
    if name.startswith("test_")
    and inspect.iscoroutinefunction(fn)
    # uvloop's clock cannot be shifted; this one runs on the default loop only.
    and name != "test_idle_connection_within_idle_timeout_is_reused_after_clock_jump"
)


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is POSIX-only")
@pytest.mark.parametrize("name", _SCENARIOS)
def test_on_uvloop(name: str) -> None:
    """The same scenario passes on uvloop, the production loop."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(globals()[name]())


# -- the protocol alone: byte-at-a-time and generated input -------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Harness:
    """A pool and one connection over a fake transport, on a loop that never runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = HttpUpstreamPool("http://provider.test/", loop=self.loop)
        self.conn = _Connection(self.pool, self.loop)
        self.transport = FakeTransport()
        self.conn.connection_made(self.transport)
        self.pool._conns.add(self.conn)

    def send(self) -> asyncio.Future[UpstreamResponse]:
        return self.conn.send(b"POST / HTTP/1.1\r\n\r\n", self.loop.time() + 60)

    def close(self) -> None:
        self.loop.close()


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    b'X-Other: 1\r\n\r\n4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n'
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


def test_protocol_parses_response_fed_one_byte_at_a_time() -> None:
    """Feeding a chunked response one byte per call gives the same response."""
    h = Harness()
    try:
        fut = h.send()
        for i in range(len(CHUNKED)):
            assert not fut.done()
            h.conn.data_received(CHUNKED[i : i + 1])
        assert fut.result() == UpstreamResponse(
            200,
            b'{"a":1}',
            {b"content-type": b"application/json", b"transfer-encoding": b"chunked"},
        )
        assert h.pool.idle == 1 and not h.transport.closing
    finally:
        h.close()


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(CHUNKED) - 1), max_size=20))
def test_protocol_parses_any_split_of_a_response(cuts: list[int]) -> None:
    """However the bytes are split across reads, the parsed response is the same."""
    h = Harness()
    try:
        fut = h.send()
        for piece in split(CHUNKED, cuts):
            h.conn.data_received(piece)
        assert fut.result().body == b'{"a":1}'
        assert h.pool.idle == 1
    finally:
        h.close()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(1, 199), max_size=5))
def test_protocol_survives_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    """Any byte string yields a response, a documented error, or still waits; never a crash."""
    h = Harness()
    try:
        fut = h.send()
        for piece in split(data, [c for c in cuts if c < len(data)]):
            h.conn.data_received(piece)
        h.conn.connection_lost(None)
        assert fut.done()
        if fut.exception() is not None:
            assert isinstance(fut.exception(), UpstreamError)
        else:
            assert isinstance(fut.result(), UpstreamResponse)
        assert h.pool.total == 0 or h.pool.idle == 1
    finally:
        h.close()
