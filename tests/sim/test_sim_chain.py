"""Tests of the pure synthetic chain: determinism, linkage, shapes, state and reorgs."""

from __future__ import annotations

import re

import pytest

from lasso.sim import TOKEN_ADDRESSES, TRANSFER_TOPIC, ExecutionReverted, SyntheticChain

START = 1_700_000_000.0
QUANTITY = re.compile(r"^0x(0|[1-9a-f][0-9a-f]*)$")
HASH = re.compile(r"^0x[0-9a-f]{64}$")
QUANTITY_FIELDS = (
    "number gasLimit gasUsed timestamp baseFeePerGas size difficulty totalDifficulty "
    "blobGasUsed excessBlobGas"
).split()


def make(seed: object = "s", chain_id: int = 1) -> SyntheticChain:
    return SyntheticChain(chain_id, 2.0, seed, start_time=START)


def test_height_advances_with_time() -> None:
    """The head is start_height at start_time and gains one block per block time."""
    chain = make()
    assert chain.height(START - 100) == 1_000_000
    assert chain.height(START) == 1_000_000
    assert chain.height(START + 1.99) == 1_000_000
    assert chain.height(START + 2.0) == 1_000_001
    assert chain.height(START + 20.5) == 1_000_010
    assert chain.block_time_at(1_000_010) == START + 20.0


def test_same_seed_same_blocks_other_seed_other_blocks() -> None:
    """Two chains with one seed agree on every block; another seed or chain id differs."""
    a, b = make("x"), make("x")
    assert a.block(1_000_000, True) == b.block(1_000_000, True)
    assert a.logs(999_999) == b.logs(999_999)
    assert make("y").block_hash(1_000_000) != a.block_hash(1_000_000)
    assert make("x", chain_id=5).block_hash(1_000_000) != a.block_hash(1_000_000)


def test_parent_hash_links_every_block() -> None:
    """Each block's parentHash is the previous block's hash, down to genesis."""
    chain = make()
    for number in range(999_990, 1_000_001):
        assert chain.block(number)["parentHash"] == chain.block(number - 1)["hash"]
    assert chain.block(0)["parentHash"] == "0x" + "00" * 32


def test_block_shape_is_like_geth() -> None:
    """Quantities are 0x hex without leading zeros; hashes are 32 bytes of lowercase hex."""
    block = make().block(1_000_000, full_transactions=True)
    for name in QUANTITY_FIELDS:
        assert QUANTITY.match(block[name]), (name, block[name])
    for name in ("hash", "parentHash", "stateRoot", "transactionsRoot", "receiptsRoot"):
        assert HASH.match(block[name]), name
    assert len(block["logsBloom"]) == 2 + 512
    assert block["timestamp"] == hex(int(START))
    assert 3 <= len(block["transactions"]) <= 8
    for index, tx in enumerate(block["transactions"]):
        assert tx["blockHash"] == block["hash"] and tx["blockNumber"] == block["number"]
        assert tx["transactionIndex"] == hex(index)
        for name in ("nonce", "gas", "value", "gasPrice", "maxFeePerGas", "chainId"):
            assert QUANTITY.match(tx[name]), (name, tx[name])
    hashes = make().block(1_000_000)["transactions"]
    assert hashes == [tx["hash"] for tx in block["transactions"]]


def test_logs_belong_to_their_transactions() -> None:
    """Logs carry token addresses, a Transfer topic, sequential logIndex and matching ids."""
    chain = make()
    total = 0
    for number in range(1_000_000 - 20, 1_000_001):
        logs = chain.logs(number)
        total += len(logs)
        receipts = chain.receipts(number)
        assert [log for r in receipts for log in r["logs"]] == logs
        for index, log in enumerate(logs):
            assert log["logIndex"] == hex(index)
            assert log["address"] in TOKEN_ADDRESSES
            assert log["topics"][0] == TRANSFER_TOPIC and len(log["topics"]) == 3
            assert log["blockHash"] == chain.block_hash(number)
            assert log["removed"] is False
            tx = chain.transaction(log["transactionHash"])
            assert tx is not None and tx["to"] == log["address"]
    assert total > 20  # "a few logs per block"


def test_hash_lookups_round_trip() -> None:
    """Block and transaction hashes map back to their numbers; unknown hashes do not."""
    chain = make()
    block_hash = chain.block_hash(987_654)
    assert chain.block_number_of(block_hash) == 987_654
    assert chain.block_number_of(block_hash.upper().replace("0X", "0x")) == 987_654
    tx_hash = chain.tx_hash(987_654, 1)
    assert chain.locate_tx(tx_hash) == (987_654, 1)
    receipt = chain.receipt(tx_hash)
    assert receipt is not None and receipt["transactionHash"] == tx_hash
    assert receipt["status"] == "0x1"
    assert chain.block_number_of("0x" + "ab" * 32) is None
    assert chain.locate_tx("0x" + "ab" * 32) is None
    assert chain.locate_tx("0x1234") is None
    assert make("other").block_number_of(block_hash) is None


def test_reorg_replaces_the_newest_blocks() -> None:
    """A reorg changes the last depth hashes and logs; parentHash links the new branch."""
    chain = make()
    head = chain.height(START + 10)
    before = {n: chain.block_hash(n) for n in range(head - 5, head + 1)}
    old_tx = chain.tx_hash(head, 0)
    first = chain.reorg(3, START + 10)
    assert first == head - 2
    for number, old in before.items():
        assert (chain.block_hash(number) != old) == (number >= first)
    for number in range(head - 5, head + 2):
        assert chain.block(number)["parentHash"] == chain.block_hash(number - 1)
    assert chain.locate_tx(old_tx) is None
    assert chain.block_number_of(before[head]) is None
    assert chain.reorg_count == 1
    with pytest.raises(ValueError):
        chain.reorg(0, START)


def test_state_is_deterministic_and_moves() -> None:
    """Balances change from block to block; nonces, code and storage are stable values."""
    chain = make()
    account = "0x" + "12" * 20
    assert chain.balance(account, 10) == make().balance(account, 10)
    assert chain.balance(account, 10) != chain.balance(account, 11)
    assert chain.nonce(account, 10) == make().nonce(account, 10)
    assert chain.code(TOKEN_ADDRESSES[0]).startswith("0x6080")
    assert chain.storage(TOKEN_ADDRESSES[0], 0, 5) == make().storage(TOKEN_ADDRESSES[0], 0, 5)


def test_call_is_deterministic_and_can_revert() -> None:
    """eth_call returns 32 bytes from (to, data); 0xdeadbeef data reverts with a reason."""
    chain = make()
    result = chain.call(TOKEN_ADDRESSES[2], "0x12345678")
    assert HASH.match(result) and result == make().call(TOKEN_ADDRESSES[2], "0x12345678")
    assert chain.call(TOKEN_ADDRESSES[0], "0x313ce567") == "0x" + f"{6:064x}"
    with pytest.raises(ExecutionReverted) as info:
        chain.call(TOKEN_ADDRESSES[0], "0xdeadbeef")
    assert info.value.data.startswith("0x08c379a0")
    assert chain.estimate_gas("0x" + "12" * 20, "0x") == 21_000


def test_constructor_validates() -> None:
    """Bad chain ids, block times and heights are rejected."""
    with pytest.raises(ValueError):
        SyntheticChain(0, 1.0)
    with pytest.raises(ValueError):
        SyntheticChain(1, 0.0)
    with pytest.raises(ValueError):
        SyntheticChain(1, 1.0, start_height=-1)
