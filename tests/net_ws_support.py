"""Helpers of the WebSocket transport tests (``tests/net/test_ws.py`` and
``tests/net/test_ws_frames.py``).

``echo_servers`` starts ``HttpServer`` instances on free 127.0.0.1 ports whose only route is
a WebSocket echo (``EchoApp``: ``accept_handshake``, then a ``WsServerConnection`` driving
an ``Echo`` handler). ``handshake`` and ``read_head`` speak the upgrade over a raw socket;
``FakeTransport`` drives a connection without sockets; ``chunked`` cuts a byte stream
whole, one byte at a time or at seeded random points.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from lasso.net.http_server import HttpRequest, HttpServer, Response
from lasso.net.ws import WsServerConnection, accept_handshake

__all__ = [
    "Echo",
    "EchoApp",
    "FakeTransport",
    "chunked",
    "echo_servers",
    "handshake",
    "port_of",
    "read_head",
]


class Echo:
    """A handler that echoes every message and records how the connection ended
    (``close-me`` closes with 4000, ``pause-me`` pauses reading)."""

    def __init__(self, conn: WsServerConnection) -> None:
        self.conn = conn
        self.messages: list[bytes] = []
        self.closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    def on_message(self, data: bytes) -> None:
        self.messages.append(bytes(data))
        if data == b"close-me":
            self.conn.close(4000, "asked to")
        elif data == b"pause-me":  # back-pressure from the handler
            self.conn.pause_reading()
        else:
            self.conn.send_text(bytes(data))

    def on_close(self, code: int, reason: str) -> None:
        self.closed.set_result((code, reason))


class EchoApp:
    """An application whose only route is a WebSocket echo."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.handlers: list[Echo] = []
        self.server: HttpServer | None = None

    def handle(self, req: HttpRequest) -> Response:
        return Response(404)

    def upgrade(
        self, req: HttpRequest, transport: asyncio.Transport, rest: bytes
    ) -> asyncio.Protocol | None:
        ok, answer = accept_handshake(req)
        transport.write(answer)
        if not ok:
            transport.close()
            return None
        conn = WsServerConnection(transport, asyncio.get_running_loop(), **self.options)
        handler = Echo(conn)
        self.handlers.append(handler)
        conn.start(handler, rest)
        return conn


@asynccontextmanager
async def echo_servers() -> AsyncIterator[Callable[..., Awaitable[tuple[EchoApp, str]]]]:
    """Yield a factory: an HttpServer with EchoApp on a free port, returning (app, ws url).

    Every server it started is closed on exit.
    """
    servers: list[HttpServer] = []

    async def start(**options: Any) -> tuple[EchoApp, str]:
        app = EchoApp(**options)
        server = HttpServer(app)
        app.server = server
        port = await server.start("127.0.0.1", 0)
        servers.append(server)
        return app, f"ws://127.0.0.1:{port}/echo"

    try:
        yield start
    finally:
        for server in servers:
            await server.close()


def port_of(url: str) -> int:
    """The port of a ``ws://127.0.0.1:PORT/...`` URL."""
    return int(url.split(":")[2].split("/")[0])


def handshake(port: int, extra: str = "", key: str | None = None) -> socket.socket:
    """Connect and send an upgrade request (``extra`` header lines; a random key by default)."""
    sock = socket.create_connection(("127.0.0.1", port))
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n{extra}\r\n"
        ).encode()
    )
    return sock


async def read_head(sock: socket.socket) -> bytes:
    """Read until the end of the answer head (or EOF); the socket becomes non-blocking."""
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        if not chunk:
            break
        data += chunk
    return data


class FakeTransport:
    """Just enough of an asyncio transport to drive a WsServerConnection without sockets."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.reading = True
        self.pauses = 0

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, parts: Any) -> None:
        for part in parts:
            self.out += part

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        self.reading = False
        self.pauses += 1

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading


def chunked(stream: bytes, chunking: str, seed: int) -> list[bytes]:
    """``stream`` whole, one byte at a time, or cut at 30 random points (``seed``)."""
    if chunking == "whole":
        return [stream]
    if chunking == "bytewise":
        return [stream[i : i + 1] for i in range(len(stream))]
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(stream)), 30))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
