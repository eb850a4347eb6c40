"""StreamingResponse in the lean HTTP server: chunked bodies, order, backpressure, endings."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from lasso.net.http_server import HttpRequest, HttpServer, Response, StreamingResponse

from support import UNIT, eventually

pytestmark = pytest.mark.integration


class StreamApp:
    """/stream answers a stream fed through ``feed``; anything else a small JSON body."""

    def __init__(self) -> None:
        self.feed: asyncio.Queue[bytes | None | Exception] = asyncio.Queue()
        self.pulled = 0
        self.closed = asyncio.Event()
        self.fail_on: bytes | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                item = await self.feed.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                self.pulled += 1
                yield item
        finally:
            self.closed.set()

    def handle(self, req: HttpRequest) -> Any:
        if req.path == "/stream":
            return StreamingResponse(200, content_type=b"text/event-stream", stream=self.chunks())
        if req.path == "/async-stream":
            return self._later()
        return Response(200, b'{"path":"%s"}' % req.path.encode())

    async def _later(self) -> Response:
        return StreamingResponse(200, content_type=b"text/event-stream", stream=self.chunks())

    def upgrade(self, req: HttpRequest, transport: Any, rest: bytes) -> None:
        return None


@pytest.fixture
async def server() -> AsyncIterator[tuple[HttpServer, StreamApp, int]]:
    app = StreamApp()
    srv = HttpServer(app, request_timeout=2.0)
    port = await srv.start("127.0.0.1", 0)
    yield srv, app, port
    await srv.close()


async def read_until(reader: asyncio.StreamReader, marker: bytes) -> bytes:
    return await asyncio.wait_for(reader.readuntil(marker), 5 * UNIT)


@pytest.mark.parametrize("path", ["/stream", "/async-stream"])
async def test_chunks_arrive_as_produced_then_keep_alive_continues_in_order(
    server: Any, path: str
) -> None:
    """Each item is one chunk; the end chunk lets the pipelined next request be answered."""
    _, app, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    )
    head = await read_until(reader, b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding: chunked\r\n" in head
    assert b"Content-Type: text/event-stream\r\n" in head
    assert b"Content-Length" not in head
    await app.feed.put(b"event: a\n\n")
    assert await read_until(reader, b"event: a\n\n\r\n") == b"a\r\nevent: a\n\n\r\n"
    await app.feed.put(b"")  # empty items are skipped, never a premature end chunk
    await app.feed.put(b"x" * 300)
    assert await read_until(reader, b"\r\n") == b"12c\r\n"
    await read_until(reader, b"x\r\n")
    await app.feed.put(None)
    assert await read_until(reader, b"0\r\n\r\n") == b"0\r\n\r\n"
    after = await read_until(reader, b'{"path":"/after"}')
    assert after.startswith(b"HTTP/1.1 200 OK")
    assert app.closed.is_set()
    writer.close()


async def test_client_going_away_closes_the_stream(server: Any) -> None:
    """A viewer that disconnects ends its producer (the iterator is closed)."""
    srv, app, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_until(reader, b"\r\n\r\n")
    assert len(srv.streams) == 1
    writer.close()
    await asyncio.wait_for(app.closed.wait(), 5 * UNIT)
    await eventually(lambda: not srv.streams and not srv.connections)


async def test_drain_ends_streams_cleanly(server: Any) -> None:
    """Draining the server finishes open streams with the end chunk and closes them."""
    srv, app, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_until(reader, b"\r\n\r\n")
    await asyncio.wait_for(srv.drain(5.0), 5 * UNIT)
    rest = await asyncio.wait_for(reader.read(), 5 * UNIT)
    assert rest == b"0\r\n\r\n"
    assert app.closed.is_set()
    writer.close()


async def test_producer_error_cuts_the_body_short(server: Any) -> None:
    """A broken producer closes the connection without the end chunk (the client sees it)."""
    _, app, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await read_until(reader, b"\r\n\r\n")
    await app.feed.put(b"one")
    await app.feed.put(RuntimeError("boom"))
    rest = await asyncio.wait_for(reader.read(), 5 * UNIT)
    assert rest == b"3\r\none\r\n"
    writer.close()


async def test_slow_reader_applies_backpressure_and_is_cut_off(server: Any) -> None:
    """A client that stops reading stops the producer being pulled, then is disconnected."""
    srv, app, port = server
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await eventually(lambda: srv.streams)
    chunk = b"y" * 65536
    for _ in range(200):  # 13 MB offered; the kernel and transport buffers hold far less
        app.feed.put_nowait(chunk)
    await eventually(lambda: app.pulled > 0)
    # The producer is held back: the socket buffers fill and the pump waits to drain.
    await eventually(lambda: app.feed.qsize() > 100, message="producer not paused")
    pulled = app.pulled
    assert pulled < 100
    # request_timeout (2 s here) later the silent reader is cut off and the producer closed.
    await asyncio.wait_for(app.closed.wait(), 10 * UNIT)
    assert app.pulled == pulled
    await eventually(lambda: not srv.streams)
    sock.close()
