"""Helpers for the pipeline tests: a chain whose providers are in-memory transports."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from types import MappingProxyType
from typing import Any

import orjson

from lasso.config import (
    Capabilities,
    ChainConfig,
    HedgeConfig,
    Limits,
    MethodOverride,
    ProviderConfig,
)
from lasso.kernel.breaker import BreakerConfig
from lasso.kernel.router import BreakerRegistry, ChainRouter
from lasso.net.errors import (
    UpstreamError,
)
from lasso.net.http_conn import UpstreamResponse
from lasso.net.transport import MemoryRequest, MemoryTransport, error_answer, result_answer
from lasso.server.consistency_state import ChainConsistency
from lasso.server.events import EventBus
from lasso.server.pipeline import Outcome, execute
from lasso.server.runtime import ChainRuntime

BALANCE = ["0x00000000000000000000000000000000000000aa", "latest"]
Handler = Callable[[MemoryRequest], UpstreamResponse | Awaitable[UpstreamResponse]]


def ok(result: Any = "0x1") -> Handler:
    return lambda req: result_answer(req, result)


def status(code: int, body: bytes = b"oops", headers: dict[bytes, bytes] | None = None) -> Handler:
    return lambda req: UpstreamResponse(code, body, headers or {})


def raises(exc: UpstreamError) -> Handler:
    def handler(req: MemoryRequest) -> UpstreamResponse:
        raise exc

    return handler


def rpc_error(code: int, message: str, data: Any = None) -> Handler:
    return lambda req: error_answer(req, code, message, data=data)


def hang() -> Handler:
    """Never answers (until cancelled or timed out)."""

    async def handler(req: MemoryRequest) -> UpstreamResponse:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return handler


def runtime(
    hedge: HedgeConfig | None = None,
    overrides: dict[str, MethodOverride] | None = None,
    *,
    chain_settings: dict[str, Any] | None = None,
    limits: dict[str, int] | None = None,
    state: ChainConsistency | None = None,
    **handlers: Handler,
) -> ChainRuntime:
    """A chain whose providers (in priority order) answer with ``handlers``.

    ``chain_settings``: more ``ChainConfig`` fields; ``limits``: a provider's
    ``max_block_range``; ``state``: the chain's consistency state (a fresh one if absent).
    """
    limits = limits or {}
    providers = tuple(
        ProviderConfig(
            id=pid,
            name=pid,
            url=f"http://{pid}.example",
            priority=i,
            capabilities=Capabilities(limits=Limits(max_block_range=limits.get(pid))),
        )
        for i, pid in enumerate(handlers)
    )
    chain = ChainConfig(
        key="eth",
        chain_id=1,
        name="eth",
        providers=providers,
        hedge=hedge,
        method_overrides=MappingProxyType(overrides or {}),
        **(chain_settings or {}),
    )
    rng = random.Random(7)
    head = state.head if state is not None else None
    router = ChainRouter(chain, BreakerRegistry(BreakerConfig(), rng), rng, profile="t", head=head)
    transports = {pid: MemoryTransport(h) for pid, h in handlers.items()}
    return ChainRuntime("t", chain, router, transports, EventBus("n"), state)


def transport(rt: ChainRuntime, pid: str) -> MemoryTransport:
    t = rt.pools[pid]
    assert isinstance(t, MemoryTransport)
    return t


async def call(
    rt: ChainRuntime, method: str = "eth_getBalance", params: Any = None, **kw: Any
) -> Outcome:
    return await execute(rt, method, BALANCE if params is None else params, "priority", None, **kw)


def answers(*results: Any) -> Handler:
    """Answers ``results`` in turn (the last one again once they run out)."""
    queue = list(results)

    def handler(req: MemoryRequest) -> UpstreamResponse:
        value = queue.pop(0) if len(queue) > 1 else queue[0]
        return result_answer(req, value)

    return handler


def result_of(out: Outcome) -> Any:
    assert out.body is not None, out.error
    doc = orjson.loads(out.body.replace(out.tid, b"1", 1))
    return doc["result"]


async def settled(check: Callable[[], bool]) -> None:
    """Let the loop run until ``check()`` holds (a cancelled task finishes on its next turn)."""
    for _ in range(100):
        if check():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def outcomes(rt: ChainRuntime, pid: str, method: str = "eth_getBalance") -> dict[str, int]:
    ch = rt.router.channel(pid, "http")
    assert ch is not None
    row = ch.methods.get(method)
    return {} if row is None else {k: n for k, n in row.outcomes.items() if n}


def budgeted(rt: ChainRuntime, requests: int = 100) -> ChainRuntime:
    assert rt.hedging is not None
    for _ in range(requests):
        rt.hedging.budget.note_request(time.monotonic())
    return rt


def slow_ok(seconds: float, result: str) -> Handler:
    async def handler(req: MemoryRequest) -> UpstreamResponse:
        await asyncio.sleep(seconds)  # the simulated provider's latency
        return result_answer(req, result)

    return handler
