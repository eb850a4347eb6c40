"""Tests of the simulator's public surface: exported names and standalone imports."""

from __future__ import annotations

import subprocess
import sys

import lasso.sim

MODULES = [
    "admin",
    "behavior",
    "chain",
    "cli",
    "filters",
    "fleet",
    "node",
    "provider",
    "subscriptions",
    "traffic",
]


def test_exported_members() -> None:
    """__all__ lists exactly the public names, each importable from lasso.sim."""
    assert sorted(lasso.sim.__all__) == sorted(
        [
            "TOKEN_ADDRESSES",
            "TRANSFER_TOPIC",
            "Behavior",
            "ExecutionReverted",
            "NodeView",
            "ProviderSpec",
            "ProviderStats",
            "RpcError",
            "SampleTraffic",
            "SimFleet",
            "SimProvider",
            "SyntheticChain",
            "TokenBucket",
            "default_demo_chains",
            "default_demo_specs",
            "demo_fleet",
            "demo_profile_env",
        ]
    )
    for name in lasso.sim.__all__:
        assert getattr(lasso.sim, name) is not None


def test_imports_in_a_fresh_interpreter() -> None:
    """lasso.sim imports in a fresh interpreter; every submodule comes with it (no cycles)."""
    code = (
        "import sys, lasso.sim.cli; "
        "mods = 'admin behavior chain cli filters fleet node provider subscriptions "
        "traffic'.split(); "
        "assert all('lasso.sim.' + m in sys.modules for m in mods)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pure_modules_do_no_io() -> None:
    """chain, node, behavior and filters import no asyncio, aiohttp, socket, time or random."""
    forbidden = {"asyncio", "aiohttp", "socket", "time", "random"}
    for module in ("chain", "node", "behavior", "filters"):
        source = open(lasso.sim.__path__[0] + f"/{module}.py").read()
        imported = {
            line.split()[1].split(".")[0]
            for line in source.splitlines()
            if line.startswith(("import ", "from "))
        }
        assert not imported & forbidden, (module, imported & forbidden)
