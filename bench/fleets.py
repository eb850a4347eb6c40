"""A node in front of a simulated fleet of many chains: for dashboard layouts and shots.

:func:`layout_node` starts one :class:`~lasso.sim.fleet.SimFleet` holding up to ten
chains (Ethereum, Base, Arbitrum, ... with their real chain ids) and a Lasso node with one
profile per requested layout, ``{"c3": (3, 5)}`` being a profile ``c3`` with 3 chains of
5 providers each. Profiles share the simulated providers, so one fleet serves every
layout. The providers differ in latency and jitter; a few lag, fail now and then or are
rate limited, so every status and figure of the page has something to show.

Used by ``bench/screenshots.py`` and the dashboard layout tests
(``tests/dashboard/test_dashboard_layout.py``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

__all__ = ["CHAINS", "PROVIDER_NAMES", "layout_node"]

CHAINS: tuple[tuple[str, str, int, int], ...] = (
    ("ethereum", "Ethereum", 1, 2000),
    ("base", "Base", 8453, 1000),
    ("arbitrum", "Arbitrum One", 42161, 500),
    ("optimism", "OP Mainnet", 10, 1000),
    ("polygon", "Polygon PoS", 137, 1000),
    ("bsc", "BNB Smart Chain", 56, 1500),
    ("avalanche", "Avalanche C-Chain", 43114, 1000),
    ("gnosis", "Gnosis", 100, 2500),
    ("linea", "Linea", 59144, 1500),
    ("scroll", "Scroll", 534352, 1500),
)
"""``(key, name, chain_id, simulated block time in ms)`` of the chains, in order."""

PROVIDER_NAMES = (
    "publicnode", "drpc", "llamarpc", "alchemy", "infura", "quicknode", "ankr", "blastapi",
    "chainstack", "tenderly", "onfinality", "nodereal", "getblock", "blockpi", "allthatnode",
    "nownodes", "omniatech", "1rpc", "meowrpc", "merkle", "flashbots", "builder0x69",
    "zan", "unifra", "lavanet", "pokt", "grove", "rpcfast", "stackup", "gateway-fm",
)  # fmt: skip
"""Provider ids (shown on the page), in order; 30 of them."""


def _behavior(index: int, chain_index: int) -> Any:
    from lasso.sim.behavior import Behavior

    latency = 12.0 + ((index * 37 + chain_index * 11) % 90)
    kw: dict[str, Any] = {"latency_ms": latency, "jitter": 0.2 + (index % 4) * 0.1}
    if index % 7 == 3:
        kw["lag_blocks"] = 6  # a lagging provider
    if index % 9 == 5:
        kw.update(error_rate=0.05, error_mode="http500")
    if index % 11 == 8:
        kw.update(rate_limit_rps=2.0, rate_limit_burst=4.0)
    return Behavior(**kw)


@contextlib.asynccontextmanager
async def layout_node(
    layouts: Mapping[str, tuple[int, int]],
    *,
    node_id: str = "local",
    probe_interval_ms: int = 1000,
) -> AsyncIterator[Any]:
    """A started node with one profile per layout; yields the app (``app.base_url``,
    ``app.fleet``).

    Args:
        layouts: profile slug -> (number of chains, providers per chain), at most
            ``len(CHAINS)`` chains and ``len(PROVIDER_NAMES)`` providers.
        node_id: the node's id.
        probe_interval_ms: height probes per provider (fast, so heights show at once).

    Raises:
        ValueError: for a layout beyond those bounds.
    """
    from lasso.app import LassoApp, Settings
    from lasso.profiles import parse_profile
    from lasso.sim.chain import SyntheticChain
    from lasso.sim.fleet import ProviderSpec, SimFleet

    need: dict[int, int] = {}  # chain index -> providers needed
    for slug, (n_chains, n_providers) in layouts.items():
        if not (1 <= n_chains <= len(CHAINS) and 1 <= n_providers <= len(PROVIDER_NAMES)):
            raise ValueError(f"layout {slug}: {n_chains} chains x {n_providers} providers")
        for c in range(n_chains):
            need[c] = max(need.get(c, 0), n_providers)
    now = time.time()
    chains = [
        SyntheticChain(CHAINS[c][2], CHAINS[c][3] / 1000, "layouts", start_time=now)
        for c in sorted(need)
    ]
    specs = [
        ProviderSpec(
            id=f"{CHAINS[c][0]}-{PROVIDER_NAMES[p]}",
            chain_id=CHAINS[c][2],
            behavior=_behavior(p, c),
        )
        for c, n in sorted(need.items())
        for p in range(n)
    ]
    fleet = SimFleet(chains, specs, seed="layouts")
    await fleet.start()
    app = None
    try:
        urls = fleet.urls()
        profiles = {}
        for slug, (n_chains, n_providers) in layouts.items():
            lines = ["---", f"name: {n_chains} chains x {n_providers} providers", "---", "chains:"]
            for c in range(n_chains):
                key, name, chain_id, block_ms = CHAINS[c]
                lines += [
                    f"  {key}:",
                    f"    chain_id: {chain_id}",
                    f"    name: {name}",
                    f"    block_time_ms: {block_ms}",
                    "    monitoring:",
                    f"      probe_interval_ms: {probe_interval_ms}",
                    "    providers:",
                ]
                for p in range(n_providers):
                    pid = PROVIDER_NAMES[p]
                    lines += [
                        f"      - id: {pid}",
                        f"        url: {urls[f'{key}-{pid}']}",
                        f"        priority: {(p + 1) * 10}",
                    ]
            profile = parse_profile("\n".join(lines) + "\n", f"{slug}.yml", dict(os.environ))
            profiles[slug] = profile
        app = LassoApp(profiles, Settings(node_id=node_id, probes=True))
        port = await app.start("127.0.0.1", 0)
        await app.start_background()
        app.base_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        app.fleet = fleet  # type: ignore[attr-defined]
        yield app
    finally:
        if app is not None:
            await app.stop(drain_timeout=1.0)
        await fleet.stop()
