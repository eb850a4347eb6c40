"""Method registry, timeouts, replay safety and block-parameter extraction."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.kernel import methods
from lasso.kernel.methods import (
    BLOCK_TAGS,
    BLOCKED_METHODS,
    DEFAULT_TIMEOUT_S,
    KNOWN_METHODS,
    METHODS_BY_CATEGORY,
    WS_ONLY_METHODS,
    block_params,
    is_replay_safe,
    logs_block_range,
    method_category,
    method_timeout_s,
    parse_block_ref,
)

# --- registry ------------------------------------------------------------------------


def test_registry_has_every_reference_category() -> None:
    """The fourteen categories of reference §5.4 are present, each non-empty."""
    assert set(METHODS_BY_CATEGORY) == {
        "core",
        "state",
        "network",
        "node_admin",
        "eip1559",
        "eip4844",
        "mempool",
        "filters",
        "subscriptions",
        "batch",
        "debug",
        "trace",
        "txpool",
        "local_only",
    }
    assert all(METHODS_BY_CATEGORY.values())


def test_registry_sizes_match_reference() -> None:
    """debug has 8 methods, trace 9, txpool 3 and local_only 10."""
    sizes = {c: len(ms) for c, ms in METHODS_BY_CATEGORY.items()}
    assert sizes["debug"] == 8
    assert sizes["trace"] == 9
    assert sizes["txpool"] == 3
    assert sizes["local_only"] == 10


def test_every_method_has_exactly_one_category() -> None:
    """No method is listed twice, so method_category is well defined."""
    listed = [m for ms in METHODS_BY_CATEGORY.values() for m in ms]
    assert len(listed) == len(set(listed)) == len(KNOWN_METHODS)


@pytest.mark.parametrize(
    ("method", "category"),
    [
        ("eth_blockNumber", "core"),
        ("eth_getTransactionByBlockNumberAndIndex", "core"),
        ("eth_call", "state"),
        ("eth_getProof", "state"),
        ("eth_syncing", "network"),
        ("net_peerCount", "node_admin"),
        ("eth_feeHistory", "eip1559"),
        ("eth_blobBaseFee", "eip4844"),
        ("eth_sendRawTransaction", "mempool"),
        ("eth_getLogs", "filters"),
        ("eth_newPendingTransactionFilter", "filters"),
        ("eth_subscribe", "subscriptions"),
        ("eth_getBlockReceipts", "batch"),
        ("debug_traceTransaction", "debug"),
        ("trace_filter", "trace"),
        ("txpool_content", "txpool"),
        ("eth_sendTransaction", "local_only"),
    ],
)
def test_method_category(method: str, category: str) -> None:
    """Registry lookups return the reference category."""
    assert method_category(method) == category


def test_unknown_method_has_no_category() -> None:
    """Unknown and differently-cased names are unknown."""
    assert method_category("eth_doesNotExist") is None
    assert method_category("ETH_BLOCKNUMBER") is None
    assert "eth_doesNotExist" not in KNOWN_METHODS


def test_blocked_and_ws_only_sets() -> None:
    """The blocklist and the WS-only set are exactly the contract's lists."""
    assert BLOCKED_METHODS == {
        "eth_sendTransaction",
        "eth_sign",
        "personal_sign",
        "eth_signTransaction",
        "eth_accounts",
    }
    assert WS_ONLY_METHODS == {"eth_subscribe", "eth_unsubscribe"}
    assert isinstance(BLOCKED_METHODS, frozenset)
    assert isinstance(WS_ONLY_METHODS, frozenset)
    assert isinstance(KNOWN_METHODS, frozenset)


# --- timeouts and replay safety ---------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "seconds"),
    [
        ("eth_blockNumber", 1.0),
        ("eth_chainId", 1.0),
        ("net_version", 1.0),
        ("web3_clientVersion", 1.0),
        ("eth_gasPrice", 2.0),
        ("eth_getBalance", 2.0),
        ("eth_getTransactionCount", 2.0),
        ("eth_getCode", 2.0),
        ("eth_getTransactionByHash", 2.0),
        ("eth_getBlockByNumber", 2.0),
        ("eth_getBlockByHash", 2.0),
        ("eth_newFilter", 2.0),
        ("eth_getTransactionReceipt", 3.0),
        ("eth_call", 5.0),
        ("eth_estimateGas", 5.0),
        ("eth_getLogs", 5.0),
        ("eth_getFilterLogs", 5.0),
        ("eth_getProof", 10.0),
        ("debug_traceTransaction", 30.0),
        ("debug_traceBlock", 45.0),
        ("debug_traceBlockByNumber", 45.0),
        ("debug_traceBlockByHash", 45.0),
    ],
)
def test_method_timeouts(method: str, seconds: float) -> None:
    """Per-method envelopes follow reference §2.6."""
    assert method_timeout_s(method) == seconds


def test_default_timeout() -> None:
    """Methods without an entry, known or not, get the 10 s fallback."""
    assert DEFAULT_TIMEOUT_S == 10.0
    assert method_timeout_s("trace_block") == 10.0
    assert method_timeout_s("whatever") == 10.0


@pytest.mark.parametrize(
    "category",
    [
        "core",
        "state",
        "network",
        "node_admin",
        "eip1559",
        "eip4844",
        "batch",
        "debug",
        "trace",
        "txpool",
    ],
)
def test_replay_safe_categories(category: str) -> None:
    """Every method of a read-only category may be dispatched more than once."""
    assert all(is_replay_safe(m) for m in METHODS_BY_CATEGORY[category])


@pytest.mark.parametrize(
    "method",
    [
        "eth_sendRawTransaction",
        "eth_newFilter",
        "eth_getFilterChanges",
        "eth_getFilterLogs",
        "eth_uninstallFilter",
        "eth_newBlockFilter",
        "eth_newPendingTransactionFilter",
        "eth_subscribe",
        "eth_unsubscribe",
        "eth_sendTransaction",
        "eth_sign",
        "personal_sign",
        "eth_unknownThing",
    ],
)
def test_not_replay_safe(method: str) -> None:
    """Writes, filter state, subscriptions, signing and unknown methods get one dispatch."""
    assert not is_replay_safe(method)


def test_get_logs_is_replay_safe() -> None:
    """eth_getLogs is the one replay-safe method of the filters category."""
    assert is_replay_safe("eth_getLogs")


# --- block references ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("latest", "latest"),
        ("LATEST", "latest"),
        (" finalized ", "finalized"),
        ("earliest", "earliest"),
        ("pending", "pending"),
        ("safe", "safe"),
        ("0x0", 0),
        ("0x10", 16),
        ("0xFFFFFFFFFFFFFFFF", 2**64 - 1),
        (17, 17),
        (0, 0),
        ({"blockNumber": "0x2a"}, 42),
        ({"blockNumber": "latest"}, "latest"),
        ({"blockHash": "0x" + "ab" * 32}, None),
        ("0x" + "ab" * 32, None),  # a hash pins no height
        ("0x", None),
        ("0xzz", None),
        ("0x-1", None),
        ("0x+1", None),
        ("0x1_0", None),
        ("0x 1", None),
        ("0x1\n", 1),
        ("12", None),
        ("newest", None),
        (-1, None),
        (True, None),
        (1.5, None),
        (None, None),
        ([], None),
        ({}, None),
    ],
)
def test_parse_block_ref(value: object, expected: object) -> None:
    """Tags, hex quantities, ints and EIP-1898 objects parse; everything else is None."""
    assert parse_block_ref(value) == expected


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("eth_call", [{"to": "0x1"}, "0x10"], [16]),
        ("eth_call", [{"to": "0x1"}, "latest", {"0x1": {}}], ["latest"]),  # state override
        ("eth_call", [{"to": "0x1"}], ["latest"]),  # missing block means latest
        ("eth_call", [{"to": "0x1"}, None], ["latest"]),
        ("eth_call", [{"to": "0x1"}, {"blockHash": "0x" + "11" * 32}], []),
        ("eth_getBalance", ["0xabc", "earliest"], ["earliest"]),
        ("eth_getBalance", [], []),  # malformed: the address is missing too
        ("eth_getCode", ["0xabc", "0x5"], [5]),
        ("eth_getTransactionCount", ["0xabc", "pending"], ["pending"]),
        ("eth_getStorageAt", ["0xabc", "0x0", "safe"], ["safe"]),
        ("eth_getStorageAt", ["0xabc", "0x0"], ["latest"]),
        ("eth_getProof", ["0xabc", [], "0x7"], [7]),
        ("eth_getBlockByNumber", ["0x1b4", False], [436]),
        ("eth_getBlockByNumber", ["finalized", True], ["finalized"]),
        ("eth_getBlockByNumber", [], []),
        ("eth_getBlockByNumber", [None, True], []),
        ("eth_getBlockReceipts", ["0x" + "ab" * 32], []),
        ("eth_feeHistory", ["0x4", "latest", [25, 75]], ["latest"]),
        ("trace_call", [{}, ["trace"], "0x9"], [9]),
        ("eth_blockNumber", [], []),
        ("eth_getTransactionByHash", ["0x" + "ab" * 32], []),
        ("eth_call", {"to": "0x1"}, []),  # params must be an array
        ("eth_call", None, []),
        ("eth_call", "latest", []),
        ("eth_getLogs", [{"fromBlock": "0x1", "toBlock": "0x5"}], [1, 5]),
        ("eth_getLogs", [{"fromBlock": "0x1"}], [1, "latest"]),
        ("eth_getLogs", [{}], ["latest", "latest"]),
        ("eth_getLogs", [{"blockHash": "0x" + "cd" * 32}], []),
        ("eth_getLogs", [], []),
        ("eth_getLogs", None, []),
        ("eth_getLogs", ["0x1"], []),
        ("eth_getLogs", [{"fromBlock": "bogus"}], []),
    ],
)
def test_block_params(method: str, params: object, expected: list[object]) -> None:
    """Block references are read from each method's block parameter position."""
    assert block_params(method, params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ([{"fromBlock": "0x10", "toBlock": "0x20"}], (16, 32)),
        ([{"fromBlock": "earliest", "toBlock": "latest"}], ("earliest", "latest")),
        ([{"toBlock": "0x20"}], ("latest", 32)),
        ([{"fromBlock": None, "toBlock": None}], ("latest", "latest")),
        ([{"blockHash": "0x" + "ab" * 32, "fromBlock": "0x1"}], None),
        ([{"fromBlock": "0x1", "toBlock": "0x" + "ab" * 32}], None),
        ([{"fromBlock": [], "toBlock": "0x1"}], None),
        ([], None),
        ([[]], None),
        ({"fromBlock": "0x1"}, None),
        (None, None),
    ],
)
def test_logs_block_range(params: object, expected: object) -> None:
    """eth_getLogs ranges: missing bounds are latest, block hashes and junk give None."""
    assert logs_block_range(params) == expected


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    method=st.sampled_from(sorted(KNOWN_METHODS) + ["eth_getLogs", "nope"]),
    params=JSON,
)
def test_block_params_never_raise(method: str, params: object) -> None:
    """Any JSON value as params yields a list of valid block references, never an error."""
    refs = block_params(method, params)
    assert isinstance(refs, list)
    for ref in refs:
        assert (isinstance(ref, int) and not isinstance(ref, bool) and ref >= 0) or (
            ref in BLOCK_TAGS
        )


@given(
    lo=st.integers(min_value=0, max_value=2**64 - 1),
    hi=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_logs_range_round_trips_hex(lo: int, hi: int) -> None:
    """Hex-encoded bounds come back as the same integers."""
    assert logs_block_range([{"fromBlock": hex(lo), "toBlock": hex(hi)}]) == (lo, hi)


def test_module_exports_are_constants() -> None:
    """Registry tables are read-only views."""
    with pytest.raises(TypeError):
        methods.METHODS_BY_CATEGORY["core"] = ()  # type: ignore[index]
