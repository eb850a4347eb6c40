"""Health tiers (reference §2.3): applied after every strategy, keeping its order per tier.

The router ranks channels by :func:`tier` with a stable sort after its strategy; the status
views show it.

==== ========= ============
tier circuit   rate-limited
==== ========= ============
1    closed    no
2    half-open no
3    closed    yes
4    half-open yes
==== ========= ============

Open channels have no tier (:data:`EXCLUDED`, 0) and are dropped. So load-balanced traffic
concentrates on healthy channels, and fallbacks go through half-open ones before
rate-limited ones: a half-open breaker admits one probe at a time and heals on success,
while a rate-limited channel is known to refuse work until its expiry.
"""

from __future__ import annotations

from .breaker import BreakerState

__all__ = ["EXCLUDED", "tier"]

EXCLUDED = 0
"""The tier of an open circuit: the channel is not a candidate."""

_HALF_OPEN = int(BreakerState.HALF_OPEN)
_OPEN = int(BreakerState.OPEN)


def tier(breaker_state: int, rate_limited: bool) -> int:
    """Map a breaker state (:class:`~lasso.kernel.breaker.BreakerState` or its int value)
    and the rate-limit flag to a tier 1..4, or :data:`EXCLUDED` (0) for an open circuit."""
    if breaker_state == _OPEN:
        return EXCLUDED
    return (2 if breaker_state == _HALF_OPEN else 1) + (2 if rate_limited else 0)
