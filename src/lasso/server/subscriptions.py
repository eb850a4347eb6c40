"""Shared, gap-free client subscriptions over upstream WebSockets (CONTRACT §4, reference §7).

:class:`SubscriptionManager` (``app.subscriptions``) is what the WebSocket endpoint calls
for ``eth_subscribe``/``eth_unsubscribe``. Clients asking for the same thing on the same
chain (profile, chain, provider override and normalized params, see
:func:`lasso.kernel.subscriptions.parse_subscription`) share one :class:`_Stream`: one
upstream subscription for N clients. The last client leaving starts a grace period
(:attr:`SubscriptionManager.grace_s`) before the upstream is unsubscribed.

Each stream is a thin adapter around the pure
:class:`~lasso.kernel.subscriptions.SubscriptionStream`: upstream callbacks, timers and
backfill answers become facts; its decisions become frames to clients and IO here:

* ``Resubscribe`` — ask the chain's router for ``eth_subscribe`` candidates (strategy
  ``priority``, WS channels that are connected, not excluded, WS circuit not open, for
  newHeads only providers that ``subscribe_new_heads``), try the first; logs and pending
  transaction streams prefer the provider feeding the chain's newHeads stream.
* ``Backfill`` — over the ordinary pipeline (:func:`lasso.server.pipeline.execute`,
  strategy ``fastest`` pinned to one provider at a time, the lost one avoided):
  ``eth_blockNumber`` for an open range, then ``eth_getBlockByNumber(n, false)`` per block
  (8 at a time) or one ``eth_getLogs`` with the stream's filter; all under the chain's
  ``websocket.failover.backfill_timeout_ms``, at most ``max_backfill_blocks`` blocks (the
  most recent ones).
* ``Degraded`` — retry after ``100 ms × 2^n`` (capped at 5 s), or at once when any of the
  chain's upstream WebSockets connects.

Failover triggers: the upstream subscription ends (connection lost), a newHeads stream
goes stale (no head from its provider for ``websocket.new_heads_timeout_ms`` while the
chain's consensus height has moved past it), or the provider's WebSocket circuit opens.
After a stale or circuit failover the old upstream stays subscribed for
:attr:`SubscriptionManager.overlap_s` so its events can still fill in (deduplicated).

Every logs stream also holds a reference on its chain's newHeads stream: reorgs found
there (``Dropped``) reach the logs streams, and heads seen per provider mark how far each
provider's logs have been delivered.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Iterable
from functools import partial
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from lasso.kernel.breaker import BreakerState
from lasso.kernel.subscriptions import (
    Backfill,
    BackfillDone,
    BackfillFailed,
    BlocksDropped,
    Close,
    Decision,
    Degraded,
    Dropped,
    Emit,
    Fact,
    HeadReceived,
    HeadSeen,
    LogReceived,
    NoProvider,
    Resubscribe,
    Retry,
    Start,
    StreamState,
    Subscribed,
    SubscribeFailed,
    SubscriptionKey,
    SubscriptionParamsError,
    SubscriptionStream,
    TxReceived,
    UpstreamLost,
    Warn,
    parse_header,
    parse_log,
    parse_subscription,
)
from lasso.server.pipeline import execute
from lasso.server.ws_upstreams import follows_new_heads

if TYPE_CHECKING:
    from lasso.net.ws_upstream import UpstreamWs
    from lasso.server.app import LassoApp
    from lasso.server.runtime import ChainRuntime

__all__ = ["SubscriptionClient", "SubscriptionError", "SubscriptionManager"]

log = logging.getLogger("lasso.subscriptions")

BACKFILL_CONCURRENCY = 8
_PREFIX = b'{"jsonrpc":"2.0","method":"eth_subscription","params":{"subscription":"'
_MIDDLE = b'","result":'
_SUFFIX = b"}}"

StreamKey = tuple[str, str, str | None, SubscriptionKey]


class SubscriptionClient(Protocol):
    """What the manager needs of a client connection (``ws_rpc.WsClient`` has it)."""

    @property
    def id(self) -> int: ...  # unique per node

    @property
    def rt(self) -> ChainRuntime: ...  # the chain the socket is bound to

    @property
    def provider_id(self) -> str | None: ...  # a provider override, or None

    def send_raw(self, frame: bytes) -> bool:
        """Queue a text frame; False if the client is gone or dropped as too slow."""
        ...


class SubscriptionError(Exception):
    """An ``eth_subscribe`` the node refuses; answer it with ``code`` and ``message``.

    ``-32602``: bad params, an unsupported kind, or a provider override that cannot serve
    it; ``-32000``: no provider can serve it now.
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _BackfillError(Exception):
    """No provider answered a backfill call usefully."""


class _Upstream:
    """One upstream subscription attempt (or a live one) on a provider."""

    __slots__ = ("ws", "provider", "sub_id", "early", "live")

    def __init__(self, ws: UpstreamWs, provider: str) -> None:
        self.ws = ws
        self.provider = provider
        self.sub_id: str | None = None
        self.early: list[Any] | None = []  # events delivered before subscribe() returned
        self.live = True


class _Stream:
    """One shared upstream subscription of (profile, chain, override, key)."""

    def __init__(
        self, mgr: SubscriptionManager, skey: StreamKey, rt: ChainRuntime, key: SubscriptionKey
    ) -> None:
        self.mgr = mgr
        self.skey = skey
        self.profile, self.chain, self.override = skey[0], skey[1], skey[2]
        self.key = key
        self.kind = key.kind
        self.params = key.params()
        self._rt_cache = rt
        self.machine = SubscriptionStream(
            key.kind, max_backfill_blocks=max(1, rt.config.max_backfill_blocks)
        )
        self.clients: dict[str, SubscriptionClient] = {}
        self.prefixes: dict[str, bytes] = {}
        self.internal = 0  # logs streams holding this newHeads stream
        self.waiters = 0  # first subscribers waiting for the upstream
        self.heads: _Stream | None = None  # a logs stream's newHeads stream
        self.upstream: _Upstream | None = None
        self.olds: list[_Upstream] = []
        self.want: frozenset[str] | None = None
        self.sub_task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.retry_handle: asyncio.TimerHandle | None = None
        self.grace_handle: asyncio.TimerHandle | None = None
        self.watch_handle: asyncio.TimerHandle | None = None
        self.retries = 0
        self.ready = asyncio.Event()
        self.closed = False
        self.last_head_at = monotonic()
        self.last_head_number: int | None = None
        self.failovers = 0
        self.slow_drops = 0
        self.malformed = 0

    def __repr__(self) -> str:
        up = self.upstream.provider if self.upstream is not None else None
        return (
            f"<_Stream {self.profile}/{self.chain} {self.key.canonical} upstream={up} "
            f"clients={len(self.clients)} internal={self.internal} {self.machine!r}>"
        )

    @property
    def refs(self) -> int:
        return len(self.clients) + self.internal + self.waiters

    def rt(self) -> ChainRuntime:
        """The chain runtime of the current profile generation (reloads swap it)."""
        prof = self.mgr.app.runtime.profiles.get(self.profile)
        rt = prof.chains.get(self.chain) if prof is not None else None
        if rt is not None:
            self._rt_cache = rt
        return self._rt_cache

    # -- facts and decisions ------------------------------------------------------------
    def feed(self, fact: Fact) -> None:
        if not self.closed:
            self.apply(self.machine.handle(fact))

    def apply(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Emit):
                self.fan_out(d)
            elif isinstance(d, Dropped):
                self.mgr._blocks_dropped(self, d.blocks)
            elif isinstance(d, Resubscribe):
                self.want = d.exclude
                if self.sub_task is None or self.sub_task.done():
                    self.sub_task = self.spawn(self._subscribe_loop())
            elif isinstance(d, Backfill):
                self.spawn(self._backfill(d))
            elif isinstance(d, Degraded):
                self._degraded(d.reason)
            elif isinstance(d, Warn):
                log.warning(
                    d.message,
                    extra={
                        "event": "subscription.warning",
                        "chain": self.chain,
                        "kind": self.kind,
                    },
                )

    def fan_out(self, emit: Emit) -> None:
        payload = emit.payload
        if emit.removed and isinstance(payload, dict):
            payload = {**payload, "removed": True}
        data = orjson.dumps(payload) + _SUFFIX
        gone: list[str] = []
        prefixes = self.prefixes
        for sid, client in list(self.clients.items()):  # a send may close a client
            if not client.send_raw(prefixes[sid] + data):
                gone.append(sid)
        for sid in gone:  # gone or dropped as too slow: their subscriptions end here
            self.slow_drops += 1
            self.mgr._remove(sid)

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self.mgr.app.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    # -- upstream subscription ----------------------------------------------------------
    def candidates(self, exclude: frozenset[str]) -> list[tuple[str, UpstreamWs]]:
        rt = self.rt()
        now = monotonic()
        chans = rt.router.candidates(
            "eth_subscribe",
            self.params,
            "priority",
            now,
            provider_id=self.override,
            exclude=exclude,
        )
        out: list[tuple[str, UpstreamWs]] = []
        for ch in chans:
            pid = ch.provider_id
            if ch.transport != "ws" or self.mgr._provider_open(rt, pid, now):
                continue
            if self.kind == "newHeads" and not follows_new_heads(rt.config, ch.provider):
                continue
            ws = rt.ws.get(pid)
            if ws is not None and ws.connected:
                out.append((pid, ws))
        heads = self.heads
        if heads is not None and heads.upstream is not None:
            # Logs next to the chain's newHeads feed: its heads mark our progress.
            out.sort(key=lambda c: c[0] != heads.upstream.provider)  # type: ignore[union-attr]
        return out

    async def _subscribe_loop(self) -> None:
        while self.want is not None and not self.closed:
            exclude, self.want = self.want, None
            self.mgr._watch_connections(self.rt())
            cands = self.candidates(exclude)
            if not cands:
                self.feed(NoProvider())
                continue
            pid, ws = cands[0]
            up = _Upstream(ws, pid)
            try:
                up.sub_id = await ws.subscribe(
                    self.params,
                    partial(self.on_event, up),
                    partial(self.on_end, up),
                    timeout=self.mgr.subscribe_timeout_s,
                )
            except Exception as exc:  # UpstreamError, UpstreamRpcError, a bad answer
                log.info(
                    "upstream subscribe failed",
                    extra={
                        "event": "subscription.subscribe_failed",
                        "chain": self.chain,
                        "kind": self.kind,
                        "provider": pid,
                        "error": str(exc),
                    },
                )
                self.feed(SubscribeFailed(provider=pid))
                continue
            head = None
            if self.kind == "logs" or (self.kind == "newHeads" and self.machine.tip is None):
                head = await self._head_now(ws)
            if self.closed:
                self.release(up)
                return
            if not up.live:  # dropped while we asked for the head
                self.feed(SubscribeFailed(provider=pid))
                continue
            early, up.early = up.early or [], None
            self.upstream = up
            self.retries = 0
            self.last_head_at = monotonic()
            self.feed(Subscribed(provider=pid, head=head))
            for result in early:
                self.on_event(up, result)
            self.ready.set()
            self.watch()

    async def _head_now(self, ws: UpstreamWs) -> int | None:
        """The chain head now: clients subscribing now are owed what comes after it."""
        tip = self.mgr._chain_tip(self)
        if tip is not None:
            return tip
        try:
            answer = await ws.request("eth_blockNumber", [], 2.0)
            return int(answer, 16) if isinstance(answer, str) else None
        except Exception:  # unknown: the first head becomes the baseline
            return None

    def on_event(self, up: _Upstream, result: Any) -> None:
        if up.early is not None:
            up.early.append(result)
            return
        if self.closed or not up.live:
            return
        pid = up.provider
        fact: Fact
        if self.kind == "newHeads":
            h = parse_header(result)
            if h is None:
                self.malformed += 1
                return
            if up is self.upstream:
                self.last_head_at = monotonic()
                self.last_head_number = h.number
            self.mgr._head_seen(self, pid, h.number)
            fact = HeadReceived(provider=pid, header=h)
        elif self.kind == "logs":
            entry = parse_log(result)
            if entry is None:
                self.malformed += 1
                return
            fact = LogReceived(provider=pid, log=entry)
        else:
            tx = result.get("hash") if isinstance(result, dict) else result
            if not isinstance(tx, str):
                self.malformed += 1
                return
            fact = TxReceived(provider=pid, tx_hash=tx.lower(), payload=result)
        self.feed(fact)

    def on_end(self, up: _Upstream, reason: str) -> None:
        up.live = False
        if up in self.olds:
            self.olds.remove(up)
        if up is self.upstream:
            self.lose(f"upstream subscription ended: {reason}", keep=False)

    def lose(self, reason: str, *, keep: bool) -> None:
        """The primary upstream is lost: fail over (keeping it briefly if still alive)."""
        up = self.upstream
        if up is None or self.closed:
            return
        self.upstream = None
        self.failovers += 1
        if keep and up.live:
            self.olds.append(up)
            self.mgr.app.loop.call_later(self.mgr.overlap_s, self._retire, up)
        log.warning(
            "subscription failing over",
            extra={
                "event": "subscription.failover",
                "chain": self.chain,
                "kind": self.kind,
                "provider": up.provider,
                "reason": reason,
            },
        )
        self.rt().events.state(
            {
                "type": "subscription_failover",
                "chain": self.chain,
                "kind": self.kind,
                "provider": up.provider,
                "reason": reason,
            }
        )
        self.feed(UpstreamLost(provider=up.provider, reason=reason))

    def _retire(self, up: _Upstream) -> None:
        if up in self.olds:
            self.olds.remove(up)
            self.release(up)

    def release(self, up: _Upstream) -> None:
        up.live = False
        if up.sub_id is not None:
            self.mgr._spawn(up.ws.unsubscribe(up.sub_id))

    def _degraded(self, reason: str) -> None:
        if self.closed:
            return
        delay = min(self.mgr.retry_cap_s, self.mgr.retry_base_s * 2 ** min(self.retries, 6))
        self.retries += 1
        if self.retries == 1:
            log.warning(
                "subscription has no upstream",
                extra={"event": "subscription.degraded", "chain": self.chain, "kind": self.kind},
            )
        self.schedule_retry(delay)

    def schedule_retry(self, delay: float) -> None:
        if self.retry_handle is not None:
            self.retry_handle.cancel()
        self.retry_handle = self.mgr.app.loop.call_later(delay, self._retry)

    def _retry(self) -> None:
        self.retry_handle = None
        if not self.closed and self.machine.state is StreamState.DEGRADED:
            self.feed(Retry())

    # -- watchdog: staleness and open circuits ------------------------------------------
    def watch(self) -> None:
        if self.watch_handle is None and not self.closed:
            self.watch_handle = self.mgr.app.loop.call_later(self._watch_interval(), self._watch)

    def _stale_after(self) -> float:
        s = self.mgr.stale_timeout_s
        return s if s is not None else self.rt().config.new_heads_timeout_ms / 1000

    def _watch_interval(self) -> float:
        interval = self.mgr.circuit_check_s
        if self.kind == "newHeads":
            interval = min(interval, self._stale_after() / 2)
        return max(0.01, interval)

    def _watch(self) -> None:
        self.watch_handle = None
        if self.closed:
            return
        up = self.upstream
        if up is not None:
            rt = self.rt()
            now = monotonic()
            if self.mgr._provider_open(rt, up.provider, now):
                self.lose("circuit open", keep=True)
            elif (
                self.kind == "newHeads"
                and now - self.last_head_at > self._stale_after()
                and not self._chain_idle(rt, now)
            ):
                stale = up.provider
                self.lose("stale: no new head", keep=True)
                # Its logs and pending-transaction feeds are as silent: move them too
                # (logs have no staleness of their own; their events may be rare).
                for kind in ("logs", "newPendingTransactions"):
                    for other in self.mgr._related(self, kind):
                        if other.upstream is not None and other.upstream.provider == stale:
                            other.lose("stale: its newHeads went silent", keep=True)
        self.watch()

    def _chain_idle(self, rt: ChainRuntime, now: float) -> bool:
        """True when nobody has seen a newer block either: the chain, not the provider,
        is quiet (a dev chain), so failing over would not help."""
        consensus = rt.router.state.consensus(now)
        last = self.last_head_number
        return consensus is not None and last is not None and consensus <= last

    # -- backfill ------------------------------------------------------------------------
    async def _backfill(self, bf: Backfill) -> None:
        rt = self.rt()
        fact: Fact
        try:
            async with asyncio.timeout(rt.config.backfill_timeout_ms / 1000):
                fact = await self._fetch(rt, bf)
        except Exception as exc:  # timeout, no provider, garbage: the kernel decides what next
            log.warning(
                "backfill failed",
                extra={
                    "event": "subscription.backfill_failed",
                    "chain": self.chain,
                    "kind": self.kind,
                    "from_block": bf.from_block,
                    "to_block": bf.to_block,
                    "error": str(exc) or type(exc).__name__,
                },
            )
            fact = BackfillFailed(request_id=bf.request_id)
        self.feed(fact)

    async def _fetch(self, rt: ChainRuntime, bf: Backfill) -> Fact:
        exclude = set(bf.exclude)
        hi = bf.to_block
        if hi is None:
            head = await self._call(rt, "eth_blockNumber", [], exclude)
            if not isinstance(head, str):
                raise _BackfillError("eth_blockNumber returned no number")
            hi = int(head, 16)
        lo = bf.from_block
        cap = rt.config.max_backfill_blocks
        if hi - lo + 1 > cap:
            lo = hi - cap + 1  # the most recent blocks; the kernel reports the skipped ones
        if hi < lo:
            return BackfillDone(request_id=bf.request_id, from_block=lo, to_block=hi)
        if self.kind == "logs":
            flt = {**self.key.log_filter(), "fromBlock": hex(lo), "toBlock": hex(hi)}
            logs = await self._call(rt, "eth_getLogs", [flt], exclude)
            if not isinstance(logs, list):
                raise _BackfillError("eth_getLogs returned no list")
            entries = tuple(e for e in map(parse_log, logs) if e is not None)
            return BackfillDone(request_id=bf.request_id, from_block=lo, to_block=hi, logs=entries)
        gate = asyncio.Semaphore(BACKFILL_CONCURRENCY)

        async def block(n: int) -> Any:
            async with gate:
                try:
                    return await self._call(rt, "eth_getBlockByNumber", [hex(n), False], exclude)
                except _BackfillError:
                    return None  # a missing block: the kernel retries or skips it

        blocks = await asyncio.gather(*(block(n) for n in range(lo, hi + 1)))
        headers = tuple(h for h in map(parse_header, blocks) if h is not None)
        if not headers:
            raise _BackfillError(f"no block of {lo}..{hi} could be fetched")
        return BackfillDone(request_id=bf.request_id, from_block=lo, to_block=hi, headers=headers)

    async def _call(self, rt: ChainRuntime, method: str, params: list[Any], avoid: set[str]) -> Any:
        """One backfill call: providers by ``fastest``, one at a time, ``avoid`` last.

        A ``null`` block (the provider has not seen it yet) moves on to the next provider.
        """
        loop = self.mgr.app.loop
        tried: set[str] = set()
        last = "no provider"
        for _ in range(3):
            now = monotonic()
            chans = rt.router.candidates(
                method, params, "fastest", now, provider_id=self.override, exclude=tried | avoid
            )
            if not chans:
                chans = rt.router.candidates(
                    method, params, "fastest", now, provider_id=self.override, exclude=tried
                )
            if not chans:
                break
            pid = chans[0].provider_id
            tried.add(pid)
            out = await execute(rt, method, params, "fastest", pid, loop)
            if out.body is None:
                last = str((out.error or {}).get("message"))
                continue
            doc = orjson.loads(out.body)
            result = doc.get("result") if isinstance(doc, dict) else None
            if result is None:
                last = f"{pid}: no result"
                continue
            return result
        raise _BackfillError(f"{method}: {last}")

    # -- teardown ------------------------------------------------------------------------
    def close(self) -> None:
        if self.closed:
            return
        self.feed(Close())
        self.closed = True
        for handle in (self.retry_handle, self.grace_handle, self.watch_handle):
            if handle is not None:
                handle.cancel()
        for task in list(self.tasks):
            task.cancel()
        for up in [self.upstream, *self.olds]:
            if up is not None:
                self.release(up)
        self.upstream = None
        self.olds.clear()
        self.ready.set()


class SubscriptionManager:
    """Client subscriptions of one node, shared per (profile, chain, override, key).

    Attributes (tune them before clients arrive; tests shorten them):
        grace_s: seconds an upstream subscription outlives its last client (30).
        establish_timeout_s: how long a first ``eth_subscribe`` waits for an upstream (5).
        subscribe_timeout_s: bound on one upstream ``eth_subscribe`` call (10).
        overlap_s: how long a stale or circuit-open upstream keeps delivering after a
            failover, deduplicated (5).
        stale_timeout_s: newHeads staleness; ``None`` uses the chain's
            ``websocket.new_heads_timeout_ms``.
        circuit_check_s: how often a stream checks its provider's circuits (1).
        retry_base_s, retry_cap_s: the degraded backoff, ``base × 2^n`` up to ``cap``.
    """

    def __init__(self, app: LassoApp) -> None:
        self.app = app
        self.grace_s = 30.0
        self.establish_timeout_s = 5.0
        self.subscribe_timeout_s = 10.0
        self.overlap_s = 5.0
        self.stale_timeout_s: float | None = None
        self.circuit_check_s = 1.0
        self.retry_base_s = 0.1
        self.retry_cap_s = 5.0
        self._streams: dict[StreamKey, _Stream] = {}
        self._subs: dict[str, tuple[SubscriptionClient, _Stream]] = {}
        self._by_client: dict[int, set[str]] = {}
        self._retired: dict[tuple[str, str, str], int] = {}
        self._watched: weakref.WeakSet[UpstreamWs] = weakref.WeakSet()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        app.metrics.extra_collectors.append(self._collect)
        app.events.subscribe(self._on_bus_event)

    def __repr__(self) -> str:
        return (
            f"<SubscriptionManager streams={len(self._streams)} "
            f"client_subscriptions={len(self._subs)} clients={len(self._by_client)}>"
        )

    @property
    def streams(self) -> list[_Stream]:
        return list(self._streams.values())

    # -- the endpoint's side -------------------------------------------------------------
    async def subscribe(self, client: SubscriptionClient, params: list[Any]) -> str:
        """Subscribe ``client`` (``eth_subscribe`` with ``params``).

        Returns:
            The client subscription id: 16 lowercase hex characters, the same for the life
            of the subscription whatever happens upstream.

        Raises:
            SubscriptionError: ``-32602`` for bad params, an unsupported kind or an override
                provider that cannot serve it; ``-32000`` when no provider can serve it.
        """
        if self._closed:
            raise SubscriptionError(-32000, "Node is shutting down")
        rt = client.rt
        try:
            key = parse_subscription(params)
        except SubscriptionParamsError as exc:
            raise SubscriptionError(-32602, f"Invalid subscription parameters: {exc}") from None
        override = client.provider_id
        self._check_providers(rt, key, override)
        skey: StreamKey = (rt.profile, rt.key, override, key)
        stream = self._streams.get(skey) or self._open(skey, rt, key)
        if stream.grace_handle is not None:
            stream.grace_handle.cancel()
            stream.grace_handle = None
        if not stream.ready.is_set():
            stream.waiters += 1
            try:
                async with asyncio.timeout(self.establish_timeout_s):
                    await stream.ready.wait()
            except TimeoutError:
                pass
            finally:
                stream.waiters -= 1
            if stream.closed or not stream.ready.is_set():
                self._maybe_release(stream)
                raise SubscriptionError(
                    -32000, f"No provider available for {key.kind} subscriptions on {rt.key}"
                )
        sub_id = os.urandom(8).hex()
        while sub_id in self._subs:  # pragma: no cover - 64 random bits
            sub_id = os.urandom(8).hex()
        stream.clients[sub_id] = client
        stream.prefixes[sub_id] = _PREFIX + sub_id.encode() + _MIDDLE
        self._subs[sub_id] = (client, stream)
        self._by_client.setdefault(client.id, set()).add(sub_id)
        counts = self.app.metrics.subscriptions
        mkey = (rt.key, key.kind)
        counts[mkey] = counts.get(mkey, 0) + 1
        return sub_id

    def unsubscribe(self, client: SubscriptionClient, sub_id: str) -> bool:
        """End ``client``'s subscription ``sub_id``; False if it has none by that id."""
        entry = self._subs.get(sub_id)
        if entry is None or entry[0] is not client:
            return False
        self._remove(sub_id)
        return True

    def drop_client(self, client: SubscriptionClient) -> None:
        """End every subscription of ``client`` (its socket closed)."""
        for sub_id in list(self._by_client.get(client.id, ())):
            self._remove(sub_id)

    async def aclose(self) -> None:
        """Unsubscribe every upstream (best effort, bounded) and stop all timers."""
        self._closed = True
        for stream in list(self._streams.values()):
            self._close(stream)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2.0)

    # -- internals ------------------------------------------------------------------------
    def _check_providers(
        self, rt: ChainRuntime, key: SubscriptionKey, override: str | None
    ) -> None:
        chain = rt.config
        if override is not None:
            p = chain.provider(override)
            if p is None or not p.ws_url:
                raise SubscriptionError(
                    -32602, f"Provider '{override}' has no ws_url: it cannot serve subscriptions"
                )
            if key.kind == "newHeads" and not follows_new_heads(chain, p):
                raise SubscriptionError(
                    -32602, f"Provider '{override}' does not serve newHeads (subscribe_new_heads)"
                )
            return
        if not any(
            p.ws_url and (key.kind != "newHeads" or follows_new_heads(chain, p))
            for p in chain.providers
        ):
            raise SubscriptionError(
                -32000, f"No WebSocket provider configured for {key.kind} on {rt.key}"
            )

    def _open(self, skey: StreamKey, rt: ChainRuntime, key: SubscriptionKey) -> _Stream:
        stream = _Stream(self, skey, rt, key)
        self._streams[skey] = stream
        if key.kind == "logs":
            heads_key = parse_subscription(["newHeads"])
            hkey: StreamKey = (skey[0], skey[1], skey[2], heads_key)
            heads = self._streams.get(hkey)
            if heads is None:
                try:
                    self._check_providers(rt, heads_key, skey[2])
                except SubscriptionError:
                    heads = None  # no newHeads feed on this chain: logs go without hints
                else:
                    heads = self._open(hkey, rt, heads_key)
            if heads is not None:
                heads.internal += 1
                if heads.grace_handle is not None:
                    heads.grace_handle.cancel()
                    heads.grace_handle = None
                stream.heads = heads
        stream.feed(Start())
        return stream

    def _remove(self, sub_id: str) -> None:
        entry = self._subs.pop(sub_id, None)
        if entry is None:
            return
        client, stream = entry
        stream.clients.pop(sub_id, None)
        stream.prefixes.pop(sub_id, None)
        mine = self._by_client.get(client.id)
        if mine is not None:
            mine.discard(sub_id)
            if not mine:
                del self._by_client[client.id]
        counts = self.app.metrics.subscriptions
        mkey = (stream.chain, stream.kind)
        counts[mkey] = max(0, counts.get(mkey, 0) - 1)
        self._maybe_release(stream)

    def _maybe_release(self, stream: _Stream) -> None:
        if stream.refs or stream.closed or stream.grace_handle is not None:
            return
        if not stream.ready.is_set() or self._closed:
            self._close(stream)  # never served anyone: nothing to keep warm
            return
        stream.grace_handle = self.app.loop.call_later(self.grace_s, self._grace_over, stream)

    def _grace_over(self, stream: _Stream) -> None:
        stream.grace_handle = None
        if stream.refs == 0:
            self._close(stream)

    def _close(self, stream: _Stream) -> None:
        if self._streams.get(stream.skey) is stream:
            del self._streams[stream.skey]
        m = stream.machine
        for name, n in (
            ("duplicates", m.duplicates),
            ("dropped", m.dropped),
            ("backfilled", m.backfilled),
            ("failovers", stream.failovers),
            ("slow_client", stream.slow_drops),
            ("malformed", stream.malformed),
        ):
            k = (stream.chain, stream.kind, name)
            self._retired[k] = self._retired.get(k, 0) + n
        stream.close()
        heads, stream.heads = stream.heads, None
        if heads is not None:
            heads.internal -= 1
            self._maybe_release(heads)

    def _spawn(self, coro: Any) -> None:
        task = self.app.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _related(self, stream: _Stream, kind: str) -> Iterable[_Stream]:
        for other in list(self._streams.values()):
            if (
                other.kind == kind
                and other.profile == stream.profile
                and other.chain == stream.chain
                and other.override == stream.override
            ):
                yield other

    def _blocks_dropped(self, heads: _Stream, blocks: tuple[tuple[int, str], ...]) -> None:
        log.info(
            "reorg: %d blocks dropped",
            len(blocks),
            extra={"event": "subscription.reorg", "chain": heads.chain, "from_block": blocks[0][0]},
        )
        heads.rt().events.state(
            {
                "type": "subscription_reorg",
                "chain": heads.chain,
                "from_block": blocks[0][0],
                "dropped": len(blocks),
            }
        )
        for stream in self._related(heads, "logs"):
            stream.feed(BlocksDropped(blocks=blocks))

    def _head_seen(self, heads: _Stream, provider: str, number: int) -> None:
        for stream in self._related(heads, "logs"):
            stream.feed(HeadSeen(provider=provider, number=number))

    def _chain_tip(self, stream: _Stream) -> int | None:
        heads = stream.heads
        if heads is not None and heads.machine.tip is not None:
            return heads.machine.tip
        return stream.rt().router.state.consensus(monotonic())

    @staticmethod
    def _provider_open(rt: ChainRuntime, provider: str, now: float) -> bool:
        """The provider's WebSocket circuit is open. *Decision*: only the WS breaker
        counts; an open HTTP circuit (say after backfills hit it while it was down) says
        nothing about a live subscription socket and must not keep it out for 60 s."""
        ch = rt.router.channel(provider, "ws")
        return ch is not None and ch.breaker.state(now) is BreakerState.OPEN

    def _watch_connections(self, rt: ChainRuntime) -> None:
        """Retry degraded streams as soon as one of the chain's upstreams connects."""
        for ws in rt.ws.values():
            if ws not in self._watched:
                self._watched.add(ws)
                ws.add_state_listener(partial(self._on_ws_state, weakref.ref(ws)))

    def _on_ws_state(self, ref: weakref.ref[UpstreamWs], connected: bool) -> None:
        ws = ref()
        if not connected or ws is None or self._closed:
            return
        for stream in list(self._streams.values()):
            if stream.machine.state is StreamState.DEGRADED and ws in stream.rt().ws.values():
                stream.schedule_retry(0.0)

    def _on_bus_event(self, event: dict[str, Any]) -> None:
        if event.get("type") != "circuit" or event.get("to") != "open":
            return
        if event.get("transport") != "ws":
            return
        for stream in list(self._streams.values()):
            up = stream.upstream
            if up is not None and stream.chain == event.get("chain"):
                if up.provider == event.get("provider"):
                    stream.lose("circuit open", keep=True)

    # -- metrics ----------------------------------------------------------------------------
    def _collect(self, node: str, now: float) -> Iterable[Metric]:
        upstreams = GaugeMetricFamily(
            "lasso_upstream_subscriptions",
            "Upstream subscriptions feeding client subscriptions (shared by all their clients)",
            labels=["node_id", "chain", "kind", "provider"],
        )
        ups: dict[tuple[str, str, str], int] = {}
        totals = dict(self._retired)
        for s in self._streams.values():
            if s.upstream is not None:
                k3 = (s.chain, s.kind, s.upstream.provider)
                ups[k3] = ups.get(k3, 0) + 1
            m = s.machine
            for name, n in (
                ("duplicates", m.duplicates),
                ("dropped", m.dropped),
                ("backfilled", m.backfilled),
                ("failovers", s.failovers),
                ("slow_client", s.slow_drops),
                ("malformed", s.malformed),
            ):
                k = (s.chain, s.kind, name)
                totals[k] = totals.get(k, 0) + n
        for (chain, kind, provider), n in sorted(ups.items()):
            upstreams.add_metric([node, chain, kind, provider], float(n))
        yield upstreams
        families = {
            "failovers": CounterMetricFamily(
                "lasso_subscription_failovers",
                "Upstream subscriptions moved to another provider",
                labels=["node_id", "chain", "kind"],
            ),
            "backfilled": CounterMetricFamily(
                "lasso_backfilled_blocks",
                "Blocks recovered over HTTP after a gap (logs: blocks scanned)",
                labels=["node_id", "chain", "kind"],
            ),
            "duplicates": CounterMetricFamily(
                "lasso_subscription_duplicates_dropped",
                "Upstream events not delivered because clients already had them",
                labels=["node_id", "chain", "kind"],
            ),
        }
        dropped = CounterMetricFamily(
            "lasso_subscription_events_dropped",
            "Events clients did not get: skipped blocks (gap), slow clients, malformed",
            labels=["node_id", "chain", "kind", "reason"],
        )
        reasons = {"dropped": "gap", "slow_client": "slow_client", "malformed": "malformed"}
        for (chain, kind, name), n in sorted(totals.items()):
            if name in families:
                families[name].add_metric([node, chain, kind], float(n))
            else:
                dropped.add_metric([node, chain, kind, reasons[name]], float(n))
        yield from families.values()
        yield dropped
