"""Test helpers: a real anvil process, deadline polling, profile YAML."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
ANVIL = shutil.which("anvil") or str(ROOT / "node_modules" / ".bin" / "anvil")

# One time unit for every deadline in the suite; raise it on a slow machine.
UNIT = float(os.environ.get("LASSO_TEST_TIME_UNIT", "1.0"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    predicate: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float = 5.0,
    interval: float = 0.02,
    message: str = "condition not met",
) -> Any:
    """Poll ``predicate`` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout * UNIT
    last: Any = None
    while True:
        last = predicate()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} within {timeout * UNIT:.1f}s (last={last!r})")
        await asyncio.sleep(interval)


class Anvil:
    """A real anvil process on a free loopback port."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [ANVIL, "--port", str(self.port), "--host", "127.0.0.1", "--silent", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 20 * UNIT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"anvil exited: {self.proc.stderr.read() if self.proc.stderr else ''!r}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("anvil did not start") from None
                time.sleep(0.05)  # process start-up poll (not a test wait)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def profile_yaml(chains: str, slug: str = "public") -> str:
    return f"---\nname: Test\nslug: {slug}\n---\nchains:\n{chains}"


UNCACHED = "    cache:\n      enabled: false\n    routing:\n      coalesce: false"
"""Chain lines that turn the response cache and coalescing off."""


def routed_chain_yaml(fleet: Any, **kw: Any) -> str:
    """:func:`fleet_chain_yaml` without the response cache and coalescing, so that every
    request reaches a provider: for routing, failover and health tests."""
    extra = kw.pop("extra", "")
    return fleet_chain_yaml(fleet, extra=(extra.rstrip("\n") + "\n" + UNCACHED).lstrip("\n"), **kw)


def fleet_chain_yaml(
    fleet: Any,
    key: str = "ethereum",
    chain_id: int = 1,
    extra: str = "",
    providers: dict[str, str] | None = None,
) -> str:
    """Chain YAML with one provider per fleet member; ``providers`` adds per-provider lines."""
    lines = [f"  {key}:", f"    chain_id: {chain_id}"]
    if extra:
        lines.append(extra.rstrip("\n"))
    lines.append("    providers:")
    for i, (pid, url) in enumerate(fleet.urls().items()):
        lines.append(f"      - id: {pid}")
        lines.append(f"        url: {url}")
        lines.append(f"        priority: {(i + 1) * 10}")
        for extra_line in (providers or {}).get(pid, "").splitlines():
            lines.append(f"        {extra_line}")
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def status_server(
    status: int, body: bytes = b"", headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A real HTTP endpoint answering every request with one fixed response."""
    hits: list[bytes] = []

    async def handle(request: web.Request) -> web.Response:
        hits.append(await request.read())
        return web.Response(
            status=status, body=body, headers=headers, content_type="application/json"
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{site.port}", hits
    finally:
        await runner.cleanup()
