"""The WebSocket connections (``lasso.net.ws``): ``WsServerConnection`` through real sockets
on 127.0.0.1 (keepalive, limits, close, flow control) and ``WsClientLink`` driven through a
fake transport. The handshake answer, the frame codec and frame splitting
(``lasso.net.ws_frames``) are in ``test_ws_frames.py``; shared helpers in ``net_ws_support``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import websockets
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

import lasso.net.ws
import lasso.net.ws_frames
from lasso.net.ws import WsClientLink

from net_ws_support import Echo, FakeTransport, chunked, echo_servers, handshake, port_of, read_head
from support import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
async def echo_server() -> AsyncIterator[Callable[..., Any]]:
    """Factory: an HttpServer with EchoApp on a free port; returns (app, ws url)."""
    async with echo_servers() as start:
        yield start


def test_exported_members() -> None:
    """__all__ is the public surface; the frame layer's names stay importable here."""
    assert sorted(lasso.net.ws.__all__) == [
        "DEFAULT_MAX_MESSAGE",
        "WsClientLink",
        "WsHandler",
        "WsServerConnection",
        "accept_handshake",
        "frame_header",
        "frame_span",
        "text_frame",
    ]
    for name in lasso.net.ws.__all__:
        assert getattr(lasso.net.ws, name) is not None
    # Re-exported from the frame module: the same objects, not copies.
    for name in ("accept_handshake", "frame_header", "frame_span", "text_frame", "WIRE_LOG"):
        assert getattr(lasso.net.ws, name) is getattr(lasso.net.ws_frames, name)
    # Both connections are the frame layer's protocol, inheriting its splitter.
    assert issubclass(lasso.net.ws.WsServerConnection, lasso.net.ws_frames._FrameStream)
    assert issubclass(lasso.net.ws.WsClientLink, lasso.net.ws_frames._FrameStream)


def test_module_imports_alone() -> None:
    """The connection module imports first in a fresh interpreter (no order-dependent cycle)."""
    subprocess.run([sys.executable, "-c", "import lasso.net.ws"], check=True)


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
    port = port_of(url)
    sock = handshake(port, "Sec-WebSocket-Version: 13\r\n")
    try:
        assert (await read_head(sock)).startswith(b"HTTP/1.1 101")
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
    port = port_of(url)
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
        assert (await read_head(sock)).startswith(b"HTTP/1.1 101")
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


async def test_handler_back_pressure_holds_read_frames_and_the_keepalive(
    echo_server: Any,
) -> None:
    """pause_reading() holds frames already read (in order) and stops reading; missed
    pongs do not count meanwhile; resume_reading() delivers them and reads on."""
    app, url = await echo_server(ping_interval=0.02, pong_timeout=0.01)
    client = ClientProtocol(parse_uri(url), state=State.OPEN)
    for text in (b"pause-me", b"a", b"b"):
        client.send_text(text)
    frames = b"".join(client.data_to_send())
    sock = handshake(port_of(url), "Sec-WebSocket-Version: 13\r\n")
    try:
        assert (await read_head(sock)).startswith(b"HTTP/1.1 101")
        sock.sendall(frames)  # one write: the three frames arrive together
        handler = app.handlers[0]
        conn = handler.conn
        await eventually(lambda: handler.messages == [b"pause-me"], message="pause-me")
        assert conn.reading_paused and not conn.transport.is_reading()
        await eventually(lambda: conn.pings_sent >= 5, message="pings while paused")
        assert conn.open and "missed=0" in repr(conn)  # unread pongs are not misses
        assert handler.messages == [b"pause-me"]
        conn.resume_reading()
        await eventually(lambda: handler.messages == [b"pause-me", b"a", b"b"], message="held")
        assert not conn.reading_paused and conn.transport.is_reading()
    finally:
        sock.close()


async def test_closing_lifts_the_pause(echo_server: Any) -> None:
    """A paused connection still completes the closing handshake."""
    app, url = await echo_server()
    async with websockets.connect(url) as ws:
        await ws.send("pause-me")
        await eventually(lambda: app.handlers and app.handlers[0].conn.reading_paused)
        app.handlers[0].conn.close(1001, "going away")
        await asyncio.wait_for(ws.wait_closed(), 5)
    assert await asyncio.wait_for(app.handlers[0].closed, 5) == (1001, "going away")


async def test_bytes_sent_with_the_handshake_are_processed(echo_server: Any) -> None:
    """A frame pipelined right behind the upgrade request is not lost."""
    _, url = await echo_server()
    port = port_of(url)
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
        data = await read_head(sock)
        loop = asyncio.get_running_loop()
        while b"early bird" not in data:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 5)
            assert chunk, data
            data += chunk
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 101")


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


# -- abuse: control-frame floods, monopolized reads, huge frames, the connection cap ------


def masked_frames(*frames: tuple[int, bytes]) -> bytes:
    """Client frames (opcode byte with FIN, payload), masked with a fixed key."""
    out = bytearray()
    key = b"\x11\x22\x33\x44"
    for b0, payload in frames:
        n = len(payload)
        if n < 126:
            out += bytes((b0, 0x80 | n))
        elif n < 65536:
            out += bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
        else:
            out += bytes((b0, 0x80 | 127)) + n.to_bytes(8, "big")
        out += key + lasso.net.ws_frames.apply_mask(payload, key)
    return bytes(out)


async def test_a_ping_flood_is_closed_1008_without_stalling_others(echo_server: Any) -> None:
    """200,000 pings in a burst: the flooder is closed with 1008 after its budget, and
    another client's round trips stay fast meanwhile."""
    app, url = await echo_server(close_timeout=0.2)
    flood = handshake(port_of(url), "Sec-WebSocket-Version: 13\r\n")
    assert (await read_head(flood)).startswith(b"HTTP/1.1 101")
    victim = await websockets.connect(url)
    pings = masked_frames((0x89, b"p")) * 200_000
    loop = asyncio.get_running_loop()
    sender = loop.create_task(loop.sock_sendall(flood, pings))
    worst = 0.0
    for i in range(30):
        t0 = loop.time()
        await victim.send(f"m{i}")
        assert await asyncio.wait_for(victim.recv(), 5) == f"m{i}"
        worst = max(worst, loop.time() - t0)
    code, reason = await asyncio.wait_for(app.handlers[0].closed, 5)
    assert (code, reason) == (1008, "too many control frames")
    assert worst < 0.1
    sender.cancel()
    await asyncio.gather(sender, return_exceptions=True)
    flood.close()
    await victim.close()


async def test_pings_within_the_rate_are_each_answered() -> None:
    """A burst up to the budget gets one pong per ping, in order."""
    transport = FakeTransport()
    conn = lasso.net.ws.WsServerConnection(
        transport,  # type: ignore[arg-type]
        asyncio.get_running_loop(),
        ping_interval=0,
        control_frames_per_s=10,
    )
    conn.start(Echo(conn))
    conn.data_received(masked_frames(*[(0x89, b"%d" % i) for i in range(10)]))
    client = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN)
    client.receive_data(bytes(transport.out))
    frames = [(f.opcode, bytes(f.data)) for f in client.events_received()]  # type: ignore[union-attr]
    assert frames == [(Opcode.PONG, b"%d" % i) for i in range(10)]
    assert conn.open
    conn.data_received(masked_frames((0x89, b"one too many")))
    assert not conn.open and not transport.reading


async def test_one_read_of_many_frames_yields_to_the_loop() -> None:
    """At most frames_per_read messages per loop turn; the rest follow, reading paused
    meanwhile, and nothing is lost or reordered."""
    transport = FakeTransport()
    conn = lasso.net.ws.WsServerConnection(
        transport,  # type: ignore[arg-type]
        asyncio.get_running_loop(),
        ping_interval=0,
        frames_per_read=4,
    )
    handler = Echo(conn)
    conn.start(handler)
    conn.data_received(masked_frames(*[(0x81, b"m%d" % i) for i in range(10)]))
    assert handler.messages == [b"m0", b"m1", b"m2", b"m3"]
    assert not transport.reading
    await eventually(lambda: len(handler.messages) == 10)
    assert handler.messages == [b"m%d" % i for i in range(10)]
    assert transport.reading


async def test_the_application_can_hold_messages_back() -> None:
    """pause_reading from the handler stops delivery at once; resume_reading delivers the
    rest in order and reads again."""
    transport = FakeTransport()
    conn = lasso.net.ws.WsServerConnection(
        transport,  # type: ignore[arg-type]
        asyncio.get_running_loop(),
        ping_interval=0,
    )

    class Holding(Echo):
        def on_message(self, data: bytes) -> None:
            super().on_message(data)
            if len(self.messages) == 2:
                conn.pause_reading()

    handler = Holding(conn)
    conn.start(handler)
    conn.data_received(masked_frames(*[(0x81, b"m%d" % i) for i in range(6)]))
    assert handler.messages == [b"m0", b"m1"] and not transport.reading
    conn.resume_reading()
    await eventually(lambda: len(handler.messages) == 6)
    assert handler.messages == [b"m%d" % i for i in range(6)] and transport.reading


async def test_a_large_frame_in_small_pieces_is_assembled_in_linear_time() -> None:
    """A 6 MB message arriving 2 KiB at a time is joined once, not re-copied per piece."""
    transport = FakeTransport()
    conn = lasso.net.ws.WsServerConnection(
        transport,  # type: ignore[arg-type]
        asyncio.get_running_loop(),
        ping_interval=0,
    )
    handler = Echo(conn)
    conn.start(handler)
    payload = b"q" * 6_000_000
    wire = masked_frames((0x82, payload))
    t0 = asyncio.get_running_loop().time()
    for i in range(0, len(wire), 2048):
        conn.data_received(wire[i : i + 2048])
    assert handler.messages == [payload]
    assert asyncio.get_running_loop().time() - t0 < 1.0
    assert conn._buf == b"" and conn._more == []


async def test_an_upgraded_connection_keeps_its_place_under_the_cap(echo_server: Any) -> None:
    """A WebSocket counts against the connection cap until it closes."""
    app, url = await echo_server()
    ws = await websockets.connect(url)
    await ws.send("x")
    await ws.recv()
    server = app.server
    assert server.acceptor.open == 1 and not server.connections
    await ws.close()
    await eventually(lambda: server.acceptor.open == 0)


async def test_a_client_link_closes_an_upstream_that_floods_pings() -> None:
    """An upstream sending pings beyond the rate is dropped (1008), not answered for ever."""
    from websockets.server import ServerProtocol

    link = WsClientLink(
        lambda data: None, ClientProtocol(parse_uri("ws://x/ws")), {}, asyncio.get_running_loop()
    )
    wire = FakeTransport()
    link.connection_made(wire)  # type: ignore[arg-type]
    server = ServerProtocol()
    server.receive_data(bytes(wire.out))
    server.send_response(server.accept(server.events_received()[0]))  # type: ignore[arg-type]
    for _ in range(500):
        server.send_ping(b"z")
    link.data_received(b"".join(server.data_to_send()))
    assert wire.closed and not wire.reading
