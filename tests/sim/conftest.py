"""Fixtures of the simulator tests: a manual clock, an HTTP session, provider factories.

Waits are deadlines scaled by ``LASSO_TEST_TIME_UNIT`` (as in ``tests/conftest.py``);
nothing sleeps to wait for a condition.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.sim import Behavior, SimProvider, SyntheticChain

UNIT = float(os.environ.get("LASSO_TEST_TIME_UNIT", "1.0"))
START = 1_700_000_000.0


class ManualClock:
    """A wall clock that moves only when told to."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def chain() -> SyntheticChain:
    return SyntheticChain(1, 2.0, seed="test", start_time=START)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5 * UNIT)) as s:
        yield s


@pytest.fixture
async def make_provider(
    chain: SyntheticChain, clock: ManualClock
) -> AsyncIterator[Callable[..., Awaitable[SimProvider]]]:
    """Factory: start a provider on an ephemeral port with the given behaviour fields."""
    started: list[SimProvider] = []

    async def make(provider_id: str = "p", **fields: Any) -> SimProvider:
        provider = SimProvider(provider_id, chain, Behavior(**fields), clock=clock, seed=1)
        await provider.start()
        started.append(provider)
        return provider

    yield make
    for provider in started:
        await provider.stop()


async def eventually(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``predicate`` until truthy, failing after ``timeout`` time units."""
    deadline = time.monotonic() + timeout * UNIT
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout * UNIT:.1f}s")
        await asyncio.sleep(0.005)
    return value


@pytest.fixture(name="eventually")
def eventually_fixture() -> Callable[..., Awaitable[Any]]:
    return eventually


class Reply:
    """An HTTP answer: status, headers and the raw body (parsed when it is JSON)."""

    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


@pytest.fixture
def post(session: aiohttp.ClientSession) -> Callable[..., Awaitable[Reply]]:
    """``await post(url, payload)``: POST JSON and read the whole answer."""

    async def send(url: str, payload: Any, **kwargs: Any) -> Reply:
        async with session.post(url, json=payload, **kwargs) as response:
            return Reply(response.status, response.headers, await response.read())

    return send


@pytest.fixture
def rpc(post: Callable[..., Awaitable[Reply]]) -> Callable[..., Awaitable[Any]]:
    """``await rpc(url, method, *params)``: one call; returns the response object."""

    async def call(url: str, method: str, *params: Any) -> Any:
        reply = await post(url, {"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
        assert reply.status == 200, reply.body
        return reply.json()

    return call
