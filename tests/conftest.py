"""Shared fixtures: a real anvil node and Lasso nodes built from YAML."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from redis_support import REDIS_SERVER, RedisServer
from support import ANVIL, Anvil


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    if not Path(ANVIL).exists():
        pytest.fail("anvil is not installed: run scripts/test.sh (npm install) first")
    node = Anvil()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for this module; flushed by ``redis`` before each test."""
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is not installed: run scripts/test.sh first")
    server = RedisServer()
    yield server
    server.close()


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The module's redis-server, running and empty."""
    redis_server.start()
    redis_server.flush()
    return redis_server


@pytest.fixture
async def lasso_node() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Factory: start a Lasso node from profile YAML texts on a free port."""
    from lasso.app import LassoApp, Settings
    from lasso.profiles import parse_profile

    apps: list[Any] = []

    async def start(
        *yamls: str,
        node_id: str = "test",
        probes: bool = False,
        settings: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Any:
        """``settings``: more :class:`Settings` fields; ``kw``: LassoApp arguments."""
        profiles = {}
        for text in yamls:
            m = re.search(r"^slug:\s*(\S+)", text, re.M)
            prof = parse_profile(text, f"{m.group(1) if m else 'public'}.yml", dict(os.environ))
            profiles[prof.slug] = prof
        app = LassoApp(profiles, Settings(node_id=node_id, probes=probes, **(settings or {})), **kw)
        port = await app.start("127.0.0.1", 0)
        await app.start_background()
        app.base_url = f"http://127.0.0.1:{port}"
        apps.append(app)
        return app

    yield start
    for app in apps:
        await app.stop(drain_timeout=1.0)


@pytest.fixture
async def sim_fleet() -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Factory: start a simulated fleet (ephemeral ports) on one synthetic chain."""
    import time

    from lasso.sim.behavior import Behavior
    from lasso.sim.chain import SyntheticChain
    from lasso.sim.fleet import ProviderSpec, SimFleet

    fleets: list[Any] = []

    async def start(
        behaviors: dict[str, Behavior] | list[str],
        *,
        chain_id: int = 1,
        block_time_s: float = 1.0,
    ) -> Any:
        if isinstance(behaviors, list):
            behaviors = {pid: Behavior() for pid in behaviors}
        chain = SyntheticChain(chain_id, block_time_s, "tests", start_time=time.time())
        specs = [
            ProviderSpec(id=pid, chain_id=chain_id, behavior=b) for pid, b in behaviors.items()
        ]
        fleet = SimFleet(chain, specs, seed="tests")
        await fleet.start()
        fleets.append(fleet)
        return fleet

    yield start
    for fleet in fleets:
        await fleet.stop()
