"""Node events for the log, the dashboard and the cluster: routing decisions and transitions.

Routing decisions are sampled with a token bucket (errors and failovers always pass), so
heavy traffic cannot turn observability into a cost: a request that is sampled out costs
one comparison. Breaker transitions and other state changes are never sampled and are
also written to the log as structured JSON lines.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from time import monotonic, time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lasso.kernel.router import Channel, Transition
    from lasso.server.pipeline import Outcome
    from lasso.server.runtime import ChainRuntime

__all__ = ["EventBus"]

log = logging.getLogger("lasso.events")

_RECENT_FAULT_S = 60.0
"""A breaker transition names the channel's last error when it is at most this old."""

Listener = Callable[[dict[str, Any]], None]


class EventBus:
    """Recent events in bounded rings, plus synchronous listeners.

    Args:
        node_id: stamped on every event.
        decisions_per_s: sampling budget for successful routing decisions.
        keep: how many recent decisions and state events to keep for new viewers.
    """

    def __init__(self, node_id: str, *, decisions_per_s: float = 50.0, keep: int = 200) -> None:
        self.node_id = node_id
        self.rate = decisions_per_s
        self.decisions: deque[dict[str, Any]] = deque(maxlen=keep)
        self.state_events: deque[dict[str, Any]] = deque(maxlen=keep)
        self.listeners: list[Listener] = []
        self.sampled_out = 0
        self._tokens = decisions_per_s
        self._refilled = monotonic()

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every published event; returns the unsubscribe function."""
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener) if listener in self.listeners else None

    def _emit(self, event: dict[str, Any]) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a viewer must never break routing
                log.exception("event listener failed")

    # -- routing decisions (hot path: sampled) ----------------------------------------
    def decision(
        self, rt: ChainRuntime, method: str, strategy: str, out: Outcome, elapsed_s: float
    ) -> None:
        if out.status == "success" and not out.retries:
            if self._tokens < 1.0:
                now = monotonic()
                self._tokens = min(self.rate, self._tokens + (now - self._refilled) * self.rate)
                self._refilled = now
                if self._tokens < 1.0:
                    self.sampled_out += 1
                    return
            self._tokens -= 1.0
        event: dict[str, Any] = {
            "type": "decision",
            "ts": time(),
            "node_id": self.node_id,
            "profile": rt.profile,
            "chain": rt.key,
            "method": method,
            "strategy": strategy,
            "provider": out.provider_id,
            "transport": out.transport,
            "retries": out.retries,
            "status": out.status,
            "latency_ms": round(elapsed_s * 1000, 3),
            "upstream_ms": round(out.upstream_latency * 1000, 3),
        }
        if out.error is not None:
            event["error"] = {"code": out.error.get("code"), "message": out.error.get("message")}
        self.decisions.append(event)
        if self.listeners:
            self._emit(event)

    # -- state changes (never sampled) ------------------------------------------------
    def transition(self, rt: ChainRuntime, ch: Channel, tr: Transition) -> None:
        event: dict[str, Any] = {
            "type": "circuit",
            "ts": time(),
            "node_id": self.node_id,
            "profile": rt.profile,
            "chain": rt.key,
            "provider": ch.provider.id,
            "transport": ch.transport,
            "from": str(tr.old),
            "to": str(tr.new),
            "reason": str(tr.event),
        }
        last = ch.health.last
        at = ch.health.last_at
        if last is not None and at is not None and monotonic() - at <= _RECENT_FAULT_S:
            event["cause"] = last.cause  # what made it fail (or what it failed with last)
            event["error"] = last.message
        level = logging.WARNING if str(tr.new) == "open" else logging.INFO
        log.log(
            level,
            "circuit breaker %s",
            event["to"],
            extra={"event": f"circuit_breaker.{event['to']}", **_fields(event)},
        )
        self.state(event)

    def state(self, event: dict[str, Any]) -> None:
        """Record and fan out a state event (breaker, lag, cluster, config)."""
        event.setdefault("ts", time())
        event.setdefault("node_id", self.node_id)
        self.state_events.append(event)
        if self.listeners:
            self._emit(event)

    def __repr__(self) -> str:
        return (
            f"<EventBus decisions={len(self.decisions)} state={len(self.state_events)} "
            f"listeners={len(self.listeners)} sampled_out={self.sampled_out}>"
        )


def _fields(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("type", "ts", "node_id")}
