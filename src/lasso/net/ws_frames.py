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

**Bounds** (issue 11: one peer must not starve the loop). Pings and pongs are handled
here too, against a token bucket of ``control_frames_per_s`` (burst: one second's worth);
each ping within it gets its pong, the first one beyond closes the connection with 1008
and stops reading (``_abuse``). One read is handled at most ``frames_per_read`` frames at
a time: the rest waits in ``_buf`` with reading paused while the loop serves others. Reading
pauses for several reasons at once (``_PAUSE_*`` bits: the peer not reading what we
write, the per-read budget, the application's back-pressure, a policy close) and resumes
when none is left, frames read ahead first. A frame that arrives in many pieces is
collected in a list and joined once (never ``buf + data`` per piece, which is quadratic).

**Outgoing text frames** from a server are a 2, 4 or 10 byte header
(:func:`frame_header`) in front of the payload (no extension is negotiated). Client frames
are masked inline in :meth:`lasso.net.ws.WsClientLink.send_text`. The protocol still sends
control frames and the close.

``_FrameStream`` is shared with :mod:`lasso.net.ws` only: it is the ``asyncio.Protocol``
base of :class:`~lasso.net.ws.WsServerConnection` and :class:`~lasso.net.ws.WsClientLink`,
which set ``_masked`` (whether incoming frames must be masked), feed it bytes
(``_take``, ``_receive``, ``_feed``, ``_give_up``), pause and resume reading (``_pause``,
``_unpause``) and hear of messages, pongs, the handshake and abuse through ``_deliver``,
``_on_pong``, ``_on_handshake``, ``_send_pong`` and ``_abuse``. The two modules
are one component split for size: the subclasses inherit these methods, with no
indirection per frame.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
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

DEFAULT_CONTROL_FRAMES_PER_S = 100.0
"""Pings and pongs a peer may send per second (and as a burst); beyond, close 1008."""
DEFAULT_FRAMES_PER_READ = 256
"""Frames handled per read of one connection before the loop serves others."""
_LARGE_FRAME = 65536  # an incomplete frame missing more than this collects its pieces
_PAUSE_WRITE = 1  # the peer does not read what we write
_PAUSE_YIELD = 2  # frames_per_read handled: a loop turn for others
_PAUSE_APP = 4  # the application asked (back-pressure)
_PAUSE_CLOSED = 8  # a policy close: nothing more is read

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
    loop: asyncio.AbstractEventLoop  # set by the subclasses

    def __init__(
        self,
        proto: SansIO,
        max_message: int,
        *,
        control_frames_per_s: float = DEFAULT_CONTROL_FRAMES_PER_S,
        frames_per_read: int = DEFAULT_FRAMES_PER_READ,
    ) -> None:
        self.proto = proto
        self.max_message = max_message
        self.transport: asyncio.Transport | None = None
        self.control_frames_per_s = control_frames_per_s
        self.frames_per_read = frames_per_read
        self._buf = b""  # the start of a frame not yet complete, or frames read ahead
        self._more: list[bytes] = []  # a large frame's pieces, joined once it is whole
        self._have = 0
        self._want = 0
        self._slow = False  # True once the protocol has bytes we did not frame ourselves
        self._frags: list[Any] | None = None
        self._pauses = 0  # why reading is paused (_PAUSE_* bits)
        self._reading_paused = False
        self._tokens = control_frames_per_s  # control-frame bucket (burst = one second)
        self._tokens_at = 0.0

    # -- for subclasses -----------------------------------------------------------------
    def _deliver(self, payload: bytes) -> None:
        raise NotImplementedError

    def _on_pong(self) -> None:
        pass

    def _on_handshake(self) -> None:
        pass

    def _send_pong(self, payload: bytes) -> None:
        """Answer a ping (the subclass frames it for its direction)."""
        raise NotImplementedError

    def _abuse(self, reason: str) -> None:
        """The peer broke a limit: close the connection with 1008 (subclass)."""
        raise NotImplementedError

    def _handle(self, buf: bytes) -> None:
        """Split ``buf`` into frames (a subclass may guard its handler's errors)."""
        self._receive(buf, 0)

    # -- reading, paused and resumed for several reasons ---------------------------------
    def _pause(self, reason: int) -> None:
        self._pauses |= reason
        transport = self.transport
        if not self._reading_paused and transport is not None and not transport.is_closing():
            self._reading_paused = True
            transport.pause_reading()

    def _unpause(self, reason: int) -> None:
        if not self._pauses & reason:
            return
        self._pauses &= ~reason
        if self._pauses:
            return
        if self._buf:  # frames read ahead: handle them on a fresh loop turn first
            self.loop.call_soon(self._continue)
        else:
            self._resume_transport()

    def _resume_transport(self) -> None:
        transport = self.transport
        if self._reading_paused and transport is not None and not transport.is_closing():
            self._reading_paused = False
            transport.resume_reading()

    def _continue(self) -> None:
        if self._pauses or self.transport is None:
            return
        buf, self._buf = self._buf, b""
        if self._slow:
            self._feed(buf)
        else:
            self._handle(buf)
        if not self._pauses:
            self._resume_transport()

    # -- incoming -----------------------------------------------------------------------
    def _take(self, data: bytes) -> bytes | None:
        """The bytes to split now: ``data`` after what is buffered, or None while a large
        frame is still incomplete (its pieces are kept and joined once, never re-copied)."""
        if self._want:
            self._more.append(data)
            self._have += len(data)
            if self._have < self._want:
                return None
            buf = b"".join(self._more)
            self._more = []
            self._want = self._have = 0
            return buf
        return self._buf + data if self._buf else data

    def _receive(self, buf: bytes, pos: int) -> None:
        """Split ``buf[pos:]`` into frames; keep an incomplete tail for the next call.

        At most ``frames_per_read`` frames are handled per call, and none while reading
        is paused (the application, the write buffer): the rest waits in ``_buf``."""
        proto = self.proto
        masked = self._masked
        n = len(buf)
        budget = self.frames_per_read
        while n - pos >= 2:
            if self._pauses or budget <= 0:
                if not self._pauses:  # let the loop serve others, then go on
                    self._pause(_PAUSE_YIELD)
                    self.loop.call_soon(self._unpause, _PAUSE_YIELD)
                self._buf = buf[pos:]
                return
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
            budget -= 1
            b0 = buf[pos]
            if (b0 == 0x81 or b0 == 0x82) and proto.current_size is None and proto.state is _OPEN:
                if masked:
                    self._deliver(apply_mask(buf[pos + hl : end], buf[pos + hl - 4 : pos + hl]))
                else:
                    self._deliver(buf[pos + hl : end])
            elif (b0 == 0x89 or b0 == 0x8A) and ln <= 125 and proto.state is _OPEN:
                # Ping or pong: answered here, within the control-frame rate.
                if not self._control_allowed():
                    self._abuse("too many control frames")
                    return
                if b0 == 0x8A:
                    self._on_pong()
                elif masked:
                    self._send_pong(apply_mask(buf[pos + hl : end], buf[pos + hl - 4 : pos + hl]))
                else:
                    self._send_pong(buf[pos + hl : end])
            else:  # close, fragments, RSV bits, bad control frames: the protocol decides
                self._feed(buf[pos:end])
                if proto.state is not _OPEN:  # closing or failed: it takes the rest
                    self._give_up(buf[end:])
                    return
            pos = end
        if pos < n:
            span = frame_span(buf, pos)
            if span is not None:
                total = span[0] + (4 if masked else 0) + span[1]
                if total - (n - pos) > _LARGE_FRAME:  # much still to come: collect pieces
                    self._more = [buf[pos:]]
                    self._have = n - pos
                    self._want = total
                    self._buf = b""
                    return
            self._buf = buf[pos:]
        else:
            self._buf = b""

    def _control_allowed(self) -> bool:
        """Take one control frame from the per-second budget (a token bucket)."""
        rate = self.control_frames_per_s
        now = monotonic()
        tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if tokens < 1.0:
            self._tokens = tokens
            return False
        self._tokens = tokens - 1.0
        return True

    def _give_up(self, rest: bytes) -> None:
        self._slow = True
        self._buf = b""
        self._more = []
        self._want = self._have = 0
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
