"""Sticky filters: a filter id is bound to the provider that made it.

CONTRACT §8. ``eth_newFilter``, ``eth_newBlockFilter`` and
``eth_newPendingTransactionFilter`` create state on one node; a poll
(``eth_getFilterChanges``, ``eth_getFilterLogs``) or ``eth_uninstallFilter`` sent anywhere
else answers "filter not found". So Lasso gives the client an id of its own, bound in a
:class:`FilterTable` to (provider, the provider's id), and sends every later call for it to
that provider, whatever the route's strategy.

* Lasso's ids are opaque ``0x``-prefixed 32-digit hex strings the driver mints: no
  collision between providers that number filters alike, and an id nobody made is answered
  locally.
* The table is bounded (least recently used first out) and entries expire after
  :data:`FILTER_TTL_S` without a call, as geth drops a filter nobody polled for 5 minutes.
* When the binding is gone (expired, evicted, unknown, or its provider is no longer usable:
  removed from the profile, circuit open), a poll is answered with the standard
  ``-32000 "filter not found"`` (:data:`FILTER_NOT_FOUND`), which viem, ethers and web3.py
  read as "create the filter again"; ``eth_uninstallFilter`` answers ``false``.

The table is per process and per chain of a profile: with ``--workers N`` a client's
keep-alive connection stays on one worker, and a poll that lands on another gets "filter
not found" and recreates the filter.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CREATE_METHODS",
    "FILTER_NOT_FOUND",
    "FILTER_TTL_S",
    "MAX_FILTERS",
    "USE_METHODS",
    "Binding",
    "FilterTable",
    "filter_id_of",
    "with_filter_id",
]

CREATE_METHODS = frozenset(
    {"eth_newFilter", "eth_newBlockFilter", "eth_newPendingTransactionFilter"}
)
"""Methods that create a filter; their result is the provider's filter id."""
USE_METHODS = frozenset({"eth_getFilterChanges", "eth_getFilterLogs", "eth_uninstallFilter"})
"""Methods that name a filter id as their only parameter."""
FILTER_TTL_S = 300.0
MAX_FILTERS = 10_000
FILTER_NOT_FOUND: dict[str, Any] = {"code": -32000, "message": "filter not found"}
"""geth's answer for an unknown filter (shared: callers must not modify it)."""

_MAX_ID_CHARS = 130


@dataclass(frozen=True, slots=True)
class Binding:
    """Where a client's filter lives."""

    provider_id: str
    upstream_id: str
    method: str  # the method that created it


def filter_id_of(params: object) -> str | None:
    """The filter id a ``USE_METHODS`` call names (its first parameter), lower-cased;
    ``None`` when params are malformed."""
    if isinstance(params, list) and len(params) == 1:
        value = params[0]
        if isinstance(value, str) and 0 < len(value) <= _MAX_ID_CHARS:
            return value.lower()
    return None


def with_filter_id(upstream_id: str) -> list[str]:
    """The params of a call for the provider: its own filter id."""
    return [upstream_id]


class FilterTable:
    """Client filter ids → :class:`Binding`, bounded, with idle expiry.

    Args:
        max_entries: filters kept at most; the least recently used goes first.
        ttl_s: seconds without a call after which a filter is gone.
    """

    __slots__ = ("_entries", "_max", "_ttl", "evicted", "expired")

    def __init__(self, *, max_entries: int = MAX_FILTERS, ttl_s: float = FILTER_TTL_S) -> None:
        if max_entries < 1 or ttl_s <= 0:
            raise ValueError("max_entries must be >= 1 and ttl_s > 0")
        self._entries: OrderedDict[str, tuple[Binding, float]] = OrderedDict()
        self._max = max_entries
        self._ttl = ttl_s
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._entries)

    def bind(self, client_id: str, binding: Binding, now: float) -> None:
        """Record a new filter under ``client_id`` (minted by the caller, unique)."""
        self._sweep(now)
        entries = self._entries
        entries[client_id.lower()] = (binding, now)
        entries.move_to_end(client_id.lower())
        while len(entries) > self._max:
            entries.popitem(last=False)
            self.evicted += 1

    def lookup(self, client_id: str, now: float) -> Binding | None:
        """The binding of ``client_id`` (a call for it refreshes its expiry), or ``None``
        when unknown or expired."""
        key = client_id.lower()
        entry = self._entries.get(key)
        if entry is None:
            return None
        binding, last = entry
        if now - last > self._ttl:
            del self._entries[key]
            self.expired += 1
            return None
        self._entries[key] = (binding, now)
        self._entries.move_to_end(key)
        return binding

    def remove(self, client_id: str) -> Binding | None:
        """Forget ``client_id`` (uninstalled, or its provider lost it)."""
        entry = self._entries.pop(client_id.lower(), None)
        return None if entry is None else entry[0]

    def forget_provider(self, provider_id: str) -> int:
        """Forget every filter made by ``provider_id``; returns how many."""
        gone = [k for k, (b, _) in self._entries.items() if b.provider_id == provider_id]
        for key in gone:
            del self._entries[key]
        return len(gone)

    def _sweep(self, now: float) -> None:
        # Entries are in last-use order: the expired ones are all at the front.
        entries = self._entries
        while entries:
            key, (_, last) = next(iter(entries.items()))
            if now - last <= self._ttl:
                return
            del entries[key]
            self.expired += 1

    def __repr__(self) -> str:
        return (
            f"<FilterTable filters={len(self._entries)}/{self._max} ttl={self._ttl:g}s "
            f"expired={self.expired} evicted={self.evicted}>"
        )
