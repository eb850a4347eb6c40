"""Providers' ``eth_getLogs`` limits, read from their error messages.

Every major provider caps ``eth_getLogs``, each in its own words, sometimes with the number
and sometimes without (CONTRACT §8). Two kinds:

* **range**: the block span itself is too wide ("eth_getLogs is limited to a 10,000
  range"). It is a property of the provider's plan: the router learns it and splits every
  later request to fit.
* **results**: the answer would be too big ("query returned more than 10000 results"). It
  depends on the data, so it is never learned; only the chunk that hit it is split again.

:func:`logs_limit` reads a message into a :class:`LogsLimit`; :func:`is_logs_limit` is the
cheap test the classifier uses (these errors are ``capability_violation``: fail over or
split, never the client's fault, whatever code they come with: Alchemy and Ankr send
``-32600``, Infura ``-32602`` or ``-32005``). The table below lists each wording with the
provider it comes from; ``tests/kernel/test_logs_limits.py`` checks each one verbatim.

The number a message gives is read as the widest span one request may have, in blocks,
both bounds included ("limited to a 10,000 range" gives 10,000): when a provider means
``toBlock - fromBlock <= N`` this costs a few more chunks, never a failure. A suggested
range (``[0x10, 0x1f]``, ``retry with the range 100-131``) gives its own width.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["LogsLimit", "LogsLimitKind", "PROVIDER_WORDINGS", "is_logs_limit", "logs_limit"]


class LogsLimitKind(StrEnum):
    RANGE = "range"
    RESULTS = "results"


@dataclass(frozen=True, slots=True)
class LogsLimit:
    """What a "too large" error says: its kind and, when given, the widest span to ask."""

    kind: LogsLimitKind
    max_blocks: int | None = None


_NUM = r"([\d][\d,.]*k?)"

PROVIDER_WORDINGS: tuple[tuple[str, LogsLimitKind, str], ...] = (
    # (who, kind, pattern over the lower-cased message; group 1, if any, is the number)
    # -- too many results: data-dependent, split the chunk, learn nothing
    ("Infura, zkEVM, Aurora, geth-based", LogsLimitKind.RESULTS, r"query returned more than \d"),
    ("Alchemy", LogsLimitKind.RESULTS, r"log response size exceeded"),
    ("reth, LlamaRPC, Ankr", LogsLimitKind.RESULTS, r"query exceeds max results"),
    ("Arbitrum (nitro)", LogsLimitKind.RESULTS, r"logs matched by query exceeds limit"),
    ("1RPC", LogsLimitKind.RESULTS, r"response size should not greater than"),
    ("OP proxyd", LogsLimitKind.RESULTS, r"backend response too large"),
    # -- block range: the provider's plan, learned
    ("QuickNode, 1RPC, BlastAPI", LogsLimitKind.RANGE, r"limited to a " + _NUM),
    ("Alchemy, Aurora", LogsLimitKind.RANGE, r"up to a " + _NUM + r" block range"),
    ("Infura", LogsLimitKind.RANGE, r"range \d+ exceeds limit of " + _NUM),
    ("dRPC", LogsLimitKind.RANGE, r"ranges over " + _NUM + r" blocks"),
    # geth --rpc.rangelimit "exceed maximum block range 5", PublicNode "...: 50000",
    # reth "query exceeds max block range 5000", Morph "max block range = 5000"
    ("geth, reth, PublicNode", LogsLimitKind.RANGE, r"max(?:imum)? block range[ :=]+" + _NUM),
    ("Ankr", LogsLimitKind.RANGE, r"maximum \[from, to\] blocks distance: " + _NUM),
    ("Moonbeam, Frontier", LogsLimitKind.RANGE, r"block range is too wide \(maximum " + _NUM),
    ("Ankr", LogsLimitKind.RANGE, r"block range is too wide"),
    ("BlastAPI", LogsLimitKind.RANGE, r"exceeds the range allowed for your plan \(\d+ > " + _NUM),
    ("thirdweb", LogsLimitKind.RANGE, r"maximum allowed number of requested blocks is " + _NUM),
    ("Coinbase (Base)", LogsLimitKind.RANGE, r"limit the query to at most " + _NUM + " blocks"),
    ("Avalanche", LogsLimitKind.RANGE, r"too many blocks from .* maximum is set to " + _NUM),
    ("Tenderly", LogsLimitKind.RANGE, r"is bigger than range limit " + _NUM),
    ("Chainstack", LogsLimitKind.RANGE, r"block range limit exceeded"),
    ("Base, OP Mainnet", LogsLimitKind.RANGE, r"block range (?:is )?too large"),
    ("Scroll", LogsLimitKind.RANGE, r"block range is bigger than maxblockrange"),
)  # fmt: skip

_RULES = tuple((kind, re.compile(pattern)) for _, kind, pattern in PROVIDER_WORDINGS)
_ANY = re.compile("|".join(f"(?:{pattern})" for _, _, pattern in PROVIDER_WORDINGS))
# A suggested range: Alchemy/Infura "[0x12a880, 0x12a8c2]", reth "retry with the range a-b".
_SUGGESTED = (
    re.compile(r"\[\s*(0x[0-9a-f]+)\s*,\s*(0x[0-9a-f]+)\s*\]"),
    re.compile(r"retry with the range (\d+)\s*-\s*(\d+)"),
)
_MAX_CHARS = 1024


def is_logs_limit(lowered: str) -> bool:
    """Whether a lower-cased error message is a ``getLogs`` range or result-size limit."""
    return _ANY.search(lowered, 0, _MAX_CHARS) is not None


def logs_limit(message: str | None) -> LogsLimit | None:
    """Read a provider's "range too large" / "too many results" error.

    Args:
        message: the JSON-RPC error's ``message`` (any case; ``None`` is no message).

    Returns:
        The limit, with ``max_blocks`` when the message gives a number or a suggested
        range (a positive integer), or ``None`` when the message is no such error.
    """
    if not isinstance(message, str) or not message:
        return None
    lowered = message[:_MAX_CHARS].lower()
    for kind, pattern in _RULES:
        match = pattern.search(lowered)
        if match is None:
            continue
        number = _number(match.group(1)) if match.groups() else None
        if number is None or kind is LogsLimitKind.RESULTS:
            number = _suggested(lowered) or number
        return LogsLimit(kind, number)
    return None


def _number(text: str | None) -> int | None:
    if not text:
        return None
    scale = 1000 if text.endswith("k") else 1
    digits = text.rstrip("k").replace(",", "").replace(".", "")
    if not digits.isdigit():
        return None
    value = int(digits) * scale
    return value if value > 0 else None


def _suggested(lowered: str) -> int | None:
    for pattern in _SUGGESTED:
        match = pattern.search(lowered)
        if match is not None:
            lo = int(match.group(1), 0)
            hi = int(match.group(2), 0)
            return hi - lo + 1 if hi >= lo else None
    return None
