"""Token buckets: refill, partial grants, retry hints and the bounded table, on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.kernel.clock import FakeClock
from lasso.kernel.ratelimit import BucketTable, TokenBucket, take


def test_a_new_bucket_grants_its_burst_then_refuses() -> None:
    """Burst tokens at once, then nothing until time passes."""
    bucket = TokenBucket(5, 0.0)
    assert [take(bucket, 10, 5, 1, 0.0)[0] for _ in range(6)] == [1, 1, 1, 1, 1, 0]


def test_retry_after_is_the_time_to_the_next_token() -> None:
    """An empty bucket at 4 rps says 0.25 s; half a token left says 0.125 s."""
    bucket = TokenBucket(0.0, 0.0)
    assert take(bucket, 4, 4, 1, 0.0) == (0, 0.25)
    assert take(bucket, 4, 4, 1, 0.125) == (0, pytest.approx(0.125))
    assert take(bucket, 4, 4, 1, 0.25) == (1, 0.0)


def test_partial_grant_for_a_batch() -> None:
    """Ten wanted, four held: four granted and the wait for the next one."""
    bucket = TokenBucket(4, 0.0)
    granted, wait = take(bucket, 2, 10, 10, 0.0)
    assert granted == 4 and wait == pytest.approx(0.5)


def test_refill_is_capped_at_the_burst() -> None:
    """An hour idle refills to the burst, not beyond."""
    bucket = TokenBucket(0, 0.0)
    assert take(bucket, 100, 7, 50, 3600.0)[0] == 7


def test_time_going_backwards_adds_nothing() -> None:
    """A clock step back is no time passing."""
    bucket = TokenBucket(1, 10.0)
    assert take(bucket, 10, 10, 1, 10.0)[0] == 1
    assert take(bucket, 10, 10, 1, 5.0)[0] == 0


def test_lowered_burst_clamps_at_once() -> None:
    """After a reload lowers the burst, saved tokens above it are gone."""
    bucket = TokenBucket(100, 0.0)
    assert take(bucket, 1, 3, 100, 0.0)[0] == 3


@settings(max_examples=300, deadline=None)
@given(
    rps=st.integers(1, 200),
    burst=st.integers(1, 400),
    steps=st.lists(
        st.tuples(st.floats(0, 0.5, allow_nan=False), st.integers(1, 20)), min_size=1, max_size=200
    ),
)
def test_never_more_than_rate_times_time_plus_burst(
    rps: int, burst: int, steps: list[tuple[float, int]]
) -> None:
    """Over any schedule, granted ≤ rps·t + burst, and a request is refused only when the
    bucket really holds fewer tokens than asked."""
    clock = FakeClock()
    start = clock.now()
    bucket = TokenBucket(burst, start)
    granted_total = 0
    for dt, cost in steps:
        clock.advance(dt)
        granted, wait = take(bucket, rps, burst, cost, clock.now())
        granted_total += granted
        assert 0 <= granted <= cost
        assert (wait == 0.0) == (granted == cost)
        assert wait <= 1.0 / rps + 1e-9
        assert granted_total <= rps * (clock.now() - start) + burst + 1e-6


def test_table_starts_full_and_keeps_state_per_name() -> None:
    """Each name has its own bucket."""
    table = BucketTable(10)
    assert table.take("a", 1, 2, 2, 0.0) == (2, 0.0)
    assert table.take("a", 1, 2, 1, 0.0)[0] == 0
    assert table.take("b", 1, 2, 1, 0.0)[0] == 1
    assert len(table) == 2 and table.peek("c") is None


def test_table_is_bounded_least_recently_used_first_out() -> None:
    """A scan from many names never grows the table past its capacity; the oldest goes."""
    table = BucketTable(3)
    for name in ("a", "b", "c"):
        table.take(name, 1, 1, 1, 0.0)
    table.take("a", 1, 1, 1, 0.0)  # a is now the most recent
    for i in range(1000):
        table.take(f"scan-{i}", 1, 1, 1, 0.0)
    assert len(table) == 3 and table.evicted == 1000
    assert table.peek("a") is None and table.peek("scan-999") is not None
    assert "3/3" in repr(table)


def test_table_eviction_order_follows_use() -> None:
    """Using a bucket protects it from the next eviction."""
    table = BucketTable(2)
    table.take("a", 1, 1, 1, 0.0)
    table.take("b", 1, 1, 1, 0.0)
    table.take("a", 1, 1, 1, 0.0)
    table.take("c", 1, 1, 1, 0.0)
    assert table.peek("a") is not None and table.peek("b") is None


def test_table_rejects_a_zero_capacity() -> None:
    """A table must hold at least one bucket."""
    with pytest.raises(ValueError):
        BucketTable(0)


def test_bucket_repr() -> None:
    """The repr shows the tokens and the stamp."""
    assert repr(TokenBucket(1.5, 2.0)) == "<TokenBucket tokens=1.500 stamp=2.000>"
