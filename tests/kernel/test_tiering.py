"""Health tiers: the §2.3 table."""

from __future__ import annotations

import pytest

from lasso.kernel import tiering
from lasso.kernel.breaker import BreakerState
from lasso.kernel.tiering import EXCLUDED, tier


@pytest.mark.parametrize(
    ("state", "rate_limited", "expected"),
    [
        (BreakerState.CLOSED, False, 1),
        (BreakerState.HALF_OPEN, False, 2),
        (BreakerState.CLOSED, True, 3),
        (BreakerState.HALF_OPEN, True, 4),
        (BreakerState.OPEN, False, EXCLUDED),
        (BreakerState.OPEN, True, EXCLUDED),
        (0, False, 1),
        (2, True, 0),
    ],
)
def test_tier_table(state: int, rate_limited: bool, expected: int) -> None:
    """Closed < half-open < rate-limited closed < rate-limited half-open; open excluded."""
    assert tier(state, rate_limited) == expected


def test_exports() -> None:
    """__all__ is the tier function and the excluded tier."""
    assert sorted(tiering.__all__) == ["EXCLUDED", "tier"]
