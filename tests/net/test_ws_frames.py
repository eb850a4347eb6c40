"""The WebSocket wire layer (``lasso.net.ws_frames``): the handshake answer, the frame codec
and frame splitting with the websockets protocol fallback. Splitting is checked through a
``WsServerConnection`` on a fake transport, whole, byte by byte and in random pieces, and
on the bare ``_FrameStream`` with generated frames in both directions; bad upgrades go
through real sockets on 127.0.0.1. The connections themselves are in ``test_ws.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import Protocol as SansIO
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

import lasso.net.ws_frames
from lasso.net.http_server import HttpRequest
from lasso.net.ws import WsServerConnection
from lasso.net.ws_frames import (
    WIRE_LOG,
    _FrameStream,
    accept_handshake,
    apply_mask,
    frame_header,
    frame_span,
    text_frame,
)

from net_ws_support import Echo, FakeTransport, chunked, echo_servers, handshake, port_of, read_head


@pytest.fixture
async def echo_server() -> AsyncIterator[Callable[..., Any]]:
    """Factory: an HttpServer with EchoApp on a free port; returns (app, ws url)."""
    async with echo_servers() as start:
        yield start


def test_exported_members() -> None:
    """__all__ is the public surface of the frame layer."""
    assert sorted(lasso.net.ws_frames.__all__) == [
        "WIRE_LOG",
        "accept_handshake",
        "frame_header",
        "frame_span",
        "text_frame",
    ]
    for name in lasso.net.ws_frames.__all__:
        assert getattr(lasso.net.ws_frames, name) is not None


def test_module_imports_alone() -> None:
    """The frame module imports first in a fresh interpreter (no order-dependent cycle)."""
    subprocess.run([sys.executable, "-c", "import lasso.net.ws_frames"], check=True)


# -- codec --------------------------------------------------------------------------------


def server_frames(out: bytes) -> list[tuple[Opcode, bytes]]:
    """The frames a server wrote, as websockets' own client parses them."""
    client = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN)
    client.receive_data(out)
    return [(f.opcode, bytes(f.data)) for f in client.events_received()]  # type: ignore[union-attr]


def test_frame_header_covers_the_three_length_forms() -> None:
    """Headers are 2, 4 or 10 bytes and parse back with websockets' own client parser."""
    for n in (0, 125, 126, 65535, 65536, 70000):
        payload = b"x" * n
        assert len(frame_header(n)) == (2 if n < 126 else 4 if n < 65536 else 10)
        assert server_frames(text_frame(payload)) == [(Opcode.TEXT, payload)]


@given(
    n=st.one_of(st.integers(0, 70_000), st.integers(0, 2**63 - 1)),
    prefix=st.binary(max_size=12),
    masked=st.booleans(),
)
def test_frame_span_reads_any_header_at_any_offset(n: int, prefix: bytes, masked: bool) -> None:
    """frame_span gives (header length, payload length) for a complete header, masked or
    not, wherever it starts; None for every incomplete one."""
    head = bytearray(frame_header(n))
    if masked:
        head[1] |= 0x80  # the mask key is not part of the span
    buf = prefix + bytes(head)
    assert frame_span(buf + b"trailing", len(prefix)) == (len(head), n)
    for cut in range(len(prefix), len(buf)):
        assert frame_span(buf[:cut], len(prefix)) is None


# -- handshake ----------------------------------------------------------------------------

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example and its accept value


def upgrade_request(method: str = "GET", **headers: str | None) -> HttpRequest:
    """An upgrade request as the HTTP server parses it; a None header is left out."""
    fields: dict[str, str | None] = {
        "host": "x",
        "upgrade": "websocket",
        "connection": "Upgrade",
        "sec-websocket-key": RFC_KEY,
        "sec-websocket-version": "13",
    }
    fields.update({name.replace("_", "-"): value for name, value in headers.items()})
    kept = {name: value for name, value in fields.items() if value is not None}
    return HttpRequest(method, "/ws/rpc/ethereum", "x=1", kept, b"", "127.0.0.1", True)


def test_accept_handshake_answers_101_without_extensions() -> None:
    """A valid upgrade gets 101 with the RFC accept key; no extension or subprotocol is
    offered back."""
    ok, answer = accept_handshake(
        upgrade_request(
            sec_websocket_extensions="permessage-deflate", sec_websocket_protocol="jsonrpc"
        )
    )
    accept = base64.b64encode(
        hashlib.sha1((RFC_KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    )
    assert accept == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert ok and answer.startswith(b"HTTP/1.1 101 ") and answer.endswith(b"\r\n\r\n")
    assert b"\r\nSec-WebSocket-Accept: " + accept + b"\r\n" in answer
    assert b"Sec-WebSocket-Extensions" not in answer and b"Sec-WebSocket-Protocol" not in answer


@pytest.mark.parametrize(
    ("request_", "status"),
    [
        (upgrade_request(sec_websocket_key="bad"), b"400"),
        (upgrade_request(sec_websocket_version="8"), b"400"),
        (upgrade_request("POST"), b"405"),
        (upgrade_request(upgrade=None, connection="keep-alive"), b"426"),
    ],
    ids=["bad key", "bad version", "not GET", "not an upgrade"],
)
def test_accept_handshake_refuses_with_the_documented_status(
    request_: HttpRequest, status: bytes
) -> None:
    """400 for a bad key or version, 405 for another method, 426 for a plain request."""
    ok, answer = accept_handshake(request_)
    assert not ok and answer.startswith(b"HTTP/1.1 " + status + b" ")


@pytest.mark.integration
async def test_bad_upgrades_are_rejected_with_http_errors(echo_server: Any) -> None:
    """A missing or malformed key and a wrong version get HTTP 400, not a socket."""
    _, url = await echo_server()
    port = port_of(url)
    for extra, key in (
        ("Sec-WebSocket-Version: 13\r\n", "not-base64!"),
        ("Sec-WebSocket-Version: 8\r\n", None),
        ("", None),  # no version at all
    ):
        sock = handshake(port, extra, key)
        try:
            head = await read_head(sock)
        finally:
            sock.close()
        assert head.startswith(b"HTTP/1.1 400"), head


# -- splitting, through a server connection -----------------------------------------------


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


# -- splitting, on the bare frame stream --------------------------------------------------


class Recorder(_FrameStream):
    """The frame layer alone: records messages and pongs, writes to a fake transport."""

    def __init__(self, proto: SansIO) -> None:
        super().__init__(proto, 1 << 20)
        self.transport = FakeTransport()  # type: ignore[assignment]
        self.messages: list[bytes] = []
        self.pongs = 0

    def data_received(self, data: bytes) -> None:
        # What both connections do once open.
        if self._slow:
            self._feed(data)
            return
        buf = self._take(data)
        if buf is not None:
            self._receive(buf, 0)

    def _deliver(self, payload: bytes) -> None:
        self.messages.append(bytes(payload))

    def _on_pong(self) -> None:
        self.pongs += 1


class FromClient(Recorder):
    """A server's frame layer: incoming frames must be masked; pongs go out plain."""

    _masked = 0x80

    def _send_pong(self, payload: bytes) -> None:
        self.transport.write(bytes((0x8A, len(payload))) + payload)  # type: ignore[union-attr]


class FromServer(Recorder):
    """A client's frame layer: incoming frames must not be masked; pongs go out masked."""

    _masked = 0

    def _send_pong(self, payload: bytes) -> None:
        mask = b"\x01\x02\x03\x04"
        out = bytes((0x8A, 0x80 | len(payload))) + mask + apply_mask(payload, mask)
        self.transport.write(out)  # type: ignore[union-attr]


PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([125, 126, 127, 65535, 65536]).map(lambda n: b"z" * n),
)
FRAMES = st.lists(
    st.tuples(st.sampled_from(["text", "binary", "fragmented", "ping", "pong"]), PAYLOADS),
    max_size=8,
)


@settings(max_examples=60, deadline=None)
@given(frames=FRAMES, cuts=st.lists(st.floats(0, 1), max_size=30), from_client=st.booleans())
def test_frame_stream_splits_generated_frames_in_any_chunking(
    frames: list[tuple[str, bytes]], cuts: list[float], from_client: bool
) -> None:
    """Generated frames, masked from a client or plain from a server, cut anywhere, give
    every message once and in order; each ping is answered, each pong reported."""
    peer: SansIO
    if from_client:
        peer = ClientProtocol(parse_uri("ws://x/"), state=State.OPEN)
        ours: Recorder = FromClient(ServerProtocol(state=State.OPEN, logger=WIRE_LOG))
    else:
        peer = ServerProtocol(state=State.OPEN)
        ours = FromServer(ClientProtocol(parse_uri("ws://x/"), state=State.OPEN, logger=WIRE_LOG))
    expected: list[bytes] = []
    pings: list[bytes] = []
    for kind, payload in frames:
        if kind == "text":
            text = payload.hex().encode()  # valid UTF-8
            peer.send_text(text)
            expected.append(text)
        elif kind == "binary":
            peer.send_binary(payload)
            expected.append(payload)
        elif kind == "fragmented":
            half = len(payload) // 2
            peer.send_binary(payload[:half], fin=False)
            peer.send_ping(b"between")  # control frames may interleave with fragments
            pings.append(b"between")
            peer.send_continuation(payload[half:], fin=True)
            expected.append(payload)
        elif kind == "ping":
            peer.send_ping(payload[:125])
            pings.append(payload[:125])
        else:
            peer.send_pong(payload[:125])
    stream = b"".join(peer.data_to_send())
    points = sorted({int(f * len(stream)) for f in cuts} | {0, len(stream)})
    for a, b in zip(points, points[1:], strict=False):
        ours.data_received(stream[a:b])
    assert ours.messages == expected
    assert ours.pongs == sum(kind == "pong" for kind, _ in frames)
    assert ours.proto.state is State.OPEN and ours._buf == b""
    peer.receive_data(bytes(ours.transport.out))  # type: ignore[union-attr]
    answers = [(f.opcode, bytes(f.data)) for f in peer.events_received()]  # type: ignore[union-attr]
    assert answers == [(Opcode.PONG, ping) for ping in pings]
