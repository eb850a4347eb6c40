"""End to end: filters of viem 2.x and ethers 6.x (npm, run by Node) through Lasso in front
of two anvils (CONTRACT §8). Their polls reach the node that made the filter whatever the
route's strategy: no "filter not found", every event delivered."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support import ROOT, Anvil, profile_yaml

pytestmark = pytest.mark.e2e

JS = Path(__file__).parent / "js"
NODE = shutil.which("node") or "/usr/bin/node"


@pytest.fixture
def anvils() -> Iterator[list[Anvil]]:
    """Two fresh anvils (automine): the same transactions give them the same contracts."""
    pair = [Anvil(), Anvil()]
    yield pair
    for node in pair:
        node.stop()


@pytest.mark.parametrize("strategy", ["load-balanced", "round-robin"])
async def test_viem_and_ethers_filters_through_two_anvils(
    anvils: list[Anvil], lasso_node: Any, strategy: str
) -> None:
    """viem createBlockFilter polls, viem HTTP watchContractEvent and ethers contract.on:
    no 'filter not found', every event delivered."""
    for package in ("viem", "ethers"):
        if not (ROOT / "node_modules" / package / "package.json").exists():
            pytest.fail(f"npm package {package} is missing: run scripts/test.sh first")
    lines = ["  anvil:", "    chain_id: 31337", "    providers:"]
    for i, node in enumerate(anvils):
        lines += [f"      - id: anvil{i}", f"        url: {node.url}"]
    app = await lasso_node(profile_yaml("\n".join(lines) + "\n"))
    url = f"{app.base_url}/rpc/{strategy}/anvil"
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(JS / "filters_check.mjs"),
        url,
        anvils[0].url,
        anvils[1].url,
        "10",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    report = json.loads(out.splitlines()[-1])
    block = report["block_filter"]
    assert block["polls"] == 10 and block["errors"] == 0, report
    assert block["hashes"] >= 10, report
    for client in ("viem_watch", "ethers_on"):
        assert report[client] == {"errors": 0, "not_found": 0, "delivered": 10}, report
    assert report["polls"]["viem"] >= 20 and report["polls"]["ethers"] >= 10, report
    rt = app.runtime.profile(None).resolve("anvil")
    assert rt.consistency.counts.get(("filter_not_found", ""), 0) == 0
