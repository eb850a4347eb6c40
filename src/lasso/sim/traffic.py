"""A light background client for the demos: a few mixed reads per second.

``lasso demo`` runs one against its node so the dashboard is alive at first sight
(latency charts, traffic shares, the routing feed); ``lasso demo --nodes N`` runs one per
region so every region measures its providers. It is a real HTTP client (aiohttp), paced
by a timer, that ignores the answers: failures are the node's business to show.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Sequence

import orjson

__all__ = ["SAMPLE_CALLS", "SampleTraffic"]

SAMPLE_CALLS: tuple[tuple[str, list[object]], ...] = (
    ("eth_blockNumber", []),
    ("eth_getBalance", ["0x00000000000000000000000000000000000000aa", "latest"]),
    ("eth_getBlockByNumber", ["latest", False]),
    ("eth_gasPrice", []),
)
"""The reads sent, in turn."""


class SampleTraffic:
    """Send :data:`SAMPLE_CALLS` round-robin over ``urls`` at about ``rps`` requests/s.

    Args:
        urls: JSON-RPC endpoints, used in turn (e.g. a load-balanced and a fastest route).
        rps: requests per second in total; one request is in flight at a time, so a slow
            answer lowers the rate rather than piling up requests.
    """

    def __init__(self, urls: Sequence[str], rps: float) -> None:
        if not urls or rps <= 0:
            raise ValueError("SampleTraffic needs at least one URL and a positive rate")
        self.urls = list(urls)
        self.rps = rps
        self.sent = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start sending (call from the running loop; idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop sending; a request in flight is abandoned."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        import aiohttp

        period = 1.0 / self.rps
        timeout = aiohttp.ClientTimeout(total=10)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for i in itertools.count():
                method, params = SAMPLE_CALLS[i % len(SAMPLE_CALLS)]
                body = orjson.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params})
                url = self.urls[i % len(self.urls)]
                with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                    async with session.post(
                        url, data=body, headers={"content-type": "application/json"}
                    ) as resp:
                        await resp.read()
                self.sent += 1
                await asyncio.sleep(period)  # a pacing timer, not a wait for a condition

    def __repr__(self) -> str:
        state = "running" if self._task is not None else "stopped"
        return f"<SampleTraffic {state} urls={len(self.urls)} rps={self.rps:g} sent={self.sent}>"
