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
    assert repr(table) == (
        "<FilterTable filters=2/2 owners=1 per_owner=1000 ttl=300s expired=0 evicted=1>"
    )


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
    with pytest.raises(ValueError):
        FilterTable(max_per_owner=0)


def test_a_client_at_its_bound_evicts_its_own_filters() -> None:
    """A client past its per-client bound loses its own least recently used filter."""
    table = FilterTable(max_per_owner=2)
    table.bind("0x1", A, 0.0, "key:alice")
    table.bind("0x2", A, 1.0, "key:bob")
    table.bind("0x3", A, 2.0, "key:bob")
    table.lookup("0x2", 3.0)
    table.bind("0x4", A, 4.0, "key:bob")
    assert table.lookup("0x3", 5.0) is None and table.lookup("0x2", 5.0) == A
    assert table.lookup("0x1", 5.0) == A
    assert table.owned("key:bob") == 2 and table.owned("key:alice") == 1
    assert table.evicted == 1


def test_a_flood_from_one_client_keeps_the_other_clients_filters() -> None:
    """The QA repro: one filter, then 10 x 1,000 from another client: the first answers."""
    table = FilterTable()
    table.bind("0xfirst", A, 0.0, "ip:10.0.0.1")
    for i in range(10_001):
        table.bind(hex(i), B, 1.0, "ip:10.0.0.2")
    assert table.lookup("0xfirst", 2.0) == A
    assert table.owned("ip:10.0.0.2") == 1_000 and len(table) == 1_001


def test_a_full_table_evicts_from_the_client_holding_the_most() -> None:
    """When the whole table is full, the biggest holder loses its least recently used."""
    table = FilterTable(max_entries=4, max_per_owner=4)
    table.bind("0x1", A, 0.0, "small")
    for i in range(3):
        table.bind(hex(0x10 + i), B, 1.0 + i, "big")
    table.bind("0x2", A, 5.0, "small")  # full: "big" holds 3, "small" 1
    assert table.lookup("0x10", 6.0) is None and table.lookup("0x1", 6.0) == A
    assert table.owned("big") == 2 and table.owned("small") == 2


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


@given(
    st.lists(
        st.tuples(st.sampled_from(["bind", "lookup", "remove", "forget"]),
                  st.integers(0, 40), st.integers(0, 3), st.floats(0, 5)),
        max_size=120,
    ),
    st.integers(1, 12),
    st.integers(1, 5),
)  # fmt: skip
def test_only_the_biggest_holder_or_the_client_itself_loses_filters(
    ops: list[tuple[str, int, int, float]], bound: int, per_owner: int
) -> None:
    """Bounds hold in all and per client, and a binding only ever evicts a filter of the
    binding client or of a client holding at least as many as any other."""
    table = FilterTable(max_entries=bound, max_per_owner=per_owner, ttl_s=1e9)
    owner_of: dict[str, str] = {}
    now = 0.0
    for op, n, who, step in ops:
        now += step
        key, owner = hex(n), f"c{who}"
        if op == "bind":
            held = {o: table.owned(o) for o in set(owner_of.values())}
            before = {k for k in owner_of if table.lookup(k, now) is not None}
            if key in owner_of:
                table.remove(key)
                before.discard(key)
            table.bind(key, A, now, owner)
            owner_of[key] = owner
            for gone in before - {k for k in owner_of if table.lookup(k, now) is not None}:
                loser = owner_of[gone]
                assert loser == owner or held[loser] == max(held.values())
        elif op == "lookup":
            table.lookup(key, now)
        elif op == "remove":
            table.remove(key)
        else:
            table.forget_provider("a")
        assert len(table) <= bound
        counts = {o: table.owned(o) for o in set(owner_of.values())}
        assert all(c <= per_owner for c in counts.values())
        assert sum(counts.values()) == len(table)
