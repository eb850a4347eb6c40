"""The accept loop under the connection cap: stop accepting at the cap, evict the idle,
survive EMFILE, resume below the low watermark."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import time

import pytest

from lasso.net.limits import connection_cap, raise_open_file_limit
from lasso.net.listener import ACCEPT_RETRY_S

from net_server_support import read_response, request_bytes, serve
from support import UNIT, eventually

pytestmark = pytest.mark.integration


async def test_at_the_cap_new_clients_wait_in_the_backlog_until_a_place_frees(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With every place busy, a new connection is not accepted (no EMFILE, no refusal;
    logged once); once requests finish and clients leave, it is accepted and answered."""
    caplog.set_level(logging.WARNING, "lasso.net.listener")
    async with serve(max_connections=10) as (server, app, port):
        busy = []
        for _ in range(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes("/slow"))
            busy.append((reader, writer))
        await eventually(lambda: app.started == 10)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)  # the backlog
        writer.write(request_bytes("/sync"))
        await eventually(lambda: server.acceptor.paused)
        assert server.acceptor.open == 10
        with pytest.raises(TimeoutError):
            await read_response(reader, timeout=0.3)
        paused = [r for r in caplog.records if getattr(r, "event", "") == "server.accept_paused"]
        assert len(paused) == 1 and paused[0].reason == "cap" and paused[0].cap == 10
        app.gate.set()
        for r, w in busy:
            status, _, _ = await read_response(r)
            assert status == 200
            w.close()
        status, _, _ = await read_response(reader)
        assert status == 200
        assert not server.acceptor.paused
        writer.close()


async def test_at_the_cap_the_longest_idle_connection_makes_room() -> None:
    """Idle keep-alive connections are evicted, oldest first, so a new client is served."""
    async with serve(max_connections=5) as (server, _, port):
        server.evict_idle = 0.05 * UNIT
        idle = []
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes("/sync"))
            await read_response(reader)
            idle.append((reader, writer))
        await asyncio.sleep(0.1 * UNIT)  # let them age past evict_idle
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.monotonic()
        writer.write(request_bytes("/sync"))
        status, _, _ = await read_response(reader)
        assert status == 200 and time.monotonic() - t0 < 0.5 * UNIT
        assert server.acceptor.evicted == 1
        assert await idle[0][0].read() == b""  # the oldest went
        for _, w in idle:
            w.close()
        writer.close()


async def test_a_slowloris_at_the_cap_does_not_lock_out_new_clients() -> None:
    """Twice the cap of connections trickling header bytes: a well-behaved client still
    gets each answer quickly, because stalled heads are evicted to make room."""
    async with serve(max_connections=20, head_timeout=30) as (server, _, port):
        server.evict_stalled = 0.2 * UNIT
        attackers: list[asyncio.StreamWriter] = []
        stop = asyncio.Event()

        async def trickle() -> None:
            while not stop.is_set():
                try:
                    _, w = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    await asyncio.sleep(0.05)
                    continue
                attackers.append(w)
                w.write(b"GET / HTTP/1.1\r\nX-a: ")
                while not stop.is_set() and not w.is_closing():
                    await asyncio.sleep(0.1 * UNIT)
                    try:
                        w.write(b"a")
                        await w.drain()
                    except ConnectionError:
                        break

        tasks = [asyncio.create_task(trickle()) for _ in range(40)]
        await eventually(lambda: server.acceptor.open >= 20)
        await asyncio.sleep(0.3 * UNIT)
        worst = 0.0
        for _ in range(5):
            t0 = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request_bytes("/sync"))
            status, _, _ = await read_response(reader, timeout=3)
            assert status == 200
            worst = max(worst, time.monotonic() - t0)
            writer.close()
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in attackers:
            w.close()
        assert server.acceptor.evicted > 0
        assert worst < 1.0 * UNIT


def _open_fds() -> int:
    """Descriptors open now, plus the one listing them."""
    return len(os.listdir("/proc/self/fd"))


def _exhaust_files(hard: int) -> list[int]:
    """Lower the soft limit to just above the highest descriptor and fill every free
    number below it: the next descriptor anyone asks for fails with EMFILE."""
    highest = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (highest + 1, hard))
    filler = []
    while True:
        try:
            filler.append(os.open(os.devnull, os.O_RDONLY))
        except OSError:
            return filler


async def test_out_of_files_pauses_accepting_and_recovers() -> None:
    """accept() failing with EMFILE pauses accepting for a moment instead of spinning or
    failing clients; once files are free again the waiting client is served."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    async with serve() as (server, _, port):
        client = socket.socket()
        client.setblocking(False)
        filler = _exhaust_files(hard)
        try:
            try:
                client.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            await eventually(lambda: server.acceptor.paused, timeout=2)
            assert server.acceptor.open == 0
        finally:
            for fd in filler:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        reader, writer = await asyncio.open_connection(sock=client)
        writer.write(request_bytes("/sync"))
        status, _, _ = await read_response(reader, timeout=ACCEPT_RETRY_S * 20 + 2)
        assert status == 200
        writer.close()


async def test_start_raises_the_open_file_limit_and_derives_the_cap() -> None:
    """The soft RLIMIT_NOFILE goes up to the hard limit; the cap stays under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(hard, max(_open_fds() + 64, 512))
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        async with serve(max_connections=1_000_000) as (server, _, _):
            now_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            assert now_soft == hard
            assert server.open_files == hard
            assert server.cap == connection_cap(1_000_000, hard) < hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert raise_open_file_limit() == hard
