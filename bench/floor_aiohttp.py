"""Bare aiohttp forwarder: the "floor" contender of bench/overhead.py.

aiohttp.web server + one pooled aiohttp.ClientSession to the upstream, on uvloop.
No routing, no parsing: the request body goes upstream as-is and the upstream answer
comes back as-is. GET /api/health answers 200 for the harness's readiness probe.

    .venv/bin/python bench/floor_aiohttp.py --port 8545 --upstream http://127.0.0.1:8546
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
import uvloop
from aiohttp import web


async def _serve(port: int, upstream: str) -> None:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
    headers = {"Content-Type": "application/json"}

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with session.post(upstream, data=body, headers=headers) as resp:
            payload = await resp.read()
            return web.Response(body=payload, status=resp.status, content_type="application/json")

    async def health(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/api/health", health)
    app.router.add_post("/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        await session.close()


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
