"""The client-facing HTTP server against hostile clients: head limits, deadlines from the
first byte, the pipelining bound, lingering close, ``100 Continue``, freed state."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson
import pytest

from lasso.net.http_server import HttpServer, Response

from net_server_support import closed_within, read_response, request_bytes, serve
from support import UNIT, eventually

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "module",
    ["http_server", "server_conn", "request_reader", "listener", "limits", "http_messages"],
)
def test_module_imports_alone(module: str) -> None:
    """Each server module imports first in a fresh interpreter (no order-dependent cycle)."""
    subprocess.run([sys.executable, "-c", f"import lasso.net.{module}"], check=True)


def error_of(body: bytes) -> dict[str, object]:
    doc = orjson.loads(body)
    assert doc["jsonrpc"] == "2.0" and doc["id"] is None
    return dict(doc["error"])


# -- deadlines --------------------------------------------------------------------------


async def test_a_trickled_head_is_cut_at_its_deadline_from_the_first_byte() -> None:
    """One header byte every 50 ms never completes a head: 408 after head_timeout, however
    steadily bytes arrive."""
    async with serve(head_timeout=0.6 * UNIT, request_timeout=5) as (_, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        payload = request_bytes("/sync", "X-Slow: " + "a" * 500)
        done = asyncio.get_running_loop().create_future()

        async def trickle() -> None:
            for byte in payload[:-4]:
                if done.done():
                    return
                try:
                    writer.write(bytes([byte]))
                    await writer.drain()
                except ConnectionError:
                    return
                await asyncio.sleep(0.05 * UNIT)

        task = asyncio.create_task(trickle())
        status, _, body = await read_response(reader, timeout=3)
        done.set_result(None)
        elapsed = time.monotonic() - t0
        assert status == 408
        assert error_of(body)["code"] == -32600
        assert 0.5 * UNIT <= elapsed < 2.0 * UNIT
        await closed_within(reader, 3)
        await task
        writer.close()


async def test_a_connection_that_sends_nothing_is_closed_after_head_timeout() -> None:
    """A fresh connection holds its place no longer than the head deadline."""
    async with serve(head_timeout=0.4 * UNIT) as (server, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        assert await closed_within(reader, 3) == b""
        assert time.monotonic() - t0 >= 0.35 * UNIT
        await eventually(lambda: not server.connections and server.acceptor.open == 0)
        writer.close()


async def test_a_trickled_body_is_cut_at_the_request_deadline() -> None:
    """Headers on time, then a body trickled byte by byte: 408 request_timeout after the
    first byte."""
    async with serve(head_timeout=0.3 * UNIT, request_timeout=0.8 * UNIT) as (_, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /rpc HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n")
        t0 = time.monotonic()

        async def trickle() -> None:
            for _ in range(1000):
                try:
                    writer.write(b"x")
                    await writer.drain()
                except ConnectionError:
                    return
                await asyncio.sleep(0.05 * UNIT)

        task = asyncio.create_task(trickle())
        status, _, body = await read_response(reader, timeout=4)
        assert status == 408 and error_of(body)["code"] == -32600
        assert 0.7 * UNIT <= time.monotonic() - t0 < 2.5 * UNIT
        task.cancel()
        writer.close()


async def test_an_idle_keepalive_connection_closes_after_keepalive_timeout() -> None:
    """After an answer, a silent keep-alive connection is closed keepalive_timeout later."""
    async with serve(keepalive_timeout=0.4 * UNIT, head_timeout=0.4 * UNIT) as (_, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes("/sync"))
        status, _, _ = await read_response(reader)
        assert status == 200
        t0 = time.monotonic()
        assert await closed_within(reader, 3) == b""
        assert time.monotonic() - t0 >= 0.35 * UNIT
        writer.close()


# -- head limits --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_text", "status"),
    [
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nHost: t\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
        (
            b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"c" * 7000) for i in range(6)),
            431,
        ),
        (b"GET / HTTP/1.1\r\n" + b"X-Same: 1\r\n" * 150 + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431),
        (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n", 400),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400),
    ],
    ids=[
        "request-line",
        "header-line",
        "head-total",
        "repeated-name",
        "header-count",
        "bad-length",
        "tls-hello",
    ],
)
async def test_oversized_or_malformed_heads_get_a_json_rpc_error_then_close(
    request_text: bytes, status: int
) -> None:
    """414 / 431 / 400 with a JSON-RPC error body and Connection: close, then EOF."""
    async with serve() as (_, app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_text)
        got, headers, body = await read_response(reader)
        assert got == status
        assert headers["connection"] == "close"
        assert error_of(body)["code"] in (-32600, -32700)
        await closed_within(reader, 3)
        assert app.seen == 0
        writer.close()


@pytest.mark.parametrize(
    ("length", "status", "code", "message"),
    [
        (b"abc", 400, -32600, "Invalid Request: bad Content-Length"),
        (b"1e3", 400, -32600, "Invalid Request: bad Content-Length"),
        (b"-1", 400, -32600, "Invalid Request: bad Content-Length"),
        (b"5, 5", 400, -32600, "Invalid Request: bad Content-Length"),
        (b"99999999999999999999999", 413, -32600, "Invalid Request: request body too large"),
        (b"8000001", 413, -32600, "Invalid Request: request body too large"),
    ],
)
async def test_a_bad_content_length_gets_the_documented_answer(
    length: bytes, status: int, code: int, message: str
) -> None:
    """A Content-Length that is not a number is -32600 "bad Content-Length"; one too big
    to count (past 64 bits) is a body over the limit, announced: 413."""
    async with serve(max_body=8_000_000) as (_, app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /rpc/x HTTP/1.1\r\nHost: t\r\nContent-Length: %s\r\n\r\n{}" % length)
        got, headers, body = await read_response(reader)
        assert (got, headers["connection"]) == (status, "close")
        assert error_of(body) == {"code": code, "message": message}
        assert app.seen == 0
        writer.close()


@pytest.mark.parametrize("method", [b"FOO", b"BREW", b"PRI"])
async def test_an_unknown_http_method_is_501_with_a_json_rpc_body(method: bytes) -> None:
    """A method HTTP parsing does not know is 501 Not Implemented (RFC 9110 §15.6.2) with
    a JSON-RPC error, never "malformed"; the connection then closes."""
    async with serve() as (_, app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(method + b" /rpc/x HTTP/1.1\r\nHost: t\r\n\r\n")
        got, headers, body = await read_response(reader)
        assert (got, headers["connection"]) == (501, "close")
        assert error_of(body) == {
            "code": -32600,
            "message": "Invalid Request: HTTP method not implemented (use POST)",
        }
        await closed_within(reader, 3)
        assert app.seen == 0
        writer.close()


@pytest.mark.parametrize(
    "line",
    [b"POST /rpc/x HTTP/2.0", b"POST /rpc/x HTTP/3.7", b"GET /sync HTTP/1.9", b"GET /sync"],
)
async def test_an_http_version_other_than_1_0_and_1_1_is_505(line: bytes) -> None:
    """A request line naming another HTTP version (or none, as HTTP/0.9) is 505 with a
    JSON-RPC error, never served as HTTP/1.1; the connection then closes."""
    async with serve() as (_, app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(line + b"\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}")
        got, headers, body = await read_response(reader)
        assert (got, headers["connection"]) == (505, "close")
        assert error_of(body) == {
            "code": -32600,
            "message": "Invalid Request: HTTP version not supported (use HTTP/1.1)",
        }
        await closed_within(reader, 3)
        assert app.seen == 0
        writer.close()


async def test_a_percent_escaped_path_is_decoded() -> None:
    """``/sy%6Ec`` names ``/sync`` (RFC 3986 §2.1), as any server reads it."""
    async with serve() as (_, _app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /sy%6Ec HTTP/1.1\r\nHost: t\r\n\r\n")
        got, _, body = await read_response(reader)
        assert (got, orjson.loads(body)["path"]) == (200, "/sync")
        writer.close()


async def test_http10_keep_alive_is_announced_and_kept() -> None:
    """An HTTP/1.0 client asking for keep-alive gets Connection: keep-alive (it would
    otherwise assume a close) and the connection serves its next request; without the
    header it gets Connection: close, and HTTP/1.1 needs neither."""
    async with serve() as (_, _app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            writer.write(b"GET /sync HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            got, headers, _ = await read_response(reader)
            assert (got, headers["connection"]) == (200, "keep-alive")
        writer.write(b"GET /sync HTTP/1.0\r\n\r\n")
        got, headers, _ = await read_response(reader)
        assert (got, headers["connection"]) == (200, "close")
        await closed_within(reader, 3)
        writer.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /sync HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n")
        got, headers, _ = await read_response(reader)
        assert got == 200 and "connection" not in headers
        writer.close()


async def test_a_huge_header_line_is_refused_early_without_stalling_others() -> None:
    """A 64 MB header line is refused once the head passes its limit (never buffered),
    while another client's requests keep answering fast."""
    async with serve() as (server, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nX-Huge: ")
        chunk = b"h" * 65536
        worst = 0.0

        async def others() -> None:
            nonlocal worst
            r2, w2 = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(50):
                t0 = time.monotonic()
                w2.write(request_bytes("/sync"))
                status, _, _ = await read_response(r2)
                assert status == 200
                worst = max(worst, time.monotonic() - t0)
                await asyncio.sleep(0.005)
            w2.close()

        task = asyncio.create_task(others())
        answer = asyncio.create_task(read_response(reader))
        try:
            for _ in range(1024):  # up to 64 MB; refused after 32 KiB, reset after ~8 MB
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        status, _, body = await answer
        assert status == 431 and error_of(body)["code"] == -32600
        await task
        assert worst < 0.25 * UNIT
        writer.close()


# -- pipelining ---------------------------------------------------------------------------


async def test_a_pipelining_flood_is_held_at_the_bound_and_answered_in_order() -> None:
    """20,000 pipelined requests behind a slow one: at most max_pipeline (plus one read
    piece) are parsed ahead; when the gate opens every one is answered, in order."""
    async with serve(max_pipeline=8) as (server, app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 20_000
        one = b"GET /slow?%d HTTP/1.1\r\nHost: t\r\n\r\n"
        flood = b"".join(one % i for i in range(n))
        writer.write(flood)
        await eventually(lambda: app.started == 1)
        (conn,) = server.connections
        bound = 8 + 8192 // len(one % 0)
        peak = 0
        for _ in range(20):  # the flood keeps arriving; the parsed queue stays bounded
            peak = max(peak, len(conn._queue))
            await asyncio.sleep(0.01)
        assert 0 < peak <= bound
        app.gate.set()
        for i in range(n):
            status, _, body = await read_response(reader)
            assert status == 200 and orjson.loads(body)["query"] == str(i)
        writer.close()
        await eventually(lambda: not server.connections)
        assert not conn._queue and conn._held is None and not conn._body


async def test_a_client_that_reads_no_answers_stops_being_read() -> None:
    """Sync answers pile up unread: reading pauses, so the server holds a bounded amount."""
    async with serve(max_pipeline=8) as (server, app, port):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        one = request_bytes("/big")
        sent = 0
        blocked_since = None
        deadline = time.monotonic() + 5 * UNIT
        while time.monotonic() < deadline and sent < 5000:
            try:
                sock.send(one)
                sent += 1
                blocked_since = None
                await asyncio.sleep(0)
            except BlockingIOError:  # both kernels' buffers are full: the server stopped
                now = time.monotonic()
                blocked_since = blocked_since or now
                if now - blocked_since > 0.3 * UNIT:
                    break
                await asyncio.sleep(0.01)
        (conn,) = server.connections
        assert conn._read_paused
        assert app.seen < 200  # ~1 MB each: a handful fills the write buffer, then it stops
        sock.close()


# -- early refusal and lingering close ---------------------------------------------------


async def test_urllib_sending_a_whole_oversized_body_reads_the_413() -> None:
    """Python's urllib writes a 9 MB body before reading: it gets the 413 JSON-RPC error,
    not a connection reset."""
    async with serve(max_body=8_000_000) as (_, _, port):

        def post() -> tuple[int, bytes]:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/rpc/x",
                data=b"[" + b"1," * 4_500_000 + b"1]",
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=10 * UNIT) as resp:
                    return resp.status, resp.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        status, body = await asyncio.to_thread(post)
        assert status == 413
        assert error_of(body)["code"] == -32600


async def test_a_chunked_body_over_the_limit_is_refused_and_read_to_the_end() -> None:
    """Without Content-Length the 413 comes when the bytes pass the limit; the rest is
    discarded until the client finishes."""
    async with serve(max_body=100_000) as (_, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /rpc HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(40):
            writer.write(b"2710\r\n" + b"z" * 10000 + b"\r\n")
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        status, headers, body = await read_response(reader)
        assert status == 413 and headers["connection"] == "close"
        assert error_of(body)["code"] == -32600
        writer.close()


async def test_lingering_discards_no_more_than_a_request_could_hold() -> None:
    """After a refusal, a client that keeps sending past max_body + max_head is reset
    instead of being read for the whole lingering time."""
    async with serve(max_body=100_000) as (_, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nX-Huge: " + b"h" * 40_000)
        status, _, _ = await read_response(reader)
        assert status == 431
        sent = 0
        with pytest.raises(ConnectionError):
            while sent < 50_000_000:
                writer.write(b"z" * 65536)
                await asyncio.wait_for(writer.drain(), 5 * UNIT)
                sent += 65536
        assert sent < 10_000_000
        writer.close()


async def test_expect_100_continue_is_answered_before_the_body() -> None:
    """An acceptable body gets 100 Continue at once; one over the limit the 413 instead."""
    async with serve(max_body=10_000) as (_, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /rpc HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"
        )
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2 * UNIT)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"y" * 5000)
        status, _, body = await read_response(reader)
        assert status == 200 and orjson.loads(body)["length"] == 5000
        writer.write(
            b"POST /rpc HTTP/1.1\r\nHost: t\r\nContent-Length: 50000\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        status, _, body = await read_response(reader)
        assert status == 413
        writer.close()


async def test_curl_posts_a_2mb_body_without_waiting_for_100_continue() -> None:
    """curl sends Expect: 100-continue above 1 MB and waits 1 s without an answer."""
    async with serve() as (_, _, port):
        payload = b'{"jsonrpc":"2.0","id":1,"method":"x","params":["' + b"a" * 2_000_000 + b'"]}'
        t0 = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            "curl",
            "-s",
            "-S",
            "--data-binary",
            "@-",
            "-H",
            "Content-Type: application/json",
            f"http://127.0.0.1:{port}/rpc/x",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate(payload)
        assert proc.returncode == 0
        assert orjson.loads(out)["length"] == len(payload)
        assert time.monotonic() - t0 < 0.8 * UNIT


async def test_a_half_closed_client_still_gets_its_answer() -> None:
    """A client that shuts its write side after the request is answered, then closed."""
    async with serve() as (_, app, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes("/slow"))
        writer.write_eof()
        await eventually(lambda: app.started == 1)
        app.gate.set()
        status, _, _ = await read_response(reader)
        assert status == 200
        assert await closed_within(reader, 3) == b""
        writer.close()


async def test_a_large_answer_arrives_whole() -> None:
    """A body past the large-body threshold is written after its head, byte-exact."""
    async with serve() as (_, _, port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes("/big") + request_bytes("/sync"))
        status, headers, body = await read_response(reader)
        assert status == 200 and body == b"x" * 1_000_000
        status, _, body = await read_response(reader)
        assert status == 200 and orjson.loads(body)["path"] == "/sync"
        writer.close()


async def test_server_repr_and_connections_after_close() -> None:
    """The server reports its accept state; closing a client frees its place."""
    async with serve(max_connections=50) as (server, _, port):
        assert isinstance(server, HttpServer) and server.cap == 50
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes("/sync"))
        await read_response(reader)
        assert "open=1" in repr(server)
        writer.close()
        await eventually(lambda: server.acceptor.open == 0 and not server.connections)


def test_a_large_answer_is_written_without_copying_it() -> None:
    """On uvloop (production), a 20 MB answer goes out after its head, not joined with it
    into a new buffer: writing it allocates a small fraction of its size."""
    import tracemalloc

    import uvloop

    body = b"x" * 20_000_000

    class Big:
        def handle(self, req: object) -> Response:
            return Response(200, body)

        def upgrade(self, *args: object) -> None:
            return None

    async def scenario() -> int:
        async with serve(Big()) as (server, _, port):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            tracemalloc.start()
            try:
                base = tracemalloc.get_traced_memory()[0]
                sock.sendall(request_bytes("/big"))
                await eventually(lambda: any(c.served for c in server.connections))
                peak = tracemalloc.get_traced_memory()[1] - base
            finally:
                tracemalloc.stop()
                sock.close()
            return peak

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        peak = runner.run(scenario())
    assert peak < 2_000_000, peak
