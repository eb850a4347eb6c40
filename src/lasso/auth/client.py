"""Who is calling (:class:`Client`) and why a call is refused (:class:`Refusal`).

A :class:`Client` is what authentication yields: the name that metrics, logs and the
dashboard show (a key's ``id``, the JWT entry's ``id``, or ``anonymous``; never a secret),
the bucket its rate limit is kept under, and its scopes. One :class:`Client` per key is
built when the profile is loaded and shared by every request with that key; JWT and
anonymous clients are made per token and per address.

A :class:`Refusal` is an answer decided before any upstream is asked (CONTRACT §9):

=================  ======  ========  =======================================
refusal            HTTP    JSON-RPC  metric ``status``
=================  ======  ========  =======================================
no or bad key      401     -32001    ``unauthorized``
address refused    403     -32001    ``forbidden``
method not in scope 403    -32601    ``forbidden``
chain not in scope 403     -32602    ``forbidden``
over the rate      429     -32005    ``rate_limited``
=================  ======  ========  =======================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from lasso.config import RateLimit
from lasso.kernel.access import MethodMatcher

__all__ = [
    "ANONYMOUS",
    "Client",
    "Refusal",
    "Stats",
    "forbidden_address",
    "forbidden_chain",
    "forbidden_method",
    "rate_limited",
    "unauthorized",
]

ANONYMOUS = "anonymous"

Stats = dict[tuple[str, str, str], int]
"""Client request counts by ``(profile, client id, status)``."""


class Client:
    """An authenticated (or anonymous) caller of one profile.

    Attributes:
        profile: the profile's slug.
        id: the name shown everywhere: a key id, the JWT entry's id, or ``anonymous``.
        kind: ``key``, ``jwt`` or ``anonymous``.
        bucket: the name of its rate-limit bucket (``key:<id>``, ``jwt:<id>:<subject
            digest>``, ``ip:<address>``).
        limit: its rate limit, or ``None`` for none.
        chains: the chain keys it may use, or ``None`` for all.
        methods: rules a method must pass, every one of them.
        max_subscriptions: its cap on concurrent subscriptions on this node, or ``None``.
        expires_at: when its credential expires (wall-clock seconds), or ``None``.
    """

    __slots__ = (
        "profile",
        "id",
        "kind",
        "bucket",
        "limit",
        "chains",
        "methods",
        "max_subscriptions",
        "expires_at",
        "_stats",
    )

    def __init__(
        self,
        profile: str,
        id: str,
        kind: str,
        bucket: str,
        stats: Stats,
        *,
        limit: RateLimit | None = None,
        chains: frozenset[str] | None = None,
        methods: tuple[MethodMatcher, ...] = (),
        max_subscriptions: int | None = None,
        expires_at: float | None = None,
    ) -> None:
        self.profile = profile
        self.id = id
        self.kind = kind
        self.bucket = bucket
        self.limit = limit
        self.chains = chains
        self.methods = methods
        self.max_subscriptions = max_subscriptions
        self.expires_at = expires_at
        self._stats = stats

    def count(self, status: str, n: int = 1) -> None:
        """Count ``n`` requests of this client that ended with ``status``."""
        key = (self.profile, self.id, status)
        stats = self._stats
        stats[key] = stats.get(key, 0) + n

    def allows_method(self, method: str) -> bool:
        for rules in self.methods:
            if not rules.allows(method):
                return False
        return True

    def __repr__(self) -> str:
        limit = f" {self.limit.rps}rps/{self.limit.burst}" if self.limit else ""
        return f"<Client {self.profile}/{self.id} {self.kind}{limit}>"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A request refused before any upstream: HTTP status, JSON-RPC error, metric status."""

    status: int
    code: int
    message: str
    reason: str
    metric: str
    retry_after_s: float = 0.0
    extra_headers: tuple[tuple[str, str], ...] = field(default=())

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"reason": self.reason}
        if self.status == 429:
            data["retry_after_ms"] = max(1, math.ceil(self.retry_after_s * 1000))
        return data

    def body(self, id_json: bytes = b"null") -> bytes:
        """The JSON-RPC error object for a request with id ``id_json`` (raw JSON)."""
        err = {"code": self.code, "message": self.message, "data": self.data()}
        return b'{"jsonrpc":"2.0","error":%s,"id":%s}' % (orjson.dumps(err), id_json)

    def headers(self) -> list[tuple[str, str]]:
        out = list(self.extra_headers)
        if self.status == 429:
            out.append(("Retry-After", str(max(1, math.ceil(self.retry_after_s)))))
        return out


_BEARER = (("WWW-Authenticate", 'Bearer realm="lasso"'),)
_BEARER_INVALID = (("WWW-Authenticate", 'Bearer realm="lasso", error="invalid_token"'),)

_UNAUTHORIZED = {
    "missing_credentials": "Unauthorized: an API key is required",
    "invalid_key": "Unauthorized: invalid API key",
    "invalid_token": "Unauthorized: invalid token",
    "token_expired": "Unauthorized: token expired",
    "token_not_yet_valid": "Unauthorized: token not yet valid",
    "key_revoked": "Unauthorized: the key is no longer valid",
}


def unauthorized(reason: str) -> Refusal:
    """401 / -32001 for ``reason``, one of the keys of ``_UNAUTHORIZED``."""
    headers = _BEARER if reason == "missing_credentials" else _BEARER_INVALID
    return Refusal(401, -32001, _UNAUTHORIZED[reason], reason, "unauthorized", 0.0, headers)


FORBIDDEN_ADDRESS = Refusal(
    403, -32001, "Forbidden: client address not allowed", "address_not_allowed", "forbidden"
)


def forbidden_address() -> Refusal:
    return FORBIDDEN_ADDRESS


def forbidden_method(method: str) -> Refusal:
    shown = method if len(method) <= 64 else method[:61] + "..."
    return Refusal(
        403, -32601, f"Method not allowed for this client: {shown}", "method_not_allowed",
        "forbidden",
    )  # fmt: skip


def forbidden_chain(chain: str) -> Refusal:
    return Refusal(
        403, -32602, f"Chain not allowed for this client: {chain}", "chain_not_allowed",
        "forbidden",
    )  # fmt: skip


def rate_limited(retry_after_s: float) -> Refusal:
    return Refusal(
        429, -32005, "Rate limit exceeded", "rate_limited", "rate_limited", retry_after_s
    )
