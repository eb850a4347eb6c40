"""Tests of Keccak-256 and the transaction hash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.kernel.keccak import keccak256, tx_hash

# RLP-shaped bytes (a legacy transaction's layout; the signature is filler).
LEGACY_RAW = (
    "0xf86c808504a817c80082520894a94f5374fce5edbc8e2a8697c15331677e6ebf0b880de0b6b3a7640000"
    "8025a0c4b2c6d9b1e4d6d7cbd54e09b3c5c5e73f8e16d5a7d0b1b7e1f5e0c2f1b5b7e3a05d1c3c0e3c7b"
    "3e6c5a1f0e2d3c4b5a69788796a5b4c3d2e1f0a1b2c3d4e5f6"
)


def test_known_vectors() -> None:
    """Empty input and the ERC-20 Transfer signature hash to their well-known digests."""
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )
    assert keccak256(b"Transfer(address,address,uint256)").hex() == (
        "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    )


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_matches_eth_hash(data: bytes) -> None:
    """Any input hashes like eth-hash's Keccak-256 (web3's), across block boundaries."""
    keccak = pytest.importorskip("eth_hash.auto").keccak
    assert keccak256(data) == keccak(data)


def test_tx_hash_is_keccak_of_the_raw_bytes() -> None:
    """The hash of a raw transaction is keccak-256 of its bytes, 0x-prefixed lower-case hex."""
    raw = bytes.fromhex(LEGACY_RAW[2:])
    assert tx_hash(LEGACY_RAW) == "0x" + keccak256(raw).hex()
    assert tx_hash(LEGACY_RAW.upper().replace("0X", "0x")) == tx_hash(LEGACY_RAW)


def test_tx_hash_matches_eth_account() -> None:
    """A transaction signed by eth_account hashes to the hash eth_account reports."""
    account = pytest.importorskip("eth_account").Account
    key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
    for tx in (
        {"nonce": 0, "gasPrice": 10**9, "gas": 21000, "to": "0x" + "11" * 20, "value": 1,
         "chainId": 31337},
        {"nonce": 7, "maxFeePerGas": 2 * 10**9, "maxPriorityFeePerGas": 10**9, "gas": 21000,
         "to": "0x" + "22" * 20, "value": 5, "chainId": 1, "type": 2},
    ):  # fmt: skip
        signed = account.sign_transaction(tx, key)
        raw = "0x" + bytes(signed.raw_transaction).hex()
        assert tx_hash(raw) == "0x" + bytes(signed.hash).hex()


@pytest.mark.parametrize(
    "raw",
    [None, 12, "", "0x", "0x0", "0xabc", "abcd", "0xzz", "0x" + "00" * (1024 * 1024 + 1)],
)
def test_tx_hash_rejects_malformed_input(raw: object) -> None:
    """Non-strings, missing prefix, odd length, non-hex and oversized input give None."""
    assert tx_hash(raw) is None
