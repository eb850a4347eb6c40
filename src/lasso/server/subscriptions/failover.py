"""Losing a stream's upstream subscription, and the watchdog that notices it.

Failover triggers: the upstream subscription ends (connection lost, :func:`on_end`), a
newHeads stream goes stale (no head from its provider for
``websocket.new_heads_timeout_ms`` while the chain's consensus height has moved past it),
or the provider's WebSocket circuit opens (the watchdog, and the manager on the event
bus). After a stale or circuit failover the old upstream stays subscribed for
:attr:`SubscriptionManager.overlap_s <lasso.server.subscriptions.SubscriptionManager>` so
its events can still fill in (deduplicated).

``Degraded`` (no provider could take the subscription) retries after ``100 ms × 2^n``
(capped at 5 s), or at once when any of the chain's upstream WebSockets connects.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import TYPE_CHECKING

from lasso.kernel.subscriptions import Retry, StreamState, UpstreamLost

if TYPE_CHECKING:
    from lasso.server.runtime import ChainRuntime
    from lasso.server.subscriptions.stream import Stream
    from lasso.server.subscriptions.upstream import Upstream

__all__ = ["degraded", "lose", "on_end", "schedule_retry", "watch"]

log = logging.getLogger("lasso.subscriptions")


def on_end(stream: Stream, up: Upstream, reason: str) -> None:
    """Upstream subscription ``up`` ended (its connection dropped)."""
    up.live = False
    if up in stream.olds:
        stream.olds.remove(up)
    if up is stream.upstream:
        lose(stream, f"upstream subscription ended: {reason}", keep=False)


def lose(stream: Stream, reason: str, *, keep: bool) -> None:
    """The primary upstream is lost: fail over (keeping it briefly if still alive)."""
    up = stream.upstream
    if up is None or stream.closed:
        return
    stream.upstream = None
    stream.failovers += 1
    if keep and up.live:
        stream.olds.append(up)
        asyncio.get_running_loop().call_later(stream.mgr.overlap_s, _retire, stream, up)
    log.warning(
        "subscription failing over",
        extra={
            "event": "subscription.failover",
            "chain": stream.chain,
            "kind": stream.kind,
            "provider": up.provider,
            "reason": reason,
        },
    )
    stream.rt().events.state(
        {
            "type": "subscription_failover",
            "chain": stream.chain,
            "kind": stream.kind,
            "provider": up.provider,
            "reason": reason,
        }
    )
    stream.feed(UpstreamLost(provider=up.provider, reason=reason))


def _retire(stream: Stream, up: Upstream) -> None:
    if up in stream.olds:
        stream.olds.remove(up)
        stream.release(up)


# -- degraded: retry with backoff ---------------------------------------------------------
def degraded(stream: Stream, reason: str) -> None:
    """No provider took the subscription: retry after the stream's next backoff step."""
    if stream.closed:
        return
    mgr = stream.mgr
    delay = min(mgr.retry_cap_s, mgr.retry_base_s * 2 ** min(stream.retries, 6))
    stream.retries += 1
    if stream.retries == 1:
        log.warning(
            "subscription has no upstream",
            extra={"event": "subscription.degraded", "chain": stream.chain, "kind": stream.kind},
        )
    schedule_retry(stream, delay)


def schedule_retry(stream: Stream, delay: float) -> None:
    """Retry a degraded stream in ``delay`` seconds (replacing any earlier plan)."""
    if stream.retry_handle is not None:
        stream.retry_handle.cancel()
    stream.retry_handle = asyncio.get_running_loop().call_later(delay, _retry, stream)


def _retry(stream: Stream) -> None:
    stream.retry_handle = None
    if not stream.closed and stream.machine.state is StreamState.DEGRADED:
        stream.feed(Retry())


# -- watchdog: staleness and open circuits ------------------------------------------------
def watch(stream: Stream) -> None:
    """Start the stream's watchdog unless it runs already."""
    if stream.watch_handle is None and not stream.closed:
        stream.watch_handle = asyncio.get_running_loop().call_later(
            _watch_interval(stream), _watch, stream
        )


def _stale_after(stream: Stream) -> float:
    s = stream.mgr.stale_timeout_s
    return s if s is not None else stream.rt().config.new_heads_timeout_ms / 1000


def _watch_interval(stream: Stream) -> float:
    interval = stream.mgr.circuit_check_s
    if stream.kind == "newHeads":
        interval = min(interval, _stale_after(stream) / 2)
    return max(0.01, interval)


def _watch(stream: Stream) -> None:
    stream.watch_handle = None
    if stream.closed:
        return
    up = stream.upstream
    if up is not None:
        rt = stream.rt()
        now = monotonic()
        if stream.mgr._provider_open(rt, up.provider, now):
            lose(stream, "circuit open", keep=True)
        elif (
            stream.kind == "newHeads"
            and now - stream.last_head_at > _stale_after(stream)
            and not _chain_idle(stream, rt, now)
        ):
            stale = up.provider
            lose(stream, "stale: no new head", keep=True)
            # Its logs and pending-transaction feeds are as silent: move them too
            # (logs have no staleness of their own; their events may be rare).
            for kind in ("logs", "newPendingTransactions"):
                for other in stream.mgr._related(stream, kind):
                    if other.upstream is not None and other.upstream.provider == stale:
                        lose(other, "stale: its newHeads went silent", keep=True)
    watch(stream)


def _chain_idle(stream: Stream, rt: ChainRuntime, now: float) -> bool:
    """True when nobody has seen a newer block either: the chain, not the provider,
    is quiet (a dev chain), so failing over would not help."""
    consensus = rt.router.state.consensus(now)
    last = stream.last_head_number
    return consensus is not None and last is not None and consensus <= last
