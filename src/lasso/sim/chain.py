"""A synthetic Ethereum chain: blocks, transactions, logs and state derived from a seed.

Pure code: no IO, no clock and no global randomness. Time comes in as ``now`` (seconds, in
whatever clock the caller chose when it set ``start_time``) and every value is a function of
``(seed, chain_id, block number, reorg generation)``, so several simulated providers built
on one :class:`SyntheticChain` agree on every block, hash and log.

Results are shaped like geth's JSON-RPC results (EIP-1474): quantities are ``0x`` hex
without leading zeros, data is ``0x`` hex of fixed width. The dicts returned here are
cached and shared: callers must treat them as read-only and copy before changing them.

Hashes are invertible on purpose. A block hash ends with its block number and a
transaction hash with its block number and index (masked with seed- and hash-derived
bits, so they still look random), so
``eth_getBlockByHash`` and ``eth_getTransactionByHash`` need no index: the lookup decodes
the number, recomputes the hash and compares.

Reorgs: :meth:`SyntheticChain.reorg` bumps the generation of the newest ``depth`` blocks,
which changes their hashes, transactions and logs; the first block after them links to the
new hashes through ``parentHash``, as on a real chain.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EMPTY_BLOOM",
    "TOKEN_ADDRESSES",
    "TRANSFER_TOPIC",
    "ExecutionReverted",
    "SyntheticChain",
]

JSON = dict[str, Any]

GWEI = 10**9
GAS_LIMIT = 30_000_000
#: keccak256("Transfer(address,address,uint256)")
TRANSFER_TOPIC = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
#: Contracts that emit the chain's logs (mainnet USDC, USDT, WETH and DAI addresses).
TOKEN_ADDRESSES = (
    "0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48",
    "0xdac17f958d2ee523a2206206994597c13d831ec7",
    "0xc02aaa39b223fe8d0a0e5c4f27ead9083c756cc2",
    "0x6b175474e89094c44da98b954eedeac495271d0f",
)
_TOKEN_DECIMALS = (6, 6, 18, 18)
EMPTY_BLOOM = "0x" + "00" * 256
ZERO_HASH = "0x" + "00" * 32
_EMPTY_UNCLES = "0x1dcc4de8dec75d7aab85b567b6ccd41ad312451b948a7413f0a142fd40d49347"
_EMPTY_TRIE = "0x56e81f171bcc55a6ff8345e692c0f86e5b48e01b996cadc001622fb5e363b421"
_MINERS = (
    "0x95222290dd7278aa3ddd389cc1e1d165cc4bafe5",
    "0x1f9090aae28b8a3dceadf281b0f12828e676c326",
    "0x4838b106fce9647bdf1e7877bf73ce8b0bad5f97",
    "0xdadb0d80178819f2319190d340ce9a924f783711",
)
_REVERT_SELECTOR = "0xdeadbeef"
_SELECTOR_DECIMALS = "0x313ce567"
_SELECTOR_TOTAL_SUPPLY = "0x18160ddd"
_SELECTOR_BALANCE_OF = "0x70a08231"
_SELECTOR_TRANSFER = "a9059cbb"
_TOKEN_CODE = (
    "0x608060405234801561001057600080fd5b50600436106100a95760003560e01c8063313ce567116100"
    "71578063313ce5671461012357806370a082311461014157806395d89b4114610171578063a9059cbb14"
)
_MAX_REORG_DEPTH = 1024


class ExecutionReverted(Exception):
    """``eth_call`` or ``eth_estimateGas`` reverted; ``data`` is the ABI-encoded reason."""

    def __init__(self, reason: str, data: str) -> None:
        super().__init__(f"execution reverted: {reason}")
        self.reason = reason
        self.data = data


@dataclass(slots=True)
class _Block:
    header: JSON
    tx_hashes: list[str]
    transactions: list[JSON]
    receipts: list[JSON]
    logs: list[JSON]


def _q(value: int) -> str:
    return hex(value)


def _data(raw: bytes) -> str:
    return "0x" + raw.hex()


def _word(value: int) -> str:
    return "0x" + value.to_bytes(32, "big").hex()


def _pad_address(address: str) -> str:
    return "0x" + "00" * 12 + address[2:]


def _revert_data(reason: str) -> str:
    """ABI-encode ``Error(string)`` as Solidity does for ``revert("...")``."""
    encoded = reason.encode()
    padded = encoded + b"\x00" * (-len(encoded) % 32)
    return (
        "0x08c379a0"
        + (32).to_bytes(32, "big").hex()
        + len(encoded).to_bytes(32, "big").hex()
        + padded.hex()
    )


class SyntheticChain:
    """One deterministic chain that any number of simulated providers can serve.

    Args:
        chain_id: the EIP-155 chain id reported by ``eth_chainId``.
        block_time_s: seconds between blocks; the head advances by one every period.
        seed: anything with a stable ``str()``; two chains with equal seeds and chain ids
            produce identical blocks.
        start_height: the head at ``start_time`` (blocks below it exist too, down to 0).
        start_time: the value of ``now`` at which the head is ``start_height``. Use the
            same clock for every later ``now``; block timestamps are derived from it, so a
            wall clock (``time.time()``) gives realistic timestamps.
        cache_size: how many built blocks to keep.

    Raises:
        ValueError: on a non-positive chain id or block time, or a negative start height.
    """

    def __init__(
        self,
        chain_id: int,
        block_time_s: float,
        seed: object = 0,
        *,
        start_height: int = 1_000_000,
        start_time: float = 1_700_000_000.0,
        cache_size: int = 4096,
    ) -> None:
        if chain_id <= 0:
            raise ValueError(f"chain_id must be positive, got {chain_id}")
        if not block_time_s > 0:
            raise ValueError(f"block_time_s must be positive, got {block_time_s}")
        if start_height < 0:
            raise ValueError(f"start_height must be >= 0, got {start_height}")
        self.chain_id = chain_id
        self.block_time_s = float(block_time_s)
        self.seed = str(seed)
        self.start_height = start_height
        self.start_time = float(start_time)
        self.reorg_count = 0
        self._prefix = f"{self.seed}|{chain_id}|".encode()
        self._mask = int.from_bytes(self._digest("mask")[:8], "big")
        self._generations: dict[int, int] = {}
        self._cache: OrderedDict[tuple[int, int, int], _Block] = OrderedDict()
        self._cache_size = cache_size

    def __repr__(self) -> str:
        return (
            f"<SyntheticChain chain_id={self.chain_id} block_time_s={self.block_time_s}"
            f" seed={self.seed!r} reorgs={self.reorg_count}>"
        )

    # -- time --------------------------------------------------------------------------

    def height(self, now: float) -> int:
        """Return the head block number at ``now`` (never below ``start_height``)."""
        elapsed = now - self.start_time
        if elapsed <= 0:
            return self.start_height
        return self.start_height + math.floor(elapsed / self.block_time_s)

    def block_time_at(self, number: int) -> float:
        """Return the ``now`` at which block ``number`` becomes the head."""
        return self.start_time + (number - self.start_height) * self.block_time_s

    def timestamp(self, number: int) -> int:
        """Return the block's ``timestamp`` field (seconds, clamped at 0)."""
        return max(0, math.floor(self.block_time_at(number)))

    # -- identities --------------------------------------------------------------------

    def _digest(self, *parts: object) -> bytes:
        return hashlib.sha256(self._prefix + "|".join(map(str, parts)).encode()).digest()

    def generation(self, number: int) -> int:
        """Return how many reorgs have replaced block ``number``."""
        return self._generations.get(number, 0)

    def block_hash(self, number: int) -> str:
        """Return the current hash of block ``number`` (``ZERO_HASH`` below genesis)."""
        if number < 0:
            return ZERO_HASH
        head = self._digest("block", number, self.generation(number))[:24]
        tail = number ^ self._mask ^ int.from_bytes(head[:8], "big")
        return _data(head + tail.to_bytes(8, "big"))

    def block_number_of(self, block_hash: str) -> int | None:
        """Return the number of the block with this hash, or None if no block has it now."""
        raw = _parse_hash(block_hash)
        if raw is None:
            return None
        number = int.from_bytes(raw[24:], "big") ^ self._mask ^ int.from_bytes(raw[:8], "big")
        if self.block_hash(number) != block_hash.lower():
            return None
        return number

    def tx_hash(self, number: int, index: int) -> str:
        """Return the hash of transaction ``index`` of block ``number``."""
        head = self._digest("txh", number, self.generation(number), index)[:22]
        tail = ((number ^ self._mask) << 16 | index) ^ int.from_bytes(head[:10], "big")
        return _data(head + tail.to_bytes(10, "big"))

    def locate_tx(self, tx_hash: str) -> tuple[int, int] | None:
        """Return ``(block number, index)`` of a transaction hash, or None if unknown."""
        raw = _parse_hash(tx_hash)
        if raw is None:
            return None
        tail = int.from_bytes(raw[22:], "big") ^ int.from_bytes(raw[:10], "big")
        number, index = (tail >> 16) ^ self._mask, tail & 0xFFFF
        # Compare hashes first: it is cheap, and a forged number must not build a block.
        if self.tx_hash(number, index) != tx_hash.lower():
            return None
        if index >= len(self._block(number).tx_hashes):
            return None
        return number, index

    # -- blocks ------------------------------------------------------------------------

    def block(self, number: int, full_transactions: bool = False) -> JSON:
        """Return the ``eth_getBlockByNumber`` result for ``number`` (>= 0).

        The chain has no notion of a provider's head: the caller decides visibility.
        """
        built = self._block(number)
        txs: list[Any] = built.transactions if full_transactions else built.tx_hashes
        return {**built.header, "transactions": txs}

    def header(self, number: int) -> JSON:
        """Return the block header as an ``eth_subscribe("newHeads")`` notification carries it."""
        skip = ("size", "totalDifficulty", "uncles", "withdrawals")
        return {k: v for k, v in self._block(number).header.items() if k not in skip}

    def transactions(self, number: int) -> list[JSON]:
        """Return the full transaction objects of block ``number``."""
        return self._block(number).transactions

    def receipts(self, number: int) -> list[JSON]:
        """Return the ``eth_getBlockReceipts`` result for block ``number``."""
        return self._block(number).receipts

    def logs(self, number: int) -> list[JSON]:
        """Return every log of block ``number`` in ``logIndex`` order."""
        return self._block(number).logs

    def transaction(self, tx_hash: str) -> JSON | None:
        """Return the ``eth_getTransactionByHash`` result, or None if no block holds it."""
        where = self.locate_tx(tx_hash)
        return None if where is None else self._block(where[0]).transactions[where[1]]

    def receipt(self, tx_hash: str) -> JSON | None:
        """Return the ``eth_getTransactionReceipt`` result, or None if no block holds it."""
        where = self.locate_tx(tx_hash)
        return None if where is None else self._block(where[0]).receipts[where[1]]

    def base_fee(self, number: int) -> int:
        """Return block ``number``'s base fee in wei (between 8 and 40 gwei)."""
        return 8 * GWEI + int.from_bytes(self._digest("fee", number)[:8], "big") % (32 * GWEI)

    def _block(self, number: int) -> _Block:
        if number < 0:
            raise ValueError(f"block number must be >= 0, got {number}")
        key = (number, self.generation(number), self.generation(number - 1))
        built = self._cache.get(key)
        if built is not None:
            self._cache.move_to_end(key)
            return built
        built = self._build(number)
        self._cache[key] = built
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return built

    def _build(self, number: int) -> _Block:
        gen = self.generation(number)
        block_hash = self.block_hash(number)
        seed = self._digest("content", number, gen)
        base_fee = self.base_fee(number)
        n_tx = 3 + seed[0] % 6
        common = {"blockHash": block_hash, "blockNumber": _q(number)}
        transactions: list[JSON] = []
        receipts: list[JSON] = []
        logs: list[JSON] = []
        cumulative = 0
        for index in range(n_tx):
            tx, receipt_logs, gas_used = self._build_tx(number, gen, index, base_fee, len(logs))
            tx.update(common)
            cumulative += gas_used
            for log in receipt_logs:
                log.update(common)
            logs.extend(receipt_logs)
            transactions.append(tx)
            receipts.append(
                {
                    **common,
                    "contractAddress": None,
                    "cumulativeGasUsed": _q(cumulative),
                    "effectiveGasPrice": tx["gasPrice"],
                    "from": tx["from"],
                    "gasUsed": _q(gas_used),
                    "logs": receipt_logs,
                    "logsBloom": EMPTY_BLOOM,
                    "status": "0x1",
                    "to": tx["to"],
                    "transactionHash": tx["hash"],
                    "transactionIndex": tx["transactionIndex"],
                    "type": "0x2",
                }
            )
        header: JSON = {
            "baseFeePerGas": _q(base_fee),
            "blobGasUsed": "0x0",
            "difficulty": "0x0",
            "excessBlobGas": "0x0",
            "extraData": "0x6c6173736f2d73696d",  # "lasso-sim"
            "gasLimit": _q(GAS_LIMIT),
            "gasUsed": _q(cumulative),
            "hash": block_hash,
            "logsBloom": EMPTY_BLOOM,
            "miner": _MINERS[seed[1] % len(_MINERS)],
            "mixHash": _data(self._digest("mix", number, gen)),
            "nonce": "0x0000000000000000",
            "number": _q(number),
            "parentBeaconBlockRoot": _data(self._digest("beacon", number, gen)),
            "parentHash": self.block_hash(number - 1),
            "receiptsRoot": _data(self._digest("receipts", number, gen)),
            "sha3Uncles": _EMPTY_UNCLES,
            "size": _q(620 + 150 * n_tx),
            "stateRoot": self.state_root(number),
            "timestamp": _q(self.timestamp(number)),
            "totalDifficulty": "0xc70d815d562d3cfa955",
            "transactionsRoot": _data(self._digest("txroot", number, gen)),
            "uncles": [],
            "withdrawals": [],
            "withdrawalsRoot": _EMPTY_TRIE,
        }
        return _Block(header, [tx["hash"] for tx in transactions], transactions, receipts, logs)

    def _build_tx(
        self, number: int, gen: int, index: int, base_fee: int, first_log_index: int
    ) -> tuple[JSON, list[JSON], int]:
        raw = hashlib.sha512(self._prefix + f"tx|{number}|{gen}|{index}".encode()).digest()
        sender = _data(raw[0:20])
        recipient = _data(raw[20:40])
        amount = int.from_bytes(raw[40:48], "big")
        priority = GWEI + int.from_bytes(raw[52:54], "big") * 30_000
        tx_hash = self.tx_hash(number, index)
        logs: list[JSON] = []
        if raw[48] % 3:  # two in three transactions are token transfers
            token = TOKEN_ADDRESSES[raw[49] % len(TOKEN_ADDRESSES)]
            to = token
            value = 0
            gas_used = 34_000 + raw[54] * 100
            call_data = "0x" + _SELECTOR_TRANSFER + _pad_address(recipient)[2:] + _word(amount)[2:]
            logs.append(
                {
                    "address": token,
                    "topics": [TRANSFER_TOPIC, _pad_address(sender), _pad_address(recipient)],
                    "data": _word(amount),
                    "transactionHash": tx_hash,
                    "transactionIndex": _q(index),
                    "logIndex": _q(first_log_index),
                    "removed": False,
                }
            )
        else:
            to = recipient
            value = amount * 1000
            gas_used = 21_000
            call_data = "0x"
        tx: JSON = {
            "accessList": [],
            "chainId": _q(self.chain_id),
            "from": sender,
            "gas": _q(gas_used + 20_000 if logs else gas_used),
            "gasPrice": _q(base_fee + priority),
            "hash": tx_hash,
            "input": call_data,
            "maxFeePerGas": _q(2 * base_fee + priority),
            "maxPriorityFeePerGas": _q(priority),
            "nonce": _q(int.from_bytes(raw[50:52], "big")),
            "r": _q(int.from_bytes(raw[0:32], "big")),
            "s": _q(int.from_bytes(raw[32:64], "big") >> 1),
            "to": to,
            "transactionIndex": _q(index),
            "type": "0x2",
            "v": _q(raw[55] & 1),
            "value": _q(value),
            "yParity": _q(raw[55] & 1),
        }
        return tx, logs, gas_used

    # -- state -------------------------------------------------------------------------

    def state_root(self, number: int) -> str:
        """Return block ``number``'s ``stateRoot``."""
        return _data(self._digest("state", number, self.generation(number)))

    def balance(self, address: str, number: int) -> int:
        """Return the balance in wei of ``address`` (lowercase) at block ``number``."""
        raw = self._digest("account", address)
        base = int.from_bytes(raw[:9], "big") % (5000 * 10**18)
        drift = (number * int.from_bytes(raw[9:11], "big")) % 1_000_000
        return base + drift * 10**12

    def nonce(self, address: str, number: int) -> int:
        """Return the transaction count of ``address`` at block ``number``."""
        if address in TOKEN_ADDRESSES:
            return 1
        raw = self._digest("account", address)
        return int.from_bytes(raw[11:13], "big") % 2000 + number // 5000

    def code(self, address: str) -> str:
        """Return the runtime bytecode at ``address`` (``"0x"`` for most addresses)."""
        if address in TOKEN_ADDRESSES:
            return _TOKEN_CODE
        raw = self._digest("account", address)
        if raw[13] < 16:  # one address in sixteen is a contract
            return "0x6080604052" + raw[14:30].hex()
        return "0x"

    def storage(self, address: str, slot: int, number: int) -> str:
        """Return the 32-byte storage word at ``slot`` (zero for accounts without code)."""
        if self.code(address) == "0x":
            return ZERO_HASH
        return _data(self._digest("slot", address, slot, number // 64))

    def call(self, to: str, data: str) -> str:
        """Return the ``eth_call`` result: 32 deterministic bytes from ``(to, data)``.

        ERC-20 ``decimals()``, ``totalSupply()`` and ``balanceOf(address)`` answer
        plausibly on the token contracts.

        Raises:
            ExecutionReverted: when ``data`` starts with the selector ``0xdeadbeef``, so
                tests can provoke a deterministic revert.
        """
        selector = data[:10]
        if selector == _REVERT_SELECTOR:
            reason = "lasso-sim: reverted on request"
            raise ExecutionReverted(reason, _revert_data(reason))
        if to in TOKEN_ADDRESSES:
            decimals = _TOKEN_DECIMALS[TOKEN_ADDRESSES.index(to)]
            if selector == _SELECTOR_DECIMALS:
                return _word(decimals)
            if selector == _SELECTOR_TOTAL_SUPPLY:
                return _word(int.from_bytes(self._digest("supply", to)[:5], "big") * 10**decimals)
            if selector == _SELECTOR_BALANCE_OF:
                return _word(int.from_bytes(self._digest("holding", to, data)[:12], "big"))
        return _data(self._digest("call", to, data))

    def estimate_gas(self, to: str | None, data: str) -> int:
        """Return the ``eth_estimateGas`` result (intrinsic gas plus a contract surcharge).

        Raises:
            ExecutionReverted: as :meth:`call` does.
        """
        if data[:10] == _REVERT_SELECTOR:
            self.call(to or "0x", data)
        payload = bytes.fromhex(data[2:]) if len(data) > 2 else b""
        gas = 21_000 + sum(16 if byte else 4 for byte in payload)
        if to is None:
            gas += 32_000
        elif self.code(to) != "0x":
            gas += 25_000
        return gas

    # -- reorgs ------------------------------------------------------------------------

    def reorg(self, depth: int, now: float) -> int:
        """Replace the newest ``depth`` blocks at ``now`` with new ones.

        Their hashes, transactions and logs change; ``parentHash`` of the next block links
        to the new hashes. Returns the number of the first replaced block.

        Raises:
            ValueError: if ``depth`` is not between 1 and 1024.
        """
        if not 1 <= depth <= _MAX_REORG_DEPTH:
            raise ValueError(f"reorg depth must be between 1 and {_MAX_REORG_DEPTH}, got {depth}")
        head = self.height(now)
        first = max(0, head - depth + 1)
        for number in range(first, head + 1):
            self._generations[number] = self._generations.get(number, 0) + 1
        self.reorg_count += 1
        return first

    def describe(self, now: float) -> JSON:
        """Return a JSON-ready summary (for the simulator's admin API)."""
        head = self.height(now)
        return {
            "chain_id": self.chain_id,
            "block_time_ms": round(self.block_time_s * 1000),
            "seed": self.seed,
            "head": head,
            "head_hash": self.block_hash(head),
            "reorg_count": self.reorg_count,
        }


def _parse_hash(value: str) -> bytes | None:
    if not isinstance(value, str) or len(value) != 66 or not value.startswith(("0x", "0X")):
        return None
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        return None
