"""Tests of the pure-Python Keccak-256."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lasso.sim.keccak import keccak256


def test_known_vectors() -> None:
    """Empty input and the ERC-20 Transfer signature hash to their well-known digests."""
    assert keccak256(b"").hex() == (
        "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
    )
    assert keccak256(b"Transfer(address,address,uint256)").hex() == (
        "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    )


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=600))
def test_matches_the_reference_implementation(data: bytes) -> None:
    """Any input hashes like eth-hash's Keccak-256, across block boundaries."""
    keccak = pytest.importorskip("eth_hash.auto").keccak
    assert keccak256(data) == keccak(data)
