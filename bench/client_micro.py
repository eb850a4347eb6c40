"""CPU cost per request of the upstream HTTP client: HttpUpstreamPool vs aiohttp.

A minimal raw-asyncio HTTP/1.1 server (uvloop, httptools, fixed JSON answer) runs in a
child process on loopback, so ``time.process_time()`` of this process counts the client
alone. Each round runs N sequential requests, then N requests spread over C concurrent
workers, for each client in rotated order; the table shows the median over rounds.

    .venv/bin/python bench/client_micro.py [-n 20000] [-c 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

BODY = b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}'
ANSWER = b'{"jsonrpc":"2.0","id":1,"result":"0x1b4"}'
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
    len(ANSWER),
    ANSWER,
)


# -- the upstream: as cheap as possible, in its own process ------------------------------


def _serve(conn: Any) -> None:
    import httptools

    class Upstream(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.transport.write(RESPONSE)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Upstream, "127.0.0.1", 0, backlog=1024)
        conn.send(server.sockets[0].getsockname()[1])
        await loop.run_in_executor(None, conn.recv)  # until the parent says stop
        server.close()

    uvloop.run(main())


# -- the clients ---------------------------------------------------------------------------

Send = Callable[[], Awaitable[bytes]]


async def make_lasso(url: str, c: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    from lasso.net.http_client import HttpUpstreamPool

    pool = HttpUpstreamPool(url, max_connections=c, max_idle=c)

    async def send() -> bytes:
        return (await pool.request(BODY, 10.0)).body

    return send, pool.aclose


async def make_aiohttp(url: str, c: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=c, limit_per_host=c),
        timeout=aiohttp.ClientTimeout(total=10.0),
    )
    headers = {"Content-Type": "application/json"}

    async def send() -> bytes:
        async with session.post(url, data=BODY, headers=headers) as resp:
            return await resp.read()

    return send, session.close


CLIENTS = {"lasso pool": make_lasso, "aiohttp": make_aiohttp}


async def run_once(send: Send, n: int, c: int) -> tuple[float, float, float]:
    """CPU µs per request (all, user only) and requests per second, n requests over c workers."""

    async def worker(count: int) -> None:
        for _ in range(count):
            body = await send()
            assert body == ANSWER

    per, extra = divmod(n, c)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    user0 = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    await asyncio.gather(*(worker(per + (i < extra)) for i in range(c)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    user = resource.getrusage(resource.RUSAGE_SELF).ru_utime - user0
    return cpu / n * 1e6, user / n * 1e6, n / wall


async def bench(port: int, n: int, c: int, rounds: int) -> None:
    url = f"http://127.0.0.1:{port}/"
    names = list(CLIENTS)
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            send, close = await CLIENTS[name](url, c)
            try:
                await run_once(send, min(n, 2000), c)  # warm up: connections, caches
                for conc in (1, c):
                    results.setdefault((name, conc), []).append(await run_once(send, n, conc))
            finally:
                await close()
    print(f"N={n} per run, median of {rounds} rounds, uvloop, loopback upstream in a child")
    print("CPU = user + system time of this process (the client only); user = Python + libs")
    print(f"{'client':<12} {'conc':>5} {'CPU µs/req':>11} {'user µs/req':>12} {'req/s':>9}")
    for (name, conc), runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        user = statistics.median(r[1] for r in runs)
        rate = statistics.median(r[2] for r in runs)
        print(f"{name:<12} {conc:>5} {cpu:>11.1f} {user:>12.1f} {rate:>9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20000, help="requests per run")
    parser.add_argument("-c", type=int, default=64, help="concurrent requests")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    try:
        port = parent.recv()
        uvloop.run(bench(port, args.n, args.c, args.rounds))
    finally:
        parent.send("stop")
        server.join(5)
        if server.is_alive():
            server.terminate()


if __name__ == "__main__":
    main()
