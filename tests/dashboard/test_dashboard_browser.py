"""The live dashboard in a real browser (Playwright driving the Debian Chromium)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from support import UNIT, eventually, fleet_chain_yaml, free_port, profile_yaml

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
LASSO = str(Path(sys.executable).with_name("lasso"))
MS = 1000 * UNIT  # Playwright timeouts are in milliseconds


@contextlib.asynccontextmanager
async def traffic(url: str, rps: float = 40.0) -> AsyncIterator[None]:
    """Send ``eth_blockNumber`` to ``url`` at about ``rps`` until the block exits, with
    ``Cache-Control: no-cache`` so that every call is routed and measured."""
    stop = asyncio.Event()

    async def run() -> None:
        body = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"})
        headers = {"Cache-Control": "no-cache"}
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.post(url, data=body, headers=headers) as resp:
                        await resp.read()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0 / rps)  # pacing, or stop

    task = asyncio.get_running_loop().create_task(run())
    try:
        yield
    finally:
        stop.set()
        await task


async def cell(page: Any, provider: str, col: str, chain: str = "ethereum") -> str:
    sel = (
        f'#provider-table tr[data-provider="{provider}"][data-chain="{chain}"] td[data-col="{col}"]'
    )
    return str(await page.inner_text(sel))


def ms_value(text: str) -> float:
    m = re.match(r"([\d.]+) ms", text)
    return float(m.group(1)) if m else float("inf")


async def test_page_shows_live_providers_without_console_errors(
    demo_node: Any, browser: Any, console: Any
) -> None:
    """The page loads clean, lists every provider and its figures move while traffic runs."""
    page = await browser.new_page(viewport={"width": 1500, "height": 1100})
    log = console(page)
    async with traffic(demo_node.base_url + "/rpc/ethereum"):
        await page.goto(demo_node.base_url + "/dashboard")
        for pid in ("alpha", "bravo", "charlie", "delta", "echo"):
            await page.wait_for_selector(f'#provider-table tr[data-provider="{pid}"]')
            await page.wait_for_selector(f'svg.topology g.prov[data-provider="{pid}"]')
        await page.wait_for_function(
            "() => Number(document.querySelector('#provider-table tr[data-provider=alpha] "
            "td[data-col=calls]').textContent.replace(/,/g, '')) > 0",
            timeout=10 * MS,
        )
        first = await cell(page, "alpha", "calls")
        await page.wait_for_function(
            "(v) => document.querySelector('#provider-table tr[data-provider=alpha] "
            "td[data-col=calls]').textContent !== v",
            arg=first,
            timeout=5 * MS,
        )
        assert ms_value(await cell(page, "alpha", "p50")) < 1000
        await page.wait_for_selector("#feed .ev.decision")
        await page.wait_for_selector("#conn.conn-live")
        assert await page.get_attribute(
            '#provider-table tr[data-provider="alpha"]', "data-status"
        ) in ("healthy", "degraded", "lagging")
        await page.click("button[data-tab=methods]")
        await page.wait_for_selector('.heat[data-chain="ethereum"] tr[data-provider="alpha"]')
        await page.click("button[data-tab=cluster]")
        await page.wait_for_selector("#node-table tr[data-node=local][data-status=responding]")
    assert log.errors == []
    await page.close()


async def test_provider_forced_down_turns_open_and_red(
    demo_node: Any, browser: Any, console: Any
) -> None:
    """A provider taken down in the simulator shows an open circuit, in red, within seconds."""
    page = await browser.new_page(viewport={"width": 1500, "height": 1100})
    log = console(page)
    async with traffic(demo_node.base_url + "/rpc/priority/ethereum"):
        await page.goto(demo_node.base_url + "/dashboard")
        row = '#provider-table tr[data-provider="alpha"]'
        await page.wait_for_selector(row + "[data-status=healthy]", timeout=10 * MS)
        await demo_node.fleet["alpha"].update(down=True)
        await page.wait_for_selector(row + "[data-status=circuit_open]", timeout=5 * MS)
        await page.wait_for_selector(
            'svg.topology g.prov[data-provider="alpha"][data-status=circuit_open]'
        )
        color = await page.eval_on_selector(
            row + " .dot", "el => getComputedStyle(el).backgroundColor"
        )
        assert color == "rgb(239, 68, 68)"  # --open
        assert "open" in await page.inner_text(row + " td:nth-child(13)")
        await page.wait_for_selector('#feed .ev.circuit.to-open[data-provider="alpha"]')
        # Requests keep succeeding on the others meanwhile.
        await page.wait_for_function(
            "() => Number(document.querySelector('#provider-table tr[data-provider=bravo] "
            "td[data-col=calls_s]').textContent) > 0",
            timeout=10 * MS,
        )
    assert log.errors == []
    await page.close()


async def test_load_generator_drives_the_real_demo(browser: Any, console: Any) -> None:
    """Against `lasso demo`: the page's load generator sends real JSON-RPC through the node."""
    port = free_port()
    env = {**os.environ, "LASSO_LOG_LEVEL": "warning"}
    proc = subprocess.Popen(
        [LASSO, "demo", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        async def ready() -> bool:
            try:
                async with aiohttp.ClientSession() as s, s.get(base + "/api/health") as r:
                    return r.status == 200
            except aiohttp.ClientError:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                return False

        await eventually(ready, timeout=20, message="lasso demo did not start")
        page = await browser.new_page(viewport={"width": 1500, "height": 1100})
        log = console(page)
        await page.goto(base + "/dashboard")
        await page.wait_for_selector('#lg-chain option[value="ethereum"]', state="attached")
        await page.select_option("#lg-strategy", "load-balanced")
        await page.select_option("#lg-method", "mix")
        await page.fill("#lg-rate", "40")
        await page.fill("#lg-duration", "3")
        await page.click("#lg-start")
        await page.wait_for_function(
            "() => Number(document.querySelector('#lg-ok').textContent) >= 20", timeout=10 * MS
        )
        await page.wait_for_function(
            "() => document.querySelector('#lg-start').textContent === 'Start'", timeout=10 * MS
        )
        assert await page.inner_text("#lg-err") == "0"
        assert (await page.inner_text("#lg-p50")).endswith("ms")
        assert (await page.inner_text("#lg-p95")).endswith("ms")
        # The node saw them: every provider of the chain got some (load-balanced).
        for pid in ("alpha", "bravo", "charlie"):
            await page.wait_for_function(
                f"() => Number(document.querySelector('#provider-table tr[data-provider={pid}] "
                "td[data-col=calls]').textContent.replace(/,/g, '')) > 0",
                timeout=5 * MS,
            )
        await page.wait_for_selector('#feed .ev.decision .strat:text("load-balanced")')
        assert log.errors == []
        await page.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hung demo
            proc.kill()
            proc.wait()


async def test_profile_selector_sorting_and_endpoints(
    sim_fleet: Any, lasso_node: Any, browser: Any, console: Any
) -> None:
    """The profile selector switches profiles live; headers sort; endpoint URLs are shown."""
    fleet = await sim_fleet(["p-one", "p-two"])
    app = await lasso_node(
        profile_yaml(fleet_chain_yaml(fleet)),
        profile_yaml(fleet_chain_yaml(fleet, key="team-chain", chain_id=1), slug="team"),
    )
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    log = console(page)
    await page.goto(app.base_url + "/dashboard")
    await page.wait_for_selector('.chain-card[data-chain="ethereum"]')
    http = await page.inner_text('.chain-card[data-chain="ethereum"] .endpoint code')
    assert http == f"{app.base_url}/rpc/profile/public/ethereum"
    await page.select_option("#profile-select", "team")
    await page.wait_for_selector('.chain-card[data-chain="team-chain"]')
    assert page.url.endswith("/dashboard/team")
    assert await page.query_selector('.chain-card[data-chain="ethereum"]') is None
    ids = await page.eval_on_selector_all(
        "#provider-table tbody tr", "rows => rows.map(r => r.dataset.provider)"
    )
    await page.click('#provider-table th[data-key="id"]')  # already by chain: now by id
    await page.click('#provider-table th[data-key="id"]')  # and descending
    desc = await page.eval_on_selector_all(
        "#provider-table tbody tr", "rows => rows.map(r => r.dataset.provider)"
    )
    assert desc == sorted(ids, reverse=True)
    await page.goto(app.base_url + "/dashboard/team")
    await page.wait_for_selector('.chain-card[data-chain="team-chain"]')
    assert await page.eval_on_selector("#profile-select", "el => el.value") == "team"
    assert log.errors == []
    await page.close()


async def test_region_selector_drills_into_one_region(browser: Any, console: Any) -> None:
    """In a three-region demo the selector switches the data between regions."""
    from lasso.demo_cluster import ClusterDemo

    demo = ClusterDemo(3, port=0, traffic_rps=0, interval_s=0.5)
    await demo.start()
    try:
        home = demo.urls["us-east-1"]
        page = await browser.new_page(viewport={"width": 1500, "height": 1100})
        log = console(page)
        async with contextlib.AsyncExitStack() as stack:
            for url in demo.urls.values():  # every provider measured in every region
                await stack.enter_async_context(traffic(url + "/rpc/round-robin/ethereum", 50))
            await page.goto(home + "/dashboard")
            await page.wait_for_selector("#region-field:not([hidden])")
            await page.wait_for_function(
                "() => document.querySelectorAll('#region-select option').length === 4",
                timeout=10 * MS,
            )
            assert await page.eval_on_selector("#region-select", "el => el.value") == ""

            async def faster(region: str, winner: str, loser: str) -> None:
                await page.select_option("#region-select", region)
                await page.wait_for_function(
                    "(r) => document.querySelector('#foot-left').textContent.includes('node ' + r)",
                    arg=region,
                )

                async def ordered() -> bool:
                    return ms_value(await cell(page, winner, "p50")) < ms_value(
                        await cell(page, loser, "p50")
                    )

                await eventually(ordered, timeout=10, message=f"{winner} faster in {region}")

            await faster("eu-west-1", "bravo", "alpha")
            assert "node=eu-west-1" in page.url
            await faster("us-east-1", "alpha", "bravo")
            await faster("ap-southeast-1", "charlie", "bravo")
            await page.click("button[data-tab=cluster]")
            table = '.region-table[data-chain="ethereum"]'
            await page.wait_for_selector(table)
            await page.wait_for_function(
                "() => document.querySelectorAll('#node-table tr[data-status=responding]')"
                ".length === 3"
            )
            fastest = await page.inner_text(table + " tbody tr:last-child")
            assert re.search(r"alpha.*bravo|bravo.*alpha", fastest.replace("\n", " ")), fastest
            # bravo down in eu-west-1 only: that region's router opens its circuit, and the
            # cluster view follows the region's status, not its last latency figures.
            await demo.fleets["eu-west-1"]["bravo"].update(down=True)
            eu_bravo = f'{table} tr[data-provider="bravo"] td[data-node="eu-west-1"]'
            await page.wait_for_selector(eu_bravo + "[data-status=circuit_open]", timeout=15 * MS)
            assert "circuit open" in await page.inner_text(eu_bravo)
            assert "fastest" not in (await page.get_attribute(eu_bravo, "class") or "")
            us_bravo = f'{table} tr[data-provider="bravo"] td[data-node="us-east-1"]'
            assert await page.get_attribute(us_bravo, "data-status") != "circuit_open"
        assert log.errors == []
        await page.close()
    finally:
        await demo.stop()
