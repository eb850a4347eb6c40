"""Who a client is and what it may call, pure (CONTRACT §9, docs/security.md).

* :class:`KeyTable`: API keys by their SHA-256. The presented key is hashed, the digest
  looked up, and the match confirmed with :func:`hmac.compare_digest`; nothing compares
  the secret itself, so timing can tell an attacker at most something about the digest of
  their own guess, never about a configured key. Lookup cost does not grow with the
  number of keys.
* :class:`MethodMatcher`: ``allow``/``deny`` glob patterns (``eth_*``, ``debug_?race*``):
  a method passes when it matches some ``allow`` pattern (or ``allow`` is empty) and no
  ``deny`` pattern. Answers are memoized (bounded: the method name comes from a client).
* :func:`client_address`: the client's address behind trusted proxies, from
  ``X-Forwarded-For``; :func:`bucket_address`: the name its rate limit is kept under
  (an IPv6 client is limited per /64, the block one subscriber usually holds).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable
from typing import Generic, TypeVar

from lasso.config import MethodRules

__all__ = [
    "KeyTable",
    "MethodMatcher",
    "Network",
    "bucket_address",
    "client_address",
    "in_networks",
    "parse_networks",
]

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_DUMMY = hashlib.sha256(b"lasso: no such key").digest()
_MEMO_LIMIT = 1024


class KeyTable(Generic[T]):
    """Values by the SHA-256 digest of a secret; :meth:`lookup` takes the secret."""

    __slots__ = ("_by_digest",)

    def __init__(self, entries: Iterable[tuple[bytes, T]]) -> None:
        self._by_digest: dict[bytes, tuple[bytes, T]] = {}
        for digest, value in entries:
            if len(digest) != 32:
                raise ValueError("a key digest is 32 bytes (SHA-256)")
            self._by_digest[digest] = (digest, value)

    def lookup(self, secret: str) -> T | None:
        """The value of the key ``secret``, or ``None`` when no key matches."""
        digest = hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()
        found = self._by_digest.get(digest)
        if found is None:
            hmac.compare_digest(digest, _DUMMY)  # the same work on a miss as on a hit
            return None
        return found[1] if hmac.compare_digest(digest, found[0]) else None

    def __len__(self) -> int:
        return len(self._by_digest)

    def __repr__(self) -> str:
        return f"<KeyTable keys={len(self._by_digest)}>"


def _glob(pattern: str) -> str:
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)


class MethodMatcher:
    """Whether a method name passes ``allow``/``deny`` glob rules."""

    __slots__ = ("rules", "_allow", "_deny", "_memo")

    def __init__(self, rules: MethodRules) -> None:
        self.rules = rules
        self._allow = re.compile("|".join(map(_glob, rules.allow))) if rules.allow else None
        self._deny = re.compile("|".join(map(_glob, rules.deny))) if rules.deny else None
        self._memo: dict[str, bool] = {}

    def allows(self, method: str) -> bool:
        verdict = self._memo.get(method)
        if verdict is None:
            verdict = (self._allow is None or self._allow.fullmatch(method) is not None) and (
                self._deny is None or self._deny.fullmatch(method) is None
            )
            if len(self._memo) < _MEMO_LIMIT:
                self._memo[method] = verdict
        return verdict

    def __repr__(self) -> str:
        return f"<MethodMatcher allow={list(self.rules.allow)} deny={list(self.rules.deny)}>"


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """``ip_network`` of each (host bits allowed: ``10.1.2.3/8`` is ``10.0.0.0/8``).

    Raises:
        ValueError: an entry is not an address or CIDR block.
    """
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.strip().split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def in_networks(address: str, networks: tuple[Network, ...]) -> bool:
    """Whether ``address`` lies in one of ``networks`` (an unparseable address never does)."""
    ip = _parse(address)
    return ip is not None and any(ip in net for net in networks)


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client's address, believing ``X-Forwarded-For`` only from trusted proxies.

    When the peer is a trusted proxy, the header is read from the right (the address the
    nearest proxy saw) skipping trusted proxies; the first address that is not one is the
    client. A header that is missing, malformed or all trusted yields the leftmost valid
    address, or the peer itself. Without trusted proxies the header is ignored: anyone
    can write it.
    """
    if not trusted or not forwarded_for or not in_networks(peer, trusted):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",")][-32:]  # a bounded walk
    last_valid = None
    for hop in reversed(hops):
        ip = _parse(hop)
        if ip is None:
            break  # a hop we cannot read: stop believing anything to its left
        last_valid = str(ip)
        if not any(ip in net for net in trusted):
            return last_valid
    return last_valid or peer


def bucket_address(address: str) -> str:
    """The name of ``address``'s rate-limit bucket: the address, or its /64 for IPv6."""
    if ":" not in address:
        return address
    ip = _parse(address)
    if ip is None:
        return address
    if isinstance(ip, ipaddress.IPv4Address):
        return str(ip)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
