"""Getting a stream its upstream subscription, and turning upstream events into facts.

``Resubscribe`` runs :func:`subscribe_loop`: ask the chain's router for ``eth_subscribe``
candidates (strategy ``priority``, WS channels that are connected, not excluded, WS circuit
not open, for newHeads only providers that ``subscribe_new_heads``), try the first; logs
and pending transaction streams prefer the provider feeding the chain's newHeads stream.
Events the upstream delivers before ``eth_subscribe`` has returned are held and replayed
once the kernel knows the subscription (``Subscribed``).
"""

from __future__ import annotations

import logging
from functools import partial
from time import monotonic
from typing import TYPE_CHECKING, Any

from lasso.kernel.subscriptions import (
    Fact,
    HeadReceived,
    LogReceived,
    NoProvider,
    Subscribed,
    SubscribeFailed,
    TxReceived,
    parse_header,
    parse_log,
)
from lasso.server.subscriptions.failover import on_end, watch
from lasso.server.ws_upstreams import follows_new_heads

if TYPE_CHECKING:
    from lasso.net.ws_upstream import UpstreamWs
    from lasso.server.subscriptions.stream import Stream

__all__ = ["Upstream", "candidates", "on_event", "subscribe_loop"]

log = logging.getLogger("lasso.subscriptions")


class Upstream:
    """One upstream subscription attempt (or a live one) on a provider."""

    __slots__ = ("ws", "provider", "sub_id", "early", "live")

    def __init__(self, ws: UpstreamWs, provider: str) -> None:
        self.ws = ws
        self.provider = provider
        self.sub_id: str | None = None
        self.early: list[Any] | None = []  # events delivered before subscribe() returned
        self.live = True


def candidates(stream: Stream, exclude: frozenset[str]) -> list[tuple[str, UpstreamWs]]:
    """The connected upstream WebSockets that may serve ``stream``, best first."""
    rt = stream.rt()
    now = monotonic()
    chans = rt.router.candidates(
        "eth_subscribe",
        stream.params,
        "priority",
        now,
        provider_id=stream.override,
        exclude=exclude,
    )
    out: list[tuple[str, UpstreamWs]] = []
    for ch in chans:
        pid = ch.provider_id
        if ch.transport != "ws" or stream.mgr._provider_open(rt, pid, now):
            continue
        if stream.kind == "newHeads" and not follows_new_heads(rt.config, ch.provider):
            continue
        ws = rt.ws.get(pid)
        if ws is not None and ws.connected:
            out.append((pid, ws))
    heads = stream.heads
    if heads is not None and heads.upstream is not None:
        # Logs next to the chain's newHeads feed: its heads mark our progress.
        out.sort(key=lambda c: c[0] != heads.upstream.provider)  # type: ignore[union-attr]
    return out


async def subscribe_loop(stream: Stream) -> None:
    """Subscribe upstream until one provider accepts, or the kernel gives up (degraded).

    Runs while ``stream.want`` is set; each ``Resubscribe`` while it runs sets it again.
    """
    while stream.want is not None and not stream.closed:
        exclude, stream.want = stream.want, None
        stream.mgr._watch_connections(stream.rt())
        cands = candidates(stream, exclude)
        if not cands:
            stream.feed(NoProvider())
            continue
        pid, ws = cands[0]
        up = Upstream(ws, pid)
        try:
            up.sub_id = await ws.subscribe(
                stream.params,
                partial(on_event, stream, up),
                partial(on_end, stream, up),
                timeout=stream.mgr.subscribe_timeout_s,
            )
        except Exception as exc:  # UpstreamError, UpstreamRpcError, a bad answer
            log.info(
                "upstream subscribe failed",
                extra={
                    "event": "subscription.subscribe_failed",
                    "chain": stream.chain,
                    "kind": stream.kind,
                    "provider": pid,
                    "error": str(exc),
                },
            )
            stream.feed(SubscribeFailed(provider=pid))
            continue
        head = None
        if stream.kind == "logs" or (stream.kind == "newHeads" and stream.machine.tip is None):
            head = await _head_now(stream, ws)
        if stream.closed:
            stream.release(up)
            return
        if not up.live:  # dropped while we asked for the head
            stream.feed(SubscribeFailed(provider=pid))
            continue
        early, up.early = up.early or [], None
        stream.upstream = up
        stream.retries = 0
        stream.last_head_at = monotonic()
        stream.feed(Subscribed(provider=pid, head=head))
        for result in early:
            on_event(stream, up, result)
        stream.ready.set()
        watch(stream)


async def _head_now(stream: Stream, ws: UpstreamWs) -> int | None:
    """The chain head now: clients subscribing now are owed what comes after it."""
    tip = stream.mgr._chain_tip(stream)
    if tip is not None:
        return tip
    try:
        answer = await ws.request("eth_blockNumber", [], 2.0)
        return int(answer, 16) if isinstance(answer, str) else None
    except Exception:  # unknown: the first head becomes the baseline
        return None


def on_event(stream: Stream, up: Upstream, result: Any) -> None:
    """One event of upstream subscription ``up``: parse it into a fact for the kernel."""
    if up.early is not None:
        up.early.append(result)
        return
    if stream.closed or not up.live:
        return
    pid = up.provider
    fact: Fact
    if stream.kind == "newHeads":
        h = parse_header(result)
        if h is None:
            stream.malformed += 1
            return
        if up is stream.upstream:
            stream.last_head_at = monotonic()
            stream.last_head_number = h.number
        stream.mgr._head_seen(stream, pid, h.number)
        fact = HeadReceived(provider=pid, header=h)
    elif stream.kind == "logs":
        entry = parse_log(result)
        if entry is None:
            stream.malformed += 1
            return
        fact = LogReceived(provider=pid, log=entry)
    else:
        tx = result.get("hash") if isinstance(result, dict) else result
        if not isinstance(tx, str):
            stream.malformed += 1
            return
        fact = TxReceived(provider=pid, tx_hash=tx.lower(), payload=result)
    stream.feed(fact)
