"""Hedging (CONTRACT §7): when to race a second provider, and how many races a chain affords.

* :func:`hedge_delay_s`: a fixed ``delay_ms``, or the ``quantile`` of the first provider's
  recent latencies for the method (its :class:`~.stats.MethodStats` window), clamped to
  ``min_delay_ms .. max_delay_ms``. With fewer than :data:`~.stats.QUANTILE_MIN_SAMPLES`
  latencies the delay is ``max_delay_ms``: a cold provider is not raced early (the
  "cold-start hedge storm" of other proxies).
* :class:`HedgeBudget`: hedges as a share of the chain's requests over a sliding minute,
  counted in one-second buckets. A hedge is allowed while ``hedges + 1 <= percent/100 x
  requests`` in the window, so a chain sending 10 requests a minute at 10 % gets one.
* :class:`ChainHedging`: one chain's settings (the chain's ``routing.hedge`` and each
  method override's) and its budget.

Pure: ``now`` comes in as an argument.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from lasso.config import ChainConfig, HedgeConfig

from .stats import MethodStats

__all__ = ["BUDGET_WINDOW_S", "ChainHedging", "HedgeBudget", "hedge_delay_s"]

BUDGET_WINDOW_S = 60.0
"""The budget's sliding window: hedges are a share of the requests of the last minute."""


def hedge_delay_s(config: HedgeConfig, row: MethodStats | None) -> float:
    """Seconds to wait for the first attempt before hedging it.

    Args:
        config: the hedge settings that apply to the request.
        row: the first provider's latency row for the method (``None`` when it has none).
    """
    if config.delay_ms is not None:
        return config.delay_ms / 1000.0
    quantile = None
    if row is not None and config.quantile is not None:
        quantile = row.latency_quantile(config.quantile)
    if quantile is None:
        return config.max_delay_ms / 1000.0
    return min(max(quantile, config.min_delay_ms), config.max_delay_ms) / 1000.0


class HedgeBudget:
    """Requests and hedges over a sliding window, in equal buckets.

    Args:
        window_s: the window (one minute by default).
        buckets: how many buckets it is cut into; the window slides by one bucket at a time.
    """

    __slots__ = ("_hedge_total", "_hedges", "_head", "_request_total", "_requests", "_width")

    def __init__(self, window_s: float = BUDGET_WINDOW_S, buckets: int = 60) -> None:
        if window_s <= 0 or buckets < 1:
            raise ValueError("the window and the bucket count must be positive")
        self._width = window_s / buckets
        self._requests = [0] * buckets
        self._hedges = [0] * buckets
        self._request_total = 0
        self._hedge_total = 0
        self._head: int | None = None  # the bucket number (time // width) of the newest bucket

    def _advance(self, now: float) -> int:
        """Slide the window to ``now``; return the current bucket's slot."""
        index = int(now // self._width)
        head = self._head
        n = len(self._requests)
        if head is None:
            self._head = index
        elif index > head:
            requests, hedges = self._requests, self._hedges
            for k in range(head + 1, head + 1 + min(index - head, n)):
                slot = k % n
                self._request_total -= requests[slot]
                self._hedge_total -= hedges[slot]
                requests[slot] = 0
                hedges[slot] = 0
            self._head = index
        else:  # a clock that stepped back counts into the newest bucket
            index = head
        return index % n

    def note_request(self, now: float) -> None:
        """Count one request of the chain (every request, hedged or not)."""
        slot = self._advance(now)
        self._requests[slot] += 1
        self._request_total += 1

    def try_spend(self, now: float, percent: float) -> bool:
        """Take one hedge if the window affords it at ``percent`` of its requests.

        Returns:
            True when the hedge is counted and may be sent; False when the budget is spent
            (the caller reports ``skipped_budget``).
        """
        slot = self._advance(now)
        if (self._hedge_total + 1) * 100.0 > percent * self._request_total:
            return False
        self._hedges[slot] += 1
        self._hedge_total += 1
        return True

    def refund(self, now: float) -> None:
        """Give back a hedge that was never sent (its breaker refused it)."""
        slot = self._advance(now)
        if self._hedges[slot] > 0:
            self._hedges[slot] -= 1
            self._hedge_total -= 1

    def counts(self, now: float) -> tuple[int, int]:
        """``(requests, hedges)`` in the window ending at ``now``."""
        self._advance(now)
        return self._request_total, self._hedge_total

    def __repr__(self) -> str:
        return f"<HedgeBudget requests={self._request_total} hedges={self._hedge_total}>"


class ChainHedging:
    """The hedge settings of one chain and its budget.

    Args:
        default: the chain's ``routing.hedge``.
        overrides: per method, a ``method_overrides.<m>.hedge`` that replaces it
            (``None`` turns hedging off for that method).
    """

    __slots__ = ("_default", "_overrides", "budget")

    def __init__(
        self, default: HedgeConfig | None, overrides: Mapping[str, HedgeConfig | None]
    ) -> None:
        self._default = default
        self._overrides = MappingProxyType(dict(overrides))
        self.budget = HedgeBudget()

    @classmethod
    def from_chain(cls, chain: ChainConfig) -> ChainHedging | None:
        """The chain's hedging, or ``None`` when neither it nor any method hedges."""
        overrides: dict[str, HedgeConfig | None] = {}
        for method, ov in chain.method_overrides.items():
            if ov.hedge is not None:
                overrides[method] = ov.hedge or None
        if chain.hedge is None and not any(overrides.values()):
            return None
        return cls(chain.hedge, overrides)

    def config_for(self, method: str) -> HedgeConfig | None:
        """The hedge settings that apply to ``method`` (``None``: never hedged)."""
        return self._overrides.get(method, self._default)

    def __repr__(self) -> str:
        return f"<ChainHedging default={self._default} overrides={len(self._overrides)}>"
