"""``lasso sim``: run the provider simulator standalone.

Examples::

    lasso sim                         # 3 providers on chain 1, admin on :4100, providers :4101..
    lasso sim --providers 5 --latency-ms 30 --jitter 0.4
    lasso sim --demo                  # the fleet config/profiles/demo.yml points at
    lasso sim --spec fleet.yml        # chains and providers from a file
    lasso sim --base-port 0           # ephemeral ports everywhere

A spec file (YAML or JSON) is either a list of providers or a mapping::

    chains:
      - {chain_id: 1, block_time_ms: 2000}   # also seed, start_height, cache_size (blocks)
    providers:
      - {id: fast, latency_ms: 10}
      - {id: flaky, error_rate: 0.2, error_mode: http500, port: 4150}
      - {id: pruned, archival: false, behavior: {lag_blocks: 2}}

Providers without a ``port`` take the next one after ``--base-port``; behaviour fields
may sit flat on the provider or under ``behavior``. Change faults while it runs through
the admin API, e.g. ``curl -XPOST localhost:4100/providers/fast -d '{"down": true}'``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import yaml

from lasso.sim.behavior import Behavior
from lasso.sim.chain import SyntheticChain
from lasso.sim.fleet import (
    DEMO_BASE_PORT,
    ProviderSpec,
    SimFleet,
    default_demo_chains,
    default_demo_specs,
    demo_profile_env,
)

__all__ = ["add_arguments", "build_fleet", "load_spec", "run"]

_NAMES = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliett kilo lima mike november "
    "oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu"
).split()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``lasso sim`` options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument(
        "--base-port",
        type=int,
        default=4100,
        help="admin API port; providers take the following ports (default 4100; 0 = ephemeral "
        "ports everywhere)",
    )
    parser.add_argument("--no-admin", action="store_true", help="do not serve the admin API")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--providers", type=int, default=3, metavar="N", help="N providers")
    which.add_argument("--spec", metavar="FILE", help="YAML/JSON file of chains and providers")
    which.add_argument(
        "--demo",
        action="store_true",
        help="the demo profile's fleet, on --base-port + 1..5 and + 11..13 (4101-4105 and "
        "4111-4113 by default, where config/profiles/demo.yml looks)",
    )
    parser.add_argument("--chain-id", type=int, default=1, help="chain id (default 1)")
    parser.add_argument("--block-time-ms", type=int, default=2000, help="default 2000")
    parser.add_argument("--seed", default="lasso-sim", help="chain and fault seed")
    parser.add_argument("--start-height", type=int, default=1_000_000, help="head at start")
    quick = parser.add_argument_group("behaviour of every provider (with --providers)")
    quick.add_argument("--latency-ms", type=float, default=20.0, help="median latency")
    quick.add_argument("--jitter", type=float, default=0.3, help="lognormal sigma")
    quick.add_argument("--error-rate", type=float, default=0.0, help="fraction failing")
    quick.add_argument("--error-mode", choices=("http500", "jsonrpc"), default="jsonrpc")
    quick.add_argument("--rate-limit-rps", type=float, default=None)
    quick.add_argument("--rate-limit-mode", choices=("http429", "jsonrpc"), default="http429")
    quick.add_argument("--lag-blocks", type=int, default=0)
    quick.add_argument("--max-block-range", type=int, default=None)
    quick.add_argument("--non-archival", action="store_true")


def load_spec(path: str | Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Read a spec file; return ``(chains, providers)`` as lists of mappings.

    Raises:
        ValueError: when the file is not a list of providers or a mapping with them.
        OSError: when it cannot be read.
    """
    text = Path(path).read_text()
    if str(path).endswith(".json"):
        data = json.loads(text)
    else:
        data = yaml.safe_load(text)
    if isinstance(data, list):
        return [], data
    if not isinstance(data, dict) or not isinstance(data.get("providers"), list):
        raise ValueError(f"{path}: expected a list of providers or a mapping with 'providers'")
    unknown = set(data) - {"chains", "providers"}
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {', '.join(sorted(unknown))}")
    chains = data.get("chains") or []
    if not isinstance(chains, list):
        raise ValueError(f"{path}: 'chains' must be a list")
    return chains, data["providers"]


def build_fleet(args: argparse.Namespace, *, clock: Callable[[], float] = time.time) -> SimFleet:
    """Build (not start) the fleet the parsed ``args`` describe.

    Raises:
        ValueError: on a bad spec file or bad values, with a readable message.
    """
    now = clock()
    ephemeral = args.base_port == 0
    admin_port = None if args.no_admin else args.base_port
    if args.demo:
        base = args.base_port if not ephemeral else DEMO_BASE_PORT
        specs = default_demo_specs(ephemeral=ephemeral, host=args.host, base_port=base)
        chains = default_demo_chains(now, args.seed)
        return SimFleet(chains, specs, admin_port=admin_port, clock=clock, seed=args.seed)

    def next_port(index: int) -> int:
        return 0 if ephemeral else args.base_port + 1 + index

    if args.spec:
        raw_chains, raw_providers = load_spec(args.spec)
        chains = [_chain_from(c, args, now) for c in raw_chains] or [_default_chain(args, now)]
        specs = []
        for index, raw in enumerate(raw_providers):
            if not isinstance(raw, dict):
                raise ValueError(f"{args.spec}: provider #{index + 1} is not a mapping")
            spec = ProviderSpec.from_mapping({"port": next_port(index), "host": args.host, **raw})
            specs.append(spec)
    else:
        if args.providers < 1:
            raise ValueError("--providers must be at least 1")
        behavior = Behavior(
            latency_ms=args.latency_ms,
            jitter=args.jitter,
            error_rate=args.error_rate,
            error_mode=args.error_mode,
            rate_limit_rps=args.rate_limit_rps,
            rate_limit_mode=args.rate_limit_mode,
            lag_blocks=args.lag_blocks,
            max_block_range=args.max_block_range,
            archival=not args.non_archival,
        )
        chains = [_default_chain(args, now)]
        specs = [
            ProviderSpec(
                id=_NAMES[i] if i < len(_NAMES) else f"p{i + 1}",
                port=next_port(i),
                host=args.host,
                behavior=behavior,
            )
            for i in range(args.providers)
        ]
    return SimFleet(chains, specs, admin_port=admin_port, clock=clock, seed=args.seed)


def _default_chain(args: argparse.Namespace, now: float) -> SyntheticChain:
    return SyntheticChain(
        args.chain_id,
        args.block_time_ms / 1000,
        args.seed,
        start_height=args.start_height,
        start_time=now,
    )


def _chain_from(raw: Any, args: argparse.Namespace, now: float) -> SyntheticChain:
    if not isinstance(raw, dict) or "chain_id" not in raw:
        raise ValueError(f"a chain needs a 'chain_id', got {raw!r}")
    unknown = set(raw) - {"chain_id", "block_time_ms", "seed", "start_height", "cache_size"}
    if unknown:
        raise ValueError(f"chain {raw['chain_id']}: unknown key(s) {', '.join(sorted(unknown))}")
    return SyntheticChain(
        int(raw["chain_id"]),
        float(raw.get("block_time_ms", args.block_time_ms)) / 1000,
        raw.get("seed", args.seed),
        start_height=int(raw.get("start_height", args.start_height)),
        start_time=now,
        cache_size=int(raw.get("cache_size", 4096)),
    )


def describe_fleet(fleet: SimFleet) -> str:
    """Return the startup banner: providers with URLs per chain, and the admin URL."""
    lines = []
    for chain in fleet.chains.values():
        lines.append(f"chain {chain.chain_id} (block time {chain.block_time_s * 1000:.0f} ms):")
        width = max(len(p.id) for p in fleet)
        for provider in fleet:
            if provider.chain is chain:
                lines.append(f"  {provider.id:<{width}}  {provider.url}  {provider.ws_url}")
    if fleet.admin_url:
        lines.append(f"admin API: {fleet.admin_url}  (GET /providers, POST /providers/ID {{...}})")
    return "\n".join(lines)


def demo_env_hint(fleet: SimFleet) -> str:
    """For a demo fleet off its default ports: the variables that point ``demo.yml`` at it."""
    lines = ["config/profiles/demo.yml looks at ports 4101-4113; point it at this fleet with:"]
    lines += [f"  export {k}={v}" for k, v in sorted(demo_profile_env(fleet).items())]
    return "\n".join(lines)


async def _serve(fleet: SimFleet, hint: bool = False) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await fleet.start()
    try:
        print(describe_fleet(fleet), flush=True)
        if hint:
            print(demo_env_hint(fleet), flush=True)
        await stop.wait()
    finally:
        await fleet.stop()


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def run(args: argparse.Namespace) -> int:
    """Run the simulator until SIGINT or SIGTERM; return the exit code."""
    try:
        fleet = build_fleet(args)
    except (OSError, ValueError) as exc:
        print(f"lasso sim: {exc}", file=sys.stderr)
        return 2
    try:
        _run_loop(_serve(fleet, hint=args.demo and args.base_port != DEMO_BASE_PORT))
    except OSError as exc:  # typically a port already in use
        print(f"lasso sim: {exc}", file=sys.stderr)
        return 1
    print("lasso sim: stopped", flush=True)
    return 0
