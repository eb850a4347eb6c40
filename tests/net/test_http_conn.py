"""Tests of one upstream connection (``lasso.net.http_conn``): response framing, broken
answers and the per-connection deadline timer, through the pool over real sockets on
127.0.0.1 (the scripted ``Server`` of ``net_http_support``); every async test also runs on
uvloop (``test_on_uvloop``). The last section feeds the protocol directly, byte by byte
and with generated input.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import subprocess
import sys
import tracemalloc
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lasso.net.http_conn
from lasso.net.errors import (
    UpstreamDisconnected,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
)
from lasso.net.http_client import ANSWER_BOUND, HttpUpstreamPool
from lasso.net.http_conn import LARGE_ANSWER, UpstreamResponse, _Connection

from net_http_support import (
    DEADLINE,
    MS,
    SLACK,
    Request,
    Server,
    ServerConn,
    one_loop_pass,
    open_pool,
    within,
)
from support import eventually


def test_exported_members() -> None:
    """__all__ is the public surface; the module imports first in a fresh interpreter."""
    assert lasso.net.http_conn.__all__ == ["LARGE_ANSWER", "UpstreamResponse"]
    assert lasso.net.http_conn.UpstreamResponse is UpstreamResponse
    subprocess.run([sys.executable, "-c", "import lasso.net.http_conn"], check=True)


# -- response framing ---------------------------------------------------------------------


async def test_chunked_response() -> None:
    """A chunked body is reassembled."""

    async def chunked(conn: ServerConn, req: Request) -> None:
        conn.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )

    async with Server(chunked) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"{}", DEADLINE)).body == b"hello world"
        assert (await pool.request(b"{}", DEADLINE)).body == b"hello world"
        assert len(srv.conns) == 1


async def test_chunked_response_one_byte_per_write() -> None:
    """A chunked response written one byte per TCP write parses the same."""
    raw = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nRetry-After: 3\r\n\r\n"
        b"3\r\nabc\r\n1\r\nd\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def trickle(conn: ServerConn, req: Request) -> None:
        for i in range(len(raw)):
            conn.write(raw[i : i + 1])
            await one_loop_pass()

    async with Server(trickle) as srv, open_pool(srv.url) as pool:
        resp = await pool.request(b"{}", DEADLINE)
        assert resp.body == b"abcd"
        assert resp.headers[b"retry-after"] == b"3"
        assert (await pool.request(b"{}", DEADLINE)).body == b"abcd"
        assert len(srv.conns) == 1


async def test_connection_close_response_is_not_reused() -> None:
    """After a `Connection: close` response the connection is closed, not pooled."""

    async def closing(conn: ServerConn, req: Request) -> None:
        conn.respond(200, b"bye", [(b"Connection", b"close")])

    async with Server(closing) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"{}", DEADLINE)).body == b"bye"
        assert (pool.idle, pool.total) == (0, 0)
        assert (await pool.request(b"{}", DEADLINE)).body == b"bye"
        assert len(srv.conns) == 2


async def test_http10_close_delimited_body() -> None:
    """A body without length or chunking runs until the provider closes."""

    async def old(conn: ServerConn, req: Request) -> None:
        conn.write(b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"a":')
        conn.write(b"1}")
        conn.transport.close()

    async with Server(old) as srv, open_pool(srv.url) as pool:
        resp = await pool.request(b"{}", DEADLINE)
        assert resp == UpstreamResponse(200, b'{"a":1}', {b"content-type": b"application/json"})
        assert pool.total == 0


async def test_non_2xx_statuses_are_returned_with_body_and_headers() -> None:
    """503 and 429 come back as responses with their bodies and Retry-After."""

    async def busy(conn: ServerConn, req: Request) -> None:
        if req.body == b"429":
            conn.respond(429, b"slow down", [(b"Retry-After", b"7")], b"Too Many Requests")
        else:
            conn.respond(503, b"maintenance", reason=b"Service Unavailable")

    async with Server(busy) as srv, open_pool(srv.url) as pool:
        resp = await pool.request(b"429", DEADLINE)
        assert (resp.status, resp.body, resp.headers[b"retry-after"]) == (429, b"slow down", b"7")
        resp = await pool.request(b"503", DEADLINE)
        assert (resp.status, resp.body) == (503, b"maintenance")
        assert len(srv.conns) == 1


async def test_204_and_empty_bodies() -> None:
    """204 (no body at all) and a zero Content-Length both give b'' and keep the connection."""

    async def empty(conn: ServerConn, req: Request) -> None:
        if conn.seen == 1:
            conn.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:
            conn.respond(200, b"")

    async with Server(empty) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"{}", DEADLINE))[:2] == (204, b"")
        assert (await pool.request(b"{}", DEADLINE))[:2] == (200, b"")
        assert len(srv.conns) == 1


async def test_informational_response_is_skipped() -> None:
    """A 103 Early Hints before the real answer is ignored."""

    async def hints(conn: ServerConn, req: Request) -> None:
        conn.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        conn.respond(200, b"real")

    async with Server(hints) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"{}", DEADLINE))[:2] == (200, b"real")
        assert (await pool.request(b"{}", DEADLINE))[:2] == (200, b"real")


async def test_upgrade_headers_on_a_normal_response_are_harmless() -> None:
    """A 200 carrying Connection: upgrade / Upgrade headers is an ordinary response."""

    async def odd(conn: ServerConn, req: Request) -> None:
        headers = [(b"Connection", b"upgrade"), (b"Upgrade", b"h2c")]
        conn.respond(200, b"ok" if req.body != b"empty" else b"", headers)

    async with Server(odd) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"{}", DEADLINE))[:2] == (200, b"ok")
        assert (await pool.request(b"empty", DEADLINE))[:2] == (200, b"")


async def test_switching_protocols_is_a_protocol_error() -> None:
    """A 101 Switching Protocols answer to a POST is a protocol error."""

    async def switch(conn: ServerConn, req: Request) -> None:
        conn.write(b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: x\r\n\r\n")

    async with Server(switch) as srv, open_pool(srv.url) as pool:
        with pytest.raises(UpstreamProtocolError) as info:
            await pool.request(b"{}", DEADLINE)
        assert info.value.dispatched is True
        assert pool.total == 0


async def test_bytes_after_a_complete_response_spoil_the_connection() -> None:
    """Trailing bytes in the same write: the response is returned, the connection closed."""

    async def extra(conn: ServerConn, req: Request) -> None:
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")

    async with Server(extra) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"{}", DEADLINE)).body == b"ok"
        assert pool.total == 0
        await within(srv.conns[0].lost.wait())


async def test_unsolicited_bytes_on_an_idle_connection_close_it() -> None:
    """Bytes arriving while no request is in flight close that idle connection."""

    async with Server() as srv, open_pool(srv.url) as pool:
        await pool.request(b"{}", DEADLINE)
        assert pool.idle == 1
        srv.conns[0].write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await within(srv.conns[0].lost.wait())
        assert pool.total == 0
        assert (await pool.request(b"{}", DEADLINE)).body == b"{}"
        assert len(srv.conns) == 2


async def test_oversized_response_is_refused() -> None:
    """A response larger than max_response_size fails and closes the connection."""

    async def big(conn: ServerConn, req: Request) -> None:
        conn.respond(200, b"x" * 10_000)

    async with Server(big) as srv, open_pool(srv.url, max_response_size=5_000) as pool:
        with pytest.raises(UpstreamProtocolError, match="larger than"):
            await pool.request(b"{}", DEADLINE)
        assert pool.total == 0


async def test_an_answer_bound_in_context_lowers_the_limit_for_its_requests() -> None:
    """Under ANSWER_BOUND a larger answer fails like an oversized one; outside it, or under
    a bound above the pool's, the pool's own limit applies."""

    async def sized(conn: ServerConn, req: Request) -> None:
        conn.respond(200, b"x" * int(req.body))

    async with Server(sized) as srv, open_pool(srv.url, max_response_size=50_000) as pool:
        token = ANSWER_BOUND.set(5_000)
        try:
            assert (await pool.request(b"4000", DEADLINE)).body == b"x" * 4000
            with pytest.raises(UpstreamProtocolError, match="larger than 5000"):
                await pool.request(b"10000", DEADLINE)
        finally:
            ANSWER_BOUND.reset(token)
        assert len((await pool.request(b"10000", DEADLINE)).body) == 10_000
        token = ANSWER_BOUND.set(10**9)
        try:
            with pytest.raises(UpstreamProtocolError, match="larger than 50000"):
                await pool.request(b"60000", DEADLINE)
        finally:
            ANSWER_BOUND.reset(token)


async def test_a_response_announced_too_large_fails_at_its_head() -> None:
    """A Content-Length over max_response_size fails at once, before any body arrives."""

    async def announce(conn: ServerConn, req: Request) -> None:
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\n\r\n{")

    async with Server(announce) as srv, open_pool(srv.url, max_response_size=5_000) as pool:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(UpstreamProtocolError, match="larger than 5000"):
            await pool.request(b"{}", DEADLINE)
        assert loop.time() - t0 < DEADLINE / 2
        await within(srv.conns[0].lost.wait())
        assert pool.total == 0


BODY_PIECE = b"b" * 65536


async def _send_pieces(conn: ServerConn, pieces: int, chunked: bool) -> None:
    for _ in range(pieces):
        if conn.lost.is_set():
            return
        conn.write(b"10000\r\n" + BODY_PIECE + b"\r\n" if chunked else BODY_PIECE)
        await asyncio.sleep(0)


async def _drops_its_bytes(fault: str) -> None:
    seen: list[_Connection] = []

    async def partial(conn: ServerConn, req: Request) -> None:
        seen.extend(pool._conns)
        if fault == "oversize":  # no Content-Length: refused when the bytes pass the bound
            conn.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            await _send_pieces(conn, 64, chunked=True)
            return
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 8000000\r\n\r\n")
        await _send_pieces(conn, 48, chunked=False)
        if fault == "cut-off":
            conn.transport.close()

    bound = 2_000_000 if fault == "oversize" else 16_000_000
    async with Server(partial) as srv, open_pool(srv.url, max_response_size=bound) as pool:
        before = tracemalloc.get_traced_memory()[0]
        call = pool.request(b"{}", 0.5 if fault == "timeout" else DEADLINE)
        if fault == "cancelled":
            task = asyncio.ensure_future(call)
            await within(srv.next_request())
            await eventually(lambda: sum(c._received for c in seen) > 4 * len(BODY_PIECE))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(UpstreamError):
                await call
        (conn,) = seen
        assert conn.closed and conn._chunks == [] and conn._big is None and conn._headers == {}
        await within(srv.conns[0].lost.wait())
        assert tracemalloc.get_traced_memory()[0] - before < 1_000_000, fault


async def test_a_failed_response_drops_its_bytes_at_once() -> None:
    """Oversize, cut off, timed out or abandoned: the bytes received so far are released
    when the request fails, not when the garbage collector finds the connection."""
    gc.disable()
    tracemalloc.start()
    try:
        for fault in ("oversize", "cut-off", "timeout", "cancelled"):
            await _drops_its_bytes(fault)
    finally:
        tracemalloc.stop()
        gc.enable()


# -- broken answers: resets and garbage -------------------------------------------------


async def test_reset_mid_response() -> None:
    """An RST in the middle of a body raises UpstreamDisconnected, dispatched."""

    async def reset(conn: ServerConn, req: Request) -> None:
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        conn.reset()

    async with Server(reset) as srv, open_pool(srv.url) as pool:
        with pytest.raises(UpstreamDisconnected) as info:
            await pool.request(b"{}", DEADLINE)
        assert info.value.dispatched is True
        assert pool.total == 0


async def test_reset_mid_close_delimited_body_is_not_a_response() -> None:
    """A close-delimited body cut by RST (not FIN) is a disconnect, not a short body."""

    async def reset(conn: ServerConn, req: Request) -> None:
        conn.write(b"HTTP/1.0 200 OK\r\n\r\npartial")
        conn.reset()

    async with Server(reset) as srv, open_pool(srv.url) as pool:
        with pytest.raises(UpstreamDisconnected):
            await pool.request(b"{}", DEADLINE)


async def test_garbage_response_is_a_protocol_error() -> None:
    """Non-HTTP bytes raise UpstreamProtocolError and close the connection."""

    async def garbage(conn: ServerConn, req: Request) -> None:
        conn.write(b"hello, this is not HTTP\r\n\r\n")

    async with Server(garbage) as srv, open_pool(srv.url) as pool:
        with pytest.raises(UpstreamProtocolError) as info:
            await pool.request(b"{}", DEADLINE)
        assert info.value.dispatched is True
        assert pool.total == 0
        await within(srv.conns[0].lost.wait())


# -- the per-connection deadline timer ---------------------------------------------------


async def test_silent_provider_times_out() -> None:
    """A provider that never answers gives UpstreamTimeout after `timeout`; connection closed."""

    async def silent(conn: ServerConn, req: Request) -> None:
        pass

    async with Server(silent) as srv, open_pool(srv.url) as pool:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(UpstreamTimeout) as info:
            await within(pool.request(b"{}", 100 * MS))
        assert 100 * MS - SLACK <= loop.time() - t0 < DEADLINE
        assert info.value.dispatched is True
        assert pool.total == 0
        await within(srv.conns[0].lost.wait())


async def test_timeout_of_a_reused_connection_is_its_own() -> None:
    """On a reused connection each request gets its own deadline, shorter or longer."""

    async def silent_second(conn: ServerConn, req: Request) -> None:
        if req.seq == 0:
            conn.respond(200, req.body)

    async with Server(silent_second) as srv, open_pool(srv.url) as pool:
        loop = asyncio.get_running_loop()
        await pool.request(b"1", 50 * MS)  # arms the connection's timer for +50 ms
        t0 = loop.time()
        with pytest.raises(UpstreamTimeout):
            await within(pool.request(b"2", 150 * MS))
        assert 150 * MS - SLACK <= loop.time() - t0 < DEADLINE
        assert len(srv.conns) == 1

    async with Server(silent_second) as srv, open_pool(srv.url) as pool:
        await pool.request(b"1", DEADLINE)  # arms the timer far away
        t0 = loop.time()
        with pytest.raises(UpstreamTimeout):
            await within(pool.request(b"2", 50 * MS))
        assert 50 * MS - SLACK <= loop.time() - t0 < DEADLINE / 2


# -- every async scenario again on uvloop -------------------------------------------------

_SCENARIOS = sorted(
    name
    for name, fn in list(globals().items())
    if name.startswith("test_") and inspect.iscoroutinefunction(fn)
)


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is POSIX-only")
@pytest.mark.parametrize("name", _SCENARIOS)
def test_on_uvloop(name: str) -> None:
    """The same scenario passes on uvloop, the production loop."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(globals()[name]())


# -- the protocol alone: byte-at-a-time and generated input -------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False
        self.paused = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Harness:
    """A pool and one connection over a fake transport, on a loop that never runs."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = HttpUpstreamPool("http://provider.test/", loop=self.loop)
        self.conn = _Connection(self.pool, self.loop)
        self.transport = FakeTransport()
        self.conn.connection_made(self.transport)
        self.pool._conns.add(self.conn)

    def send(self) -> asyncio.Future[UpstreamResponse]:
        deadline = self.loop.time() + 60
        return self.conn.send(b"POST / HTTP/1.1\r\n\r\n", deadline, self.pool._max_response_size)

    def close(self) -> None:
        self.loop.close()


CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    b'X-Other: 1\r\n\r\n4\r\n{"a"\r\n3\r\n:1}\r\n0\r\n\r\n'
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


def test_protocol_parses_response_fed_one_byte_at_a_time() -> None:
    """Feeding a chunked response one byte per call gives the same response."""
    h = Harness()
    try:
        fut = h.send()
        for i in range(len(CHUNKED)):
            assert not fut.done()
            h.conn.data_received(CHUNKED[i : i + 1])
        assert fut.result() == UpstreamResponse(
            200,
            b'{"a":1}',
            {b"content-type": b"application/json", b"transfer-encoding": b"chunked"},
        )
        assert h.pool.idle == 1 and not h.transport.closing
    finally:
        h.close()


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=len(CHUNKED) - 1), max_size=20))
def test_protocol_parses_any_split_of_a_response(cuts: list[int]) -> None:
    """However the bytes are split across reads, the parsed response is the same."""
    h = Harness()
    try:
        fut = h.send()
        for piece in split(CHUNKED, cuts):
            h.conn.data_received(piece)
        assert fut.result().body == b'{"a":1}'
        assert h.pool.idle == 1
    finally:
        h.close()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(1, 199), max_size=5))
def test_protocol_survives_arbitrary_bytes(data: bytes, cuts: list[int]) -> None:
    """Any byte string yields a response, a documented error, or still waits; never a crash."""
    h = Harness()
    try:
        fut = h.send()
        for piece in split(data, [c for c in cuts if c < len(data)]):
            h.conn.data_received(piece)
        h.conn.connection_lost(None)
        assert fut.done()
        if fut.exception() is not None:
            assert isinstance(fut.exception(), UpstreamError)
        else:
            assert isinstance(fut.result(), UpstreamResponse)
        assert h.pool.total == 0 or h.pool.idle == 1
    finally:
        h.close()


def test_a_large_answer_is_read_one_piece_per_loop_turn() -> None:
    """On uvloop, past its first MiB an answer is read one piece per loop turn, never in
    libuv's bursts of up to 32 reads: other callbacks run between the pieces."""
    import socket
    import threading

    import uvloop

    size = 48 * 1024 * 1024
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def provider() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            conn.sendall(b"z" * size)
            conn.recv(1)

    thread = threading.Thread(target=provider, daemon=True)
    thread.start()

    async def scenario() -> int:
        worst = 0
        async with open_pool(f"http://127.0.0.1:{port}/") as pool:
            call = asyncio.ensure_future(pool.request(b"{}", 30))
            last = 0
            while not call.done():
                await asyncio.sleep(0)  # one loop turn
                conns = list(pool._conns)
                if conns:
                    got = conns[0]._received
                    worst = max(worst, got - last)
                    last = got
            assert len((await call).body) == size
        return worst

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            worst = runner.run(scenario())
    finally:
        listener.close()
        thread.join(5)
    assert worst <= 2 * 1024 * 1024, worst  # the first MiB, then 256 KiB reads


def test_a_small_answer_is_the_piece_received() -> None:
    """An answer that arrives in one piece is that piece: bytes, not copied."""
    h = Harness()
    try:
        fut = h.send()
        h.conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n" + b'{"a":1}')
        body = fut.result().body
        assert type(body) is bytes and body == b'{"a":1}'
    finally:
        h.close()


@pytest.mark.parametrize("framing", ["content-length", "chunked", "close-delimited"])
def test_a_large_answer_grows_one_bytearray(framing: str) -> None:
    """Past LARGE_ANSWER the pieces move into one bytearray as they arrive (never more
    than one read's pieces beside it), which becomes the body; the connection keeps no
    reference to it, and the next answer starts afresh."""
    piece = bytes(range(256)) * 256  # 64 KiB
    count = 3 * LARGE_ANSWER // len(piece)
    whole = piece * count
    head = b"HTTP/1.1 200 OK\r\n"
    if framing == "content-length":
        head += b"Content-Length: %d\r\n\r\n" % len(whole)
    elif framing == "chunked":
        head += b"Transfer-Encoding: chunked\r\n\r\n"
    else:
        head += b"Connection: close\r\n\r\n"
    h = Harness()
    try:
        fut = h.send()
        h.conn.data_received(head)
        for i in range(count):
            data = b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece
            h.conn.data_received(data)
            if (i + 1) * len(piece) > LARGE_ANSWER and i < count - 1:
                assert h.conn._big is not None and h.conn._chunks == []
                assert h.transport.paused  # one read per loop turn
        if framing == "chunked":
            h.conn.data_received(b"0\r\n\r\n")
        elif framing == "close-delimited":
            h.conn.connection_lost(None)
        body = fut.result().body
        assert type(body) is bytearray and body == whole
        assert h.conn._big is None and h.conn._chunks == []
        if framing != "close-delimited":  # kept alive: the next answer is small again
            fut = h.send()
            h.conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
            assert fut.result().body == b"{}" and type(fut.result().body) is bytes
    finally:
        h.close()
