"""``lasso demo --nodes N``: N Lasso nodes as regions, each with its own simulated fleet.

Every region runs its own :class:`~lasso.sim.fleet.SimFleet` of the demo providers on the
same synthetic chains (same seed and start time, so they agree on every block), but with
latencies that depend on the distance between the region and where each provider
"lives" (``alpha`` in us-east-1, ``bravo`` in eu-west-1, ``charlie`` in ap-southeast-1, …).
Each node therefore measures a different fastest provider, and an outage injected into one
region's fleet trips only that region's breakers: exactly the geo-distributed picture of
``docs/deployment.md``.

The nodes join one cluster: over NATS when ``LASSO_CLUSTER_URL`` is set, otherwise over an
in-process :class:`~lasso.cluster.transport.MemoryHub` (no NATS server needed). A little
sample traffic per region (:data:`TRAFFIC_RPS`) keeps the measurements and the cluster
view alive.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import signal
import sys
import time
from importlib import resources

from lasso.app import LassoApp, Settings
from lasso.cluster.transport import MemoryHub
from lasso.logs import node_context
from lasso.sim.fleet import SimFleet, default_demo_chains, default_demo_specs, demo_profile_env
from lasso.sim.traffic import SampleTraffic

__all__ = ["REGIONS", "TRAFFIC_RPS", "ClusterDemo", "region_latency_ms", "run_cluster_demo"]

REGIONS: dict[str, tuple[float, float]] = {
    "us-east-1": (39.0, -77.5),
    "eu-west-1": (53.3, -6.3),
    "ap-southeast-1": (1.35, 103.8),
    "us-west-2": (45.6, -121.2),
    "eu-central-1": (50.1, 8.7),
    "ap-northeast-1": (35.7, 139.7),
    "sa-east-1": (-23.5, -46.6),
    "ap-south-1": (19.1, 72.9),
}
"""Demo regions in start order, with rough (latitude, longitude) of their data centres."""

HOMES = {
    "alpha": "us-east-1",
    "bravo": "eu-west-1",
    "charlie": "ap-southeast-1",
    "delta": "us-west-2",
    "echo": "ap-northeast-1",
}
"""Where each simulated provider runs; ``alpha-base`` lives with ``alpha`` and so on."""

TRAFFIC_RPS = 4.0
"""Sample requests per second each region sends itself (half load-balanced, half fastest)."""


def _distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def region_latency_ms(region: str, provider_id: str) -> float:
    """Simulated median latency from ``region`` to a provider: 5 ms of processing plus
    about 1 ms per 100 km between the region and the provider's home."""
    home = HOMES.get(provider_id.partition("-")[0], "us-east-1")
    return round(5.0 + _distance_km(REGIONS[region], REGIONS[home]) / 100.0, 1)


class ClusterDemo:
    """N regions, each a simulated fleet plus a Lasso node, joined in one cluster.

    Args:
        nodes: how many regions (1 .. ``len(REGIONS)``).
        host: bind address of the nodes.
        port: first node's port; the others use the next ones (0: ephemeral ports).
        cluster_url: a NATS URL, or None for the in-process exchange.
        traffic_rps: sample traffic per region (0 disables it).
        interval_s: heartbeat interval of the nodes.

    Raises:
        ValueError: for an unsupported number of nodes.
    """

    def __init__(
        self,
        nodes: int,
        *,
        host: str = "127.0.0.1",
        port: int = 4000,
        cluster_url: str | None = None,
        traffic_rps: float = TRAFFIC_RPS,
        interval_s: float | None = None,
    ) -> None:
        if not 1 <= nodes <= len(REGIONS):
            raise ValueError(f"--nodes must be between 1 and {len(REGIONS)}, got {nodes}")
        self.regions = list(REGIONS)[:nodes]
        self.host = host
        self.port = port
        self.cluster_url = cluster_url
        self.traffic_rps = traffic_rps
        self.interval_s = interval_s
        self.hub = MemoryHub()
        self.fleets: dict[str, SimFleet] = {}
        self.apps: dict[str, LassoApp] = {}
        self.urls: dict[str, str] = {}
        self._traffic: list[SampleTraffic] = []

    async def start(self) -> None:
        """Start every fleet, node and traffic loop (everything started is stopped again
        if a later step fails, e.g. a port in use)."""
        from lasso.profiles import parse_profile

        text = resources.files("lasso.sim").joinpath("demo.yml").read_text()
        start_time = time.time()  # one chain for every region
        try:
            for i, region in enumerate(self.regions):
                specs = [
                    dataclasses.replace(
                        spec,
                        behavior=dataclasses.replace(
                            spec.behavior, latency_ms=region_latency_ms(region, spec.id)
                        ),
                    )
                    for spec in default_demo_specs(ephemeral=True, host=self.host)
                ]
                fleet = SimFleet(
                    default_demo_chains(start_time),
                    specs,
                    admin_port=0,
                    admin_host=self.host,
                    seed=f"lasso-demo-{region}",
                )
                await fleet.start()
                self.fleets[region] = fleet
                profile = parse_profile(text, "demo.yml", {**os.environ, **demo_profile_env(fleet)})
                settings = Settings(
                    node_id=region,
                    host=self.host,
                    port=self.port + i if self.port else 0,
                    default_profile="demo",
                    cluster_url=self.cluster_url,
                    cluster_interval_s=self.interval_s,
                    instance_id=f"demo-{i + 1}",
                )
                exchange = None if self.cluster_url else self.hub.exchange()
                # Every task and connection this node starts logs with its own node id.
                with node_context(region):
                    app = LassoApp({profile.slug: profile}, settings, cluster_exchange=exchange)
                    port = await app.start()
                    self.apps[region] = app
                    await app.start_background()
                self.urls[region] = f"http://{self.host}:{port}"
            if self.traffic_rps > 0:
                for region in self.regions:
                    # Alternate load-balanced requests, which measure every provider, and
                    # fastest ones, which then go to the region's best.
                    base = self.urls[region]
                    urls = (f"{base}/rpc/ethereum", f"{base}/rpc/fastest/ethereum")
                    traffic = SampleTraffic(urls, self.traffic_rps)
                    traffic.start()
                    self._traffic.append(traffic)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for traffic in self._traffic:
            await traffic.stop()
        self._traffic.clear()
        for app in self.apps.values():
            await app.stop(drain_timeout=2.0)
        for fleet in self.fleets.values():
            await fleet.stop()

    def banner(self) -> str:
        first = self.urls[self.regions[0]]
        width = max(len(r) for r in self.regions) + 2
        lines = [
            "",
            f"Lasso multi-region demo: {len(self.regions)} nodes, one per region, each with its "
            "own simulated providers",
            "(latency grows with the distance between the region and where a provider runs).",
            "",
        ]
        for region in self.regions:
            admin = self.fleets[region].admin_url
            lines.append(
                f"  {region:<{width}}{self.urls[region]}/rpc/ethereum    simulator {admin}"
            )
        exchange = f"NATS at {self.cluster_url}" if self.cluster_url else "embedded (in-process)"
        other = self.regions[1] if len(self.regions) > 1 else self.regions[0]
        lines += [
            "",
            f"  Dashboard     {first}/dashboard  (region selector at the top)",
            f"  Cluster view  {first}/api/cluster            (from any node; exchange: {exchange})",
            f"  Aggregate     {first}/api/metrics/ethereum?scope=cluster",
            f"  One region    {first}/api/metrics/ethereum?node={other}",
            f"  Health        {first}/api/health    Prometheus {first}/metrics",
            "",
            (
                f"Each region sends itself {self.traffic_rps:g} requests/s of sample traffic, "
                "half load-balanced (to measure every provider)\n"
                "and half through /rpc/fastest/ethereum (which then picks the region's best; "
                "--no-traffic turns it off)."
                if self.traffic_rps > 0
                else "No sample traffic (--no-traffic): send some, or use the dashboard's "
                "load generator."
            ),
            "",
            f"Take bravo down in {other} only (the other regions keep using it):",
            "",
            f"  curl -s -X POST {self.fleets[other].admin_url}/providers/bravo "
            "-d '{\"down\": true}'",
            "",
            "Press Ctrl-C to stop.",
            "",
        ]
        return "\n".join(lines)


async def run_cluster_demo(args: argparse.Namespace) -> int:
    """``lasso demo --nodes N``: run until SIGINT/SIGTERM; returns the exit status."""
    port = args.port if args.port is not None else int(os.environ.get("PORT") or 4000)
    try:
        demo = ClusterDemo(
            args.nodes,
            host=args.host,
            port=port,
            cluster_url=os.environ.get("LASSO_CLUSTER_URL") or None,
            traffic_rps=0 if getattr(args, "no_traffic", False) else TRAFFIC_RPS,
        )
    except ValueError as exc:
        print(f"lasso demo: {exc}", file=sys.stderr)
        return 2
    try:
        await demo.start()
    except OSError as exc:
        print(f"lasso demo: cannot listen on {args.host}:{port}..: {exc}", file=sys.stderr)
        return 1
    print(demo.banner(), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await demo.stop()
    return 0
