"""Tests of the upstream keep-alive pool (``lasso.net.http_client``), through real sockets
on 127.0.0.1.

Each test starts the small raw HTTP server of ``net_http_support`` (``Server``), whose
answers it scripts, so a provider can misbehave on demand: close, reset, stall, refuse.
Waits are on events under a deadline, never on sleeps. Every async test also runs on
uvloop (``test_on_uvloop``). Response framing, broken answers, the deadline timer and the
protocol fed byte by byte are in ``test_http_conn.py``.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

import lasso.net.http_client
import lasso.net.http_conn
from lasso.net.errors import (
    PoolClosed,
    PoolTimeout,
    UpstreamConnectError,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamTimeout,
)
from lasso.net.http_client import HttpUpstreamPool, UpstreamResponse

from net_http_support import (
    DEADLINE,
    MS,
    SLACK,
    Gate,
    Request,
    Server,
    ServerConn,
    free_port,
    one_loop_pass,
    open_pool,
    within,
)


def test_exported_members() -> None:
    """__all__ is the public surface; names other modules import stay importable here."""
    assert sorted(lasso.net.http_client.__all__) == [
        "ANSWER_BOUND",
        "DEFAULT_KEEP_HEADERS",
        "HttpUpstreamPool",
        "UpstreamResponse",
    ]
    for name in lasso.net.http_client.__all__:
        assert getattr(lasso.net.http_client, name) is not None
    # Re-exported from the connection module: one class, not a copy.
    assert lasso.net.http_client.UpstreamResponse is lasso.net.http_conn.UpstreamResponse
    # Imported by lasso.net.ws_upstream and by tests.
    assert lasso.net.http_client.USER_AGENT == "lasso/0.1"
    assert lasso.net.http_client._Connection is lasso.net.http_conn._Connection


def test_module_imports_alone() -> None:
    """The pool module imports first in a fresh interpreter (no import cycle depends on order)."""
    subprocess.run([sys.executable, "-c", "import lasso.net.http_client"], check=True)


# -- keep-alive and concurrency -----------------------------------------------------------


async def test_sequential_requests_share_one_connection() -> None:
    """Twenty sequential requests travel over a single kept-alive TCP connection."""
    async with Server() as srv, open_pool(srv.url) as pool:
        for i in range(20):
            resp = await pool.request(b'{"id":%d}' % i, DEADLINE)
            assert resp == UpstreamResponse(
                200,
                b'{"id":%d}' % i,
                {
                    b"content-type": b"application/json",
                    b"content-length": str(len(resp.body)).encode(),
                },
            )
        assert len(srv.conns) == 1
        assert pool.connections_opened == 1
        assert (pool.idle, pool.active, pool.total) == (1, 0, 1)


async def test_request_line_and_headers() -> None:
    """The request carries path and query, Host, JSON content type, length and custom headers."""
    async with Server() as srv, open_pool(srv.url, headers={"X-Api-Key": "k1"}) as pool:
        await pool.request(b"[1,2]", DEADLINE)
        req = srv.requests[0]
        assert req.target == b"/rpc/key?x=1"
        assert req.headers[b"host"] == b"127.0.0.1:%d" % srv.port
        assert req.headers[b"content-type"] == b"application/json"
        assert req.headers[b"content-length"] == b"5"
        assert req.headers[b"user-agent"] == b"lasso/0.1"
        assert req.headers[b"x-api-key"] == b"k1"
        assert req.body == b"[1,2]"


async def test_user_info_becomes_basic_authorization() -> None:
    """Credentials in the URL are sent as a Basic Authorization header, never printed."""
    async with Server() as srv:
        url = srv.url.replace("http://", "http://user:p%40ss@")
        async with open_pool(url) as pool:
            await pool.request(b"{}", DEADLINE)
            expected = b"Basic " + base64.b64encode(b"user:p@ss")
            assert srv.requests[0].headers[b"authorization"] == expected
            assert "user" not in repr(pool) and "key" not in repr(pool)


async def test_concurrent_requests_open_at_most_max_connections() -> None:
    """Ten concurrent requests use four connections; the other six queue, then all finish."""
    gate = Gate()
    async with Server(gate) as srv, open_pool(srv.url, max_connections=4) as pool:
        tasks = [asyncio.create_task(pool.request(b"%d" % i, DEADLINE)) for i in range(10)]
        for _ in range(4):
            await srv.next_request()
        assert (pool.total, pool.active, pool.waiting) == (4, 4, 6)
        gate.open.set()
        results = await within(asyncio.gather(*tasks))
        assert [r.body for r in results] == [b"%d" % i for i in range(10)]
        assert len(srv.conns) == 4
        assert pool.connections_opened == 4
        assert (pool.idle, pool.active, pool.waiting) == (4, 0, 0)


async def test_waiters_are_served_in_fifo_order() -> None:
    """With one connection, queued requests reach the provider in the order they queued."""
    gate = Gate()
    async with Server(gate) as srv, open_pool(srv.url, max_connections=1) as pool:
        first = asyncio.create_task(pool.request(b"A", DEADLINE))
        await srv.next_request()
        rest = [asyncio.create_task(pool.request(b, DEADLINE)) for b in (b"B", b"C", b"D")]
        await one_loop_pass()
        assert pool.waiting == 3
        gate.open.set()
        await within(asyncio.gather(first, *rest))
        assert [r.body for r in srv.requests] == [b"A", b"B", b"C", b"D"]
        assert len(srv.conns) == 1


async def test_timeout_covers_the_wait_for_a_connection() -> None:
    """A request queued past its deadline fails with PoolTimeout, not dispatched."""
    gate = Gate()
    async with Server(gate) as srv, open_pool(srv.url, max_connections=1) as pool:
        first = asyncio.create_task(pool.request(b"A", DEADLINE))
        await srv.next_request()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(PoolTimeout) as info:
            await within(pool.request(b"B", 100 * MS))
        assert loop.time() - t0 >= 100 * MS - SLACK
        assert info.value.dispatched is False
        assert isinstance(info.value, UpstreamTimeout)
        assert pool.waiting == 0
        gate.open.set()
        assert (await within(first)).body == b"A"
        assert (pool.idle, pool.total) == (1, 1)
        assert [r.body for r in srv.requests] == [b"A"]


async def test_full_wait_queue_fails_fast() -> None:
    """Beyond max_waiters a request fails at once with PoolTimeout."""
    gate = Gate()
    async with Server(gate) as srv:
        async with open_pool(srv.url, max_connections=1, max_waiters=1) as pool:
            first = asyncio.create_task(pool.request(b"A", DEADLINE))
            await srv.next_request()
            second = asyncio.create_task(pool.request(b"B", DEADLINE))
            await one_loop_pass()
            with pytest.raises(PoolTimeout, match="already waiting"):
                await pool.request(b"C", DEADLINE)
            gate.open.set()
            await within(asyncio.gather(first, second))


async def test_max_idle_bounds_kept_connections() -> None:
    """Connections beyond max_idle are closed when their request finishes."""
    gate = Gate()
    async with Server(gate) as srv, open_pool(srv.url, max_idle=1) as pool:
        tasks = [asyncio.create_task(pool.request(b"x", DEADLINE)) for _ in range(3)]
        for _ in range(3):
            await srv.next_request()
        gate.open.set()
        await within(asyncio.gather(*tasks))
        assert (pool.idle, pool.total) == (1, 1)
        await within(asyncio.gather(*(c.lost.wait() for c in srv.conns[1:])))


async def test_idle_connection_older_than_idle_timeout_is_replaced() -> None:
    """A connection idle longer than idle_timeout is closed and a fresh one is used."""
    async with Server() as srv, open_pool(srv.url, idle_timeout=0.0) as pool:
        await pool.request(b"1", DEADLINE)
        await pool.request(b"2", DEADLINE)
        assert len(srv.conns) == 2
        assert pool.total == 1
        await within(srv.conns[0].lost.wait())


async def test_idle_connection_within_idle_timeout_is_reused_after_clock_jump() -> None:
    """Lazy expiry compares the loop clock: 29 s idle reuses, 31 s idle reconnects."""
    loop = asyncio.get_running_loop()
    real_time = loop.time
    shift = 0.0
    loop.time = lambda: real_time() + shift  # type: ignore[method-assign]
    try:
        async with Server() as srv, open_pool(srv.url, idle_timeout=30.0) as pool:
            await pool.request(b"1", DEADLINE)
            shift += 29.0
            await pool.request(b"2", DEADLINE)
            assert len(srv.conns) == 1
            shift += 31.0
            await pool.request(b"3", DEADLINE)
            assert len(srv.conns) == 2
    finally:
        del loop.time


# -- provider closes, refuses or stalls; callers cancel ----------------------------------


async def test_fin_on_idle_connection_drops_it() -> None:
    """A provider closing an idle connection removes it; the next request reconnects cleanly."""

    async def answer_then_fin(conn: ServerConn, req: Request) -> None:
        conn.respond(200, req.body)
        conn.transport.write_eof()

    async with Server(answer_then_fin) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"1", DEADLINE)).body == b"1"
        # Our FIN back proves the pool saw the provider's FIN and dropped the connection.
        await within(srv.conns[0].eof.wait())
        assert (pool.idle, pool.total) == (0, 0)
        assert (await pool.request(b"2", DEADLINE)).body == b"2"
        assert len(srv.conns) == 2


async def test_stale_connection_closed_without_answer_is_retried_once() -> None:
    """A reused connection closed with zero response bytes is retried on a new one."""

    async def close_second(conn: ServerConn, req: Request) -> None:
        if req.seq == 0:
            conn.respond(200, req.body)
        else:
            conn.transport.close()

    async with Server(close_second) as srv, open_pool(srv.url) as pool:
        assert (await pool.request(b"1", DEADLINE)).body == b"1"
        assert (await pool.request(b"2", DEADLINE)).body == b"2"
        assert [(r.conn.index, r.body) for r in srv.requests] == [(0, b"1"), (0, b"2"), (1, b"2")]


async def test_stale_retry_happens_only_once() -> None:
    """If the retry also closes without an answer the request fails as dispatched."""

    async def only_first(conn: ServerConn, req: Request) -> None:
        if conn.index == 0 and req.seq == 0:
            conn.respond(200, req.body)
        else:
            conn.transport.close()

    async with Server(only_first) as srv, open_pool(srv.url) as pool:
        await pool.request(b"1", DEADLINE)
        with pytest.raises(UpstreamDisconnected) as info:
            await pool.request(b"2", DEADLINE)
        assert info.value.dispatched is True
        assert len(srv.requests) == 3
        assert pool.total == 0


async def test_stale_retry_can_be_disabled() -> None:
    """With retry_stale=False a stale connection fails the request at once."""

    async def close_second(conn: ServerConn, req: Request) -> None:
        if req.seq == 0:
            conn.respond(200, req.body)
        else:
            conn.transport.close()

    async with Server(close_second) as srv, open_pool(srv.url) as pool:
        await pool.request(b"1", DEADLINE)
        with pytest.raises(UpstreamDisconnected):
            await pool.request(b"2", DEADLINE, retry_stale=False)
        assert len(srv.requests) == 2


async def test_exchange_resends_stale_connections_only_when_replay_safe() -> None:
    """The transport seam: exchange() is request() with retry_stale = replay_safe."""

    async def close_reused(conn: ServerConn, req: Request) -> None:
        if req.seq == 0:
            conn.respond(200, req.body)
        else:
            conn.transport.close()

    async with Server(close_reused) as srv, open_pool(srv.url) as pool:
        assert (await pool.exchange(b"1", b'"t"', DEADLINE, replay_safe=True)).body == b"1"
        assert (await pool.exchange(b"2", b'"t"', DEADLINE, replay_safe=True)).body == b"2"
        with pytest.raises(UpstreamDisconnected):
            await pool.exchange(b"3", b'"t"', DEADLINE, replay_safe=False)
        assert [r.body for r in srv.requests] == [b"1", b"2", b"2", b"3"]


async def test_no_retry_once_response_bytes_arrived() -> None:
    """A reused connection that closes after part of a response is not retried."""

    async def partial_second(conn: ServerConn, req: Request) -> None:
        if req.seq == 0:
            conn.respond(200, req.body)
        else:
            conn.write(b"HTTP/1.1 200 OK\r\n")
            conn.transport.close()

    async with Server(partial_second) as srv, open_pool(srv.url) as pool:
        await pool.request(b"1", DEADLINE)
        with pytest.raises(UpstreamDisconnected) as info:
            await pool.request(b"2", DEADLINE)
        assert info.value.dispatched is True
        assert len(srv.conns) == 1 and len(srv.requests) == 2


async def test_fresh_connection_closed_without_answer_is_not_retried() -> None:
    """Closing a brand-new connection without an answer is UpstreamDisconnected, no retry."""

    async def hang_up(conn: ServerConn, req: Request) -> None:
        conn.transport.close()

    async with Server(hang_up) as srv, open_pool(srv.url) as pool:
        with pytest.raises(UpstreamDisconnected):
            await pool.request(b"1", DEADLINE)
        assert len(srv.requests) == 1


async def test_refused_connection() -> None:
    """A closed port raises UpstreamConnectError, not dispatched, and frees the slot."""
    async with open_pool(f"http://127.0.0.1:{free_port()}/", max_connections=1) as pool:
        for _ in range(2):
            with pytest.raises(UpstreamConnectError) as info:
                await pool.request(b"{}", DEADLINE)
            assert info.value.dispatched is False
            assert isinstance(info.value.__cause__, OSError)
        assert (pool.total, pool.connections_opened) == (0, 0)


async def test_unresolvable_host() -> None:
    """A name that cannot resolve raises UpstreamConnectError."""
    async with open_pool("http://does-not-exist.invalid/") as pool:
        with pytest.raises(UpstreamConnectError):
            await pool.request(b"{}", DEADLINE)


async def test_silent_listener_connect_times_out() -> None:
    """A connect that never completes fails after connect_timeout or the deadline, undispatched."""
    # A listening socket that never accepts; fill its backlog so further SYNs go unanswered.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            s = socket.socket()
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            fillers.append(s)
        url = f"http://127.0.0.1:{port}/"
        async with open_pool(url, connect_timeout=100 * MS) as pool:
            with pytest.raises(UpstreamConnectError, match="timed out") as info:
                await within(pool.request(b"{}", DEADLINE))
            assert info.value.dispatched is False
            assert pool.total == 0
        # When the request's deadline comes first it is a timeout, still not dispatched.
        async with open_pool(url, connect_timeout=DEADLINE) as pool:
            with pytest.raises(UpstreamTimeout) as timeout_info:
                await within(pool.request(b"{}", 100 * MS))
            assert timeout_info.value.dispatched is False
            assert pool.total == 0
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_caller_cancellation_closes_the_connection() -> None:
    """Cancelling a request in flight closes its connection and frees the slot."""

    async def silent(conn: ServerConn, req: Request) -> None:
        pass

    async with Server(silent) as srv, open_pool(srv.url) as pool:
        task = asyncio.create_task(pool.request(b"{}", DEADLINE))
        await srv.next_request()
        assert pool.active == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (pool.total, pool.idle) == (0, 0)
        await within(srv.conns[0].lost.wait())


async def test_cancelled_waiter_leaves_the_queue() -> None:
    """Cancelling a queued request removes it; the connection goes to the next one."""
    gate = Gate()
    async with Server(gate) as srv, open_pool(srv.url, max_connections=1) as pool:
        first = asyncio.create_task(pool.request(b"A", DEADLINE))
        await srv.next_request()
        doomed = asyncio.create_task(pool.request(b"B", DEADLINE))
        third = asyncio.create_task(pool.request(b"C", DEADLINE))
        await one_loop_pass()
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert pool.waiting == 1
        gate.open.set()
        await within(asyncio.gather(first, third))
        assert [r.body for r in srv.requests] == [b"A", b"C"]
        assert pool.total == 1


async def test_mixed_faults_leave_the_pool_consistent() -> None:
    """Under concurrent load and random faults every call ends cleanly and nothing leaks."""
    import random

    rng = random.Random(1234)

    async def chaos(conn: ServerConn, req: Request) -> None:
        roll = rng.random()
        if req.body == b"final" or roll < 0.5:
            conn.respond(200, req.body)
        elif roll < 0.6:
            conn.respond(200, req.body, [(b"Connection", b"close")])
        elif roll < 0.7:
            conn.reset()
        elif roll < 0.8:
            conn.transport.close()
        elif roll < 0.9:
            conn.write(b"garbage\r\n\r\n")
        # else: silence, until the request's deadline

    async with Server(chaos) as srv, open_pool(srv.url, max_connections=8, max_idle=4) as pool:

        async def call(i: int) -> object:
            try:
                return await pool.request(b"%d" % i, 200 * MS)
            except UpstreamError as exc:
                return exc

        outcomes = await within(asyncio.gather(*(call(i) for i in range(300))))
        ok = [o for o in outcomes if isinstance(o, UpstreamResponse)]
        # Not "some succeeded": one loop stall early in the burst can time out all 300
        # (they share one 200 ms deadline that also covers connecting). The pool's health
        # after the chaos is checked below instead.
        assert len(ok) < len(outcomes)
        assert all(isinstance(o, UpstreamResponse | UpstreamError) for o in outcomes)
        assert (pool.active, pool.waiting) == (0, 0)
        assert pool.total == pool.idle <= 4
        assert pool.connections_opened <= len(srv.conns)
        # Whatever the chaos left in the idle set, the pool still serves a healthy request.
        final = await within(pool.request(b"final", 2000 * MS))
        assert (final.status, final.body) == (200, b"final")
        assert (pool.active, pool.waiting) == (0, 0)


# -- TLS ----------------------------------------------------------------------------------


def tls_files() -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made once per test session."""
    cached: tuple[Path, Path] | None = getattr(tls_files, "cached", None)
    if cached is not None:
        return cached
    import tempfile

    directory = Path(tempfile.mkdtemp(prefix="lasso-tls-"))
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec",
            "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    tls_files.cached = (cert, key)  # type: ignore[attr-defined]
    return cert, key


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert, key = tls_files()
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client


async def test_tls_keep_alive() -> None:
    """https: the handshake verifies the certificate against the URL host; reuse works."""
    server_ctx, client_ctx = tls_contexts()
    async with (
        Server(ssl_context=server_ctx) as srv,
        open_pool(srv.url, ssl_context=client_ctx) as pool,
    ):
        for i in range(3):
            assert (await pool.request(b"%d" % i, DEADLINE)).body == b"%d" % i
        assert len(srv.conns) == 1


async def test_tls_untrusted_certificate_is_a_connect_error() -> None:
    """The default context rejects a self-signed certificate: UpstreamConnectError."""
    server_ctx, _ = tls_contexts()
    async with Server(ssl_context=server_ctx) as srv, open_pool(srv.url) as pool:
        with pytest.raises(UpstreamConnectError, match="TLS") as info:
            await pool.request(b"{}", DEADLINE)
        assert info.value.dispatched is False
        assert isinstance(info.value.__cause__, ssl.SSLError)


# -- lifecycle and introspection ----------------------------------------------------------


async def test_aclose_fails_in_flight_and_queued_requests() -> None:
    """aclose fails the request in flight (dispatched) and the queued one (not dispatched)."""
    gate = Gate()
    async with Server(gate) as srv:
        pool = HttpUpstreamPool(srv.url, max_connections=1)
        flying = asyncio.create_task(pool.request(b"A", DEADLINE))
        await srv.next_request()
        queued = asyncio.create_task(pool.request(b"B", DEADLINE))
        await one_loop_pass()
        await within(pool.aclose())
        with pytest.raises(PoolClosed) as fly_info:
            await flying
        with pytest.raises(PoolClosed) as queue_info:
            await queued
        assert (fly_info.value.dispatched, queue_info.value.dispatched) == (True, False)
        assert fly_info.value.provider_fault is False
        with pytest.raises(PoolClosed):
            await pool.request(b"C", DEADLINE)
        assert (pool.total, pool.idle, pool.waiting) == (0, 0, 0)
        assert repr(pool).endswith(" closed>")
        await within(srv.conns[0].lost.wait())


async def test_aclose_closes_idle_connections() -> None:
    """aclose closes idle connections and is idempotent."""
    async with Server() as srv:
        pool = HttpUpstreamPool(srv.url)
        await pool.request(b"{}", DEADLINE)
        await pool.aclose()
        await pool.aclose()
        await within(srv.conns[0].lost.wait())
        assert pool.total == 0


async def test_repr_summarizes_live_state() -> None:
    """repr shows origin (no path or credentials) and connection counts."""
    gate = Gate()
    async with Server(gate) as srv, open_pool(srv.url, max_connections=2) as pool:
        origin = f"http://127.0.0.1:{srv.port}"
        assert repr(pool) == (
            f"<HttpUpstreamPool {origin} idle=0 active=0 total=0 opened=0 waiting=0>"
        )
        tasks = [asyncio.create_task(pool.request(b"x", DEADLINE)) for _ in range(3)]
        await srv.next_request()
        await srv.next_request()
        assert repr(pool) == (
            f"<HttpUpstreamPool {origin} idle=0 active=2 total=2 opened=2 waiting=1>"
        )
        gate.open.set()
        await within(asyncio.gather(*tasks))
        assert repr(pool) == (
            f"<HttpUpstreamPool {origin} idle=2 active=0 total=2 opened=2 waiting=0>"
        )


def test_invalid_configuration_is_rejected() -> None:
    """Bad schemes, hosts and header values raise ValueError at construction."""
    for url in ("ftp://h/", "http:///path", "ws://h/"):
        with pytest.raises(ValueError):
            HttpUpstreamPool(url)
    for headers in ({"X-A": "a\r\nInjected: 1"}, {"Bad:Name": "v"}, {"Content-Length": "1"}):
        with pytest.raises(ValueError):
            HttpUpstreamPool("http://h/", headers=headers)
    with pytest.raises(ValueError):
        HttpUpstreamPool("http://h/", max_connections=0)


async def test_timeout_must_be_positive() -> None:
    """A non-positive timeout fails before anything is sent."""
    async with open_pool("http://127.0.0.1:1/") as pool:
        with pytest.raises(UpstreamTimeout) as info:
            await pool.request(b"{}", 0)
        assert info.value.dispatched is False


# -- every async scenario again on uvloop -------------------------------------------------

_SCENARIOS = sorted(
    name
    for name, fn in list(globals().items())
    if name.startswith("test_")
    and inspect.iscoroutinefunction(fn)
    # uvloop's clock cannot be shifted; this one runs on the default loop only.
    and name != "test_idle_connection_within_idle_timeout_is_reused_after_clock_jump"
)


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is POSIX-only")
@pytest.mark.parametrize("name", _SCENARIOS)
def test_on_uvloop(name: str) -> None:
    """The same scenario passes on uvloop, the production loop."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(globals()[name]())
