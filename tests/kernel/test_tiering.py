"""Health tiers: the §2.3 table and the stable partition."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.kernel.breaker import BreakerState
from lasso.kernel.tiering import EXCLUDED, partition, tier


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


def test_partition_is_stable_and_drops_excluded() -> None:
    """Lower tiers first, strategy order kept inside each tier, tier 0 dropped."""
    items = ["a", "b", "c", "d", "e", "f"]
    tiers = [3, 1, 0, 2, 1, 3]
    assert partition(items, tiers) == ["b", "e", "d", "a", "f"]


def test_partition_fast_path_copies() -> None:
    """All tier 1: same order, new list."""
    items = ["x", "y"]
    out = partition(items, [1, 1])
    assert out == items
    assert out is not items


def test_partition_length_mismatch() -> None:
    """Sequences of different lengths are a caller bug."""
    with pytest.raises(ValueError):
        partition(["a"], [1, 2])


@given(st.lists(st.integers(min_value=0, max_value=4)))
def test_partition_properties(tiers: list[int]) -> None:
    """Output is the non-excluded items, sorted by tier, stable."""
    items = list(range(len(tiers)))
    out = partition(items, tiers)
    assert out == sorted((i for i in items if tiers[i] != EXCLUDED), key=lambda i: tiers[i])
