"""One simulated Ethereum JSON-RPC provider: its own TCP port, a shared chain, faults.

The provider serves JSON-RPC over HTTP ``POST`` on any path and over WebSocket on
``/ws`` (any path with an ``Upgrade: websocket`` header, to be exact), answering from a
:class:`~lasso.sim.chain.SyntheticChain` through :mod:`lasso.sim.node`. A
:class:`~lasso.sim.behavior.Behavior` injects latency and faults; it can be changed at any
time with :meth:`SimProvider.update`.

This is the one IO module of the simulator besides the fleet's admin server: it reads the
injected clock, sleeps to simulate latency, and draws faults from its own seeded
``random.Random``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from lasso.sim import hostile, node
from lasso.sim.behavior import Behavior, ProviderStats, TokenBucket, sample_latency_s
from lasso.sim.chain import JSON, SyntheticChain
from lasso.sim.filters import SimFilters
from lasso.sim.subscriptions import (
    SUBSCRIPTION_KINDS,
    ChainFollower,
    Subscription,
    WsClient,
    notification,
)

__all__ = ["SimProvider"]

_log = logging.getLogger(__name__)
_VERSION = "LassoSim/v0.1.0"
_HTML_502 = b"<html><head><title>502 Bad Gateway</title></head><body>bad gateway</body></html>"
_GARBAGE = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
#: Seconds the server waits for in-flight requests when it stops.
_SHUTDOWN_TIMEOUT = 1.0


class SimProvider:
    """A fake JSON-RPC provider bound to ``host:port`` (port 0 picks a free one).

    Args:
        provider_id: the name in URLs, stats and ``web3_clientVersion``.
        chain: the chain it serves; share one between providers of a chain.
        behavior: initial latency and faults (default: instant and healthy).
        host: address to bind.
        port: port to bind; 0 picks one at :meth:`start` and keeps it across ``down``.
        clock: wall-clock seconds, the same clock as ``chain.start_time``.
        seed: seeds this provider's latency and fault draws (default: its id).

    Use as ``async with SimProvider(...) as p:`` or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        provider_id: str,
        chain: SyntheticChain,
        behavior: Behavior | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.time,
        seed: object = None,
    ) -> None:
        self.id = provider_id
        self.chain = chain
        self.host = host
        self.stats = ProviderStats()
        #: Raw transactions received through ``eth_sendRawTransaction``, by hash.
        self.mempool: dict[str, str] = {}
        self.filters = SimFilters()  # this node's eth_newFilter state
        self._head_floor = 0  # the highest head served: heads never go backwards
        self._behavior = behavior or Behavior()
        self._port = port
        self._clock = clock
        self._rng = random.Random(f"{provider_id}|{seed}")
        self._bucket: TokenBucket | None = None
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._release = asyncio.Event()
        self._wake = asyncio.Event()
        self._follower = ChainFollower(chain)
        self._ticker: asyncio.Task[None] | None = None
        self._ws_clients: set[WsClient] = set()
        self._malformed_turn = 0

    def __repr__(self) -> str:
        state = "listening" if self.listening else ("stopped" if self._runner is None else "down")
        return (
            f"<SimProvider {self.id} {state} port={self._port} requests={self.stats.requests}"
            f" ws={len(self._ws_clients)}>"
        )

    # -- public surface -------------------------------------------------------------------

    @property
    def behavior(self) -> Behavior:
        """The current behaviour (replace it with :meth:`update`)."""
        return self._behavior

    @property
    def port(self) -> int:
        """The bound port (the requested one before :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """The HTTP JSON-RPC URL."""
        return f"http://{self.host}:{self._port}"

    @property
    def ws_url(self) -> str:
        """The WebSocket JSON-RPC URL."""
        return f"ws://{self.host}:{self._port}/ws"

    @property
    def listening(self) -> bool:
        """Whether the listening socket is open (false when stopped or ``down``)."""
        return self._site is not None

    def head(self, now: float | None = None) -> int:
        """Return the newest block this provider serves: the chain head minus
        ``lag_blocks``, and never below a head it served before. A real node's head only
        moves forward: when its lag grows it stalls until the chain is that far ahead."""
        now = self._clock() if now is None else now
        head = max(0, self.chain.height(now) - self._behavior.lag_blocks, self._head_floor)
        self._head_floor = head
        return head

    def view(self, now: float | None = None) -> node.NodeView:
        """Return what this provider would answer from right now."""
        b = self._behavior
        return node.NodeView(
            chain=self.chain,
            head=self.head(now),
            archival=b.archival,
            archive_depth=b.archive_depth,
            max_block_range=b.max_block_range,
            unsupported_methods=b.unsupported_methods,
            client_version=f"{_VERSION}/{self.id}",
            mempool=self.mempool,
            filters=self.filters,
        )

    def answer(self, body: bytes) -> bytes:
        """Answer a JSON-RPC body in-process, without faults, latency or counters.

        Returns the response body; ``b""`` when the body held only notifications.
        """
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return orjson.dumps(node.error_response(None, -32700, "parse error"))
        answer = node.answer_payload(
            self.view(), payload, max_batch_size=self._behavior.max_batch_size
        )
        return b"" if answer is None else orjson.dumps(answer)

    async def update(self, **changes: Any) -> Behavior:
        """Change behaviour fields; side effects are done when this returns.

        Turning ``down`` on closes the listening socket and drops WebSocket clients;
        turning it off reopens the same port. Turning ``hang`` off closes the connections
        of hung requests. Rate-limit changes refill the bucket.

        Raises:
            ValueError: on an unknown field or a bad value (nothing is changed).
        """
        old, new = self._behavior, self._behavior.replace(**changes)
        self._behavior = new
        if (old.rate_limit_rps, old.rate_limit_burst) != (new.rate_limit_rps, new.rate_limit_burst):
            self._bucket = None
        if old.hang and not new.hang:
            self._release_hung()
        if new.down or not new.websocket:
            self._drop_ws_clients()
        if self._runner is not None:
            if new.down and self._site is not None:
                await self._unbind()
            elif not new.down and self._site is None:
                await self._bind()
        self.notify()
        return new

    def reset_stats(self) -> None:
        """Zero the counters (see :class:`~lasso.sim.behavior.ProviderStats`)."""
        self.stats.reset()

    def notify(self) -> None:
        """Wake the head follower now (after a reorg or a clock jump)."""
        self._wake.set()

    def describe(self) -> JSON:
        """Return a JSON-ready summary for the admin API."""
        return {
            "id": self.id,
            "chain_id": self.chain.chain_id,
            "url": self.url,
            "ws_url": self.ws_url,
            "listening": self.listening,
            "head": self.head(),
            "behavior": self._behavior.to_dict(),
            "stats": self.stats.to_dict(),
        }

    async def start(self) -> None:
        """Bind the port (even when ``down``, to learn it) and start following the chain."""
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._route)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        self._runner = runner
        await self._bind()
        if self._behavior.down:
            await self._unbind()
        self._ticker = asyncio.create_task(self._follow_chain(), name=f"sim-{self.id}-heads")

    async def stop(self) -> None:
        """Close the port and every connection; hung requests are released and dropped."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._release_hung()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        self._drop_ws_clients()
        self._site = None
        await runner.cleanup()

    async def __aenter__(self) -> SimProvider:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- listening socket -----------------------------------------------------------------

    async def _bind(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        await site.start()
        self._site = site
        self._port = site.port

    async def _unbind(self) -> None:
        site, self._site = self._site, None
        if site is not None:
            await site.stop()

    # -- HTTP -----------------------------------------------------------------------------

    async def _route(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._serve_ws(request)
        if request.method != "POST":
            error = node.error_response(None, -32600, "only POST is supported")
            return self._respond(error, 405)
        b = self._behavior
        self.stats.requests += 1
        if b.down:
            return self._reset(request, "down")
        body = await request.read()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return self._respond(node.error_response(None, -32700, "parse error"), 200)
        methods = self._count_calls(payload)
        if self._rate_limited(b, max(1, len(methods))):
            self.stats.faults["rate_limited"] += 1
            if b.rate_limit_mode == "http429":
                error = node.error_response(_id_of(payload), -32005, "rate limit exceeded")
                return self._respond(error, 429, {"Retry-After": "1"})
            return self._respond(_errors_for(payload, -32005, "rate limit exceeded"), 200)
        if b.hang:
            return await self._hang(request)
        delay = sample_latency_s(b, methods, self._rng)
        if delay > 0:
            await asyncio.sleep(delay)
        b = self._behavior  # faults switched on while the request waited apply to it
        if b.down:
            return self._reset(request, "down")
        if b.drop:
            return self._reset(request, "dropped")
        if b.hostile is not None:
            return await self._hostile(request, b, payload)
        if b.error_rate and self._rng.random() < b.error_rate:
            self.stats.faults["error"] += 1
            if b.error_mode == "http500":
                error = node.error_response(_id_of(payload), -32603, "internal error")
                return self._respond(error, 500)
            return self._respond(_errors_for(payload, -32603, "internal error"), 200)
        answer = node.answer_payload(self.view(), payload, max_batch_size=b.max_batch_size)
        if b.malformed:
            return self._malformed(answer)
        return self._respond(answer, 200)

    async def _hostile(self, request: web.Request, b: Behavior, payload: Any) -> web.StreamResponse:
        assert b.hostile is not None
        self.stats.faults[b.hostile] += 1
        answer = node.answer_payload(self.view(), payload, max_batch_size=b.max_batch_size)
        resp = await hostile.respond(
            request,
            b.hostile,
            payload,
            answer,
            huge_bytes=b.huge_bytes,
            drip_bytes=b.drip_bytes,
            drip_interval_s=b.drip_interval_ms / 1000,
        )
        self.stats.statuses[str(resp.status)] += 1
        return resp

    def _count_calls(self, payload: Any) -> list[str]:
        calls = payload if isinstance(payload, list) else [payload]
        methods = [
            c["method"] for c in calls if isinstance(c, dict) and isinstance(c.get("method"), str)
        ]
        self.stats.calls += len(calls)
        self.stats.methods.update(methods)
        return methods

    def _rate_limited(self, b: Behavior, cost: int) -> bool:
        if b.rate_limit_rps is None:
            return False
        now = time.monotonic()  # the bucket runs on real time even under a fake clock
        if self._bucket is None:
            burst = b.rate_limit_burst or max(1.0, b.rate_limit_rps)
            self._bucket = TokenBucket(b.rate_limit_rps, burst, now)
        return not self._bucket.take(now, cost)

    def _respond(
        self, answer: Any, status: int, headers: dict[str, str] | None = None
    ) -> web.Response:
        self.stats.statuses[str(status)] += 1
        self._count_errors(answer)
        body = b"" if answer is None else orjson.dumps(answer)
        return web.Response(
            body=body, status=status, headers=headers, content_type="application/json"
        )

    def _count_errors(self, answer: Any) -> None:
        for item in answer if isinstance(answer, list) else [answer]:
            if isinstance(item, dict) and "error" in item:
                self.stats.rpc_errors[item["error"]["code"]] += 1

    def _malformed(self, answer: Any) -> web.Response:
        self.stats.faults["malformed"] += 1
        self.stats.statuses["200"] += 1
        turn, self._malformed_turn = self._malformed_turn, self._malformed_turn + 1
        if turn % 3 == 1:
            return web.Response(body=_HTML_502, content_type="text/html")
        if turn % 3 == 2:
            return web.Response(body=_GARBAGE, content_type="application/json")
        full = orjson.dumps(answer if answer is not None else {"jsonrpc": "2.0"})
        return web.Response(body=full[: max(1, len(full) // 2)], content_type="application/json")

    async def _hang(self, request: web.Request) -> web.StreamResponse:
        self.stats.faults["hung"] += 1
        self.stats.statuses["hung"] += 1
        await self._release.wait()
        return self._reset(request, None)

    def _release_hung(self) -> None:
        self._release.set()
        self._release = asyncio.Event()

    def _reset(self, request: web.BaseRequest, fault: str | None) -> web.Response:
        """Close the connection with a TCP reset; the returned response is never sent."""
        if fault is not None:
            self.stats.faults[fault] += 1
            self.stats.statuses["dropped"] += 1
        transport = request.transport
        if transport is not None:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        return web.Response(status=500)

    # -- WebSocket ------------------------------------------------------------------------

    async def _serve_ws(self, request: web.Request) -> web.StreamResponse:
        b = self._behavior
        if b.down:
            self.stats.requests += 1
            return self._reset(request, "down")
        if not b.websocket:
            return web.Response(status=404, text="websocket is disabled on this provider")
        ws = web.WebSocketResponse(max_msg_size=16 * 2**20)
        await ws.prepare(request)
        client = WsClient(ws, request)
        self._ws_clients.add(client)
        self.stats.ws_connections += 1
        tasks: set[asyncio.Task[None]] = {asyncio.create_task(client.run_writer())}
        try:
            async for message in ws:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    task = asyncio.create_task(self._ws_message(client, message.data))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            self._ws_clients.discard(client)
            self.stats.ws_connections -= 1
            for task in tasks:
                task.cancel()
        return ws

    async def _ws_message(self, client: WsClient, data: str | bytes) -> None:
        b = self._behavior
        self.stats.requests += 1
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            await self._ws_send(client, node.error_response(None, -32700, "parse error"))
            return
        methods = self._count_calls(payload)
        if self._rate_limited(b, max(1, len(methods))):
            self.stats.faults["rate_limited"] += 1
            await self._ws_send(client, _errors_for(payload, -32005, "rate limit exceeded"))
            return
        if b.hang:
            self.stats.faults["hung"] += 1
            return
        delay = sample_latency_s(b, methods, self._rng)
        if delay > 0:
            await asyncio.sleep(delay)
        b = self._behavior
        if b.down or b.drop:
            self.stats.faults["down" if b.down else "dropped"] += 1
            client.abort()
            return
        if b.error_rate and self._rng.random() < b.error_rate:
            self.stats.faults["error"] += 1
            await self._ws_send(client, _errors_for(payload, -32603, "internal error"))
            return
        if b.malformed:
            self.stats.faults["malformed"] += 1
            await client.send(_GARBAGE)
            return
        view = self.view()
        subscribed: list[tuple[str, Subscription]] = []
        answer: Any
        if isinstance(payload, list):
            answers = [self._ws_call(view, client, item, subscribed) for item in payload]
            answer = [a for a in answers if a is not None] or None
            if not payload:
                answer = node.error_response(None, -32600, "empty batch")
        else:
            answer = self._ws_call(view, client, payload, subscribed)
        if not subscribed:
            await self._ws_send(client, answer)
            return
        # The answer goes through the notification queue and the subscription is live from
        # the same instant, so its first notification can neither precede the answer nor
        # be missed.
        self._count_errors(answer)
        client.push(asyncio.get_running_loop().time(), [orjson.dumps(answer)])
        client.subscriptions.update(subscribed)

    def _ws_call(
        self,
        view: node.NodeView,
        client: WsClient,
        request: Any,
        subscribed: list[tuple[str, Subscription]],
    ) -> JSON | None:
        method = request.get("method") if isinstance(request, dict) else None
        if method not in ("eth_subscribe", "eth_unsubscribe"):
            return node.answer_call(view, request)
        assert isinstance(request, dict)
        params = request.get("params") or []
        try:
            if not isinstance(params, list) or not params:
                raise node.RpcError(-32602, "missing value for required argument 0")
            if method == "eth_unsubscribe":
                result: Any = client.subscriptions.pop(str(params[0]), None) is not None
            else:
                subscription = _parse_subscription(params)
                result = f"0x{self._rng.getrandbits(128):032x}"
                subscribed.append((result, subscription))
        except node.RpcError as exc:
            return {"jsonrpc": "2.0", "id": request.get("id"), "error": exc.to_dict()}
        return {"jsonrpc": "2.0", "id": request.get("id"), "result": result}

    async def _ws_send(self, client: WsClient, answer: Any) -> None:
        if answer is not None:
            self._count_errors(answer)
            await client.send(orjson.dumps(answer))

    def _drop_ws_clients(self) -> None:
        for client in list(self._ws_clients):
            client.abort()

    # -- following the chain --------------------------------------------------------------

    async def _follow_chain(self) -> None:
        """Announce new heads (and logs) to subscribers as the chain advances."""
        while True:
            try:
                numbers, removed = self._follower.advance(self.head())
                if numbers or removed:
                    self._publish(numbers, removed)
            except Exception:  # keep following: one bad tick must not end every feed
                _log.exception("sim provider %s: head follower tick failed", self.id)
            now = self._clock()
            next_block = self.chain.block_time_at(self.chain.height(now) + 1)
            timeout = min(max(next_block - now, 0.005), self.chain.block_time_s) + 0.001
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    def _publish(self, numbers: list[int], removed: list[JSON]) -> None:
        b = self._behavior
        if b.hang or b.down or not self._ws_clients:
            return  # a hung provider stalls its feeds too
        due = asyncio.get_running_loop().time() + sample_latency_s(
            b, ("eth_subscription",), self._rng
        )
        for client in list(self._ws_clients):
            messages = [
                notification(sub_id, item)
                for sub_id, sub in client.subscriptions.items()
                for item in sub.items(self.chain, numbers, removed)
            ]
            if not messages:
                continue
            if client.push(due, messages):
                self.stats.ws_notifications += len(messages)
            else:
                client.abort()  # too slow to keep up: drop it, as real nodes do


def _id_of(payload: Any) -> Any:
    return payload.get("id") if isinstance(payload, dict) else None


def _errors_for(payload: Any, code: int, message: str) -> JSON | list[JSON]:
    """Return one error per call of ``payload`` (a list for a batch)."""
    if isinstance(payload, list) and payload:
        return [node.error_response(_id_of(item), code, message) for item in payload]
    return node.error_response(_id_of(payload), code, message)


def _parse_subscription(params: Sequence[Any]) -> Subscription:
    kind = params[0]
    if kind not in SUBSCRIPTION_KINDS:
        raise node.RpcError(-32602, f'no "{kind}" subscription in eth namespace')
    if kind != "logs":
        return Subscription(kind=kind)
    addresses, topics = node.parse_log_filter(params[1] if len(params) > 1 else {})
    return Subscription(kind=kind, addresses=addresses, topics=tuple(topics))
