"""The server-side WebSocket transport (lasso.net.ws) through real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from lasso.net.http_server import HttpRequest, HttpServer, Response
from lasso.net.ws import (
    WsClientLink,
    WsServerConnection,
    accept_handshake,
    frame_header,
    text_frame,
)

from support import eventually

pytestmark = pytest.mark.integration


class Echo:
    """A handler that echoes every message and records how the connection ended."""

    def __init__(self, conn: WsServerConnection) -> None:
        self.conn = conn
        self.messages: list[bytes] = []
        self.closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    def on_message(self, data: bytes) -> None:
        self.messages.append(bytes(data))
        if data == b"close-me":
            self.conn.close(4000, "asked to")
        else:
            self.conn.send_text(bytes(data))

    def on_close(self, code: int, reason: str) -> None:
        self.closed.set_result((code, reason))


class EchoApp:
    """An application whose only route is a WebSocket echo."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.handlers: list[Echo] = []

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


@pytest.fixture
async def echo_server() -> AsyncIterator[Callable[..., Any]]:
    """Factory: an HttpServer with EchoApp on a free port; returns (app, ws url)."""
    servers: list[HttpServer] = []

    async def start(**options: Any) -> tuple[EchoApp, str]:
        app = EchoApp(**options)
        server = HttpServer(app)
        port = await server.start("127.0.0.1", 0)
        servers.append(server)
        return app, f"ws://127.0.0.1:{port}/echo"

    yield start
    for server in servers:
        await server.close()


def _handshake(port: int, extra: str = "", key: str | None = None) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\n{extra}\r\n"
        ).encode()
    )
    return sock


async def _read_head(sock: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    sock.setblocking(False)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
        if not chunk:
            break
        data += chunk
    return data


def test_frame_header_covers_the_three_length_forms() -> None:
    """Headers are 2, 4 or 10 bytes and parse back with websockets' own client parser."""
    for n in (0, 125, 126, 65535, 65536, 70000):
        payload = b"x" * n
        assert len(frame_header(n)) == (2 if n < 126 else 4 if n < 65536 else 10)
        assert server_frames(text_frame(payload)) == [(Opcode.TEXT, payload)]


async def test_handshake_and_echo_of_text_binary_and_fragmented_messages(
    echo_server: Any,
) -> None:
    """A real client connects; text, binary and fragmented messages arrive whole and in order."""
    app, url = await echo_server()
    async with websockets.connect(url) as ws:
        for size in (5, 200, 70_000):
            await ws.send("a" * size)
            assert await ws.recv() == "a" * size
        await ws.send(b"\x01\x02binary")
        assert await ws.recv() == "\x01\x02binary"  # answered as text
        await ws.send(["frag", "ment", "ed"])  # one message in three frames
        assert await ws.recv() == "fragmented"
    code, _ = await asyncio.wait_for(app.handlers[0].closed, 5)
    assert code == 1000
    assert app.handlers[0].messages[-1] == b"fragmented"


async def test_bad_upgrades_are_rejected_with_http_errors(echo_server: Any) -> None:
    """A missing or malformed key and a wrong version get HTTP 400, not a socket."""
    _, url = await echo_server()
    port = int(url.split(":")[2].split("/")[0])
    for extra, key in (
        ("Sec-WebSocket-Version: 13\r\n", "not-base64!"),
        ("Sec-WebSocket-Version: 8\r\n", None),
        ("", None),  # no version at all
    ):
        sock = _handshake(port, extra, key)
        try:
            head = await _read_head(sock)
        finally:
            sock.close()
        assert head.startswith(b"HTTP/1.1 400"), head


async def test_client_ping_is_answered(echo_server: Any) -> None:
    """A client ping gets a pong."""
    _, url = await echo_server()
    async with websockets.connect(url) as ws:
        waiter = await ws.ping(b"hello")
        latency = await asyncio.wait_for(waiter, 5)
        assert latency >= 0


async def test_keepalive_keeps_a_responsive_client(echo_server: Any) -> None:
    """A client that answers pings stays connected across many ping intervals."""
    app, url = await echo_server(ping_interval=0.02, pong_timeout=0.05)
    async with websockets.connect(url, ping_interval=None) as ws:
        conn = app.handlers[0].conn
        await eventually(lambda: conn.pongs_received >= 5, message="pongs")
        await ws.send("still here")
        assert await ws.recv() == "still here"
        assert conn.open and conn.pings_sent >= 5 and "missed=0" in repr(conn)


async def test_keepalive_closes_a_silent_client(echo_server: Any) -> None:
    """A peer that never answers pings is closed with 1011 after two missed pongs."""
    app, url = await echo_server(ping_interval=0.05, pong_timeout=0.02, close_timeout=0.1)
    port = int(url.split(":")[2].split("/")[0])
    sock = _handshake(port, "Sec-WebSocket-Version: 13\r\n")
    try:
        assert (await _read_head(sock)).startswith(b"HTTP/1.1 101")
        code, reason = await asyncio.wait_for(app.handlers[0].closed, 5)
    finally:
        sock.close()
    assert (code, reason) == (1011, "keepalive timeout")


async def test_message_over_the_limit_closes_with_1009(echo_server: Any) -> None:
    """A message larger than max_message closes the connection with 1009."""
    app, url = await echo_server(max_message=1024)
    async with websockets.connect(url) as ws:
        await ws.send("x" * 1000)
        assert await ws.recv() == "x" * 1000
        await ws.send("x" * 2000)
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
    assert info.value.rcvd is not None and info.value.rcvd.code == 1009
    code, _ = await asyncio.wait_for(app.handlers[0].closed, 5)
    assert code == 1009


async def test_server_initiated_close_reaches_the_client(echo_server: Any) -> None:
    """close() sends a close frame the client sees; on_close reports the code once."""
    app, url = await echo_server()
    async with websockets.connect(url) as ws:
        await ws.send("close-me")
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4000
    assert await asyncio.wait_for(app.handlers[0].closed, 5) == (4000, "asked to")
    assert not app.handlers[0].conn.send_text(b"late")


async def test_vanishing_client_calls_on_close_with_1006(echo_server: Any) -> None:
    """A client whose TCP connection is aborted is reported closed (1006)."""
    app, url = await echo_server()
    ws = await websockets.connect(url)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    ws.transport.abort()
    assert await asyncio.wait_for(app.handlers[0].closed, 5) == (1006, "")
    assert not app.handlers[0].conn.open


async def test_slow_reader_is_paused_then_dropped(echo_server: Any) -> None:
    """Unread output pauses reading above the high watermark; push_text drops the client."""
    app, url = await echo_server(max_send_buffer=256 * 1024, close_timeout=0.2)
    port = int(url.split(":")[2].split("/")[0])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    try:
        assert (await _read_head(sock)).startswith(b"HTTP/1.1 101")
        conn = app.handlers[0].conn
        chunk = b"n" * 65536
        accepted = 0
        for _ in range(2000):  # at most ~128 MB, never reached: the kernel buffers are small
            if not conn.push_text(chunk):
                break
            accepted += 1
        else:
            pytest.fail("push_text never refused a client that does not read")
        assert accepted > 4
        assert not conn.transport.is_reading()  # paused above the high watermark
        assert not conn.push_text(chunk) and not conn.open
        code, reason = await asyncio.wait_for(app.handlers[0].closed, 5)
    finally:
        sock.close()
    assert (code, reason) == (1008, "client too slow")


async def test_bytes_sent_with_the_handshake_are_processed(echo_server: Any) -> None:
    """A frame pipelined right behind the upgrade request is not lost."""
    _, url = await echo_server()
    port = int(url.split(":")[2].split("/")[0])
    client = ClientProtocol(parse_uri(url), state=State.OPEN)
    client.send_text(b"early bird")
    frame = client.data_to_send()[0]
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        + frame
    )
    try:
        data = await _read_head(sock)
        loop = asyncio.get_running_loop()
        while b"early bird" not in data:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
            assert chunk, data
            data += chunk
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 101")


class FakeTransport:
    """Just enough of an asyncio transport to drive a WsServerConnection without sockets."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

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
        pass

    def resume_reading(self) -> None:
        pass


def client_stream() -> bytes:
    """Masked client frames: text, ping, a fragmented message, binary, a large text."""
    client = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN)
    client.send_text(b"one")
    client.send_ping(b"p1")
    client.send_text(b"fr", fin=False)
    client.send_ping(b"p2")  # control frames may interleave with fragments
    client.send_continuation(b"ag", fin=True)
    client.send_binary(b"\x00two")
    client.send_text(b"3" * 70_000)
    client.send_close(1000, "bye")
    return b"".join(client.data_to_send())


def server_frames(out: bytes) -> list[tuple[Opcode, bytes]]:
    client = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN)
    client.receive_data(out)
    return [(f.opcode, bytes(f.data)) for f in client.events_received()]  # type: ignore[union-attr]


@pytest.mark.parametrize("chunking", ["whole", "bytewise", "random"])
async def test_frame_splitting_is_independent_of_chunking(chunking: str) -> None:
    """Whole, one byte at a time or in random pieces, the same messages and answers result."""
    stream = client_stream()
    transport = FakeTransport()
    conn = WsServerConnection(transport, asyncio.get_running_loop(), ping_interval=0)  # type: ignore[arg-type]
    handler = Echo(conn)
    conn.start(handler)
    for piece in chunked(stream, chunking, 4):
        conn.data_received(piece)
    assert handler.messages == [b"one", b"frag", b"\x00two", b"3" * 70_000]
    frames = server_frames(bytes(transport.out))
    assert frames == [
        (Opcode.TEXT, b"one"),
        (Opcode.PONG, b"p1"),
        (Opcode.PONG, b"p2"),
        (Opcode.TEXT, b"frag"),
        (Opcode.TEXT, b"\x00two"),
        (Opcode.TEXT, b"3" * 70_000),
        (Opcode.CLOSE, frames[-1][1]),
    ]
    assert frames[-1][1][:2] == (1000).to_bytes(2, "big") and transport.closed
    conn.connection_lost(None)
    assert await handler.closed == (1000, "bye")


async def test_protocol_errors_go_through_the_websockets_protocol() -> None:
    """An unmasked client frame fails the connection with 1002; later frames are ignored."""
    transport = FakeTransport()
    conn = WsServerConnection(transport, asyncio.get_running_loop(), ping_interval=0)  # type: ignore[arg-type]
    handler = Echo(conn)
    conn.start(handler)
    unmasked = text_frame(b"no mask")
    client = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN)
    client.send_text(b"after")
    conn.data_received(unmasked + b"".join(client.data_to_send()))
    assert handler.messages == [] and transport.closed
    assert server_frames(bytes(transport.out))[0][1][:2] == (1002).to_bytes(2, "big")
    conn.connection_lost(None)
    assert (await handler.closed)[0] == 1002


def chunked(stream: bytes, chunking: str, seed: int) -> list[bytes]:
    if chunking == "whole":
        return [stream]
    if chunking == "bytewise":
        return [stream[i : i + 1] for i in range(len(stream))]
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(stream)), 30))
    return [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]


@pytest.mark.parametrize("chunking", ["whole", "bytewise", "random"])
async def test_client_link_handshake_and_frames_in_any_chunking(chunking: str) -> None:
    """Handshake plus frames, whole or in pieces, give the same messages; sends are masked."""
    from websockets.server import ServerProtocol

    messages: list[bytes] = []
    link = WsClientLink(
        messages.append,
        ClientProtocol(parse_uri("ws://x/ws")),
        {"authorization": "Bearer k"},
        asyncio.get_running_loop(),
    )
    wire = FakeTransport()
    link.connection_made(wire)  # type: ignore[arg-type]
    server = ServerProtocol()
    server.receive_data(bytes(wire.out))
    wire.out.clear()
    request = server.events_received()[0]
    assert request.headers["authorization"] == "Bearer k"  # type: ignore[union-attr]
    server.send_response(server.accept(request))  # type: ignore[arg-type]
    server.send_text(b'{"a":1}')
    server.send_ping(b"x")
    server.send_text(b"fr", fin=False)
    server.send_continuation(b"ag", fin=True)
    server.send_binary(b"[]")
    server.send_text(b"9" * 70_000)
    for piece in chunked(b"".join(server.data_to_send()), chunking, 9):
        link.data_received(piece)
    assert link.ready.done() and link.ready.exception() is None and link.open
    assert messages == [b'{"a":1}', b"frag", b"[]", b"9" * 70_000]
    link.send_text(b"hello")
    link.send_text(b"h" * 70_000)
    server.receive_data(bytes(wire.out))
    frames = [(f.opcode, bytes(f.data)) for f in server.events_received()]  # type: ignore[union-attr]
    assert frames == [(Opcode.PONG, b"x"), (Opcode.TEXT, b"hello"), (Opcode.TEXT, b"h" * 70_000)]


async def test_client_link_reports_a_refused_handshake() -> None:
    """A non-101 answer fails ``ready`` with UpstreamConnectError naming the status."""
    from lasso.net.errors import UpstreamConnectError

    link = WsClientLink(
        lambda data: None, ClientProtocol(parse_uri("ws://x/ws")), {}, asyncio.get_running_loop()
    )
    link.connection_made(FakeTransport())  # type: ignore[arg-type]
    link.data_received(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\nno")
    with pytest.raises(UpstreamConnectError, match="404"):
        await link.ready
