"""End to end: viem 2.x and ethers 6.x (npm, run by Node) with their default batching and
parallelism, through Lasso in front of a real anvil, over HTTP and WebSocket.

Each Node script (``tests/e2e/js/``) makes the same read calls through Lasso, all at once,
and straight to anvil, one by one, and reports errors, mismatches and the largest batch
the client sent; every answer must equal anvil's.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from support import ROOT, Anvil, profile_yaml

pytestmark = pytest.mark.e2e

JS = Path(__file__).parent / "js"
NODE = shutil.which("node") or "/usr/bin/node"


@pytest.fixture
async def lasso(anvil: Anvil, lasso_node: Any) -> tuple[str, str]:
    for package in ("viem", "ethers"):
        if not (ROOT / "node_modules" / package / "package.json").exists():
            pytest.fail(f"npm package {package} is missing: run scripts/test.sh first")
    chains = f"""  anvil:
    chain_id: 31337
    providers:
      - id: anvil
        url: {anvil.url}
"""
    app = await lasso_node(profile_yaml(chains))
    return app.base_url + "/rpc/anvil", app.base_url.replace("http://", "ws://") + "/ws/rpc/anvil"


async def run_check(script: str, lasso: tuple[str, str], anvil: Anvil, n: int) -> list[Any]:
    proc = await asyncio.create_subprocess_exec(
        NODE,
        str(JS / script),
        *lasso,
        anvil.url,
        str(n),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    reports: list[Any] = json.loads(out.splitlines()[-1])  # libraries may log lines before
    return reports


def assert_all_equal(report: dict[str, Any], calls: int) -> None:
    assert report["calls"] == calls
    assert report["error_count"] == 0, report
    assert report["mismatch_count"] == 0, report


async def test_viem_http_batching_and_websocket_parallel_calls(
    anvil: Anvil, lasso: tuple[str, str]
) -> None:
    """viem `http(url, {batch: true})` sends the calls of one tick as one batch (default
    batchSize 1000: here over a hundred items, twice the old cap of 50); `webSocket()`
    keeps 100 calls in flight on one socket; all equal anvil's."""
    http, ws = await run_check("viem_check.mjs", lasso, anvil, 300)
    assert_all_equal(http, 300)
    assert http["max_batch"] > 100 and http["http_statuses"] == [200]
    assert_all_equal(ws, 100)


async def test_ethers_default_batching_and_websocket_parallel_calls(
    anvil: Anvil, lasso: tuple[str, str]
) -> None:
    """ethers' JsonRpcProvider batches up to 100 calls (its default); WebSocketProvider
    keeps 100 calls in flight on one socket; all equal anvil's."""
    http, ws = await run_check("ethers_check.mjs", lasso, anvil, 250)
    assert_all_equal(http, 250)
    assert http["max_batch"] > 50
    assert_all_equal(ws, 100)
