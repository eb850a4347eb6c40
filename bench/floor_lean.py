"""Lean forwarder: the "lean-floor" contender of bench/overhead.py (~24 µs/request).

A raw ``asyncio.Protocol`` + httptools server, and a raw ``asyncio.Protocol`` + httptools
keep-alive client pool to the upstream, on uvloop. Callbacks only: no task, future or
coroutine on the hot path. No routing, no JSON parsing: the request body goes upstream
as-is and the upstream answer comes back as-is (status kept). Pipelined requests on one
client connection are answered in order. GET /api/health answers 200 for readiness.

This is the floor a Python hop can reach, not production code: no timeouts, no TLS,
no limits.

    .venv/bin/python bench/floor_lean.py --port 8545 --upstream http://127.0.0.1:8546
"""

from __future__ import annotations

import argparse
import asyncio
from collections import deque
from http import HTTPStatus
from urllib.parse import urlsplit

import httptools
import uvloop

_HEALTH = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok"
_BAD_GATEWAY_BODY = b'{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"upstream lost"}}'


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def _response(status: int, body: bytes, keep_alive: bool) -> bytes:
    reason = b"OK" if status == 200 else _reason(status)
    conn = b"" if keep_alive else b"connection: close\r\n"
    return b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s\r\n%s" % (
        status,
        reason,
        len(body),
        conn,
        body,
    )


class UpstreamConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to the upstream; one request at a time."""

    __slots__ = ("pool", "transport", "parser", "parts", "owner", "slot", "closed")

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.parts: list[bytes] = []
        self.owner: ClientConn | None = None
        self.slot: list[object] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is duck-typed

    def send(self, body: bytes, owner: ClientConn, slot: list[object]) -> None:
        self.owner = owner
        self.slot = slot
        self.parts = []
        assert self.transport is not None
        self.transport.write(self.pool.head % len(body) + body)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._fail()

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        owner, slot = self.owner, self.slot
        self.owner = self.slot = None
        status = self.parser.get_status_code()
        payload = b"".join(self.parts) if len(self.parts) != 1 else self.parts[0]
        if self.parser.should_keep_alive() and not self.closed:
            self.pool.idle.append(self)
        else:
            self.closed = True
            assert self.transport is not None
            self.transport.close()
        if owner is not None and slot is not None:
            owner.done(slot, status, payload)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail()

    def _fail(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
        try:
            self.pool.idle.remove(self)
        except ValueError:
            pass
        owner, slot = self.owner, self.slot
        self.owner = self.slot = None
        if owner is not None and slot is not None:
            owner.done(slot, 502, _BAD_GATEWAY_BODY)


class UpstreamPool:
    """Unbounded keep-alive pool: reuse an idle connection, else open one."""

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str) -> None:
        parts = urlsplit(url)
        self.loop = loop
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        path = (parts.path or "/").encode()
        self.head = (
            b"POST "
            + path
            + b" HTTP/1.1\r\nhost: "
            + parts.netloc.encode()
            + b"\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
        )
        self.idle: list[UpstreamConn] = []

    def request(self, body: bytes, owner: ClientConn, slot: list[object]) -> None:
        if self.idle:
            self.idle.pop().send(body, owner, slot)
        else:
            self.loop.create_task(self._connect_and_send(body, owner, slot))

    async def _connect_and_send(self, body: bytes, owner: ClientConn, slot: list[object]) -> None:
        try:
            _, conn = await self.loop.create_connection(
                lambda: UpstreamConn(self), self.host, self.port
            )
        except OSError:
            owner.done(slot, 502, _BAD_GATEWAY_BODY)
            return
        conn.send(body, owner, slot)


class ClientConn(asyncio.Protocol):
    """One client connection; answers in request order (pipelining-safe)."""

    __slots__ = ("pool", "transport", "parser", "url", "body", "pending", "closed")

    def __init__(self, pool: UpstreamPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.pending: deque[list[object]] = deque()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is duck-typed

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            assert self.transport is not None
            self.transport.write(_response(400, b"", False))
            self.transport.close()
            self.closed = True

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        keep_alive = self.parser.should_keep_alive()
        method = self.parser.get_method()
        # slot: [response bytes or None, keep_alive]
        slot: list[object] = [None, keep_alive]
        self.pending.append(slot)
        if method == b"POST":
            body = b"".join(self.body) if len(self.body) != 1 else self.body[0]
            self.pool.request(body, self, slot)
        elif method == b"GET" and self.url == b"/api/health":
            slot[0] = _HEALTH
            self._flush()
        else:
            self.done(slot, 405, b"")

    def done(self, slot: list[object], status: int, payload: bytes) -> None:
        slot[0] = _response(status, payload, bool(slot[1]))
        self._flush()

    def _flush(self) -> None:
        pending = self.pending
        while pending and pending[0][0] is not None:
            data, keep_alive = pending.popleft()
            if self.closed:
                continue
            assert self.transport is not None and isinstance(data, bytes)
            self.transport.write(data)
            if not keep_alive:
                self.transport.close()
                self.closed = True


async def _serve(port: int, upstream: str) -> None:
    loop = asyncio.get_running_loop()
    pool = UpstreamPool(loop, upstream)
    server = await loop.create_server(
        lambda: ClientConn(pool), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--upstream", required=True, help="upstream URL, e.g. http://127.0.0.1:8546"
    )
    args = parser.parse_args()
    try:
        uvloop.run(_serve(args.port, args.upstream))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
