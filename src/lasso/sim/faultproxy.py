"""A TCP fault proxy: one front door to a real node that can be cut, stalled or refused.

Several :class:`FaultProxy` objects in front of one node (say one ``anvil``) look like
several providers serving the same chain; HTTP and WebSocket pass through untouched, since
the proxy only moves bytes. At run time a proxy can

* :meth:`~FaultProxy.cut` every connection with a TCP reset (both sides see RST, like a
  crashed node or a dropped NAT entry),
* :meth:`~FaultProxy.stall` forwarding (connections stay open and silent, new ones are
  accepted and hang: a wedged node; the bytes wait in socket buffers),
* :meth:`~FaultProxy.refuse` new connections (the listening socket closes: connects get
  ``ECONNREFUSED``, like a node that is down),
* :meth:`~FaultProxy.resume` normal service (stalled bytes flow again; the same port
  listens again), or :meth:`~FaultProxy.restart` (cut, refuse, resume).

Tests and benchmarks use it; it keeps counters (:attr:`FaultProxy.accepted`,
:attr:`FaultProxy.cuts`, bytes each way) for assertions. Backpressure is honoured: a side
that cannot write pauses reading on the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import cast

__all__ = ["FaultProxy"]

_LINGER_RST = struct.pack("ii", 1, 0)


def _reset(transport: asyncio.Transport | None) -> None:
    """Abort ``transport`` with an RST rather than a FIN."""
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    transport.abort()


class _Side(asyncio.Protocol):
    """One end of a proxied connection; forwards what it reads to its peer."""

    def __init__(self, pair: _Pair, upstream: bool) -> None:
        self.pair = pair
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes] = []  # read before the peer existed, or while stalled
        self.eof = False
        self.paused_by: set[str] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = tr = cast(asyncio.Transport, transport)
        if self.paused_by:
            tr.pause_reading()

    def data_received(self, data: bytes) -> None:
        pair = self.pair
        if self.upstream:
            pair.proxy.bytes_down += len(data)
        else:
            pair.proxy.bytes_up += len(data)
        peer = pair.peer_of(self)
        if peer is None or peer.transport is None:
            self.held.append(data)
            self.pause("connect")
        elif pair.proxy.stalled:
            self.held.append(data)
            self.pause("stall")
        else:
            peer.transport.write(data)

    def eof_received(self) -> bool | None:
        self.eof = True
        peer = self.pair.peer_of(self)
        if peer is None or peer.transport is None or peer.eof:
            if peer is not None and peer.transport is not None:
                peer.transport.close()  # both directions are done
            return None
        peer.flush_held()
        if peer.transport.can_write_eof():
            peer.transport.write_eof()
            return True  # half-close: keep receiving the peer's answer
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pair.lost(self, exc)

    # Backpressure: our writes are stuck, so stop reading the other side.
    def pause_writing(self) -> None:
        peer = self.pair.peer_of(self)
        if peer is not None:
            peer.pause("backpressure")

    def resume_writing(self) -> None:
        peer = self.pair.peer_of(self)
        if peer is not None:
            peer.unpause("backpressure")

    def pause(self, reason: str) -> None:
        if not self.paused_by and self.transport is not None:
            self.transport.pause_reading()
        self.paused_by.add(reason)

    def unpause(self, reason: str) -> None:
        self.paused_by.discard(reason)
        if not self.paused_by and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def flush_held(self) -> None:
        peer = self.pair.peer_of(self)
        if peer is None or peer.transport is None:
            return
        held, self.held = self.held, []
        for data in held:
            peer.transport.write(data)


class _Pair:
    """A client connection and its connection to the target."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self, upstream=False)
        self.target: _Side | None = None
        self.closed = False

    def peer_of(self, side: _Side) -> _Side | None:
        return self.target if side is self.client else self.client

    def lost(self, side: _Side, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.proxy._pairs.discard(self)
        peer = self.peer_of(side)
        if peer is not None and peer.transport is not None:
            if exc is not None:  # a reset on one side is a reset on the other
                _reset(peer.transport)
            else:
                peer.flush_held()
                peer.transport.close()

    def reset(self) -> None:
        self.closed = True
        self.proxy._pairs.discard(self)
        _reset(self.client.transport)
        if self.target is not None:
            _reset(self.target.transport)

    def wake(self) -> None:
        for side in (self.client, self.target):
            if side is not None:
                side.flush_held()
                side.unpause("stall")


class FaultProxy:
    """Forward ``host:port`` (port 0 picks one, kept across :meth:`refuse`) to a target.

    Args:
        target_host, target_port: where every connection goes.
        host: address to listen on.
        port: port to listen on (0: a free one, chosen at :meth:`start`).
        connect_timeout: bound on the connection to the target.

    Use ``async with FaultProxy(...) as p:`` or :meth:`start` / :meth:`stop`.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 5.0,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.host = host
        self._port = port
        self.connect_timeout = connect_timeout
        self.stalled = False
        self.accepted = 0
        self.cuts = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        state = "refusing" if self._server is None else "stalled" if self.stalled else "up"
        return (
            f"<FaultProxy :{self._port} -> {self.target_host}:{self.target_port} {state} "
            f"connections={len(self._pairs)} accepted={self.accepted} cuts={self.cuts}>"
        )

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self._port}"

    @property
    def connections(self) -> int:
        """Proxied connections open now."""
        return len(self._pairs)

    @property
    def listening(self) -> bool:
        return self._server is not None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Listen (again, on the same port once chosen)."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._accept, self.host, self._port, reuse_address=True
        )
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and reset every connection."""
        await self.refuse()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- faults ---------------------------------------------------------------------------
    def cut(self) -> int:
        """Reset every open connection (RST to both sides); returns how many."""
        pairs = list(self._pairs)
        for pair in pairs:
            pair.reset()
        self.cuts += len(pairs)
        return len(pairs)

    def stall(self) -> None:
        """Stop forwarding in both directions; connections stay open (and new ones hang)."""
        self.stalled = True

    async def refuse(self) -> None:
        """Close the listening socket: new connections are refused; open ones live on."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def resume(self) -> None:
        """Forward again (held bytes first) and listen again."""
        self.stalled = False
        for pair in list(self._pairs):
            pair.wake()
        await self.start()

    async def restart(self) -> None:
        """Like a node restart: reset everything, refuse for a moment, then serve again."""
        await self.refuse()
        self.cut()
        await self.resume()

    # -- connections ----------------------------------------------------------------------
    def _accept(self) -> asyncio.Protocol:
        self.accepted += 1
        pair = _Pair(self)
        self._pairs.add(pair)
        pair.client.pause("connect")
        task = asyncio.get_running_loop().create_task(self._connect(pair))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return pair.client

    async def _connect(self, pair: _Pair) -> None:
        loop = asyncio.get_running_loop()
        target = _Side(pair, upstream=True)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(lambda: target, self.target_host, self.target_port)
        except (OSError, TimeoutError):
            pair.reset()
            return
        if pair.closed:  # cut (or the client left) while we connected
            _reset(target.transport)
            return
        pair.target = target
        if self.stalled:
            pair.client.pause("stall")
            target.pause("stall")
        else:
            pair.client.flush_held()
        pair.client.unpause("connect")
