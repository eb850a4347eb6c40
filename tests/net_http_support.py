"""Helpers of the upstream HTTP client tests (``tests/net/test_http_client.py`` and
``tests/net/test_http_conn.py``).

``Server`` is a small raw asyncio HTTP server on 127.0.0.1 whose answers each test scripts,
so a provider can misbehave on demand: close, reset, stall, send garbage. Waits are on
events under a deadline, never on sleeps; ``MS`` scales the few real timeouts
(``LASSO_TEST_TIME_FACTOR=5`` on a slow machine).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import httptools

from lasso.net.http_client import HttpUpstreamPool

__all__ = [
    "DEADLINE",
    "MS",
    "SLACK",
    "Gate",
    "Request",
    "Server",
    "ServerConn",
    "echo",
    "free_port",
    "one_loop_pass",
    "open_pool",
    "within",
]

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
