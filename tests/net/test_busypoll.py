"""Opt-in busy polling: the loop keeps polling for a window after I/O, then sleeps again."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiohttp
import orjson
import pytest

from lasso.app import LassoApp, Settings
from lasso.net.busypoll import MAX_BUSY_POLL_US, BusyPoller
from lasso.profiles import parse_profile
from lasso.sim.behavior import Behavior

from support import eventually, fleet_chain_yaml, profile_yaml

BLOCK_NUMBER = {"jsonrpc": "2.0", "id": 7, "method": "eth_blockNumber", "params": []}


async def test_activity_polls_for_the_window_then_stops() -> None:
    loop = asyncio.get_running_loop()
    poller = BusyPoller(loop, 0.005)
    assert not poller.running and poller.polls == 0
    poller.activity()
    assert poller.running
    await eventually(lambda: poller.polls > 10, message="the loop did not poll")
    await eventually(lambda: not poller.running, message="polling never stopped")
    stopped_at = poller.polls
    # Asleep: nothing reschedules it until the next activity.
    fut = loop.create_future()
    loop.call_later(0.05, fut.set_result, None)
    await fut
    assert poller.polls == stopped_at
    poller.activity()
    assert poller.running


@pytest.mark.parametrize("window_s", [0.0, -1.0, (MAX_BUSY_POLL_US + 1) / 1e6])
async def test_rejects_windows_out_of_range(window_s: float) -> None:
    with pytest.raises(ValueError, match="busy-poll window"):
        BusyPoller(asyncio.get_running_loop(), window_s)


async def test_server_polls_after_a_request_and_sleeps_when_idle(sim_fleet: Any) -> None:
    fleet = await sim_fleet({"alpha": Behavior()})
    text = profile_yaml(fleet_chain_yaml(fleet))
    profiles = {"public": parse_profile(text, "public.yml", {})}
    app = LassoApp(profiles, Settings(node_id="t", probes=False, busy_poll_us=2000))
    port = await app.start("127.0.0.1", 0)
    try:
        poller = app.server.poller
        assert poller is not None and poller.window_s == pytest.approx(0.002)
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"http://127.0.0.1:{port}/rpc/ethereum", data=orjson.dumps(BLOCK_NUMBER)) as r,
        ):
            doc = orjson.loads(await r.read())
        assert r.status == 200 and doc["id"] == 7 and doc["result"].startswith("0x")
        assert poller.polls > 0
        await eventually(lambda: not poller.running, message="still polling while idle")
    finally:
        await app.stop(drain_timeout=1.0)


async def test_off_by_default(lasso_node: Any, sim_fleet: Any) -> None:
    fleet = await sim_fleet({"alpha": Behavior()})
    app = await lasso_node(profile_yaml(fleet_chain_yaml(fleet)))
    assert app.server.poller is None


@pytest.mark.parametrize("value", ["-1", str(MAX_BUSY_POLL_US + 1)])
def test_cli_rejects_an_out_of_range_window(value: str, tmp_path: Any) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "lasso", "serve", "--profiles", str(tmp_path)]
        + ["--busy-poll-us", value],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "--busy-poll-us must be between 0 and" in out.stderr
