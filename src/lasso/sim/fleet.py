"""A fleet of simulated providers over one or more synthetic chains, in one event loop.

```python
chain = SyntheticChain(1, block_time_s=2.0, start_time=time.time())
lagging = Behavior(lag_blocks=3)
fleet = SimFleet(chain, [ProviderSpec(id="a"), ProviderSpec(id="b", behavior=lagging)])
async with fleet:
    fleet.urls()            # {"a": "http://127.0.0.1:41234", "b": ...}
    await fleet["b"].update(down=True)
```

Port 0 (the default) binds an ephemeral port; the bound URLs are known after ``start``.
:func:`default_demo_specs` and :func:`demo_fleet` build the fleet that the shipped demo
profile (``config/profiles/demo.yml``) points at.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from lasso.sim.admin import make_admin_app
from lasso.sim.behavior import Behavior
from lasso.sim.chain import JSON, SyntheticChain
from lasso.sim.provider import SimProvider

__all__ = [
    "DEMO_CHAINS",
    "ProviderSpec",
    "SimFleet",
    "default_demo_chains",
    "default_demo_specs",
    "demo_fleet",
    "demo_profile_env",
]

#: ``(chain_id, block_time_ms)`` of the demo chains.
DEMO_CHAINS = ((1, 2000), (8453, 1000))


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSpec:
    """How to run one provider of a fleet.

    Attributes:
        id: unique within the fleet.
        chain_id: which of the fleet's chains it serves (None = the first one).
        port: port to bind (0 = ephemeral).
        host: address to bind.
        behavior: initial latency and faults.
    """

    id: str
    chain_id: int | None = None
    port: int = 0
    host: str = "127.0.0.1"
    behavior: Behavior = field(default_factory=Behavior)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"provider id must be a non-empty string, got {self.id!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int):
            raise ValueError(f"provider {self.id}: port must be an integer, got {self.port!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"provider {self.id}: port must be 0..65535, got {self.port}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ProviderSpec:
        """Build a spec from JSON/YAML: ``id``, ``chain_id``, ``port``, ``host``, and the
        behaviour fields either flat or under ``behavior``.

        Raises:
            ValueError: on a missing id, an unknown field or a bad value.
        """
        if not isinstance(data, Mapping) or "id" not in data:
            raise ValueError(f"a provider spec needs an 'id', got {data!r}")
        own = {k: data[k] for k in ("id", "chain_id", "port", "host") if k in data}
        flat = {k: v for k, v in data.items() if k not in own and k != "behavior"}
        nested = data.get("behavior") or {}
        if not isinstance(nested, Mapping):
            raise ValueError(f"provider {data['id']}: behavior must be a mapping")
        try:
            behavior = Behavior.from_mapping({**nested, **flat})
        except ValueError as exc:
            raise ValueError(f"provider {data['id']}: {exc}") from None
        return cls(**own, behavior=behavior)


class SimFleet:
    """Several :class:`SimProvider` sharing chains, plus an optional admin HTTP API.

    Args:
        chains: one chain or several (distinct chain ids); the first is the default.
        specs: the providers to run.
        admin_port: port of the admin API (0 = ephemeral, None = no admin server).
        admin_host: address of the admin API.
        clock: wall-clock seconds, the clock of the chains' ``start_time``.
        seed: seeds the providers' latency and fault draws.

    Raises:
        ValueError: on duplicate provider ids or chain ids, or a spec naming an unknown
            chain.
    """

    def __init__(
        self,
        chains: SyntheticChain | Iterable[SyntheticChain],
        specs: Iterable[ProviderSpec],
        *,
        admin_port: int | None = None,
        admin_host: str = "127.0.0.1",
        clock: Callable[[], float] = time.time,
        seed: object = None,
    ) -> None:
        chain_list = [chains] if isinstance(chains, SyntheticChain) else list(chains)
        if not chain_list:
            raise ValueError("a fleet needs at least one chain")
        self.chains: dict[int, SyntheticChain] = {}
        for chain in chain_list:
            if chain.chain_id in self.chains:
                raise ValueError(f"duplicate chain id {chain.chain_id}")
            self.chains[chain.chain_id] = chain
        self.default_chain_id = chain_list[0].chain_id
        self.providers: dict[str, SimProvider] = {}
        for spec in specs:
            if spec.id in self.providers:
                raise ValueError(f"duplicate provider id {spec.id!r}")
            chain_id = self.default_chain_id if spec.chain_id is None else spec.chain_id
            if chain_id not in self.chains:
                raise ValueError(f"provider {spec.id!r} names unknown chain {chain_id}")
            self.providers[spec.id] = SimProvider(
                spec.id,
                self.chains[chain_id],
                spec.behavior,
                host=spec.host,
                port=spec.port,
                clock=clock,
                seed=seed,
            )
        self.clock = clock
        self._admin_host = admin_host
        self._admin_port = admin_port
        self._admin_runner: web.AppRunner | None = None

    def __repr__(self) -> str:
        up = sum(p.listening for p in self.providers.values())
        return (
            f"<SimFleet providers={len(self.providers)} listening={up} chains={list(self.chains)}>"
        )

    def __getitem__(self, provider_id: str) -> SimProvider:
        return self.providers[provider_id]

    def __contains__(self, provider_id: object) -> bool:
        return provider_id in self.providers

    def __iter__(self) -> Iterator[SimProvider]:
        return iter(self.providers.values())

    def __len__(self) -> int:
        return len(self.providers)

    def chain(self, chain_id: int | None = None) -> SyntheticChain:
        """Return a chain by id (default: the first one).

        Raises:
            KeyError: for an unknown chain id.
        """
        return self.chains[self.default_chain_id if chain_id is None else chain_id]

    def urls(self) -> dict[str, str]:
        """Return ``{provider id: HTTP URL}`` (bound ports once started)."""
        return {pid: p.url for pid, p in self.providers.items()}

    def ws_urls(self) -> dict[str, str]:
        """Return ``{provider id: WebSocket URL}``."""
        return {pid: p.ws_url for pid, p in self.providers.items()}

    @property
    def admin_url(self) -> str | None:
        """The admin API URL once started, or None without an admin server."""
        if self._admin_runner is None or self._admin_port is None:
            return None
        return f"http://{self._admin_host}:{self._admin_port}"

    def reorg(self, depth: int, chain_id: int | None = None) -> int:
        """Reorganize the newest ``depth`` blocks of a chain now; return the first replaced.

        Raises:
            ValueError: on a bad depth. KeyError: on an unknown chain.
        """
        chain = self.chain(chain_id)
        first = chain.reorg(depth, self.clock())
        for provider in self.providers.values():
            if provider.chain is chain:
                provider.notify()
        return first

    def reset_stats(self) -> None:
        """Zero every provider's counters."""
        for provider in self.providers.values():
            provider.reset_stats()

    def describe(self) -> JSON:
        """Return a JSON-ready summary: chains and providers."""
        now = self.clock()
        return {
            "chains": [chain.describe(now) for chain in self.chains.values()],
            "providers": [p.describe() for p in self.providers.values()],
        }

    async def start(self) -> None:
        """Bind every provider (and the admin API); URLs are final when this returns.

        On a failure (e.g. a port in use) everything started so far is stopped again.
        """
        try:
            await asyncio.gather(*(p.start() for p in self.providers.values()))
            if self._admin_port is not None and self._admin_runner is None:
                runner = web.AppRunner(make_admin_app(self), access_log=None)
                await runner.setup()
                self._admin_runner = runner
                site = web.TCPSite(runner, self._admin_host, self._admin_port, reuse_address=True)
                await site.start()
                self._admin_port = site.port
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop the admin API and every provider."""
        runner, self._admin_runner = self._admin_runner, None
        if runner is not None:
            await runner.cleanup()
        await asyncio.gather(*(p.stop() for p in self.providers.values()))

    async def __aenter__(self) -> SimFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


def default_demo_chains(start_time: float, seed: object = "lasso-demo") -> list[SyntheticChain]:
    """Return the demo chains: Ethereum (id 1, 2 s blocks) and Base (id 8453, 1 s blocks)."""
    return [
        SyntheticChain(chain_id, block_ms / 1000, seed, start_time=start_time)
        for chain_id, block_ms in DEMO_CHAINS
    ]


DEMO_BASE_PORT = 4100
"""The port the demo fleet's ports count from (its admin API's, under ``lasso sim``)."""


def default_demo_specs(
    *, ephemeral: bool = False, host: str = "127.0.0.1", base_port: int = DEMO_BASE_PORT
) -> list[ProviderSpec]:
    """Return the demo providers, matching ``config/profiles/demo.yml``.

    Chain 1: ``alpha`` .. ``echo`` on ports ``base_port`` + 1..5; chain 8453:
    ``alpha-base``, ``bravo-base``, ``charlie-base`` on ``base_port`` + 11..13 (4101..4105
    and 4111..4113 by default, the ports ``demo.yml`` names). With ``ephemeral`` every
    port is 0 and the caller rewrites the profile URLs from :meth:`SimFleet.urls`
    (:func:`demo_profile_env`).

    Profiles: alpha fast and steady; bravo a little slower with a rate limit; charlie slow
    with a long tail; delta caps ``eth_getLogs`` at 500 blocks; echo fast but non-archival
    with 2 % HTTP 500s.
    """
    eth: list[tuple[str, int, Behavior]] = [
        ("alpha", 4101, Behavior(latency_ms=20, jitter=0.2)),
        (
            "bravo",
            4102,
            Behavior(latency_ms=35, jitter=0.3, rate_limit_rps=60, rate_limit_burst=120),
        ),
        ("charlie", 4103, Behavior(latency_ms=60, jitter=0.7)),
        ("delta", 4104, Behavior(latency_ms=45, jitter=0.3, max_block_range=500)),
        (
            "echo",
            4105,
            Behavior(
                latency_ms=25, jitter=0.3, archival=False, error_rate=0.02, error_mode="http500"
            ),
        ),
    ]
    base: list[tuple[str, int, Behavior]] = [
        ("alpha-base", 4111, Behavior(latency_ms=15, jitter=0.2)),
        ("bravo-base", 4112, Behavior(latency_ms=30, jitter=0.3)),
        ("charlie-base", 4113, Behavior(latency_ms=50, jitter=0.5, lag_blocks=1)),
    ]
    specs: list[ProviderSpec] = []
    for chain_id, rows in ((1, eth), (8453, base)):
        for pid, port, behavior in rows:
            specs.append(
                ProviderSpec(
                    id=pid,
                    chain_id=chain_id,
                    port=0 if ephemeral else port - DEMO_BASE_PORT + base_port,
                    host=host,
                    behavior=behavior,
                )
            )
    return specs


def demo_fleet(
    *,
    ephemeral: bool = False,
    admin_port: int | None = None,
    clock: Callable[[], float] = time.time,
    seed: object = "lasso-demo",
) -> SimFleet:
    """Return (not started) the demo fleet: :func:`default_demo_chains` and
    :func:`default_demo_specs`, with the chains starting at ``clock()``."""
    return SimFleet(
        default_demo_chains(clock(), seed),
        default_demo_specs(ephemeral=ephemeral),
        admin_port=admin_port,
        clock=clock,
        seed=seed,
    )


def demo_profile_env(fleet: SimFleet) -> dict[str, str]:
    """Return the environment that points ``config/profiles/demo.yml`` at ``fleet``.

    The demo profile reads each URL from a variable with the fixed port as its default:
    ``alpha`` from ``LASSO_SIM_ALPHA_URL``/``LASSO_SIM_ALPHA_WS``, ``alpha-base`` from
    ``LASSO_SIM_BASE_ALPHA_URL``/``LASSO_SIM_BASE_ALPHA_WS``. Pass this mapping as the
    environment when loading the profile after starting an ephemeral fleet.
    """
    env: dict[str, str] = {}
    for provider in fleet:
        name, _, network = provider.id.partition("-")
        key = "LASSO_SIM_" + (f"{network}_{name}" if network else name).upper().replace("-", "_")
        env[f"{key}_URL"] = provider.url
        env[f"{key}_WS"] = provider.ws_url
    return env
