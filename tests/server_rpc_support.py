"""Helpers of the JSON-RPC surface tests (``tests/server/test_rpc_*.py``).

:class:`ScriptedUpstream` is a real JSON-RPC provider on 127.0.0.1 (aiohttp) whose answer
to each call a test scripts: hold some methods behind a gate to observe concurrency, put
``result`` before ``id``, echo the request id inside the result, answer odd error objects.
It counts calls in flight and the most ever in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from support import UNCACHED, free_port

__all__ = ["ScriptedUpstream", "chain_yaml", "raw_json"]

Answer = Callable[[dict[str, Any], bytes], bytes]
"""(the parsed call, its raw ``id`` bytes) -> the whole answer body."""


def default_answer(call: dict[str, Any], rid: bytes) -> bytes:
    if call.get("method") == "eth_chainId":
        return b'{"jsonrpc":"2.0","id":%s,"result":"0x1"}' % rid
    return b'{"jsonrpc":"2.0","id":%s,"result":"0x2a"}' % rid


class ScriptedUpstream:
    """A JSON-RPC provider whose answers are scripted.

    Attributes:
        answer: builds the body for each call (single calls only; batches are refused).
        held: methods whose calls wait until :meth:`release`.
        inflight / peak: calls being answered now / the most at once.
        calls: calls received, per method.
        bodies: the raw request bodies, in arrival order.
    """

    def __init__(self, answer: Answer = default_answer) -> None:
        self.answer = answer
        self.held: set[str] = set()
        self.gate = asyncio.Event()
        self.inflight = 0
        self.peak = 0
        self.calls: dict[str, int] = {}
        self.bodies: list[bytes] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    async def start(self) -> ScriptedUpstream:
        app = web.Application()
        app.router.add_post("/", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def release(self) -> None:
        """Let every held call (and every later one) through."""
        self.gate.set()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.bodies.append(body)
        call = raw_json(body)  # numbers as text: any valid JSON number is welcome
        method = str(call.get("method"))
        self.calls[method] = self.calls.get(method, 0) + 1
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        try:
            if method in self.held:
                await self.gate.wait()
            rid = orjson.dumps(call.get("id"))
            return web.Response(body=self.answer(call, rid), content_type="application/json")
        finally:
            self.inflight -= 1


def chain_yaml(*upstreams: ScriptedUpstream, chain_id: int = 1) -> str:
    """An ``ethereum`` chain with one provider per upstream (``p0``, ``p1``, ...), without
    the response cache and coalescing: every request the tests send reaches an upstream."""
    lines = ["  ethereum:", f"    chain_id: {chain_id}", UNCACHED, "    providers:"]
    for i, up in enumerate(upstreams):
        lines += [f"      - id: p{i}", f"        url: {up.url}"]
    return "\n".join(lines) + "\n"


def raw_json(data: bytes) -> Any:
    """Parse JSON keeping every number's spelling (as a str): ids compared byte for byte."""
    import json

    return json.loads(data, parse_int=str, parse_float=str)


async def gather_all(*aws: Awaitable[Any]) -> list[Any]:
    return list(await asyncio.gather(*aws))
