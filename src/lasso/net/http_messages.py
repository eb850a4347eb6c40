"""The HTTP/1.1 messages of the client-facing server and their wire encoding.

:class:`HttpRequest` is what :mod:`lasso.net.http_server` hands the application;
:class:`Response` and :class:`StreamingResponse` are what the application answers; a
:class:`Pieces` body is written as the buffers it is made of, never joined.
:func:`encode_response` and :func:`encode_stream_head` turn an answer into bytes, and
:func:`rpc_error` builds the JSON-RPC error bodies the server itself answers with (a
request it refuses before the application sees it has no id to echo: ``null``), and
:func:`no_cache_requested` reads a request's ``Cache-Control``.
All of them are re-exported by :mod:`lasso.net.http_server`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from http import HTTPStatus

__all__ = [
    "Body",
    "HttpRequest",
    "Pieces",
    "Response",
    "StreamingResponse",
    "encode_response",
    "encode_head",
    "encode_stream_head",
    "rpc_error",
    "no_cache_requested",
    "LARGE_BODY",
]

LARGE_BODY = 256 * 1024
"""Bodies from this size on are written after their head rather than copied into one
buffer with it (one copy less of a large upstream answer)."""


class Pieces:
    """A body made of several buffers, written with one ``writelines``, never joined: a
    large upstream answer with a few bytes replaced (the client's id), not copied.

    The buffers must not change while the body is in use (they are usually
    ``memoryview`` slices of an upstream answer).
    """

    __slots__ = ("parts", "size")

    def __init__(self, parts: tuple[bytes | bytearray | memoryview, ...]) -> None:
        self.parts = parts
        self.size = sum(len(p) for p in parts)  # memoryviews here are of bytes: len = size

    def __len__(self) -> int:
        return self.size

    def join(self) -> bytes:
        """The body as one ``bytes`` (a copy: for the rare places that need one)."""
        return b"".join(self.parts)

    def __repr__(self) -> str:
        return f"<Pieces {len(self.parts)} parts, {self.size} bytes>"


Body = bytes | bytearray | Pieces
"""A response body: bytes, a large upstream answer as received, or pieces of one."""


class HttpRequest:
    """One parsed HTTP request. Header names are lower-cased ``str``; values ``str``.

    ``keep_alive``: the connection stays open after the answer (HTTP/1.1 unless
    ``Connection: close``; HTTP/1.0 only with ``Connection: keep-alive``). ``http10``: an
    HTTP/1.0 request, whose kept-alive answer must say ``Connection: keep-alive``.
    """

    __slots__ = ("method", "path", "query", "headers", "body", "client", "keep_alive", "http10")

    def __init__(
        self,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        body: bytes,
        client: str,
        keep_alive: bool,
        http10: bool = False,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.client = client
        self.keep_alive = keep_alive
        self.http10 = http10

    def __repr__(self) -> str:
        return f"<HttpRequest {self.method} {self.path} body={len(self.body)}B>"


@dataclass(slots=True)
class Response:
    """An HTTP response. ``headers`` are extra header lines beyond the defaults."""

    status: int
    body: Body = b""
    content_type: bytes = b"application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class StreamingResponse(Response):
    """A response whose body is produced over time by ``stream`` (chunked encoding).

    The server closes ``stream`` (``aclose``) when the client goes away or the server
    drains; an exception raised by it cuts the connection without a final chunk.
    """

    stream: AsyncIterator[bytes] | None = None


_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, reason) for code, reason in _REASONS.items()
}
_COMMON = b"Access-Control-Allow-Origin: *\r\nServer: lasso\r\n"
_OK_HEAD = _STATUS_LINES[200] + _COMMON


def _connection(keep_alive: bool, announce: bool) -> bytes:
    """The end of a head: ``Connection: close``, or ``keep-alive`` when an HTTP/1.0
    client must be told (``announce``; HTTP/1.1 keeps alive by default)."""
    if not keep_alive:
        return b"Connection: close\r\n\r\n"
    return b"Connection: keep-alive\r\n\r\n" if announce else b"\r\n"


def _head_parts(resp: Response, keep_alive: bool, announce: bool = False) -> list[bytes]:
    status_line = _STATUS_LINES.get(resp.status) or b"HTTP/1.1 %d Unknown\r\n" % resp.status
    parts = [status_line, _COMMON]
    if resp.status != 204 and resp.status != 304:
        parts.append(
            b"Content-Type: %s\r\nContent-Length: %d\r\n" % (resp.content_type, len(resp.body))
        )
    for name, value in resp.headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
    parts.append(_connection(keep_alive, announce))
    return parts


def encode_head(resp: Response, keep_alive: bool, announce: bool = False) -> bytes:
    """The status line and headers of ``resp`` (with its ``Content-Length``), no body;
    ``announce``: say ``Connection: keep-alive`` when kept alive (an HTTP/1.0 client)."""
    return b"".join(_head_parts(resp, keep_alive, announce))


def encode_response(
    resp: Response, keep_alive: bool, head: bool = False, announce: bool = False
) -> bytes:
    """Serialize ``resp`` into one buffer (status line, headers, body; no body for HEAD);
    ``announce`` as for :func:`encode_head`."""
    body = resp.body
    if resp.status == 200 and type(body) is bytes and keep_alive and not announce and not head:
        # The JSON-RPC answer (hot path): one format, the same bytes as below.
        extra = b""
        for name, value in resp.headers:
            extra += f"{name}: {value}\r\n".encode("latin-1", "replace")
        return b"%sContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n%s" % (
            _OK_HEAD,
            resp.content_type,
            len(body),
            extra,
            body,
        )
    parts = _head_parts(resp, keep_alive, announce)
    if resp.status == 204 or resp.status == 304 or head:
        return b"".join(parts)
    if type(body) is bytes:
        parts.append(body)
        return b"".join(parts)
    return b"".join((*parts, *(body.parts if isinstance(body, Pieces) else (body,))))


def encode_stream_head(resp: Response, keep_alive: bool) -> bytes:
    """Status line and headers of a chunked response (the body follows in chunks)."""
    status_line = _STATUS_LINES.get(resp.status) or b"HTTP/1.1 %d Unknown\r\n" % resp.status
    parts = [status_line, _COMMON, b"Content-Type: %s\r\n" % resp.content_type]
    parts.append(b"Transfer-Encoding: chunked\r\n")
    for name, value in resp.headers:
        parts.append(f"{name}: {value}\r\n".encode("latin-1", "replace"))
    parts.append(b"\r\n" if keep_alive else b"Connection: close\r\n\r\n")
    return b"".join(parts)


def rpc_error(code: int, message: str) -> bytes:
    """A JSON-RPC error body with ``id: null`` (``message`` must need no JSON escaping)."""
    return b'{"jsonrpc":"2.0","error":{"code":%d,"message":"%s"},"id":null}' % (
        code,
        message.encode(),
    )


def no_cache_requested(cache_control: str) -> bool:
    """True when a request's ``Cache-Control`` value carries the ``no-cache`` directive.

    Directives are comma-separated tokens compared case-insensitively, each optionally
    ``=argument`` (RFC 9111 §5.2): ``No-Cache`` and ``max-age=0, no-cache`` count; a
    directive that merely contains the word (``no-cache-please``) does not. An empty value
    (no header) costs one comparison."""
    if not cache_control:
        return False
    if cache_control == "no-cache":  # the usual spelling: no split
        return True
    for directive in cache_control.split(","):
        if directive.split("=", 1)[0].strip().lower() == "no-cache":
            return True
    return False
