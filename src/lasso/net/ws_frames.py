"""The WebSocket wire layer (RFC 6455) shared by both directions: the opening handshake a
server accepts, the hand-written frame codec, and incoming frame splitting with the
websockets sans-IO protocol as the fallback.

**Handshake.** :func:`accept_handshake` validates a client's ``Upgrade: websocket``
request with ``websockets.server.ServerProtocol.accept`` (method, ``Connection``/
``Upgrade``, ``Sec-WebSocket-Key`` and ``-Version``) and returns the ``101`` answer, or the
rejection. :data:`WIRE_LOG` is the logger every websockets protocol object gets (it keeps
only warnings).

**Incoming frames** are split here (a frame's length is in its first 2-10 bytes;
:func:`frame_span`). A complete, final text or binary frame (masked from a client,
unmasked from a server), outside a fragmented message and within the size limit, goes to
the consumer directly: that is nearly every JSON-RPC message, and websockets'
``receive_data`` costs ~7 µs per frame where this costs ~1-2. Every other frame (ping,
pong, close, fragments, reserved bits, a wrong mask bit, oversized) is fed *whole* to the
websockets protocol, so its parser always sits at a frame boundary when we bypass it: it
answers pings, runs the closing handshake, enforces the size limit (1009) and fails
protocol errors (1002). Fragmented messages are reassembled from its events. Once the
protocol is closing or has failed, it gets every remaining byte.

**Outgoing text frames** from a server are a 2, 4 or 10 byte header
(:func:`frame_header`) in front of the payload (no extension is negotiated). Client frames
are masked inline in :meth:`lasso.net.ws.WsClientLink.send_text`. The protocol still sends
control frames and the close.

``_FrameStream`` is shared with :mod:`lasso.net.ws` only: it is the ``asyncio.Protocol``
base of :class:`~lasso.net.ws.WsServerConnection` and :class:`~lasso.net.ws.WsClientLink`,
which set ``_masked`` (whether incoming frames must be masked), feed it bytes
(``_receive``, ``_feed``, ``_give_up``) and hear of messages, pongs and the handshake through
``_deliver``, ``_on_pong`` and ``_on_handshake``. The two modules
are one component split for size: the subclasses inherit these methods, with no
indirection per frame.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol as SansIO
from websockets.protocol import State
from websockets.server import ServerProtocol

from lasso.net.http_server import HttpRequest

try:  # shared with ws.py, which masks what it sends upstream
    from websockets.speedups import apply_mask as apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask as apply_mask

__all__ = [
    "WIRE_LOG",
    "accept_handshake",
    "frame_header",
    "frame_span",
    "text_frame",
]

_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_PONG = Opcode.PONG
_OPEN = State.OPEN


class _QuietLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """websockets logs every connection open and close at INFO; keep only warnings."""

    def isEnabledFor(self, level: int) -> bool:
        return level >= logging.WARNING and self.logger.isEnabledFor(level)


WIRE_LOG = _QuietLog(logging.getLogger("lasso.ws.wire"), {})
"""The logger to give websockets protocol objects."""


def frame_header(n: int) -> bytes:
    """The header of an unmasked, final text frame of ``n`` payload bytes (RFC 6455 §5.2)."""
    if n < 126:
        return bytes((0x81, n))
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big")
    return b"\x81\x7f" + n.to_bytes(8, "big")


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final text frame carrying ``payload``."""
    return frame_header(len(payload)) + payload


def frame_span(buf: bytes, pos: int) -> tuple[int, int] | None:
    """``(header length without the mask key, payload length)`` of the frame starting at
    ``pos``, or None while its header is incomplete."""
    n = len(buf) - pos
    if n < 2:
        return None
    ln = buf[pos + 1] & 0x7F
    if ln < 126:
        return 2, ln
    hl = 4 if ln == 126 else 10
    if n < hl:
        return None
    return hl, int.from_bytes(buf[pos + 2 : pos + hl], "big")


def accept_handshake(req: HttpRequest) -> tuple[bool, bytes]:
    """Validate a WebSocket opening handshake and build the answer.

    Args:
        req: the upgrade request as parsed by the HTTP server.

    Returns:
        ``(True, b"HTTP/1.1 101 ...")`` for a valid handshake: write it, then hand the
        transport to a :class:`~lasso.net.ws.WsServerConnection`. ``(False, response)``
        otherwise (400 bad key or version, 405 not GET, 426 not an upgrade): write it and
        close.
    """
    target = f"{req.path}?{req.query}" if req.query else req.path
    wreq = Request(target, Headers(req.headers.items()))
    wreq.method = req.method
    resp = ServerProtocol(logger=WIRE_LOG).accept(wreq)
    # No extension (permessage-deflate) and no subprotocol are offered back: JSON-RPC
    # frames are small and compressing them costs more CPU than it saves on loopback/LAN.
    return resp.status_code == 101, resp.serialize()


class _FrameStream(asyncio.Protocol):
    """Incoming frame splitting and the websockets protocol fallback, for both sides."""

    _masked: ClassVar[int]  # 0x80 when incoming frames must be masked (from a client)

    def __init__(self, proto: SansIO, max_message: int) -> None:
        self.proto = proto
        self.max_message = max_message
        self.transport: asyncio.Transport | None = None
        self._buf = b""  # the start of a frame not yet complete
        self._slow = False  # True once the protocol has bytes we did not frame ourselves
        self._frags: list[Any] | None = None
        self._hold = False  # the consumer paused delivery: complete frames wait in _buf

    # -- for subclasses -----------------------------------------------------------------
    def _deliver(self, payload: bytes) -> None:
        raise NotImplementedError

    def _on_pong(self) -> None:
        pass

    def _on_handshake(self) -> None:
        pass

    # -- incoming -----------------------------------------------------------------------
    def _receive(self, buf: bytes, pos: int) -> None:
        """Split ``buf[pos:]`` into frames; keep an incomplete tail for the next call, and
        everything from the first frame not delivered once the consumer holds delivery."""
        proto = self.proto
        masked = self._masked
        n = len(buf)
        while n - pos >= 2 and not self._hold:
            span = frame_span(buf, pos)
            if span is None:
                break
            hl, ln = span
            b1 = buf[pos + 1]
            if ln > self.max_message or (b1 & 0x80) != masked:
                self._give_up(buf[pos:])  # the protocol fails it: 1009, or 1002
                return
            if masked:
                hl += 4
            end = pos + hl + ln
            if end > n:
                break
            b0 = buf[pos]
            if (b0 == 0x81 or b0 == 0x82) and proto.current_size is None and proto.state is _OPEN:
                if masked:
                    self._deliver(apply_mask(buf[pos + hl : end], buf[pos + hl - 4 : pos + hl]))
                else:
                    self._deliver(buf[pos + hl : end])
            else:  # control frames, fragments, RSV bits: the protocol decides
                self._feed(buf[pos:end])
                if proto.state is not _OPEN:  # closing or failed: it takes the rest
                    self._give_up(buf[end:])
                    return
            pos = end
        self._buf = buf[pos:] if pos < n else b""

    def _give_up(self, rest: bytes) -> None:
        self._slow = True
        self._buf = b""
        if rest:
            self._feed(rest)

    def _feed(self, data: bytes) -> None:
        """Run bytes through the websockets protocol and act on what it yields."""
        proto = self.proto
        proto.receive_data(data)
        for event in proto.events_received():
            if type(event) is not Frame:
                self._on_handshake()
                continue
            op = event.opcode
            if op is _TEXT or op is _BINARY:
                if event.fin:
                    self._deliver(bytes(event.data))
                else:
                    self._frags = [event.data]
            elif op is _CONT:
                frags = self._frags
                if frags is not None:  # the protocol rejects a stray one
                    frags.append(event.data)
                    if event.fin:
                        self._frags = None
                        self._deliver(b"".join(frags))
            elif op is _PONG:
                self._on_pong()
            # PING: the protocol queued the pong. CLOSE: it queued the echo.
        self._flush()

    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.proto.data_to_send():
            if data:
                transport.write(data)
            else:  # SEND_EOF: the closing handshake is over, close TCP
                transport.close()
