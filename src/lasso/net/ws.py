"""WebSocket connections (RFC 6455), both directions, on the websockets sans-IO protocol.

**Server side.** The HTTP server hands an ``Upgrade: websocket`` request to the
application together with its transport (:meth:`lasso.net.http_server.Application.upgrade`).
The application calls :func:`accept_handshake` (``websockets.server.ServerProtocol.accept``
on the parsed request: method, ``Connection``/``Upgrade``, ``Sec-WebSocket-Key`` and
``-Version``), writes the ``101`` answer it returns (or the rejection, and closes), and
hands the transport to a :class:`WsServerConnection`, which owns it from then on.

**Client side.** :class:`WsClientLink` is the protocol of an upstream connection made with
``loop.create_connection``: its opening handshake runs through
``websockets.client.ClientProtocol``, fed exactly the bytes of the HTTP answer head.

Both classes inherit the incoming frame handling of :mod:`lasso.net.ws_frames`, which also
holds :func:`accept_handshake` and the frame codec (:func:`frame_header`,
:func:`text_frame`, :func:`frame_span`; all re-exported here): a complete, final text or
binary frame is split by hand and goes straight to the consumer; every other frame goes
whole through the websockets protocol, which answers pings, runs the closing handshake,
enforces the size limit (1009) and fails protocol errors (1002). Outgoing text frames are
encoded by hand: a server frame is a 2, 4 or 10 byte header in front of the payload; a
client frame is masked with a key from a 4 KiB pool of ``os.urandom`` bytes (RFC 6455
§5.3 wants unpredictable keys; one syscall per 1,024 frames). The protocol still sends
control frames and the close.

Server connections add:

* **Keepalive**: a ping every ``ping_interval`` seconds; a ping not answered within
  ``pong_timeout`` is a miss, and ``max_missed_pongs`` misses in a row close the
  connection with 1011 ("keepalive timeout"). Any pong resets the count.
* **Flow control**: the transport's write buffer has high/low watermarks; above the high
  one we stop reading the client (no new requests while it does not read its answers),
  below the low one we read again. Replies are always queued (at most the client's own
  in-flight requests), but :meth:`WsServerConnection.push_text` (subscription
  notifications, which a slow reader could let grow without bound) refuses once more than
  ``max_send_buffer`` bytes are queued and drops the client: close 1008 ("client too
  slow"), the transport aborted if the close does not complete in ``close_timeout``.
* **Back-pressure from the handler**: :meth:`WsServerConnection.pause_reading` stops
  handing messages to the handler and reading the socket (frames already read wait, at
  most one read's worth plus one message); :meth:`~WsServerConnection.resume_reading`
  delivers them (on the next loop turn) and reads again, unless another reason to pause
  remains (the write buffer, the per-read budget). Keepalive misses are not counted while
  paused (the pong is unread), and closing lifts the pause so the closing handshake can
  be read.
* **Abuse** (:mod:`lasso.net.ws_frames`): more than ``control_frames_per_s`` pings/pongs
  close with 1008 ("too many control frames") and stop reading; at most
  ``frames_per_read`` frames are handled per loop turn.
* **Close**: :meth:`WsServerConnection.close` starts the closing handshake; a close from
  the client is echoed; the server closes TCP once both close frames have passed (RFC 6455
  §7.1.1). However the connection ends, ``on_close(code, reason)`` is called exactly once,
  from ``connection_lost``.

No timer or task per frame: a server connection has two timers per ping interval, a
client link one per heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Protocol

from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol

from lasso.net.errors import UpstreamConnectError, UpstreamNotConnected
from lasso.net.http_messages import Body, Pieces
from lasso.net.ws_frames import (
    _PAUSE_APP,
    _PAUSE_CLOSED,
    _PAUSE_WRITE,
    DEFAULT_CONTROL_FRAMES_PER_S,
    DEFAULT_FRAMES_PER_READ,
    WIRE_LOG,
    _FrameStream,
    accept_handshake,
    apply_mask,
    frame_header,
    frame_span,
    text_frame,
)

__all__ = [
    "WsHandler",
    "WsServerConnection",
    "WsClientLink",
    "accept_handshake",
    "text_frame",
    "frame_header",
    "frame_span",
    "DEFAULT_MAX_MESSAGE",
]

DEFAULT_MAX_MESSAGE = 8_000_000
"""Largest incoming client message (bytes), the HTTP body limit; larger ones close with 1009."""

_OPEN = State.OPEN
_CONNECTING = State.CONNECTING
_MAX_HANDSHAKE_HEAD = 65536

_log = logging.getLogger("lasso.ws")


class WsHandler(Protocol):
    """What a :class:`WsServerConnection` drives."""

    def on_message(self, data: bytes) -> None:
        """One complete text or binary message, in arrival order. Must not block."""

    def on_close(self, code: int, reason: str) -> None:
        """The connection is gone (called once): the close code received, else the one
        sent, else 1006."""


class WsServerConnection(_FrameStream):
    """One accepted WebSocket connection (after the ``101``).

    Args:
        transport: the upgraded transport; this object becomes its protocol.
        loop: the event loop.
        max_message: largest incoming message in bytes (close 1009 beyond).
        ping_interval: seconds between keepalive pings (0 disables them).
        pong_timeout: seconds a ping may stay unanswered before it counts as missed.
        max_missed_pongs: consecutive misses that close the connection (1011).
        max_send_buffer: bytes queued for the client above which :meth:`push_text`
            drops it.
        high_water, low_water: write-buffer watermarks that pause and resume reading.
        close_timeout: seconds the closing handshake may take before the transport is
            aborted.
        control_frames_per_s: pings and pongs the client may send per second (and as a
            burst); beyond, close 1008.
        frames_per_read: frames handled per read before the loop serves others.

    ``on_lost``, when set (the HTTP server sets it to give the connection's place under
    the connection cap back), is called once when the connection is gone.
    """

    _masked = 0x80

    def __init__(
        self,
        transport: asyncio.Transport,
        loop: asyncio.AbstractEventLoop,
        *,
        max_message: int = DEFAULT_MAX_MESSAGE,
        ping_interval: float = 30.0,
        pong_timeout: float = 5.0,
        max_missed_pongs: int = 2,
        max_send_buffer: int = 4 * 1024 * 1024,
        high_water: int = 256 * 1024,
        low_water: int = 64 * 1024,
        close_timeout: float = 2.0,
        control_frames_per_s: float = DEFAULT_CONTROL_FRAMES_PER_S,
        frames_per_read: int = DEFAULT_FRAMES_PER_READ,
    ) -> None:
        super().__init__(
            ServerProtocol(state=_OPEN, max_size=max_message, logger=WIRE_LOG),
            max_message,
            control_frames_per_s=control_frames_per_s,
            frames_per_read=frames_per_read,
        )
        self.transport = transport
        self.loop = loop
        self.handler: WsHandler | None = None
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.max_missed_pongs = max_missed_pongs
        self.max_send_buffer = max_send_buffer
        self.close_timeout = close_timeout
        self.pings_sent = 0
        self.pongs_received = 0
        self._awaiting_pong = False
        self._missed = 0
        self._ping_handle: asyncio.TimerHandle | None = None
        self._pong_handle: asyncio.TimerHandle | None = None
        self._close_handle: asyncio.TimerHandle | None = None
        self._closed = False
        self.on_lost: Callable[[], None] | None = None
        transport.set_write_buffer_limits(high=high_water, low=low_water)

    def start(self, handler: WsHandler, rest: bytes = b"") -> None:
        """Begin serving: arm the keepalive and process bytes read with the handshake."""
        self.handler = handler
        if self.ping_interval > 0:
            self._ping_handle = self.loop.call_later(self.ping_interval, self._keepalive)
        if rest:
            self.data_received(rest)

    # -- state --------------------------------------------------------------------------
    @property
    def open(self) -> bool:
        """True until a close frame is sent or received, or the transport is lost."""
        return self.proto.state is _OPEN and not self._closed

    @property
    def buffered(self) -> int:
        """Bytes written but not yet sent to the client."""
        transport = self.transport
        return 0 if self._closed or transport is None else transport.get_write_buffer_size()

    def __repr__(self) -> str:
        return (
            f"<WsServerConnection {self.proto.state.name.lower()} buffered={self.buffered}"
            f" pings={self.pings_sent} pongs={self.pongs_received} missed={self._missed}"
            f" paused={self._pauses}>"
        )

    # -- sending ------------------------------------------------------------------------
    def send_text(self, payload: Body) -> bool:
        """Queue a text frame (a reply). Returns False if the connection is not open."""
        transport = self.transport
        if self.proto.state is not _OPEN or self._closed or transport is None:
            return False
        n = len(payload)
        if isinstance(payload, Pieces):  # a large answer spliced around an id: no join
            transport.writelines((frame_header(n), *payload.parts))
        elif n < 65536:
            transport.write(frame_header(n) + payload)
        else:  # no copy of a large payload
            transport.writelines((frame_header(n), payload))
        return True

    def push_text(self, payload: bytes) -> bool:
        """Queue a text frame the client did not ask for (a notification).

        Returns False, and drops the client (close 1008), when more than
        ``max_send_buffer`` bytes are already waiting for it: it does not keep up.
        """
        if self.buffered > self.max_send_buffer and self.open:
            self.close(1008, "client too slow")
            return False
        return self.send_text(payload)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (idempotent); abort if it takes too long."""
        proto = self.proto
        if self._closed:
            return
        self._unpause(_PAUSE_APP)  # the client's close frame must be read
        if proto.state is _OPEN:
            proto.send_close(code, reason)
            self._flush()
        if proto.close_expected() and self._close_handle is None and not self._closed:
            self._close_handle = self.loop.call_later(self.close_timeout, self.abort)

    def abort(self) -> None:
        """Drop the TCP connection now."""
        if not self._closed and self.transport is not None:
            self.transport.abort()

    def pause_reading(self) -> None:
        """Stop handing messages to the handler (back-pressure) until :meth:`resume_reading`.

        Messages already read wait; the client's further frames wait in the kernel.
        Independent of the connection's own pauses (slow reader, per-read budget)."""
        self._pause(_PAUSE_APP)

    def resume_reading(self) -> None:
        """Undo :meth:`pause_reading`: messages read ahead are delivered first (on the
        next loop turn), then the socket is read again."""
        self._unpause(_PAUSE_APP)

    @property
    def reading_paused(self) -> bool:
        """True while :meth:`pause_reading` is in effect."""
        return bool(self._pauses & _PAUSE_APP)

    # -- asyncio.Protocol ---------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._slow:
            self._feed(data)
            return
        buf = self._take(data)
        if buf is None:
            return
        if self._pauses:  # read although paused (one read may race the pause)
            self._buf = buf
            return
        self._handle(buf)

    def _handle(self, buf: bytes) -> None:
        try:
            self._receive(buf, 0)
        except Exception:  # a handler bug must not leave a half-served socket
            _log.exception("websocket handler failed", extra={"event": "ws.handler_error"})
            self._give_up(b"")
            self.close(1011, "internal error")

    def eof_received(self) -> bool | None:
        self.proto.receive_eof()
        self._flush()
        return None  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._buf = b""
        self._more = []
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()
        for handle in (self._ping_handle, self._pong_handle, self._close_handle):
            if handle is not None:
                handle.cancel()
        proto = self.proto
        proto.receive_eof()  # moves the state to CLOSED
        proto.data_to_send()
        close = proto.close_rcvd or proto.close_sent
        code, reason = (close.code, close.reason) if close is not None else (1006, "")
        if self.handler is not None:
            try:
                self.handler.on_close(int(code), reason)
            except Exception:
                _log.exception(
                    "websocket close handler failed", extra={"event": "ws.handler_error"}
                )

    def pause_writing(self) -> None:
        self._pause(_PAUSE_WRITE)

    def resume_writing(self) -> None:
        self._unpause(_PAUSE_WRITE)

    # -- internals ----------------------------------------------------------------------
    def _deliver(self, payload: bytes) -> None:
        if self.handler is not None:
            self.handler.on_message(payload)

    def _send_pong(self, payload: bytes) -> None:
        transport = self.transport
        if transport is not None and not self._closed:
            transport.write(bytes((0x8A, len(payload))) + payload)

    def _abuse(self, reason: str) -> None:
        self._buf = b""
        self._pause(_PAUSE_CLOSED)  # read nothing more; the close timeout aborts
        self.close(1008, reason)

    def _on_pong(self) -> None:
        self._awaiting_pong = False
        self._missed = 0
        self.pongs_received += 1

    def _keepalive(self) -> None:
        self._ping_handle = None
        if not self.open:
            return
        self.proto.send_ping(b"lasso")
        self._flush()
        self.pings_sent += 1
        self._awaiting_pong = True
        self._pong_handle = self.loop.call_later(self.pong_timeout, self._pong_due)
        self._ping_handle = self.loop.call_later(self.ping_interval, self._keepalive)

    def _pong_due(self) -> None:
        self._pong_handle = None
        if not self._awaiting_pong or not self.open or self._pauses & _PAUSE_APP:
            return  # answered, closing, or unreadable while the handler holds reading
        self._awaiting_pong = False
        self._missed += 1
        if self._missed >= self.max_missed_pongs:
            self.close(1011, "keepalive timeout")


class WsClientLink(_FrameStream):
    """The protocol of one outgoing WebSocket connection (TCP or TLS).

    Args:
        on_message: called with every complete text or binary message, in order.
        proto: a fresh ``ClientProtocol`` for the URL (it builds the handshake).
        headers: extra handshake headers (API keys).
        loop: the event loop.
        on_dead: called when a heartbeat ping went unanswered (the link is then aborted).

    ``ready`` resolves when the handshake succeeded (or fails with
    :class:`~lasso.net.errors.UpstreamConnectError`); ``lost`` resolves when the
    connection is gone.
    """

    _masked = 0

    def __init__(
        self,
        on_message: Callable[[bytes], None],
        proto: ClientProtocol,
        headers: Mapping[str, str],
        loop: asyncio.AbstractEventLoop,
        *,
        user_agent: str = "lasso",
        on_dead: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(proto, proto.max_message_size or 1 << 62)
        self.on_message = on_message
        self.on_dead = on_dead
        self.headers = headers
        self.user_agent = user_agent
        self.loop = loop
        self.ready: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self._awaiting_pong = False
        self._beat: asyncio.TimerHandle | None = None
        self._masks = b""
        self._mask_pos = 0

    @property
    def open(self) -> bool:
        return self.transport is not None and self.proto.state is _OPEN

    def __repr__(self) -> str:
        return (
            f"<WsClientLink {self.proto.state.name.lower()} awaiting_pong={self._awaiting_pong}"
            f" buffered_in={len(self._buf)}>"
        )

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        proto = self.proto
        assert isinstance(proto, ClientProtocol)
        request = proto.connect()
        request.headers["User-Agent"] = self.user_agent
        for name, value in self.headers.items():
            request.headers[name] = value
        proto.send_request(request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        if self._slow:
            self._feed(data)
            return
        buf = self._take(data)
        if buf is None:
            return
        if self._pauses:
            self._buf = buf
            return
        pos = 0
        if self.proto.state is _CONNECTING:
            head_end = buf.find(b"\r\n\r\n")
            if head_end < 0:
                if len(buf) > _MAX_HANDSHAKE_HEAD:
                    self._give_up(buf)  # the protocol rejects it
                else:
                    self._buf = buf
                return
            pos = head_end + 4
            self._feed(buf[:pos])  # the protocol sees exactly the answer head
            if self.proto.state is not _OPEN:  # refused: let it read any body and fail
                self._give_up(buf[pos:])
                if self.proto.handshake_exc is not None:
                    self._fail_ready(f"handshake failed: {self.proto.handshake_exc}")
                return
        self._receive(buf, pos)

    def eof_received(self) -> bool | None:
        self.proto.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self._beat is not None:
            self._beat.cancel()
        self._fail_ready(f"connection closed during the handshake: {exc or 'EOF'}")
        if not self.lost.done():
            self.lost.set_result(None)

    # -- actions ------------------------------------------------------------------------
    def send_text(self, payload: bytes) -> None:
        """Send one masked text frame.

        Raises:
            UpstreamNotConnected: the link is not open (nothing was sent).
        """
        transport = self.transport
        if transport is None or self.proto.state is not _OPEN:
            raise UpstreamNotConnected("websocket is not open")
        mask = self._mask()
        n = len(payload)
        if n < 126:
            head = bytes((0x81, 0x80 | n))
        elif n < 65536:
            head = b"\x81\xfe" + n.to_bytes(2, "big")
        else:
            head = b"\x81\xff" + n.to_bytes(8, "big")
        transport.write(head + mask + apply_mask(payload, mask))

    def start_heartbeat(self, interval: float) -> None:
        """Ping every ``interval`` seconds; abort when a ping is still unanswered."""
        if interval > 0:
            self._beat = self.loop.call_later(interval, self._heartbeat, interval)

    def close(self) -> None:
        """Send a close frame and close TCP behind it (we do not wait for the echo)."""
        if self.open:
            self.proto.send_close(1000, "")
            self._flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- internals ----------------------------------------------------------------------
    def _mask(self) -> bytes:
        pos = self._mask_pos
        if pos >= len(self._masks):
            self._masks = os.urandom(4096)
            pos = 0
        self._mask_pos = pos + 4
        return self._masks[pos : pos + 4]

    def _deliver(self, payload: bytes) -> None:
        self.on_message(payload)

    def _send_pong(self, payload: bytes) -> None:
        transport = self.transport
        if transport is not None:
            mask = self._mask()
            transport.write(bytes((0x8A, 0x80 | len(payload))) + mask + apply_mask(payload, mask))

    def _abuse(self, reason: str) -> None:
        _log.warning("upstream websocket closed: %s", reason, extra={"event": "ws.upstream_abuse"})
        self._buf = b""
        self._pause(_PAUSE_CLOSED)
        if self.open:
            self.proto.send_close(1008, reason)
            self._flush()
        self.abort()

    def _on_pong(self) -> None:
        self._awaiting_pong = False

    def _on_handshake(self) -> None:
        exc = self.proto.handshake_exc
        if exc is not None:
            self._fail_ready(f"handshake rejected: {exc}")
        elif not self.ready.done():
            self.ready.set_result(None)

    def _fail_ready(self, message: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(UpstreamConnectError(message))

    def _heartbeat(self, interval: float) -> None:
        self._beat = None
        if not self.open:
            return
        if self._awaiting_pong:
            if self.on_dead is not None:
                self.on_dead()
            self.abort()
            return
        self.proto.send_ping(b"lasso")
        self._flush()
        self._awaiting_pong = True
        self._beat = self.loop.call_later(interval, self._heartbeat, interval)
