"""``lasso demo``: a simulated provider fleet and a Lasso node in front of it.

A light background client (:class:`~lasso.sim.traffic.SampleTraffic`, :data:`TRAFFIC_RPS`
mixed reads per second over load-balanced and fastest routes of both chains) keeps the
dashboard alive from the first second; ``--no-traffic`` turns it off.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from importlib import resources

__all__ = ["TRAFFIC_RPS", "run_demo"]

TRAFFIC_RPS = 5.0
"""Requests per second of the demo's background client."""


def run_demo(args: argparse.Namespace) -> int:
    from lasso.app import install_uvloop
    from lasso.logs import LEVELS, setup_logging

    if args.log_level.upper() not in LEVELS:
        print(f"lasso: unknown log level {args.log_level!r}", file=sys.stderr)
        return 2
    setup_logging("local", args.log_level)
    install_uvloop()
    try:
        return asyncio.run(_demo(args))
    except KeyboardInterrupt:  # pragma: no cover - signal handlers normally catch it
        return 0


async def _demo(args: argparse.Namespace) -> int:
    if getattr(args, "nodes", 1) != 1:  # several regions: lasso.demo_cluster
        from lasso.demo_cluster import run_cluster_demo

        return await run_cluster_demo(args)
    from lasso.app import LassoApp, Settings
    from lasso.profiles import ConfigError, parse_profile
    from lasso.sim.fleet import demo_fleet, demo_profile_env
    from lasso.sim.traffic import SampleTraffic

    fleet = demo_fleet(ephemeral=True, admin_port=0)
    await fleet.start()
    env = dict(os.environ)
    env.update(demo_profile_env(fleet))
    text = resources.files("lasso.sim").joinpath("demo.yml").read_text()
    try:
        profile = parse_profile(text, "demo.yml", env)
    except ConfigError as exc:  # pragma: no cover - the shipped file is tested
        print(exc, file=sys.stderr)
        await fleet.stop()
        return 1
    port = args.port if args.port is not None else int(os.environ.get("PORT") or 4000)
    settings = Settings(node_id="local", host=args.host, port=port, default_profile="demo")
    app = LassoApp({profile.slug: profile}, settings)
    try:
        port = await app.start()
    except OSError as exc:
        print(f"lasso demo: cannot listen on {args.host}:{port}: {exc}", file=sys.stderr)
        await fleet.stop()
        return 1
    await app.start_background()
    base = f"http://{args.host}:{port}"
    admin = fleet.admin_url
    traffic: SampleTraffic | None = None
    if not getattr(args, "no_traffic", False):
        routes = ("ethereum", "fastest/ethereum", "base", "fastest/base")
        traffic = SampleTraffic([f"{base}/rpc/{r}" for r in routes], TRAFFIC_RPS)
        traffic.start()
        sample = (
            f"A background client sends {TRAFFIC_RPS:g} reads/s so the dashboard is live "
            "(--no-traffic turns it off)."
        )
    else:
        sample = "No background traffic (--no-traffic): use the dashboard's load generator."
    print(
        f"""
Lasso demo is running: 5 simulated Ethereum providers (alpha..echo) and 3 for Base.

  Dashboard     {base}/dashboard
  JSON-RPC      {base}/rpc/ethereum          (also /rpc/fastest/ethereum, /rpc/base, ...)
  Health        {base}/api/health
  Providers     {base}/api/chains
  Metrics       {base}/api/metrics/ethereum   and Prometheus at {base}/metrics
  Simulator     {admin}/providers             (change any provider's behaviour live)

Try it:

  curl -s {base}/rpc/fastest/ethereum -H 'content-type: application/json' \\
    -d '{{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber","params":[]}}'

Take a provider down and watch requests keep succeeding:

  curl -s -X POST {admin}/providers/alpha -d '{{"down": true}}'

{sample}
Press Ctrl-C to stop.
""",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    if traffic is not None:
        await traffic.stop()
    await app.stop(drain_timeout=5.0)
    await fleet.stop()
    return 0
