"""WebSocket subscriptions of a simulated provider: following the head, and one client.

:class:`ChainFollower` is pure: given the provider's head after each tick it returns which
blocks to announce and which logs a reorg removed. :class:`WsClient` owns one connection's
subscriptions and its outgoing notification queue, which delivers in order after a
simulated delay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from lasso.sim.chain import JSON, SyntheticChain
from lasso.sim.node import log_matches

__all__ = ["SUBSCRIPTION_KINDS", "ChainFollower", "Subscription", "WsClient"]

SUBSCRIPTION_KINDS = ("newHeads", "logs", "newPendingTransactions")
#: At most this many blocks are announced after a gap (e.g. when lag shrinks at once).
MAX_CATCH_UP = 64
#: Blocks remembered to detect reorgs and re-send their logs as removed.
REMEMBERED_BLOCKS = 128
#: Pending notification batches per client before it is dropped as too slow.
QUEUE_LIMIT = 1024


class ChainFollower:
    """Tracks the blocks a provider has announced, to announce new ones exactly once.

    The first :meth:`advance` sets the baseline and announces nothing.
    """

    def __init__(self, chain: SyntheticChain) -> None:
        self.chain = chain
        self.last: int | None = None
        self._seen: OrderedDict[int, tuple[str, list[JSON]]] = OrderedDict()

    def advance(self, head: int) -> tuple[list[int], list[JSON]]:
        """Move to ``head``; return the block numbers to announce and the removed logs.

        After a reorg the replaced blocks are announced again (with their new hashes) and
        the logs of the old ones come back with ``removed: true``. A head that moved
        backwards (more lag) announces nothing until it passes the last announced block.
        """
        if self.last is None:
            self.last = head
            self._remember(head)
            return [], []
        chain = self.chain
        fork = next(
            (n for n, (h, _) in self._seen.items() if n <= head and chain.block_hash(n) != h),
            None,
        )
        removed: list[JSON] = []
        start = self.last + 1
        if fork is not None:
            for number in [n for n in self._seen if n >= fork]:
                removed.extend({**log, "removed": True} for log in self._seen.pop(number)[1])
            start = fork
        if head < start:
            return [], removed
        numbers = list(range(max(start, head - MAX_CATCH_UP + 1), head + 1))
        for number in numbers:
            self._remember(number)
        self.last = head
        return numbers, removed

    def _remember(self, number: int) -> None:
        self._seen[number] = (self.chain.block_hash(number), self.chain.logs(number))
        while len(self._seen) > REMEMBERED_BLOCKS:
            self._seen.popitem(last=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscription:
    """One ``eth_subscribe`` of a client; ``addresses``/``topics`` filter logs."""

    kind: str
    addresses: set[str] | None = None
    topics: tuple[set[str] | None, ...] = ()

    def items(self, chain: SyntheticChain, numbers: list[int], removed: list[JSON]) -> list[Any]:
        """Return the notification results for newly announced blocks."""
        if self.kind == "newHeads":
            return [chain.header(n) for n in numbers]
        if self.kind == "logs":
            logs = removed + [log for n in numbers for log in chain.logs(n)]
            return [log for log in logs if log_matches(log, self.addresses, list(self.topics))]
        return [tx["hash"] for n in numbers for tx in chain.transactions(n)]


class WsClient:
    """One WebSocket connection to a simulated provider."""

    def __init__(self, ws: web.WebSocketResponse, request: web.BaseRequest) -> None:
        self.ws = ws
        self._request = request
        self.subscriptions: dict[str, Subscription] = {}
        self._queue: asyncio.Queue[tuple[float, list[bytes]]] = asyncio.Queue(QUEUE_LIMIT)

    def __repr__(self) -> str:
        return f"<WsClient subscriptions={len(self.subscriptions)} queued={self._queue.qsize()}>"

    async def send(self, data: bytes) -> None:
        """Send one text frame now; a closed connection is ignored."""
        if self.ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(data.decode())

    def push(self, due: float, messages: list[bytes]) -> bool:
        """Queue notifications to send at loop time ``due`` (in order); False if full."""
        try:
            self._queue.put_nowait((due, messages))
        except asyncio.QueueFull:
            return False
        return True

    async def run_writer(self) -> None:
        """Send queued notifications, each batch no earlier than its due time."""
        loop = asyncio.get_running_loop()
        while True:
            due, messages = await self._queue.get()
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            for message in messages:
                await self.send(message)

    def abort(self) -> None:
        """Drop the connection without a close frame, like a crashed node."""
        transport = self._request.transport
        if transport is not None:
            transport.abort()


def notification(subscription_id: str, result: Any) -> bytes:
    """Encode one ``eth_subscription`` notification."""
    params = {"subscription": subscription_id, "result": result}
    return orjson.dumps({"jsonrpc": "2.0", "method": "eth_subscription", "params": params})
