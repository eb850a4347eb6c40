"""Tests of the simulated node's JSON-RPC answers, without sockets."""

from __future__ import annotations

from typing import Any

import pytest

from lasso.kernel.keccak import keccak256
from lasso.sim import TOKEN_ADDRESSES, TRANSFER_TOPIC, NodeView, RpcError, SyntheticChain
from lasso.sim.node import SUPPORTED_METHODS, answer_payload, call_method

HEAD = 1_000_000


@pytest.fixture
def view() -> NodeView:
    return NodeView(chain=SyntheticChain(1, 2.0, "node"), head=HEAD)


def call(view: NodeView, method: str, *params: Any) -> Any:
    return call_method(view, method, list(params))


def error(view: NodeView, method: str, *params: Any) -> RpcError:
    with pytest.raises(RpcError) as info:
        call(view, method, *params)
    return info.value


def test_block_tags_resolve_against_the_head(view: NodeView) -> None:
    """latest/pending are the head, safe/finalized trail it, earliest is genesis."""
    tags = ("latest", "pending", "safe", "finalized", "earliest")
    number = {tag: call(view, "eth_getBlockByNumber", tag)["number"] for tag in tags}
    assert number == {
        "latest": hex(HEAD),
        "pending": hex(HEAD),
        "safe": hex(HEAD - 32),
        "finalized": hex(HEAD - 64),
        "earliest": "0x0",
    }
    assert call(view, "eth_blockNumber") == hex(HEAD)


def test_blocks_beyond_the_head_are_null(view: NodeView) -> None:
    """Blocks, receipts and transactions above the visible head answer null."""
    chain = view.chain
    assert call(view, "eth_getBlockByNumber", hex(HEAD + 1), False) is None
    assert call(view, "eth_getBlockByHash", chain.block_hash(HEAD + 1), False) is None
    assert call(view, "eth_getTransactionByHash", chain.tx_hash(HEAD + 1, 0)) is None
    assert call(view, "eth_getTransactionReceipt", chain.tx_hash(HEAD + 1, 0)) is None
    assert call(view, "eth_getBlockReceipts", hex(HEAD + 1)) is None
    assert call(view, "eth_getTransactionByHash", chain.tx_hash(HEAD, 0))["hash"] == (
        chain.tx_hash(HEAD, 0)
    )
    assert len(call(view, "eth_getBlockReceipts", "latest")) == len(chain.transactions(HEAD))


def test_state_beyond_the_head_is_header_not_found(view: NodeView) -> None:
    """State methods at a future block fail like geth: -32000 header not found."""
    exc = error(view, "eth_getBalance", "0x" + "11" * 20, hex(HEAD + 5))
    assert (exc.code, exc.message) == (-32000, "header not found")


def test_non_archival_state_is_pruned() -> None:
    """Without archive, state older than archive_depth is a missing trie node; blocks stay."""
    chain = SyntheticChain(1, 2.0, "node")
    pruned = NodeView(chain=chain, head=HEAD, archival=False, archive_depth=128)
    account = "0x" + "11" * 20
    assert call(pruned, "eth_getBalance", account, hex(HEAD - 128)).startswith("0x")
    exc = error(pruned, "eth_getBalance", account, hex(HEAD - 129))
    assert exc.code == -32000 and exc.message.startswith("missing trie node")
    assert error(pruned, "eth_call", {"to": account}, "0x64").code == -32000
    assert call(pruned, "eth_getBlockByNumber", "0x64", False)["number"] == "0x64"
    archival = NodeView(chain=chain, head=HEAD)
    assert call(archival, "eth_getBalance", account, "0x64").startswith("0x")


def test_get_logs_filters_by_address_and_topics(view: NodeView) -> None:
    """eth_getLogs applies address sets and positional topic alternatives."""
    span = {"fromBlock": hex(HEAD - 20), "toBlock": "latest"}
    everything = call(view, "eth_getLogs", span)
    assert everything and all(
        HEAD - 20 <= int(log["blockNumber"], 16) <= HEAD for log in everything
    )
    usdc = call(view, "eth_getLogs", {**span, "address": TOKEN_ADDRESSES[0]})
    assert usdc == [log for log in everything if log["address"] == TOKEN_ADDRESSES[0]]
    two = call(view, "eth_getLogs", {**span, "address": list(TOKEN_ADDRESSES[:2])})
    assert two == [log for log in everything if log["address"] in TOKEN_ADDRESSES[:2]]
    sender = everything[0]["topics"][1]
    by_sender = call(view, "eth_getLogs", {**span, "topics": [TRANSFER_TOPIC, sender]})
    assert by_sender == [log for log in everything if log["topics"][1] == sender]
    either = call(view, "eth_getLogs", {**span, "topics": [None, [sender, "0x" + "00" * 32]]})
    assert either == by_sender
    assert call(view, "eth_getLogs", {**span, "topics": ["0x" + "01" * 32]}) == []


def test_get_logs_by_block_hash_and_bad_ranges(view: NodeView) -> None:
    """blockHash selects one block; a reversed range and mixed selectors are -32602."""
    block_hash = view.chain.block_hash(HEAD - 3)
    logs = call(view, "eth_getLogs", {"blockHash": block_hash})
    assert logs == view.chain.logs(HEAD - 3)
    assert error(view, "eth_getLogs", {"fromBlock": "0x10", "toBlock": "0x5"}).code == -32602
    both = {"blockHash": block_hash, "fromBlock": "0x1"}
    assert error(view, "eth_getLogs", both).code == -32602


def test_get_logs_range_limit() -> None:
    """A provider with max_block_range rejects wider ranges with a capability error."""
    limited = NodeView(chain=SyntheticChain(1, 2.0, "node"), head=HEAD, max_block_range=500)
    ok = call(limited, "eth_getLogs", {"fromBlock": hex(HEAD - 499), "toBlock": hex(HEAD)})
    assert isinstance(ok, list)
    exc = error(limited, "eth_getLogs", {"fromBlock": hex(HEAD - 500), "toBlock": hex(HEAD)})
    assert (exc.code, exc.message) == (-32000, "query exceeds max block range 500")


def test_get_logs_range_past_the_head_is_cut(view: NodeView) -> None:
    """A range reaching past the head returns the logs up to the head only."""
    logs = call(view, "eth_getLogs", {"fromBlock": hex(HEAD), "toBlock": hex(HEAD + 50)})
    assert logs == view.chain.logs(HEAD)


def test_unknown_methods_and_bad_params(view: NodeView) -> None:
    """Unknown methods are -32601 with geth's message; malformed params are -32602."""
    exc = error(view, "eth_fooBar")
    assert (exc.code, exc.message) == (
        -32601,
        "the method eth_fooBar does not exist/is not available",
    )
    assert error(view, "eth_getBalance", "0x1234").code == -32602
    assert error(view, "eth_getBalance").code == -32602
    assert error(view, "eth_getBlockByNumber", "newest").code == -32602
    assert error(view, "eth_getBlockByHash", "0x12", False).code == -32602
    assert call_method(view, "eth_chainId", None) == "0x1"
    with pytest.raises(RpcError):
        call_method(view, "eth_chainId", {"named": 1})


def test_unsupported_methods_are_not_available() -> None:
    """Methods listed as unsupported answer -32601 even though the node knows them."""
    view = NodeView(
        chain=SyntheticChain(1, 2.0), head=HEAD, unsupported_methods=frozenset({"eth_getLogs"})
    )
    assert error(view, "eth_getLogs", {}).code == -32601
    assert "eth_getLogs" in SUPPORTED_METHODS


def test_call_and_estimate(view: NodeView) -> None:
    """eth_call answers 32 bytes or reverts with code 3; estimateGas is intrinsic gas."""
    tx = {"to": TOKEN_ADDRESSES[0], "data": "0x70a08231" + "00" * 32}
    assert len(call(view, "eth_call", tx, "latest")) == 66
    exc = error(view, "eth_call", {"to": TOKEN_ADDRESSES[0], "input": "0xdeadbeef"}, "latest")
    assert exc.code == 3 and exc.message.startswith("execution reverted") and exc.data
    assert call(view, "eth_estimateGas", {"to": "0x" + "22" * 20}) == hex(21_000)


def test_fees(view: NodeView) -> None:
    """Gas price is base fee plus 1 gwei; feeHistory has count+1 base fees and rewards."""
    base = int(view.chain.block(HEAD)["baseFeePerGas"], 16)
    assert int(call(view, "eth_gasPrice"), 16) == base + 10**9
    assert call(view, "eth_maxPriorityFeePerGas") == hex(10**9)
    history = call(view, "eth_feeHistory", "0x4", "latest", [25, 75])
    assert history["oldestBlock"] == hex(HEAD - 3)
    assert len(history["baseFeePerGas"]) == 5 and history["baseFeePerGas"][3] == hex(base)
    assert len(history["gasUsedRatio"]) == 4 and len(history["reward"]) == 4
    assert error(view, "eth_feeHistory", 4, "latest", [75, 25]).code == -32602


def test_send_raw_transaction(view: NodeView) -> None:
    """The hash is keccak256 of the raw bytes; a resend is 'already known'; it is pending."""
    raw = "0x02f86c0180843b9aca00"
    tx_hash = call(view, "eth_sendRawTransaction", raw)
    assert tx_hash == "0x" + keccak256(bytes.fromhex(raw[2:])).hex()
    assert error(view, "eth_sendRawTransaction", raw).message == "already known"
    pending = call(view, "eth_getTransactionByHash", tx_hash)
    assert pending["blockHash"] is None and pending["input"] == raw
    assert call(view, "eth_getTransactionReceipt", tx_hash) is None
    assert error(view, "eth_sendRawTransaction", "0x").code == -32602


def test_identity_methods(view: NodeView) -> None:
    """chainId, net_version, clientVersion and syncing answer like a synced node."""
    assert call(view, "eth_chainId") == "0x1"
    assert call(view, "net_version") == "1"
    assert call(view, "web3_clientVersion").startswith("LassoSim/")
    assert call(view, "eth_syncing") is False


def test_payloads_batches_and_notifications(view: NodeView) -> None:
    """Batches answer per member, skip notifications and reject empty or oversize batches."""
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
        {"jsonrpc": "2.0", "method": "eth_chainId"},
        {"jsonrpc": "2.0", "id": "b", "method": "nope"},
        7,
    ]
    answers = answer_payload(view, batch)
    assert isinstance(answers, list) and len(answers) == 3
    assert answers[0] == {"jsonrpc": "2.0", "id": 1, "result": "0x1"}
    assert answers[1]["id"] == "b" and answers[1]["error"]["code"] == -32601
    assert answers[2]["error"]["code"] == -32600
    assert answer_payload(view, {"jsonrpc": "2.0", "method": "eth_chainId"}) is None
    assert answer_payload(view, [])["error"]["code"] == -32600  # type: ignore[index,call-overload]
    too_big = answer_payload(view, batch[:2], max_batch_size=1)
    assert isinstance(too_big, dict) and too_big["error"]["code"] == -32600
    assert answer_payload(view, {"id": 1, "method": "eth_chainId"})["error"]["code"] == -32600  # type: ignore[index,call-overload]
