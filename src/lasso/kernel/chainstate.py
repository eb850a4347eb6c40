"""Per-chain block heights: consensus height, block time and provider lag (reference §6).

Lag is how many blocks a provider is behind the consensus head: a positive number, 0 at
or above the head (:data:`LAG_CONVENTION`). The reference counted it negative; one sign
everywhere (API, metrics, logs, dashboard) is easier to read, so Lasso counts blocks
behind.

Heights arrive from block-sync polls, newHeads and probes through
:meth:`ChainState.observe_height`; routing reads :meth:`ChainState.consensus` and
:meth:`ChainState.optimistic_lag` on every request, so the consensus is cached until a new
observation arrives or one of its inputs ages out of the 30 s window.
"""

from __future__ import annotations

__all__ = [
    "BLOCK_TIME_ALPHA",
    "BLOCK_TIME_MAX_MS",
    "BLOCK_TIME_MIN_MS",
    "BLOCK_TIME_WARMUP",
    "CONSENSUS_WINDOW_S",
    "FALLBACK_BLOCK_TIME_MS",
    "LAG_CONVENTION",
    "LAG_CREDIT_CAP_MS",
    "ChainState",
]

CONSENSUS_WINDOW_S = 30.0
CONSENSUS_QUANTILE = 0.25  # index floor(n * q) of the heights sorted descending (P75)
BLOCK_TIME_ALPHA = 0.15
BLOCK_TIME_MIN_MS = 50
BLOCK_TIME_MAX_MS = 60_000
BLOCK_TIME_WARMUP = 5
FALLBACK_BLOCK_TIME_MS = 12_000
LAG_CREDIT_CAP_MS = 30_000
LAG_CONVENTION = "blocks behind the consensus head (>= 0)"
"""What every ``lag`` figure means, in the API, the metrics, the logs and the dashboard."""


class ChainState:
    """Heights per provider and what follows from them, for one chain.

    Args:
        block_time_ms: the chain's configured block time, used until the measured EMA is
            trusted (5 samples); 12,000 ms when neither is known.
    """

    __slots__ = (
        "_bt_ema",
        "_bt_samples",
        "_configured_bt_ms",
        "_consensus",
        "_consensus_valid_until",
        "_heights",
        "_lagging",
        "_lagging_limit",
        "_lagging_valid_until",
        "_max_at",
        "_max_height",
    )

    def __init__(self, block_time_ms: int | None = None) -> None:
        self._configured_bt_ms = block_time_ms if block_time_ms and block_time_ms > 0 else None
        self._heights: dict[str, tuple[int, float]] = {}  # provider id -> (height, observed)
        self._max_height: int | None = None
        self._max_at = 0.0
        self._bt_ema: float | None = None
        self._bt_samples = 0
        self._consensus: int | None = None
        self._consensus_valid_until = float("-inf")  # forces a first computation
        self._lagging: dict[str, int] = {}
        self._lagging_limit = 0
        self._lagging_valid_until = float("-inf")

    # -- inputs ---------------------------------------------------------------------------

    def observe_height(self, provider_id: str, height: int, now: float) -> None:
        """Record ``provider_id`` at ``height`` (last write wins) and update the block time.

        The block-time sample is taken over the chain-wide max height only when it
        increases: ``(now - when the previous max was first seen) // blocks advanced``,
        folded into the EMA when within 50..60,000 ms. Unlike the reference, re-observing the
        max height does not refresh its timestamp: with several providers reporting the
        same head at different moments, that would shorten every later interval.
        """
        self._heights[provider_id] = (height, now)
        self._consensus_valid_until = float("-inf")
        self._lagging_valid_until = float("-inf")
        top = self._max_height
        if top is None:
            self._max_height, self._max_at = height, now
            return
        if height <= top:
            return
        interval_ms = int((now - self._max_at) * 1000.0) // (height - top)
        if BLOCK_TIME_MIN_MS <= interval_ms <= BLOCK_TIME_MAX_MS:
            ema = self._bt_ema
            self._bt_ema = (
                float(interval_ms)
                if ema is None
                else ema * (1.0 - BLOCK_TIME_ALPHA) + interval_ms * BLOCK_TIME_ALPHA
            )
            self._bt_samples += 1
        self._max_height, self._max_at = height, now

    def observe_block(self, provider_id: str, number: int, now: float) -> None:
        """The provider answered with block ``number`` (a block by number, a ``latest``
        block): it has at least that block. Raises its height like :meth:`observe_height`
        when ``number`` is above the last report; a lower one says nothing new."""
        entry = self._heights.get(provider_id)
        if entry is None or number > entry[0]:
            self.observe_height(provider_id, number, now)

    def known_to_have(self, provider_id: str, block: int) -> bool:
        """True when the provider reported a height of at least ``block``: an answer of
        ``null`` for that block from it is the truth, not lag. No elapsed-time credit."""
        entry = self._heights.get(provider_id)
        return entry is not None and entry[0] >= block

    def forget(self, provider_id: str) -> None:
        """Drop a provider's height (removed from the config)."""
        if self._heights.pop(provider_id, None) is not None:
            self._consensus_valid_until = float("-inf")
            self._lagging_valid_until = float("-inf")

    # -- reads ----------------------------------------------------------------------------

    def consensus(self, now: float) -> int | None:
        """The consensus height: of the heights observed in the last 30 s, sorted
        descending, the one at index ``floor(n * 0.25)``; ``None`` with no fresh height
        (lag filtering is then off)."""
        if now < self._consensus_valid_until:
            return self._consensus
        fresh: list[int] = []
        oldest = float("inf")
        for height, at in self._heights.values():
            if now - at <= CONSENSUS_WINDOW_S:
                fresh.append(height)
                if at < oldest:
                    oldest = at
        if not fresh:
            self._consensus = None
            # Nothing can become fresh without an observation, which resets the cache.
            self._consensus_valid_until = float("inf")
            return None
        fresh.sort(reverse=True)
        self._consensus = fresh[int(len(fresh) * CONSENSUS_QUANTILE)]
        # Valid until the oldest input leaves the window (strictly after now - at > 30 s).
        self._consensus_valid_until = oldest + CONSENSUS_WINDOW_S
        return self._consensus

    @property
    def block_time_ms(self) -> float:
        """The measured EMA once trusted (5 samples), else the configured value, else 12 s."""
        if self._bt_samples >= BLOCK_TIME_WARMUP and self._bt_ema is not None:
            return self._bt_ema
        return float(self._configured_bt_ms or FALLBACK_BLOCK_TIME_MS)

    @property
    def max_height(self) -> int | None:
        return self._max_height

    def height(self, provider_id: str) -> int | None:
        """The provider's last reported height, ``None`` if it never reported."""
        entry = self._heights.get(provider_id)
        return None if entry is None else entry[0]

    def observed_at(self, provider_id: str) -> float | None:
        """When the provider's height was last reported (``now`` units), ``None`` if never."""
        entry = self._heights.get(provider_id)
        return None if entry is None else entry[1]

    def _credit(self, at: float, now: float) -> int:
        bt = self.block_time_ms
        elapsed_ms = (now - at) * 1000.0
        credit = int(elapsed_ms // bt) if elapsed_ms > 0 else 0
        cap = int(LAG_CREDIT_CAP_MS // bt)
        return credit if credit < cap else cap

    def optimistic_height(self, provider_id: str, now: float) -> int | None:
        """The reported height plus the blocks the provider has probably seen since
        (elapsed // block time, at most 30 s worth); ``None`` without a report."""
        entry = self._heights.get(provider_id)
        if entry is None:
            return None
        return entry[0] + self._credit(entry[1], now)

    def optimistic_lag(self, provider_id: str, now: float) -> int | None:
        """How many blocks the provider is behind the consensus head, counting the blocks
        it has probably seen since it reported: ``max(0, consensus - (height + credit))``
        (:data:`LAG_CONVENTION`); ``None`` when either the provider's height or the
        consensus is unknown."""
        entry = self._heights.get(provider_id)
        if entry is None:
            return None
        cons = self.consensus(now)
        if cons is None:
            return None
        behind = cons - entry[0] - self._credit(entry[1], now)
        return behind if behind > 0 else 0

    def lagging(self, now: float, max_lag_blocks: int) -> dict[str, int]:
        """Providers whose optimistic lag is more than ``max_lag_blocks``, with that lag
        (positive: blocks behind).

        Empty without a consensus; providers without a height are never lagging. The
        router calls this on every request, so the answer is cached: an optimistic lag only
        shrinks with time (the credit increases, capped) while the consensus and the block
        time stay fixed, so the set can only change when a new height arrives, the
        consensus' inputs age out, or a lagging provider's credit steps up. The cache
        expires at the earliest of those. The returned dict must not be modified.
        """
        if now < self._lagging_valid_until and max_lag_blocks == self._lagging_limit:
            return self._lagging
        cons = self.consensus(now)
        until = self._consensus_valid_until
        out: dict[str, int] = {}
        if cons is not None:
            bt = self.block_time_ms
            cap = int(LAG_CREDIT_CAP_MS // bt)
            floor = cons - max_lag_blocks
            for pid, (height, at) in self._heights.items():
                if height >= floor:
                    continue  # the credit is never negative: not lagging now or later
                elapsed_ms = (now - at) * 1000.0
                credit = int(elapsed_ms // bt) if elapsed_ms > 0 else 0
                if credit > cap:
                    credit = cap
                if height + credit < floor:
                    out[pid] = cons - height - credit
                    if credit < cap:
                        step = at + (credit + 1) * bt / 1000.0  # when the credit grows by one
                        if step < until:
                            until = step
        self._lagging = out
        self._lagging_limit = max_lag_blocks
        self._lagging_valid_until = until
        return out

    def has_block(self, provider_id: str, block: int, now: float) -> bool:
        """True unless the provider's optimistic height is known and below ``block``."""
        entry = self._heights.get(provider_id)
        if entry is None or entry[0] >= block:
            return True
        return entry[0] + self._credit(entry[1], now) >= block

    def raw_lag(self, provider_id: str, now: float) -> int | None:
        """Blocks behind the consensus by the last report alone, without the elapsed-time
        credit: ``max(0, consensus - height)``."""
        entry = self._heights.get(provider_id)
        if entry is None:
            return None
        cons = self.consensus(now)
        if cons is None:
            return None
        behind = cons - entry[0]
        return behind if behind > 0 else 0

    def snapshot(self, now: float) -> dict[str, object]:
        """A JSON-ready view: consensus, block time and per-provider height and lag."""
        return {
            "consensus_height": self.consensus(now),
            "max_height": self._max_height,
            "block_time_ms": round(self.block_time_ms, 1),
            "block_time_trusted": self._bt_samples >= BLOCK_TIME_WARMUP,
            "block_time_samples": self._bt_samples,
            "providers": {
                pid: {
                    "height": h,
                    "age_s": round(now - at, 3),
                    "lag": self.optimistic_lag(pid, now),
                    "raw_lag": self.raw_lag(pid, now),
                }
                for pid, (h, at) in self._heights.items()
            },
        }

    def __repr__(self) -> str:
        return (
            f"<ChainState providers={len(self._heights)} max={self._max_height} "
            f"block_time={self.block_time_ms:.0f}ms>"
        )
