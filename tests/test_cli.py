"""The ``lasso`` command as a user runs it: real processes, signals and exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from support import ROOT, eventually, fleet_chain_yaml, free_port, profile_yaml

pytestmark = pytest.mark.integration

LASSO = [sys.executable, "-m", "lasso"]
BN = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})


def test_check_config_accepts_the_shipped_profiles() -> None:
    """The repository's profiles validate."""
    out = subprocess.run(
        [*LASSO, "check-config", "--profiles", str(ROOT / "config/profiles")],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert "public" in out.stdout and "demo" in out.stdout


def test_check_config_reports_file_line_and_key(tmp_path: Path) -> None:
    """A bad profile gives exit 1 and one line per problem with file, line and key path."""
    (tmp_path / "public.yml").write_text(
        "---\nname: X\nslug: public\n---\nchains:\n  ethereum:\n    chain_id: 1\n    providers:\n"
        "      - id: a\n        url: http://127.0.0.1:1\n        priorty: 3\n"
    )
    out = subprocess.run(
        [*LASSO, "check-config", "--profiles", str(tmp_path)], capture_output=True, text=True
    )
    assert out.returncode == 1
    line = out.stderr.splitlines()[0]
    assert "public.yml:11" in line and "chains.ethereum.providers[0].priorty" in line
    assert "did you mean 'priority'" in line


async def _post(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.post(url, data=BN) as r:
        return r.status, await r.json(content_type=None)


async def _healthy(url: str) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(url + "/api/health") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


async def test_demo_serves_and_stops_on_sigterm() -> None:
    """`lasso demo` answers JSON-RPC from its simulated fleet and exits 0 on SIGTERM."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *LASSO,
        "demo",
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: _healthy(base), timeout=20, message="demo did not become healthy")
        status, doc = await _post(base + "/rpc/ethereum")
        assert status == 200 and int(doc["result"], 16) > 0
        status, doc = await _post(base + "/rpc/fastest/base")
        assert status == 200 and "result" in doc
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, _ = await asyncio.wait_for(proc.communicate(), 15)
    assert proc.returncode == 0
    assert b"/rpc/ethereum" in stdout


async def test_serve_reloads_on_sighup_and_keeps_last_good(tmp_path: Path, sim_fleet: Any) -> None:
    """SIGHUP swaps in a valid new profile set and rejects a broken one without dropping service."""
    fleet = await sim_fleet(["a", "b"])
    profile = tmp_path / "public.yml"
    profile.write_text(profile_yaml(fleet_chain_yaml(fleet)))
    port = free_port()
    env = {**os.environ, "PORT": str(port), "LASSO_NODE_ID": "cli-test"}
    proc = await asyncio.create_subprocess_exec(
        *LASSO, "serve", "--profiles", str(tmp_path), env=env, stderr=asyncio.subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: _healthy(base), timeout=20)
        assert (await _post(base + "/rpc/ethereum"))[0] == 200
        assert (await _post(base + "/rpc/other"))[0] == 400

        profile.write_text(
            profile_yaml(fleet_chain_yaml(fleet) + fleet_chain_yaml(fleet, key="other", chain_id=5))
        )
        proc.send_signal(signal.SIGHUP)
        await eventually(
            lambda: _status_is(base + "/rpc/other", 200), timeout=10, message="reload not applied"
        )

        profile.write_text("---\nname: broken\n---\nchains: [oops\n")
        proc.send_signal(signal.SIGHUP)
        await eventually(lambda: _stderr_has(proc, b"config.reload_rejected"), timeout=10)
        assert (await _post(base + "/rpc/other"))[0] == 200  # last good set still serving
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 15)
    assert proc.returncode == 0


async def _status_is(url: str, status: int) -> bool:
    return (await _post(url))[0] == status


_seen: dict[int, bytes] = {}


async def _stderr_has(proc: Any, needle: bytes) -> bool:
    buf = _seen.setdefault(proc.pid, b"")
    try:
        chunk = await asyncio.wait_for(proc.stderr.read(65536), 0.2)
    except TimeoutError:
        chunk = b""
    buf += chunk
    _seen[proc.pid] = buf
    return needle in buf


async def test_sigterm_drains_in_flight_requests(tmp_path: Path, sim_fleet: Any) -> None:
    """A request in flight when SIGTERM arrives still gets its answer; then the process exits 0."""
    from lasso.sim.behavior import Behavior

    fleet = await sim_fleet({"slow": Behavior(latency_ms=800)})
    (tmp_path / "public.yml").write_text(profile_yaml(fleet_chain_yaml(fleet)))
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *LASSO,
        "serve",
        "--profiles",
        str(tmp_path),
        "--port",
        str(port),
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    await eventually(lambda: _healthy(base), timeout=20)
    body = orjson.dumps(
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_getBalance",
            "params": ["0x" + "00" * 20, "latest"],
        }
    )

    async def call() -> Any:
        async with aiohttp.ClientSession() as s, s.post(base + "/rpc/ethereum", data=body) as r:
            return await r.json()

    task = asyncio.create_task(call())
    await eventually(lambda: fleet["slow"].stats.methods["eth_getBalance"] >= 1, timeout=5)
    proc.send_signal(signal.SIGTERM)
    doc = await asyncio.wait_for(task, 10)
    assert "result" in doc
    assert await asyncio.wait_for(proc.wait(), 15) == 0


def test_serve_refuses_an_unusable_redis_url() -> None:
    """LASSO_REDIS_URL that is not a Redis URL: exit 2 naming the variable, before serving."""
    env = {**os.environ, "LASSO_REDIS_URL": "http://127.0.0.1:6379"}
    out = subprocess.run(
        [*LASSO, "serve", "--profiles", str(ROOT / "config/profiles"), "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert out.returncode == 2 and "LASSO_REDIS_URL" in out.stderr
