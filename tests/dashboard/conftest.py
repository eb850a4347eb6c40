"""Fixtures for the dashboard tests: the demo node in-process and a headless Chromium."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture
async def demo_node() -> AsyncIterator[Any]:
    """What ``lasso demo`` runs, in-process on a free port: the simulated fleet and a node."""
    from lasso.app import LassoApp, Settings
    from lasso.profiles import parse_profile
    from lasso.sim.fleet import demo_fleet, demo_profile_env

    fleet = demo_fleet(ephemeral=True)
    await fleet.start()
    text = resources.files("lasso.sim").joinpath("demo.yml").read_text()
    profile = parse_profile(text, "demo.yml", {**os.environ, **demo_profile_env(fleet)})
    app = LassoApp(
        {profile.slug: profile},
        Settings(node_id="local", default_profile="demo", probes=True),
    )
    port = await app.start("127.0.0.1", 0)
    await app.start_background()
    app.base_url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    app.fleet = fleet  # type: ignore[attr-defined]
    yield app
    await app.stop(drain_timeout=1.0)
    await fleet.stop()


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless Debian Chromium driven by Playwright (no browser download)."""
    from playwright.async_api import async_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run scripts/test.sh first")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        await b.close()


class ConsoleLog:
    """Console errors and uncaught exceptions of a page."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

    def _console(self, msg: Any) -> None:
        if msg.type in ("error", "warning"):
            self.errors.append(f"{msg.type}: {msg.text}")


@pytest.fixture
def console() -> type[ConsoleLog]:
    return ConsoleLog
