"""Tests of the getLogs limit table: each provider's real wording, kind and number."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.kernel.classify import Category, classify_rpc_error
from lasso.kernel.logs_limits import (
    PROVIDER_WORDINGS,
    LogsLimit,
    LogsLimitKind,
    is_logs_limit,
    logs_limit,
)

RANGE, RESULTS = LogsLimitKind.RANGE, LogsLimitKind.RESULTS

# (who, code, message as the provider sends it, expected limit). Sources: the providers'
# answers quoted in public issue trackers and client source (see docs/routing.md).
REAL = [
    ("Alchemy", -32600,
     "You can make eth_getLogs requests with up to a 500 block range. Based on your "
     "parameters, this block range should work: [0x123c9b2, 0x123cba5]",
     LogsLimit(RANGE, 500)),
    ("Alchemy free tier", -32600,
     "Under the Free tier plan, you can make eth_getLogs requests with up to a 10 block "
     "range. Based on your parameters, this block range should work: [0x1, 0xa]. Upgrade to "
     "PAYG for expanded block range.",
     LogsLimit(RANGE, 10)),
    ("Alchemy response size", -32602,
     "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block "
     "range and no limit on the response size, or you can request any block range with a "
     "cap of 10K logs in the response. Based on your parameters, this block range should "
     "work: [0x112a880, 0x112a8c2]",
     LogsLimit(RESULTS, 0x112A8C2 - 0x112A880 + 1)),
    ("Alchemy (2020)", -32602,
     "Log response size exceeded. Please reduce query block range.", LogsLimit(RESULTS)),
    ("Infura range", -32602, "range 1000000 exceeds limit of 10000", LogsLimit(RANGE, 10000)),
    ("Infura results", -32005, "query returned more than 10000 results", LogsLimit(RESULTS)),
    ("Infura results with a range", -32005,
     "query returned more than 10000 results. Try with this block range [0x1B5C460, 0x1B5C65D].",
     LogsLimit(RESULTS, 0x1B5C65D - 0x1B5C460 + 1)),
    ("QuickNode", -32614, "eth_getLogs is limited to a 10,000 range", LogsLimit(RANGE, 10000)),
    ("QuickNode (older)", -32000,
     "eth_getLogs and eth_newFilter are limited to a 10,000 blocks range",
     LogsLimit(RANGE, 10000)),
    ("Ankr", -32600, "block range is too wide", LogsLimit(RANGE)),
    ("Ankr (2025)", -32602, "maximum [from, to] blocks distance: 10000", LogsLimit(RANGE, 10000)),
    ("dRPC", 35, "ranges over 10000 blocks are not supported on freemium tier",
     LogsLimit(RANGE, 10000)),
    ("PublicNode", -32000, "exceed maximum block range: 50000", LogsLimit(RANGE, 50000)),
    ("BlastAPI", -32602, "eth_getLogs is limited to a 1,000 range", LogsLimit(RANGE, 1000)),
    ("BlastAPI paid", -32602,
     "Block range 5001 exceeds the range allowed for your plan (5001 > 5000).",
     LogsLimit(RANGE, 5000)),
    ("Chainstack", -32000, "Block range limit exceeded.", LogsLimit(RANGE)),
    ("geth --rpc.rangelimit", -32602, "exceed maximum block range 5", LogsLimit(RANGE, 5)),
    ("reth", -32602, "query exceeds max block range 5000", LogsLimit(RANGE, 5000)),
    ("reth results", -32602,
     "query exceeds max results 20000, retry with the range 24383075-24383096",
     LogsLimit(RESULTS, 22)),
    ("Moonbeam", -32603, "block range is too wide (maximum 1024)", LogsLimit(RANGE, 1024)),
    ("Arbitrum", -32000, "logs matched by query exceeds limit of 10000", LogsLimit(RESULTS)),
    ("Tenderly", -32602, "range 9009594 is bigger than range limit 2000", LogsLimit(RANGE, 2000)),
    ("Morph", -32000,
     "block range is larger than max block range, block range = 5120, max block range = 5000",
     LogsLimit(RANGE, 5000)),
    ("Avalanche", -32000,
     "requested too many blocks from 0 to 5000, maximum is set to 2048",
     LogsLimit(RANGE, 2048)),
    ("Coinbase", -32000, "please limit the query to at most 1000 blocks", LogsLimit(RANGE, 1000)),
    ("Base", -32000, "block range too large", LogsLimit(RANGE)),
    ("Scroll", -32000, "block range is bigger than maxBlockRange", LogsLimit(RANGE)),
    ("1RPC", -32000, "response size should not greater than 10000000 bytes",
     LogsLimit(RESULTS)),
    ("thirdweb", -32602, "Maximum allowed number of requested blocks is 1000",
     LogsLimit(RANGE, 1000)),
    ("OP proxyd", -32000, "backend response too large", LogsLimit(RESULTS)),
    ("Lasso simulator", -32000, "query exceeds max block range 250", LogsLimit(RANGE, 250)),
]  # fmt: skip


@pytest.mark.parametrize(("who", "code", "message", "expected"), REAL, ids=[r[0] for r in REAL])
def test_real_wordings(who: str, code: int, message: str, expected: LogsLimit) -> None:
    """Each provider's message reads as its kind and number, and classifies as a
    capability violation whatever its code (never the client's fault)."""
    assert logs_limit(message) == expected
    assert is_logs_limit(message.lower())
    assert classify_rpc_error(code, message) is Category.CAPABILITY_VIOLATION


@pytest.mark.parametrize(
    "message",
    [
        "block range extends beyond current head block",  # geth: behind, not too large
        "invalid block range params",
        "execution reverted",
        "header not found",
        "",
        "exceed max addresses or topics per search position",
    ],
)
def test_other_messages_are_not_limits(message: str) -> None:
    """Range errors that are not limits (and unrelated errors) are not read as limits."""
    assert logs_limit(message) is None
    assert not is_logs_limit(message.lower())


def test_every_row_has_a_tested_wording() -> None:
    """Each row of the table matches at least one real message above."""
    for who, _, pattern in PROVIDER_WORDINGS:
        assert any(re.search(pattern, m.lower()) for _, _, m, _ in REAL), who


def test_odd_numbers() -> None:
    """A zero or a reversed suggestion gives no number."""
    assert logs_limit("eth_getLogs is limited to a 0 range") == LogsLimit(RANGE)
    assert logs_limit("query returned more than 10 results [0x5, 0x1]") == LogsLimit(RESULTS)
    assert logs_limit(None) is None


@given(st.text(max_size=300))
def test_any_message_reads_or_not_without_error(message: str) -> None:
    """Any text gives a limit with a positive number or none, never an exception."""
    out = logs_limit(message)
    assert out is None or out.max_blocks is None or out.max_blocks > 0
