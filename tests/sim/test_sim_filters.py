"""Tests of the simulated node's filters (eth_newFilter and friends), without sockets."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lasso.sim import TOKEN_ADDRESSES, NodeView, RpcError, SyntheticChain
from lasso.sim.filters import MAX_FILTERS, SimFilters
from lasso.sim.node import call_method

HEAD = 1_000


def view(head: int, filters: SimFilters | None, mempool: dict[str, str] | None = None) -> NodeView:
    chain = SyntheticChain(1, 2.0, "node")
    return NodeView(chain=chain, head=head, filters=filters, mempool=mempool or {})


def call(v: NodeView, method: str, *params: Any) -> Any:
    return call_method(v, method, list(params))


def test_block_filter_reports_new_block_hashes_once() -> None:
    """A block filter answers the hashes of blocks seen since the last poll."""
    filters = SimFilters()
    fid = call(view(HEAD, filters), "eth_newBlockFilter")
    assert fid == "0x" + "0" * 31 + "1"
    assert call(view(HEAD, filters), "eth_getFilterChanges", fid) == []
    later = view(HEAD + 3, filters)
    assert call(later, "eth_getFilterChanges", fid) == [
        later.chain.block_hash(n) for n in (HEAD + 1, HEAD + 2, HEAD + 3)
    ]
    assert call(later, "eth_getFilterChanges", fid) == []
    # A node behind the last poll has nothing new (it does not go back).
    assert call(view(HEAD + 1, filters), "eth_getFilterChanges", fid) == []


def test_log_filter_changes_and_logs() -> None:
    """A log filter answers matching logs of blocks after its creation; getFilterLogs its
    whole range."""
    filters = SimFilters()
    spec = {"address": TOKEN_ADDRESSES[0], "fromBlock": hex(HEAD - 5)}
    fid = call(view(HEAD, filters), "eth_newFilter", spec)
    v = view(HEAD + 2, filters)
    new_blocks = {"fromBlock": hex(HEAD + 1), "toBlock": hex(HEAD + 2)}
    expected = call(v, "eth_getLogs", {**spec, **new_blocks})
    assert expected  # blocks carry token transfers
    assert call(v, "eth_getFilterChanges", fid) == expected
    assert call(v, "eth_getFilterLogs", fid) == call(v, "eth_getLogs", spec)
    bounded = call(v, "eth_newFilter", {"fromBlock": hex(HEAD + 1), "toBlock": hex(HEAD + 3)})
    later = view(HEAD + 9, filters)
    assert call(later, "eth_getFilterChanges", bounded) == call(
        later, "eth_getLogs", {"fromBlock": hex(HEAD + 3), "toBlock": hex(HEAD + 3)}
    )
    assert call(later, "eth_getFilterChanges", bounded) == []


def test_pending_filter_reports_new_transactions() -> None:
    """A pending-transaction filter answers hashes received since the last poll."""
    filters, pool = SimFilters(), {"0xaa": "0x01"}
    fid = call(view(HEAD, filters, pool), "eth_newPendingTransactionFilter")
    pool["0xbb"] = "0x02"
    assert call(view(HEAD, filters, pool), "eth_getFilterChanges", fid) == ["0xbb"]
    assert call(view(HEAD, filters, pool), "eth_getFilterChanges", fid) == []


def test_unknown_and_uninstalled_filters() -> None:
    """Unknown ids are geth's 'filter not found'; uninstall answers true once."""
    filters = SimFilters()
    v = view(HEAD, filters)
    fid = call(v, "eth_newBlockFilter")
    assert call(v, "eth_uninstallFilter", fid) is True
    assert call(v, "eth_uninstallFilter", fid) is False
    for method in ("eth_getFilterChanges", "eth_getFilterLogs"):
        err = pytest.raises(RpcError, call, v, method, fid).value
        assert (err.code, err.message) == (-32000, "filter not found")
    block_filter = call(v, "eth_newBlockFilter")
    assert pytest.raises(RpcError, call, v, "eth_getFilterLogs", block_filter).value.code == -32000


def test_filters_are_per_node_and_numbered_alike() -> None:
    """Two nodes hand out the same ids; each knows only its own filters."""
    a, b = SimFilters(), SimFilters()
    fa = call(view(HEAD, a), "eth_newBlockFilter")
    fb = call(view(HEAD, b), "eth_newBlockFilter")
    assert fa == fb and len(a) == len(b) == 1
    call(view(HEAD, b), "eth_uninstallFilter", fb)
    assert pytest.raises(RpcError, call, view(HEAD, b), "eth_getFilterChanges", fa).value


def test_bad_filters_and_no_filter_support() -> None:
    """Malformed filters are -32602; a node without filters answers -32601."""
    v = view(HEAD, SimFilters())
    assert pytest.raises(RpcError, call, v, "eth_newFilter", "x").value.code == -32602
    with_hash = {"blockHash": v.chain.block_hash(1)}
    assert pytest.raises(RpcError, call, v, "eth_newFilter", with_hash).value.code == -32602
    bad_tag = {"fromBlock": "soon"}
    assert pytest.raises(RpcError, call, v, "eth_newFilter", bad_tag).value.code == -32602
    bare = dataclasses.replace(v, filters=None)
    assert pytest.raises(RpcError, call, bare, "eth_newBlockFilter").value.code == -32601


def test_filter_count_is_bounded() -> None:
    """A node keeps at most MAX_FILTERS filters, dropping the oldest."""
    filters = SimFilters()
    v = view(HEAD, filters)
    first = call(v, "eth_newBlockFilter")
    for _ in range(MAX_FILTERS):
        call(v, "eth_newBlockFilter")
    assert len(filters) == MAX_FILTERS
    assert pytest.raises(RpcError, call, v, "eth_getFilterChanges", first).value
