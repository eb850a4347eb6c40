"""`lasso demo --nodes N`: regions with their own fleets, one cluster view, local breakers."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.demo_cluster import ClusterDemo, region_latency_ms

from support import ROOT, eventually, free_port

pytestmark = pytest.mark.integration

HOME = {"us-east-1": "alpha", "eu-west-1": "bravo", "ap-southeast-1": "charlie"}


def body(i: int, method: str = "eth_blockNumber") -> bytes:
    params: list[Any] = [] if method == "eth_blockNumber" else ["0x" + "00" * 19 + "aa", "latest"]
    return orjson.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params})


PROVIDERS = ("alpha", "bravo", "charlie", "delta", "echo")


async def read(session: aiohttp.ClientSession, url: str, i: int) -> dict[str, Any]:
    async with session.post(url, data=body(i)) as r:
        doc: dict[str, Any] = orjson.loads(await r.read())
        assert r.status == 200, doc
        return doc


async def measure(session: aiohttp.ClientSession, base: str, per_provider: int = 5) -> None:
    """A few reads pinned to each provider, so the node has evidence on all of them (a
    pinned read may fail: echo answers 2 % of calls with an internal error)."""

    async def provider(pid: str) -> None:
        for i in range(per_provider):
            await read(session, f"{base}/rpc/provider/{pid}/ethereum", i)

    await asyncio.gather(*(provider(pid) for pid in PROVIDERS))


async def fastest_choice(session: aiohttp.ClientSession, base: str, n: int = 20) -> str:
    """The provider /rpc/fastest/ethereum selects most often (no-cache: each call is
    routed; an answer from the response cache has no provider)."""
    picks: collections.Counter[str] = collections.Counter()
    for i in range(n):
        url = f"{base}/rpc/fastest/ethereum?include_meta=body"
        headers = {"Cache-Control": "no-cache"}
        async with session.post(url, data=body(i), headers=headers) as r:
            doc = orjson.loads(await r.read())
            picks[doc["lasso_meta"]["selected_provider"]["id"]] += 1
    return picks.most_common(1)[0][0]


def test_each_region_has_a_different_nearest_provider() -> None:
    """The latency model makes each of the first three regions' home provider fastest."""
    for region, home in HOME.items():
        mine = region_latency_ms(region, home)
        assert all(
            mine < region_latency_ms(region, other) for other in HOME.values() if other != home
        )
    assert region_latency_ms("us-east-1", "alpha-base") == region_latency_ms("us-east-1", "alpha")
    with pytest.raises(ValueError, match="--nodes"):
        ClusterDemo(0)


def free_ports(n: int) -> int:
    """A port P with P .. P+n-1 all free right now (the demo binds consecutive ports)."""
    for _ in range(50):
        port = free_port()
        socks = []
        try:
            for k in range(n):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port + k))
            return port
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no run of free ports")


@pytest.fixture
async def demo_process(tmp_path: Path) -> AsyncIterator[tuple[dict[str, str], dict[str, str]]]:
    """`python -m lasso demo --nodes 3` on free ports; yields (region URLs, admin URLs).
    Its stderr (the JSON log) is in ``tmp_path / "stderr.txt"``."""
    port = free_ports(3)
    err = tmp_path / "stderr.txt"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "LASSO_CLUSTER_INTERVAL_MS": "250"}
    env.pop("LASSO_CLUSTER_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lasso", "demo", "--nodes", "3", "--port", str(port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=err.open("wb"),
    )  # fmt: skip
    assert proc.stdout is not None
    text = ""
    try:
        while "Press Ctrl-C" not in text:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            if not line:
                pytest.fail(f"demo exited early: {text} {err.read_text()}")
            text += line.decode()
        urls = dict(re.findall(r"^  (\S+-\d)\s+(http://\S+)/rpc/ethereum", text, re.M))
        admins = dict(re.findall(r"^  (\S+-\d)\s+\S+\s+simulator (http://\S+)", text, re.M))
        yield urls, admins
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 15) == 0, err.read_text()


async def test_lasso_demo_nodes_3_runs_three_regions_in_one_cluster(
    demo_process: tuple[dict[str, str], dict[str, str]],
) -> None:
    """Three regions answer, any node lists all three, and each picks its own fastest."""
    urls, _ = demo_process
    assert list(urls) == ["us-east-1", "eu-west-1", "ap-southeast-1"]
    assert int(urls["eu-west-1"].rsplit(":", 1)[1]) == int(urls["us-east-1"].rsplit(":", 1)[1]) + 1
    async with aiohttp.ClientSession() as s:

        async def three_responding(base: str) -> bool:
            async with s.get(f"{base}/api/cluster") as r:
                doc = orjson.loads(await r.read())
            return sorted(n["node_id"] for n in doc["nodes"] if n["status"] == "responding") == [
                "ap-southeast-1",
                "eu-west-1",
                "us-east-1",
            ]

        for base in urls.values():
            await eventually(lambda base=base: three_responding(base), timeout=10)
        await asyncio.gather(*(measure(s, base) for base in urls.values()))
        choices = {r: await fastest_choice(s, base) for r, base in urls.items()}
        assert choices == HOME
        async with s.get(f"{urls['us-east-1']}/api/health") as r:
            health = orjson.loads(await r.read())
        assert health["node_id"] == "us-east-1" and health["cluster"]["status"] == "healthy"


async def test_each_node_of_the_demo_logs_with_its_own_node_id(
    demo_process: tuple[dict[str, str], dict[str, str]], tmp_path: Path
) -> None:
    """bravo down in eu-west-1 only: the warnings about it carry node_id eu-west-1."""
    _urls, admins = demo_process
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{admins['eu-west-1']}/providers/bravo", data=b'{"down": true}') as r:
            assert r.status == 200

    def bravo_lines() -> list[dict[str, Any]]:
        lines = [orjson.loads(x) for x in (tmp_path / "stderr.txt").read_bytes().splitlines()]
        return [d for d in lines if d.get("provider") == "bravo"]

    lines = await eventually(bravo_lines, timeout=15, message="a warning about bravo")
    assert {d["node_id"] for d in lines} == {"eu-west-1"}, lines


async def test_an_outage_in_one_region_trips_only_that_regions_breaker() -> None:
    """bravo down in eu-west-1's fleet opens eu-west-1's breaker and no other."""
    demo = ClusterDemo(3, port=0, traffic_rps=0, interval_s=0.25)
    await demo.start()
    try:
        await demo.fleets["eu-west-1"]["bravo"].update(down=True)
        async with aiohttp.ClientSession() as s:
            # Load-balanced reads keep succeeding in every region, eu-west-1 included.
            async def reads(base: str) -> None:
                for i in range(6):
                    doc = await read(s, f"{base}/rpc/ethereum", i)
                    assert "result" in doc, doc

            await asyncio.gather(*(reads(base) for base in demo.urls.values()))

            async def eu_bravo_open() -> bool:
                # Pinned to bravo: fails in eu-west-1 until its breaker opens.
                doc = await read(s, f"{demo.urls['eu-west-1']}/rpc/provider/bravo/ethereum", 0)
                return "error" in doc and "retry_after_ms" in (doc["error"].get("data") or {})

            await eventually(eu_bravo_open, timeout=10, message="eu-west-1 breaker opens")
            for region in ("us-east-1", "ap-southeast-1"):
                url = f"{demo.urls[region]}/rpc/provider/bravo/ethereum"
                assert "result" in await read(s, url, 1)

            async def breaker_view() -> Any:
                # The cluster view, read from another region, shows where the circuit is.
                url = f"{demo.urls['us-east-1']}/api/metrics/ethereum?scope=cluster"
                async with s.get(url) as r:
                    doc = orjson.loads(await r.read())
                bravo = next(p for p in doc["providers"] if p["id"] == "bravo")
                return bravo["circuits"]["http"]["open"] == 1 and bravo

            bravo = await eventually(breaker_view, timeout=10, message="cluster sees it")
        assert bravo["by_node"]["eu-west-1"]["circuit"]["http"] == "open"
        assert bravo["by_node"]["us-east-1"]["circuit"]["http"] == "closed"
        assert bravo["by_node"]["ap-southeast-1"]["circuit"]["http"] == "closed"
        assert bravo["circuits"]["http"] == {"closed": 2, "half_open": 0, "open": 1}
    finally:
        await demo.stop()
