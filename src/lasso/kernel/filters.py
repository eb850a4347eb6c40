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
* The table is bounded, per client and in all, and entries expire after
  :data:`FILTER_TTL_S` without a call, as geth drops a filter nobody polled for 5 minutes.
  Each filter has an *owner* (the client that made it: its key, or its address; the
  caller names it). An owner holds at most :data:`MAX_FILTERS_PER_CLIENT`: its next
  filter evicts its own least recently used one. When the whole table
  (:data:`MAX_FILTERS`) is full, the least recently used filter of the owner holding the
  most goes. So a client that floods the table only ever evicts its own filters while
  others hold fewer than it does.
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
    "MAX_FILTERS_PER_CLIENT",
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
"""Filters one table (one chain of a profile, per process) holds at most."""
MAX_FILTERS_PER_CLIENT = 1_000
"""Filters one client (owner) holds at most in one table."""
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
    """Client filter ids → :class:`Binding`, bounded per owner and in all, with idle expiry.

    Args:
        max_entries: filters kept at most; when full, the least recently used filter of
            the owner holding the most goes.
        max_per_owner: filters one owner keeps at most; its least recently used goes.
        ttl_s: seconds without a call after which a filter is gone.
    """

    __slots__ = (
        "_entries",
        "_owned",
        "_levels",
        "_top",
        "_max",
        "_max_owner",
        "_ttl",
        "evicted",
        "expired",
    )

    def __init__(
        self,
        *,
        max_entries: int = MAX_FILTERS,
        max_per_owner: int = MAX_FILTERS_PER_CLIENT,
        ttl_s: float = FILTER_TTL_S,
    ) -> None:
        if max_entries < 1 or max_per_owner < 1 or ttl_s <= 0:
            raise ValueError("max_entries and max_per_owner must be >= 1 and ttl_s > 0")
        # id -> (binding, last use, owner), in last-use order (expiry sweeps the front)
        self._entries: OrderedDict[str, tuple[Binding, float, str]] = OrderedDict()
        # owner -> its ids in last-use order
        self._owned: dict[str, OrderedDict[str, None]] = {}
        # how many filters -> the owners holding that many; _top: the largest such count
        self._levels: dict[int, dict[str, None]] = {}
        self._top = 0
        self._max = max_entries
        self._max_owner = max_per_owner
        self._ttl = ttl_s
        self.evicted = 0
        self.expired = 0

    def __len__(self) -> int:
        return len(self._entries)

    def owned(self, owner: str) -> int:
        """How many filters ``owner`` holds."""
        ids = self._owned.get(owner)
        return 0 if ids is None else len(ids)

    def bind(self, client_id: str, binding: Binding, now: float, owner: str = "") -> None:
        """Record a new filter under ``client_id`` (minted by the caller, unique), made by
        ``owner``; evicts as the class docstring says when a bound is reached."""
        self._sweep(now)
        key = client_id.lower()
        if key in self._entries:
            self._drop(key)
        ids = self._owned.get(owner)
        if ids is not None and len(ids) >= self._max_owner:
            self._drop(next(iter(ids)))
            self.evicted += 1
        while len(self._entries) >= self._max:
            level = self._levels[self._top]
            self._drop(next(iter(self._owned[next(iter(level))])))
            self.evicted += 1
        self._entries[key] = (binding, now, owner)
        ids = self._owned.get(owner)
        if ids is None:
            ids = self._owned[owner] = OrderedDict()
        ids[key] = None
        self._moved(owner, len(ids) - 1, len(ids))

    def lookup(self, client_id: str, now: float) -> Binding | None:
        """The binding of ``client_id`` (a call for it refreshes its expiry), or ``None``
        when unknown or expired."""
        key = client_id.lower()
        entry = self._entries.get(key)
        if entry is None:
            return None
        binding, last, owner = entry
        if now - last > self._ttl:
            self._drop(key)
            self.expired += 1
            return None
        self._entries[key] = (binding, now, owner)
        self._entries.move_to_end(key)
        self._owned[owner].move_to_end(key)
        return binding

    def remove(self, client_id: str) -> Binding | None:
        """Forget ``client_id`` (uninstalled, or its provider lost it)."""
        key = client_id.lower()
        if key not in self._entries:
            return None
        return self._drop(key)

    def forget_provider(self, provider_id: str) -> int:
        """Forget every filter made by ``provider_id``; returns how many."""
        gone = [k for k, (b, _, _) in self._entries.items() if b.provider_id == provider_id]
        for key in gone:
            self._drop(key)
        return len(gone)

    def _drop(self, key: str) -> Binding:
        binding, _, owner = self._entries.pop(key)
        ids = self._owned[owner]
        del ids[key]
        self._moved(owner, len(ids) + 1, len(ids))
        if not ids:
            del self._owned[owner]
        return binding

    def _moved(self, owner: str, was: int, now_holds: int) -> None:
        """Keep ``_levels``/``_top`` in step with ``owner`` going from ``was`` to
        ``now_holds`` filters (a step of one)."""
        levels = self._levels
        if was:
            level = levels[was]
            del level[owner]
            if not level:
                del levels[was]
        if now_holds:
            levels.setdefault(now_holds, {})[owner] = None
        if now_holds > self._top:
            self._top = now_holds
        elif was == self._top and was not in levels:
            self._top = now_holds  # it was the only owner at the top: one less now

    def _sweep(self, now: float) -> None:
        # Entries are in last-use order: the expired ones are all at the front.
        entries = self._entries
        while entries:
            key, (_, last, _) = next(iter(entries.items()))
            if now - last <= self._ttl:
                return
            self._drop(key)
            self.expired += 1

    def __repr__(self) -> str:
        return (
            f"<FilterTable filters={len(self._entries)}/{self._max} "
            f"owners={len(self._owned)} per_owner={self._max_owner} ttl={self._ttl:g}s "
            f"expired={self.expired} evicted={self.evicted}>"
        )
