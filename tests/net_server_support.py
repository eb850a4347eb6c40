"""Helpers of the client-facing server tests (``tests/net/test_http_server.py``,
``tests/net/test_listener.py`` and the fuzz stage ``tests/net/test_fuzz.py``).

``GateApp`` answers ``/sync`` at once, ``/slow`` when its gate opens, ``/big`` with a
large body and echoes the length of a POST body; ``serve`` starts an ``HttpServer`` with
it under the given limits; ``read_response`` reads one HTTP/1.1 answer off a stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from lasso.net.http_server import HttpRequest, HttpServer, Response
from lasso.net.limits import Limits

from support import UNIT

__all__ = ["GateApp", "serve", "read_response", "request_bytes", "closed_within"]

BIG = 1_000_000


class GateApp:
    """A small application whose slow route waits for ``gate``."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.seen = 0
        self.started = 0

    def handle(self, req: HttpRequest) -> Any:
        self.seen += 1
        if req.path == "/slow":
            return self._slow(req)
        if req.path == "/big":
            return Response(200, b"x" * BIG, content_type=b"text/plain")
        if req.method == "POST":
            return Response(200, orjson.dumps({"length": len(req.body), "path": req.path}))
        return Response(200, orjson.dumps({"path": req.path, "query": req.query}))

    async def _slow(self, req: HttpRequest) -> Response:
        self.started += 1
        await self.gate.wait()
        return Response(200, orjson.dumps({"path": req.path, "query": req.query}))

    def upgrade(self, req: HttpRequest, transport: Any, rest: bytes) -> None:
        return None


@asynccontextmanager
async def serve(
    app: Any = None, *, max_body: int = 8_000_000, **limits: Any
) -> AsyncIterator[tuple[HttpServer, Any, int]]:
    """An ``HttpServer`` on a free port with ``Limits(**limits)``; closed on exit."""
    app = app if app is not None else GateApp()
    server = HttpServer(app, max_body=max_body, limits=Limits(**limits))
    port = await server.start("127.0.0.1", 0)
    try:
        yield server, app, port
    finally:
        if hasattr(app, "gate"):
            app.gate.set()
        await server.close()


def request_bytes(path: str = "/sync", *extra: str, body: bytes = b"") -> bytes:
    """A GET (or, with a body, POST) request with ``extra`` header lines."""
    method = "POST" if body else "GET"
    lines = [f"{method} {path} HTTP/1.1", "Host: t", *extra]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(
    reader: asyncio.StreamReader, timeout: float = 5.0
) -> tuple[int, dict[str, str], bytes]:
    """One response: (status, lower-cased headers, body); interim 1xx answers skipped."""

    async def one() -> tuple[int, dict[str, str], bytes]:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            if 100 <= status < 200:
                continue
            length = int(headers.get("content-length", "0"))
            body = await reader.readexactly(length) if length else b""
            return status, headers, body

    return await asyncio.wait_for(one(), timeout * UNIT)


async def closed_within(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server still sends until it closes (fails after ``timeout``)."""
    chunks = []
    async with asyncio.timeout(timeout * UNIT):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)
