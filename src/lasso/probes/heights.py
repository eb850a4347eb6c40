"""Block-height polling: ``eth_blockNumber`` per upstream instance, fed to the routers.

Each instance (a pool, shared by every profile that points at the same endpoint) is polled
at most once per interval, the smallest ``monitoring.probe_interval_ms`` of the chains
that use it. A provider whose height was observed recently from client traffic (a client
``eth_blockNumber`` answered by it) is not polled: busy providers are measured for free
and only idle ones cost a request.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import TYPE_CHECKING

import orjson

from lasso.net.errors import UpstreamError
from lasso.net.http_client import HttpUpstreamPool
from lasso.server.runtime import ChainRuntime

if TYPE_CHECKING:
    from lasso.server.app import LassoApp

__all__ = ["HeightProber", "parse_block_number"]

log = logging.getLogger("lasso.probes")

TICK_S = 0.2
POLL_TIMEOUT_S = 3.0
_BODY = b'{"jsonrpc":"2.0","id":"lasso-height","method":"eth_blockNumber","params":[]}'


def parse_block_number(body: bytes) -> int | None:
    """The height in an ``eth_blockNumber`` answer, or ``None`` if it has none."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    result = doc.get("result")
    if not isinstance(result, str) or not result.startswith("0x"):
        return None
    try:
        return int(result, 16)
    except ValueError:
        return None


class HeightProber:
    """Polls idle upstream instances for their head."""

    def __init__(self, app: LassoApp) -> None:
        self.app = app
        self._last: dict[tuple[int, int], float] = {}
        self._inflight: set[tuple[int, int]] = set()
        self.polls = 0
        self.failures = 0

    async def run(self) -> None:
        while True:
            self.tick(monotonic())
            await asyncio.sleep(TICK_S)

    def tick(self, now: float) -> None:
        groups: dict[tuple[int, int], tuple[HttpUpstreamPool, str, list[ChainRuntime], float]] = {}
        for rt in self.app.runtime.chains():
            interval = max(0.05, rt.config.probe_interval_ms / 1000.0)
            for pid, pool in rt.pools.items():
                key = (id(pool), rt.config.chain_id)
                entry = groups.get(key)
                if entry is None:
                    groups[key] = (pool, pid, [rt], interval)
                else:
                    entry[2].append(rt)
                    groups[key] = (pool, pid, entry[2], min(interval, entry[3]))
        for key, (pool, pid, rts, interval) in groups.items():
            if key in self._inflight:
                continue
            last = self._last.get(key, float("-inf"))
            seen = rts[0].router.state.observed_at(pid)
            if seen is not None and seen > last:
                last = seen
            if now - last < interval:
                continue
            self._last[key] = now
            self._inflight.add(key)
            self.app.loop.create_task(self._poll(key, pool, pid, rts))

    async def _poll(
        self, key: tuple[int, int], pool: HttpUpstreamPool, pid: str, rts: list[ChainRuntime]
    ) -> None:
        try:
            self.polls += 1
            resp = await pool.request(_BODY, POLL_TIMEOUT_S)
            height = parse_block_number(resp.body) if resp.status == 200 else None
            if height is None:
                self.failures += 1
                log.debug(
                    "height poll failed",
                    extra={"event": "probe.height_failed", "provider": pid, "status": resp.status},
                )
                return
            now = monotonic()
            for rt in rts:
                rt.router.observe_height(pid, height, now)
        except UpstreamError as exc:
            self.failures += 1
            log.debug(
                "height poll failed",
                extra={"event": "probe.height_failed", "provider": pid, "error": repr(exc)},
            )
        finally:
            self._inflight.discard(key)
