"""A real Prometheus scrapes a node; PromQL returns per-provider latency quantiles."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.sim.behavior import Behavior

from support import eventually, fleet_chain_yaml, free_port, profile_yaml

pytestmark = pytest.mark.integration

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
QUANTILE = (
    "histogram_quantile(0.5, sum by (le, provider) "
    "(rate(lasso_upstream_request_duration_seconds_bucket[10s])))"
)


class Prometheus:
    """A real Prometheus on loopback scraping ``target`` every second."""

    def __init__(self, target: str, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: lasso\n    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def ready(self, session: aiohttp.ClientSession) -> bool:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{self.url}/-/ready") as r:
                return r.status == 200
        return False

    async def query(self, session: aiohttp.ClientSession, promql: str) -> list[Any]:
        async with session.get(f"{self.url}/api/v1/query", params={"query": promql}) as r:
            doc = orjson.loads(await r.read())
        assert doc["status"] == "success", doc
        result: list[Any] = doc["data"]["result"]
        return result

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
async def node(sim_fleet: Any, lasso_node: Any) -> AsyncIterator[Any]:
    """A node in front of a fast and a slow provider, with load-balanced traffic running."""
    fleet = await sim_fleet({"fast": Behavior(latency_ms=5), "slow": Behavior(latency_ms=60)})
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet)), node_id="eu-west-1")

    async def traffic() -> None:
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
        async with aiohttp.ClientSession() as s:
            while True:
                async with s.post(f"{app.base_url}/rpc/load-balanced/ethereum", data=body) as r:
                    await r.read()
                await asyncio.sleep(0.01)  # pacing, not a wait for a condition

    task = asyncio.get_running_loop().create_task(traffic())
    yield app
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_prometheus_scrapes_a_node_and_computes_provider_quantiles(
    node: Any, tmp_path: Path
) -> None:
    """PromQL histogram_quantile over the node's buckets gives a p50 per provider."""
    if not Path(PROMETHEUS).exists():
        pytest.fail("prometheus is not installed: run scripts/test.sh first")
    prom = Prometheus(node.base_url.removeprefix("http://"), tmp_path)
    try:
        async with aiohttp.ClientSession() as s:
            await eventually(lambda: prom.ready(s), timeout=30, message="prometheus ready")

            async def quantiles() -> dict[str, float] | None:
                out = {
                    r["metric"].get("provider"): float(r["value"][1])
                    for r in await prom.query(s, QUANTILE)
                }
                if set(out) == {"fast", "slow"} and all(v == v for v in out.values()):
                    return out
                return None

            p50 = await eventually(quantiles, timeout=30, interval=0.25, message="p50")
            assert 0 < p50["fast"] <= 0.025 < 0.05 <= p50["slow"] <= 0.1, p50
            # Every series carries node_id; the target is up.
            up = await prom.query(s, 'up{job="lasso"}')
            assert up and up[0]["value"][1] == "1"
            regions = await prom.query(s, "count by (node_id) (lasso_circuit_breaker_state)")
            assert [r["metric"]["node_id"] for r in regions] == ["eu-west-1"]
    finally:
        prom.stop()
