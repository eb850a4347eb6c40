"""Screenshots of the dashboard for the docs (docs/img/*.png), with the Debian Chromium.

Runs everything in-process: the one-node demo (simulated fleet plus a node) with some
traffic and a few faults switched on so that every status shows, then the three-region
cluster demo, then the layouts: 1, 3 and 8 chains (``bench/fleets.py``) at 1280, 1440 and
1920 px (``dashboard-<width>-<n>chains.png``). Playwright drives ``/usr/bin/chromium``
headless (no browser download).

    .venv/bin/python -m bench.screenshots            # writes docs/img/dashboard-*.png
    .venv/bin/python -m bench.screenshots --out /tmp/shots --warm 20 --only layouts
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import sys
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
CALLS: tuple[tuple[str, list[Any]], ...] = (
    ("eth_blockNumber", []),
    ("eth_getBlockByNumber", ["latest", False]),
    ("eth_getBalance", ["0x00000000000000000000000000000000000000a1", "latest"]),
    ("eth_gasPrice", []),
    ("eth_getLogs", [{"fromBlock": "latest", "toBlock": "latest"}]),
    (
        "eth_call",
        [
            {
                "to": "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
                "data": "0x70a08231" + "00" * 12 + "00" * 19 + "a1",
            },
            "latest",
        ],
    ),
)


@contextlib.asynccontextmanager
async def traffic(urls: Sequence[str], rps: float) -> AsyncIterator[None]:
    """Mixed JSON-RPC calls spread over ``urls`` at about ``rps`` in total."""
    stop = asyncio.Event()

    async def run() -> None:
        async with aiohttp.ClientSession() as session:
            for i in itertools.count():
                if stop.is_set():
                    return
                method, params = CALLS[i % len(CALLS)]
                body = orjson.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
                url = urls[i % len(urls)]
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.post(url, data=body) as resp:
                        await resp.read()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 4.0 / rps)  # pacing, or stop

    tasks = [asyncio.get_running_loop().create_task(run()) for _ in range(4)]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def open_page(browser: Any, url: str) -> Any:
    """A page watching ``url`` from now on (its latency charts fill while traffic runs)."""
    page = await browser.new_page(viewport={"width": 1600, "height": 1080})
    await page.goto(url)
    await page.wait_for_selector("#conn.conn-live")
    return page


async def shoot(page: Any, path: Path, tab: str | None = None) -> None:
    if tab:
        await page.click(f"button[data-tab={tab}]")
    await page.wait_for_timeout(1500)  # let the tab render a snapshot or two
    await page.screenshot(path=str(path), full_page=False)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


async def single_node(browser: Any, out: Path, warm: float) -> None:
    from lasso.app import LassoApp, Settings
    from lasso.profiles import parse_profile
    from lasso.sim.fleet import demo_fleet, demo_profile_env

    fleet = demo_fleet(ephemeral=True)
    await fleet.start()
    text = resources.files("lasso.sim").joinpath("demo.yml").read_text()
    profile = parse_profile(text, "demo.yml", {**os.environ, **demo_profile_env(fleet)})
    app = LassoApp({profile.slug: profile}, Settings(node_id="local", default_profile="demo"))
    port = await app.start("127.0.0.1", 0)
    await app.start_background()
    base = f"http://127.0.0.1:{port}"
    try:
        urls = [
            f"{base}/rpc/ethereum",
            f"{base}/rpc/fastest/ethereum",
            f"{base}/rpc/base",
            f"{base}/rpc/latency-weighted/base",
        ]
        page = await open_page(browser, f"{base}/dashboard")
        async with traffic(urls, 120):
            await asyncio.sleep(warm / 2)  # build up history for the charts
            await fleet["echo"].update(down=True)  # an open circuit
            await fleet["bravo"].update(rate_limit_rps=0.5, rate_limit_burst=1)  # rate-limited
            await fleet["charlie-base"].update(lag_blocks=8)  # lagging
            await asyncio.sleep(warm / 2)
            await shoot(page, out / "dashboard-overview.png")
            await shoot(page, out / "dashboard-methods.png", "methods")
        await page.close()
    finally:
        await app.stop(drain_timeout=1.0)
        await fleet.stop()


async def cluster(browser: Any, out: Path, warm: float) -> None:
    from lasso.demo_cluster import ClusterDemo

    demo = ClusterDemo(3, port=0, traffic_rps=0, interval_s=1.0)
    await demo.start()
    try:
        urls = [f"{u}/rpc/ethereum" for u in demo.urls.values()]
        urls += [f"{u}/rpc/fastest/ethereum" for u in demo.urls.values()]
        urls += [f"{u}/rpc/base" for u in demo.urls.values()]
        first = demo.urls[demo.regions[0]]
        region = await open_page(browser, f"{first}/dashboard?node=eu-west-1")
        async with traffic(urls, 150):
            await asyncio.sleep(warm / 2)
            await demo.fleets["eu-west-1"]["bravo"].update(down=True)  # one region only
            await asyncio.sleep(warm / 2)
            await shoot(region, out / "dashboard-region.png")
            page = await open_page(browser, f"{first}/dashboard")
            await shoot(page, out / "dashboard-cluster.png", "cluster")
        await region.close()
        await page.close()
    finally:
        await demo.stop()


LAYOUT_WIDTHS = (1280, 1440, 1920)
LAYOUTS = {"c1": (1, 5), "c3": (3, 5), "c8": (8, 4)}


async def layouts(browser: Any, out: Path, warm: float) -> None:
    """The overview with 1, 3 and 8 chains at each of LAYOUT_WIDTHS (first screen)."""
    from bench.fleets import CHAINS, layout_node

    async with layout_node(LAYOUTS) as app:
        urls = [
            f"{app.base_url}/rpc/profile/{slug}/{CHAINS[c][0]}"
            for slug, (n, _) in LAYOUTS.items()
            for c in range(n)
        ]
        async with traffic(urls, 15.0 * len(urls)):
            # One provider down on Ethereum: an open circuit with its last error.
            await app.fleet["ethereum-llamarpc"].update(down=True)
            await asyncio.sleep(warm)
            for slug, (n, _) in LAYOUTS.items():
                for width in LAYOUT_WIDTHS:
                    page = await browser.new_page(viewport={"width": width, "height": 1000})
                    await page.goto(f"{app.base_url}/dashboard/{slug}")
                    await page.wait_for_selector("#conn.conn-live")
                    await shoot(page, out / f"dashboard-{width}-{n}chains.png")
                    await page.close()


async def main_async(args: argparse.Namespace) -> int:
    from playwright.async_api import async_playwright

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        try:
            if args.only in ("all", "demo"):
                await single_node(browser, out, args.warm)
            if args.only in ("all", "cluster"):
                await cluster(browser, out, args.warm)
            if args.only in ("all", "layouts"):
                await layouts(browser, out, args.warm / 2)
        finally:
            await browser.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "img"))
    p.add_argument("--warm", type=float, default=30.0, help="seconds of traffic before a shot")
    p.add_argument("--chromium", default=CHROMIUM)
    p.add_argument("--only", choices=("all", "demo", "cluster", "layouts"), default="all")
    args = p.parse_args(argv)
    if not Path(args.chromium).exists():
        print(f"{args.chromium} not found (apt-get install chromium)", file=sys.stderr)
        return 2
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())
