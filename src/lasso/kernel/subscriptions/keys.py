"""Subscription keys: ``eth_subscribe`` params validated and normalized (EIP-1474, geth).

Equal requests give equal :class:`SubscriptionKey` values, so clients asking for the same
stream (in any spelling of the same logs filter) share one upstream subscription.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "HASH_LEN",
    "KINDS",
    "Kind",
    "SubscriptionKey",
    "SubscriptionParamsError",
    "hex_of_length",
    "normalize_filter",
    "parse_subscription",
]

Kind = Literal["newHeads", "logs", "newPendingTransactions"]
KINDS: tuple[Kind, ...] = ("newHeads", "logs", "newPendingTransactions")

_HEX = re.compile(r"^0x[0-9a-f]*$")
_TAGS = frozenset({"latest", "earliest", "pending", "safe", "finalized"})
_FILTER_KEYS = frozenset({"address", "topics", "fromBlock", "toBlock"})
_ADDRESS_LEN = 42  # "0x" and 20 bytes
HASH_LEN = 66
"""Characters in a ``0x`` hex hash of 32 bytes: topics, block and transaction hashes."""


class SubscriptionParamsError(ValueError):
    """``eth_subscribe`` params that name no supported subscription (JSON-RPC -32602)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriptionKey:
    """What one shared upstream subscription delivers; equal filters give equal keys.

    ``canonical`` is the normalized params list as compact JSON with sorted keys.
    """

    kind: Kind
    canonical: str

    def params(self) -> list[object]:
        """The normalized ``eth_subscribe`` params to send upstream (a fresh list)."""
        value = json.loads(self.canonical)
        assert isinstance(value, list)
        return value

    def log_filter(self) -> dict[str, object]:
        """The normalized logs filter (``{}`` for other kinds), a fresh dict."""
        params = self.params()
        if self.kind == "logs" and len(params) > 1 and isinstance(params[1], dict):
            return params[1]
        return {}


def hex_of_length(value: object, length: int) -> str | None:
    """``value`` lower-cased if it is a ``0x`` hex string of ``length`` characters, else ``None``.

    Addresses are 42 characters long; topics and hashes 66.
    """
    if isinstance(value, str) and _HEX.match(value.lower()) and len(value) == length:
        return value.lower()
    return None


def _checked_hex(value: object, length: int, name: str) -> str:
    checked = hex_of_length(value, length)
    if checked is None:
        raise SubscriptionParamsError(f"invalid {name} {value!r}")
    return checked


def _address(value: object) -> str:
    return _checked_hex(value, _ADDRESS_LEN, "address")


def _topic(value: object) -> str:
    return _checked_hex(value, HASH_LEN, "topic")


def _block_ref(value: object, name: str) -> str:
    if isinstance(value, str):
        low = value.lower()
        if low in _TAGS:
            return low
        if _HEX.match(low) and len(low) > 2:
            return hex(int(low, 16))
    raise SubscriptionParamsError(f"invalid {name} {value!r}")


def _topic_position(value: object) -> str | list[str] | None:
    """One topic position: ``None`` (any), a topic, or a sorted OR-list of topics.

    A ``null`` inside an OR-list matches anything, so the whole position becomes a wildcard
    (geth's reading). *Decision*: the reference drops such nulls instead, which turns
    ``[A, null]`` from "anything" into "A" and would deliver less than the client asked for.
    """
    if value is None:
        return None
    if isinstance(value, list):
        if not value or any(v is None for v in value):
            return None
        topics = sorted({_topic(v) for v in value})
        return topics[0] if len(topics) == 1 else topics
    return _topic(value)


def normalize_filter(raw: object) -> dict[str, object]:
    """Normalize a logs filter so that equal filters compare (and serialize) equal.

    Drops nulls and empty lists; lower-cases hex; sorts and dedupes addresses (one address
    becomes a string) and topic OR-lists; drops trailing wildcard topic positions;
    canonicalizes block numbers (``"0x0A"`` → ``"0xa"``).

    Raises:
        SubscriptionParamsError: not an object, an unknown key, or a malformed value.
    """
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SubscriptionParamsError("logs filter must be an object")
    unknown = sorted(set(raw) - _FILTER_KEYS)
    if unknown:
        raise SubscriptionParamsError(f"unsupported logs filter key {unknown[0]!r}")
    out: dict[str, object] = {}
    address = raw.get("address")
    if isinstance(address, list):
        addresses = sorted({_address(a) for a in address if a is not None})
        if addresses:
            out["address"] = addresses[0] if len(addresses) == 1 else addresses
    elif address is not None:
        out["address"] = _address(address)
    topics = raw.get("topics")
    if topics is not None:
        if not isinstance(topics, list):
            raise SubscriptionParamsError("topics must be a list")
        if len(topics) > 4:
            raise SubscriptionParamsError("at most 4 topic positions")
        positions = [_topic_position(t) for t in topics]
        while positions and positions[-1] is None:
            positions.pop()
        if positions:
            out["topics"] = positions
    for name in ("fromBlock", "toBlock"):
        if raw.get(name) is not None:
            out[name] = _block_ref(raw[name], name)
    return out


def parse_subscription(params: object) -> SubscriptionKey:
    """Validate ``eth_subscribe`` params and return their key.

    Accepts ``["newHeads"]``, ``["logs"]``, ``["logs", filter]`` (a missing or null filter
    is ``{}``), ``["newPendingTransactions"]`` and ``["newPendingTransactions", bool]``
    (geth's full-transaction flag; ``false`` is dropped).

    Raises:
        SubscriptionParamsError: anything else; answer JSON-RPC ``-32602``.
    """
    if not isinstance(params, list) or not params or not isinstance(params[0], str):
        raise SubscriptionParamsError("params must be [kind, ...]")
    name = params[0]
    rest = params[1:]
    kind: Kind
    if name == "newHeads":
        kind = "newHeads"
        if any(r is not None for r in rest):
            raise SubscriptionParamsError("newHeads takes no parameters")
        normalized: list[object] = ["newHeads"]
    elif name == "logs":
        kind = "logs"
        if len(rest) > 1:
            raise SubscriptionParamsError("logs takes one filter object")
        normalized = ["logs", normalize_filter(rest[0] if rest else None)]
    elif name == "newPendingTransactions":
        kind = "newPendingTransactions"
        if len(rest) > 1 or (rest and rest[0] is not None and not isinstance(rest[0], bool)):
            raise SubscriptionParamsError("newPendingTransactions takes one optional boolean")
        normalized = ["newPendingTransactions"] + ([True] if rest and rest[0] else [])
    else:
        raise SubscriptionParamsError(f"unsupported subscription kind {name!r}")
    canonical = json.dumps(normalized, sort_keys=True, separators=(",", ":"))
    return SubscriptionKey(kind=kind, canonical=canonical)
