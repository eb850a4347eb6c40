"""Tests of the sticky filter table."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.kernel.clock import FakeClock
from lasso.kernel.filters import (
    FILTER_NOT_FOUND,
    Binding,
    FilterTable,
    filter_id_of,
    with_filter_id,
)

A = Binding("a", "0x1", "eth_newBlockFilter")
B = Binding("b", "0x1", "eth_newFilter")


def test_bind_and_lookup() -> None:
    """A filter id leads to the provider and id that made it; case does not matter."""
    table = FilterTable()
    table.bind("0xAA", A, 0.0)
    table.bind("0xbb", B, 0.0)  # the same upstream id on another provider: no clash
    assert table.lookup("0xaa", 1.0) == A and table.lookup("0xBB", 1.0) == B
    assert table.lookup("0xcc", 1.0) is None
    assert len(table) == 2


def test_idle_filters_expire_and_calls_keep_them_alive() -> None:
    """A filter nobody called for the TTL is gone; each call restarts the clock."""
    clock = FakeClock()
    table = FilterTable(ttl_s=300.0)
    table.bind("0x1", A, clock.now())
    clock.advance(299)
    assert table.lookup("0x1", clock.now()) == A
    clock.advance(299)
    assert table.lookup("0x1", clock.now()) == A
    clock.advance(300.5)
    assert table.lookup("0x1", clock.now()) is None
    assert table.expired == 1 and len(table) == 0


def test_binding_sweeps_expired_entries() -> None:
    """New filters push out expired ones, oldest first."""
    clock = FakeClock()
    table = FilterTable(ttl_s=10.0)
    table.bind("0x1", A, clock.now())
    clock.advance(5)
    table.bind("0x2", A, clock.now())
    clock.advance(6)
    table.bind("0x3", A, clock.now())
    assert len(table) == 2 and table.expired == 1
    assert table.lookup("0x2", clock.now()) == A


def test_the_table_is_bounded_least_recently_used_first() -> None:
    """Past max_entries the least recently used filter is evicted."""
    table = FilterTable(max_entries=2)
    table.bind("0x1", A, 0.0)
    table.bind("0x2", A, 1.0)
    table.lookup("0x1", 2.0)
    table.bind("0x3", A, 3.0)
    assert table.lookup("0x2", 3.0) is None and table.lookup("0x1", 3.0) == A
    assert table.evicted == 1
    assert repr(table) == "<FilterTable filters=2/2 ttl=300s expired=0 evicted=1>"


def test_remove_and_forget_provider() -> None:
    """Uninstalled filters and those of a lost provider are forgotten."""
    table = FilterTable()
    table.bind("0x1", A, 0.0)
    table.bind("0x2", A, 0.0)
    table.bind("0x3", B, 0.0)
    assert table.remove("0x3") == B and table.remove("0x3") is None
    assert table.forget_provider("a") == 2 and len(table) == 0


def test_bad_settings_are_refused() -> None:
    """A table needs room for one filter and a positive TTL."""
    with pytest.raises(ValueError):
        FilterTable(max_entries=0)
    with pytest.raises(ValueError):
        FilterTable(ttl_s=0)


def test_params() -> None:
    """The id is the only parameter; anything else is malformed."""
    assert filter_id_of(["0xAB"]) == "0xab"
    for bad in (None, [], ["0x1", "x"], [1], [""], ["0x" + "1" * 200], {"id": "0x1"}):
        assert filter_id_of(bad) is None
    assert with_filter_id("0x9") == ["0x9"]
    assert FILTER_NOT_FOUND == {"code": -32000, "message": "filter not found"}


@given(
    st.lists(
        st.tuples(st.sampled_from(["bind", "lookup", "remove"]), st.integers(0, 30),
                  st.floats(0, 50)),
        max_size=80,
    ),
    st.integers(1, 8),
)  # fmt: skip
def test_never_over_the_bound_and_never_past_the_ttl(
    ops: list[tuple[str, int, float]], bound: int
) -> None:
    """However filters are made and used, the table holds at most its bound and never
    answers for a filter idle longer than the TTL."""
    table = FilterTable(max_entries=bound, ttl_s=20.0)
    now = 0.0
    last_use: dict[str, float] = {}
    for op, n, step in ops:
        now += step
        key = hex(n)
        if op == "bind":
            table.bind(key, A, now)
            last_use[key] = now
        elif op == "lookup":
            if table.lookup(key, now) is not None:
                assert now - last_use[key] <= 20.0
                last_use[key] = now
        else:
            table.remove(key)
        assert len(table) <= bound
