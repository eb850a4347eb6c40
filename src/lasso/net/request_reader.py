"""The reading half of a client connection: bytes in, requests out, under the limits.

:class:`RequestReader` is the ``asyncio.Protocol`` base of
:class:`~lasso.net.server_conn.ServerConn`: it feeds what the client sends to httptools
and turns it into :class:`~lasso.net.http_messages.HttpRequest` values, enforcing the
hostile-client bounds of :class:`~lasso.net.limits.Limits` that apply while a request is
read (see :mod:`lasso.net.http_server` for the whole picture):

* the head is counted while it arrives: a read is fed in pieces no larger than what the
  head may still grow by (``max_head``), so no head is buffered beyond it (httptools joins
  a header's pieces with ``+=``; the bound keeps that linear); the request line
  (``max_header_line``: 414), each header line (431) and the number of header lines,
  repeats counted (``max_headers``: 431), are checked in the parser's callbacks;
* a body over ``max_body`` is refused (413) as soon as ``Content-Length`` or the bytes say
  so; an acceptable one announced with ``Expect: 100-continue`` gets ``100 Continue``;
* at most ``max_pipeline`` requests are queued or answering: beyond, the rest of the
  input is held unparsed and reading pauses until answers go out; reading also pauses
  while the client does not read its answers, and for one loop turn after each large
  read (libuv reads up to 32 times per wake-up);
* after a refusal, what the client still sends is discarded (lingering close).

A refusal raised in a callback stops the parser (:class:`_Refused`). Answering is the
subclass's: it implements ``_dispatch`` (a complete request), ``_reject`` (a refusal)
and ``_upgrade`` (an ``Upgrade`` request, with the bytes after it). The two modules are
one component split for size; the subclass reads and writes this class's state directly.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from typing import TYPE_CHECKING
from urllib.parse import unquote

import httptools

from lasso.net.http_messages import HttpRequest, rpc_error

if TYPE_CHECKING:
    from lasso.net.http_server import HttpServer

__all__ = ["RequestReader"]

_PARSER_STOPS = (httptools.HttpParserError, httptools.HttpParserUpgrade)  # unrelated classes
_QUANTUM = 8192  # bytes fed to the parser at once when a read is large
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_TOO_LARGE = rpc_error(-32600, "Invalid Request: request body too large")
_INTERNAL = rpc_error(-32603, "Internal error")
_MALFORMED = rpc_error(-32700, "Parse error: malformed HTTP request")
_URI_TOO_LONG = rpc_error(-32600, "Invalid Request: request line too long")
_HEADER_TOO_LARGE = rpc_error(-32600, "Invalid Request: header line too long")
_HEAD_TOO_LARGE = rpc_error(-32600, "Invalid Request: request headers too large")
_TOO_MANY_HEADERS = rpc_error(-32600, "Invalid Request: too many request headers")
_BAD_LENGTH = rpc_error(-32600, "Invalid Request: bad Content-Length")
_NOT_IMPLEMENTED = rpc_error(-32600, "Invalid Request: HTTP method not implemented (use POST)")
_VERSION = rpc_error(-32600, "Invalid Request: HTTP version not supported (use HTTP/1.1)")
_VERSIONS = frozenset(("1.1", "1.0"))


# A request line with a well-formed method token (RFC 9110 §9.1), which llhttp refused.
_REQUEST_LINE = re.compile(rb"(?:^|\n)[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32} \S+ HTTP/\d\.\d\r?\n")


def _refusal_of(exc: Exception, seen: bytes = b"") -> tuple[int, bytes]:
    """The answer to input llhttp refused. It checks ``Content-Length`` itself, before
    our callbacks see the header, and says so only in its reason (``Invalid character in
    Content-Length``, ``Content-Length overflow``, ``Duplicate Content-Length``...): a
    value past 64 bits announces a body over any limit (413), anything else that is not
    one number is a bad ``Content-Length`` (400). A method llhttp does not know (``FOO``,
    a lower-case ``get``) or HTTP/2's ``PRI`` in a well-formed request line (found in
    ``seen``, the input where parsing stopped) is 501 Not Implemented (RFC 9110 §15.6.2);
    a version llhttp refuses in such a line (``HTTP/3.7``) is 505, as the versions it reads
    but Lasso does not speak (``HTTP/2.0`` as text, HTTP/0.9's versionless line) are in
    :meth:`RequestReader.on_headers_complete`; the rest (a TLS hello, binary noise) is not
    HTTP we can read: 400."""
    reason = str(exc)
    h2 = "PRI" in reason or "HTTP/2" in reason  # llhttp's words for HTTP/2's preface
    if h2 or isinstance(exc, httptools.HttpParserInvalidMethodError):
        if _REQUEST_LINE.search(seen):
            return 501, _NOT_IMPLEMENTED
        return 400, _MALFORMED
    if "HTTP version" in reason and _REQUEST_LINE.search(seen):  # HTTP/3.7, HTTP/1.9
        return 505, _VERSION
    if "Content-Length" in reason:
        return (413, _TOO_LARGE) if "overflow" in reason else (400, _BAD_LENGTH)
    return 400, _MALFORMED


class _Refused(Exception):
    """Raised inside a parser callback after the request was refused: stop parsing."""


class RequestReader(asyncio.Protocol):
    """Parses one connection's requests under the limits; the subclass answers them."""

    __slots__ = (
        "server",
        "loop",
        "transport",
        "parser",
        "client",
        "_url",
        "_headers",
        "_headers_left",
        "_line_room",
        "_body",
        "_body_size",
        "_queue",
        "_busy",
        "_closing",
        "_rejected",
        "_in_body",
        "_head_left",
        "_head_reset",
        "_held",
        "_read_paused",
        "_paused",
        "_linger_until",
        "_linger_left",
        "last_activity",
        "started",
        "in_request",
    )

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = ""
        self._url = b""
        self._headers: dict[str, str] = {}
        self._headers_left = server.max_headers  # header lines this head may still have
        self._line_room = server.max_header_line - 4  # a header's name and value, at most
        self._body: list[bytes] = []
        self._body_size = 0
        self._queue: deque[HttpRequest] = deque()  # complete requests waiting their turn
        self._busy = False  # a request is being answered
        self._closing = False
        self._rejected = False  # refused: nothing more is parsed
        self._in_body = False
        self._head_left = server.max_head
        self._head_reset = False
        self._held: list[bytes] | None = None  # input read but not parsed (pipelining)
        self._read_paused = False
        self._paused = False  # the client does not read what we write
        self._linger_until = 0.0
        self._linger_left = server.max_body + server.max_head
        now = self.loop.time()
        self.last_activity = now
        self.started = now  # the head deadline of the first request runs from the opening
        self.in_request = False

    # -- for the subclass -------------------------------------------------------------
    def _dispatch(self, req: HttpRequest) -> None:
        """Answer ``req`` (the connection is not busy)."""
        raise NotImplementedError

    def _reject(self, status: int, body: bytes) -> None:
        """Refuse the request being read with ``status`` and the JSON-RPC ``body``."""
        raise NotImplementedError

    def _upgrade(self, rest: bytes) -> None:
        """Hand the connection over (``Upgrade``); ``rest``: the bytes after the request."""
        raise NotImplementedError

    # -- asyncio.Protocol -------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._rejected:  # lingering close: read and discard
            self.last_activity = self.loop.time()
            self._linger_left -= len(data)
            if self._linger_left < 0 and self.transport is not None and self._linger_until:
                self._linger_until = 0.0
                self.transport.abort()  # more than any request could have been: stop
            elif self._linger_until:
                self._yield_read()
            return
        poller = self.server.poller
        if poller is not None:
            poller.activity()
        if self._held is not None:  # input waits for answers to go out
            self._held.append(data)
            return
        n = len(data)
        if n <= _QUANTUM and (self._in_body or n <= self._head_left):
            in_head = not self._in_body
            self._head_reset = False
            try:
                self.parser.feed_data(data)
            except _PARSER_STOPS as exc:
                self._parse_failed(exc, data, data, 0)
                return
            if in_head and not self._head_reset and not self._rejected:
                self._head_left -= n  # every byte belonged to one unfinished head
        else:
            self._feed_pieces(data)

    # -- feeding the parser -----------------------------------------------------------
    def _feed(self, piece: bytes | memoryview, data: bytes, end: int) -> bool:
        """Parse ``piece`` (``data[end + len(piece):]`` follows it); False once the
        connection is refused or upgraded (the rest of ``data`` is not ours to parse)."""
        try:
            self.parser.feed_data(piece)
        except _PARSER_STOPS as exc:
            self._parse_failed(exc, piece, data, end)
            return False
        return not self._rejected

    def _parse_failed(
        self, exc: Exception, piece: bytes | memoryview, data: bytes, end: int
    ) -> None:
        """The parser stopped in ``piece``: an upgrade, a refusal raised by one of our
        callbacks, or malformed input."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            offset = exc.args[0] if exc.args else len(piece)
            self._upgrade(bytes(piece[offset:]) + data[end + len(piece) :])
        elif isinstance(exc, httptools.HttpParserCallbackError):
            if not self._rejected:  # a bug in a callback: never a hung connection
                self._reject(500, _INTERNAL)
        else:
            seen = bytes(piece[:_QUANTUM]) + data[end + len(piece) : end + _QUANTUM]
            self._reject(*_refusal_of(exc, seen))

    def _feed_pieces(self, data: bytes) -> None:
        """A large read: feed it in pieces, so that the head budget and the pipelining
        bound are checked between them; then let others have the loop."""
        self._yield_read()
        mv = memoryview(data)
        n = len(data)
        pos = 0
        while pos < n:
            if self._must_hold():
                self._hold(bytes(mv[pos:]))
                return
            in_head = not self._in_body
            step = _QUANTUM if not in_head else min(_QUANTUM, self._head_left)
            if step <= 0:
                self._reject(431, _HEAD_TOO_LARGE)
                return
            piece = mv[pos : pos + step]
            self._head_reset = False
            if not self._feed(piece, data, pos):
                return
            if in_head and not self._head_reset:
                self._head_left -= len(piece)
            pos += len(piece)

    def _yield_read(self) -> None:
        """Read no more this loop turn (libuv reads up to 32 times per wake-up): a large
        body or a discarded one shares the loop with everyone else."""
        transport = self.transport
        if transport is not None and not self._read_paused:
            self._read_paused = True
            transport.pause_reading()
            self.loop.call_soon(self._sync_reading)

    def _must_hold(self) -> bool:
        return self._paused or len(self._queue) + self._busy >= self.server.max_pipeline

    def _hold(self, rest: bytes) -> None:
        self._held = [rest] if rest else []
        self._sync_reading()

    def _release_held(self) -> None:
        """Parse held input once answers went out; read again when all of it is parsed."""
        held = self._held
        if held is None or self._must_hold() or self.transport is None:
            self._sync_reading()
            return
        self._held = None
        if self.in_request:  # the client sent this long ago; its deadline restarts now
            self.started = self.loop.time()
        data = b"".join(held)
        if data:
            self._feed_pieces(data)
        self._sync_reading()

    def _sync_reading(self) -> None:
        transport = self.transport
        if transport is None or (self._closing and not self._linger_until):
            return
        pause = not self._rejected and (self._paused or self._held is not None)
        if pause != self._read_paused:
            self._read_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    # -- httptools callbacks ----------------------------------------------------------
    def on_message_begin(self) -> None:
        # The per-request state was reset when the previous request completed.
        self.in_request = True
        self.started = self.loop.time()

    def on_url(self, url: bytes) -> None:
        if len(self._url) + len(url) > self.server.max_header_line:
            self._reject(414, _URI_TOO_LONG)
            raise _Refused
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers_left -= 1
        if self._headers_left < 0:
            self._reject(431, _TOO_MANY_HEADERS)
            raise _Refused
        if len(name) + len(value) > self._line_room:  # with ": " and CRLF, over the limit
            self._reject(431, _HEADER_TOO_LARGE)
            raise _Refused
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self.parser.get_http_version() not in _VERSIONS:  # HTTP/2.0 text, HTTP/0.9, ...
            self._reject(505, _VERSION)
            raise _Refused
        self._in_body = True
        self._head_reset = True
        self._head_left = self.server.max_head
        headers = self._headers
        cl = headers.get("content-length")
        if cl is not None:
            try:
                n = int(cl)
            except ValueError:
                self._reject(400, _BAD_LENGTH)
                raise _Refused from None
            if n > self.server.max_body:
                self._reject(413, _TOO_LARGE)
                raise _Refused
        expect = headers.get("expect")
        if expect is not None and expect.lower() == "100-continue":
            # Only when nothing is ahead of it: an interim answer must not overtake one.
            transport = self.transport
            if transport is not None and not self._busy and not self._queue:
                if self.parser.get_http_version() == "1.1":
                    transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.server.max_body:
            self._reject(413, _TOO_LARGE)
            raise _Refused
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.in_request = False
        self._in_body = False
        url = httptools.parse_url(self._url)
        path = url.path.decode("utf-8", "replace") if url.path else "/"
        if "%" in path:  # percent-escapes name the same path (RFC 3986 §2.1): /rpc/loc%61l
            path = unquote(path, errors="replace")
        query = url.query.decode("utf-8", "replace") if url.query else ""
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        req = HttpRequest(
            self.parser.get_method().decode("latin-1"),
            path,
            query,
            self._headers,
            body,
            self.client,
            bool(self.parser.should_keep_alive()),
            self.parser.get_http_version() == "1.0",
        )
        # Reset for the next request now: an idle connection keeps no old body.
        self._url = b""
        self._headers = {}
        self._headers_left = self.server.max_headers
        self._body = []
        self._body_size = 0
        if self.parser.should_upgrade():
            # Upgrade requests are finished in _upgrade (HttpParserUpgrade follows).
            self._queue.append(req)
            return
        if self._busy:
            self._queue.append(req)
            if len(self._queue) + 1 >= self.server.max_pipeline:
                self._sync_reading_for_queue()
            return
        self._dispatch(req)

    def _sync_reading_for_queue(self) -> None:
        # The pipelining bound is reached at a request boundary: hold (pause) from here.
        if self._held is None:
            self._hold(b"")
