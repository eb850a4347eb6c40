"""eth_subscribe params: validation, filter normalization, keys (kernel/subscriptions/keys.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.kernel import subscriptions as ks
from lasso.kernel.subscriptions import (
    SubscriptionParamsError,
    normalize_filter,
    parse_subscription,
)
from lasso.kernel.subscriptions.keys import hex_of_length

from kernel_subscriptions_support import (
    A1,
    A2,
    T1,
    T2,
    T3,
)


def test_equal_filters_give_equal_keys() -> None:
    """Case, order, duplicates, nulls and singleton lists do not change the key."""
    a = parse_subscription(
        ["logs", {"address": [A2.upper().replace("0X", "0x"), A1, A1], "topics": [[T2, T1], None]}]
    )
    b = parse_subscription(
        ["logs", {"topics": [[T1, T2, T1]], "address": [A1, A2], "fromBlock": None}]
    )
    assert a == b and hash(a) == hash(b)
    assert a.log_filter() == {"address": sorted([A1, A2]), "topics": [[T1, T2]]}
    assert parse_subscription(["logs", {"address": [A1]}]) == parse_subscription(
        ["logs", {"address": A1.upper().replace("0X", "0x")}]
    )


def test_missing_and_empty_filters_are_the_same_key() -> None:
    """``["logs"]``, ``["logs", null]`` and ``["logs", {}]`` share a key."""
    keys = {
        parse_subscription(p)
        for p in (["logs"], ["logs", None], ["logs", {}], ["logs", {"topics": []}])
    }
    assert len(keys) == 1
    (key,) = keys
    assert key.kind == "logs" and key.params() == ["logs", {}]


def test_topic_positions_normalize_like_geth() -> None:
    """A null in an OR-list is a wildcard; trailing wildcards drop; singletons unwrap."""
    f = normalize_filter({"topics": [[T2, T1], [T3], [T1, None], None]})
    assert f == {"topics": [[T1, T2], T3]}
    assert normalize_filter({"topics": [None, T1]}) == {"topics": [None, T1]}
    assert normalize_filter({"topics": [[]]}) == {}
    assert normalize_filter({"fromBlock": "0x0A", "toBlock": "LATEST"}) == {
        "fromBlock": "0xa",
        "toBlock": "latest",
    }
    assert normalize_filter({"address": []}) == {}


@pytest.mark.parametrize(
    "params",
    [
        [],
        "newHeads",
        [1],
        ["newBlocks"],
        ["newHeads", {"x": 1}],
        ["logs", {}, {}],
        ["logs", 5],
        ["logs", {"address": "0x12"}],
        ["logs", {"address": [A1, "nope"]}],
        ["logs", {"topics": "x"}],
        ["logs", {"topics": [T1, T1, T1, T1, T1]}],
        ["logs", {"topics": ["0x1234"]}],
        ["logs", {"blockHash": T1}],
        ["logs", {"fromBlock": "yesterday"}],
        ["logs", {"toBlock": 7}],
        ["newPendingTransactions", "yes"],
        ["newPendingTransactions", True, True],
    ],
)
def test_bad_params_are_rejected(params: Any) -> None:
    """Malformed params raise SubscriptionParamsError (JSON-RPC -32602)."""
    with pytest.raises(SubscriptionParamsError):
        parse_subscription(params)


def test_other_kinds() -> None:
    """newHeads (null extras ignored) and newPendingTransactions with and without full txs."""
    assert parse_subscription(["newHeads", None]).params() == ["newHeads"]
    assert parse_subscription(["newHeads"]).log_filter() == {}
    p = parse_subscription(["newPendingTransactions", False])
    assert p == parse_subscription(["newPendingTransactions"])
    assert parse_subscription(["newPendingTransactions", True]).params() == [
        "newPendingTransactions",
        True,
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=70) | st.sampled_from([A1, T1]),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)
filters = st.dictionaries(
    st.sampled_from(["address", "topics", "fromBlock", "toBlock"]), json_values, max_size=4
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, st.tuples(st.sampled_from(ks.KINDS), filters).map(list)))
def test_property_any_params_give_a_key_or_a_params_error(params: Any) -> None:
    """Whatever JSON arrives as eth_subscribe params, the result is a key whose params
    parse to the same key, or SubscriptionParamsError; nothing else escapes."""
    try:
        key = parse_subscription(params)
    except SubscriptionParamsError:
        return
    assert parse_subscription(key.params()) == key


def test_hex_of_length_checks_prefix_digits_and_length() -> None:
    """Addresses and hashes are lower-cased when well formed, else None."""
    assert hex_of_length(A1.upper().replace("0X", "0x"), 42) == A1
    assert hex_of_length(T1, 66) == T1
    assert hex_of_length(A1, 66) is None
    for bad in (None, 7, "ab" * 21, "0x" + "zz" * 20, A1[:-1]):
        assert hex_of_length(bad, 42) is None
