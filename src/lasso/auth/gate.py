"""The client checks of one profile: :class:`ProfileGate` (CONTRACT §9, docs/security.md).

A gate exists only for a profile with ``auth`` or ``rps_limit``; requests to any other
profile never reach this module. For each request the entry points call:

1. :meth:`ProfileGate.identify` with the request's headers, query and peer address: the
   client's address (behind ``trusted_proxies``), the ``allow_ips`` rule, then the
   credential: ``X-Lasso-Api-Key``, ``Authorization: Bearer`` (an API key or a JWT) or
   ``?key=``. The answer is a :class:`~lasso.auth.client.Client` or a
   :class:`~lasso.auth.client.Refusal`. Failed attempts are themselves limited per
   address (the profile's ``rps_limit``, else :data:`FAILURE_LIMIT`): guessing keys
   soon earns 429s instead of 401s.
2. :meth:`ProfileGate.screen` with the client, the chain and the request items (one, or
   a batch): the chain scope, each item's method scope, then one token per remaining item
   from the client's bucket. Refused items get their error as ``item.early`` (the
   client's id kept); the answer is the refusal when no item was admitted, so the HTTP
   status can follow it.

Counting: every item lands in ``lasso_client_requests_total{profile,key,status}`` once:
refusals and locally answered items here, executed items by the caller
(:meth:`~lasso.auth.client.Client.count` with the pipeline's status). A request that
fails authentication is counted under ``anonymous``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol
from urllib.parse import parse_qs

from lasso.auth.client import (
    ANONYMOUS,
    Client,
    Refusal,
    Stats,
    forbidden_address,
    forbidden_chain,
    forbidden_method,
    rate_limited,
    unauthorized,
)
from lasso.auth.limiter import ADDRESS_PREFIX, Grant, LocalLimiter
from lasso.auth.tokens import JwtVerifier, looks_like_jwt
from lasso.config import ApiKeyConfig, AuthConfig, ProfileConfig, RateLimit
from lasso.kernel.access import (
    KeyTable,
    MethodMatcher,
    bucket_address,
    client_address,
    in_networks,
    parse_networks,
)
from lasso.net.http_server import Response

__all__ = ["FAILURE_LIMIT", "Item", "Limiter", "ProfileGate", "credential_of", "refusal_response"]

FAILURE_LIMIT = RateLimit(rps=5, burst=20)
"""Failed authentications per client address when the profile sets no ``rps_limit``."""

_ERROR_PREFIX = b'{"jsonrpc":"2.0","error"'
_REFUSED = (401, 403, 429)


class Item(Protocol):
    """A validated request item (``lasso.server.rpc``'s): what the gate reads and marks."""

    method: str
    id_json: bytes
    notification: bool
    early: bytes | None
    early_status: int


class Limiter(Protocol):
    def take(
        self, bucket: str, limit: RateLimit, cost: int, now: float
    ) -> Grant | Awaitable[Grant]: ...


def credential_of(headers: dict[str, str], query: str) -> str | None:
    """The presented key or token: ``X-Lasso-Api-Key``, ``Authorization: Bearer``, ``?key=``."""
    value = headers.get("x-lasso-api-key")
    if value:
        return value.strip() or None
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    if query and "key=" in query:
        found = parse_qs(query, max_num_fields=64).get("key")
        if found and found[0]:
            return found[0]
    return None


class ProfileGate:
    """Authentication, scopes and limits of one profile (one generation of its config).

    Args:
        profile: the profile (``auth`` and/or ``rps_limit`` set).
        limiter: where tokens come from (local, or shared through Redis).
        failures: the local limiter of failed authentications.
        stats: the node's client counters.
        wall: wall-clock seconds (JWT expiry).
    """

    def __init__(
        self,
        profile: ProfileConfig,
        limiter: Limiter,
        failures: LocalLimiter,
        stats: Stats,
        *,
        wall: Callable[[], float],
    ) -> None:
        auth = profile.auth or AuthConfig()
        self.slug = profile.slug
        self.config = auth
        self.limiter = limiter
        self.stats = stats
        self._failures = failures
        self._wall = wall
        self.default_limit = profile.limit
        self.failure_limit = profile.limit or FAILURE_LIMIT
        self.required = auth.required
        self.max_subscriptions = auth.max_subscriptions
        self.allow = parse_networks(auth.allow_ips)
        self.trusted = parse_networks(auth.trusted_proxies)
        self.by_id: dict[str, Client] = {k.id: self._key_client(k) for k in auth.keys}
        self._key_allow = {k.id: parse_networks(k.allow_ips) for k in auth.keys if k.allow_ips}
        self.keys = KeyTable((k.key_sha256, self.by_id[k.id]) for k in auth.keys)
        self.jwt = (
            JwtVerifier(profile.slug, auth.jwt, _chain_resolver(profile), stats)
            if auth.jwt is not None
            else None
        )
        # Credentials are read when something can check them (or when they are required):
        # a profile with only address rules or limits ignores Authorization headers meant
        # for someone else (a proxy in front, say).
        self.takes_credentials = bool(auth.keys) or auth.jwt is not None or auth.required

    def _key_client(self, key: ApiKeyConfig) -> Client:
        return Client(
            self.slug,
            key.id,
            "key",
            f"key:{key.id}",
            self.stats,
            limit=key.limit,
            chains=key.chains,
            methods=(MethodMatcher(key.methods),) if key.methods else (),
            max_subscriptions=key.max_subscriptions,
        )

    # -- who is calling -----------------------------------------------------------------
    def address(self, headers: dict[str, str], peer: str) -> str:
        """The client's address: the peer, or ``X-Forwarded-For`` from trusted proxies."""
        if not self.trusted:
            return peer
        return client_address(peer, headers.get("x-forwarded-for"), self.trusted)

    def identify(
        self, headers: dict[str, str], query: str, peer: str, now: float
    ) -> Client | Refusal:
        """The client of a request (see the module docstring), or why it is refused."""
        address = self.address(headers, peer)
        credential = credential_of(headers, query) if self.takes_credentials else None
        return self.identify_parts(credential, address, now)

    def identify_parts(self, credential: str | None, address: str, now: float) -> Client | Refusal:
        """:meth:`identify` from an already extracted credential and address."""
        if self.allow and not in_networks(address, self.allow):
            return forbidden_address()
        if credential is None:
            if self.required:
                return self._failed(unauthorized("missing_credentials"), address, now)
            return self.anonymous(address)
        if self.jwt is not None and looks_like_jwt(credential):
            token = self.jwt.verify(credential, self._wall())
            return self._failed(token, address, now) if isinstance(token, Refusal) else token
        client = self.keys.lookup(credential)
        if client is None:
            return self._failed(unauthorized("invalid_key"), address, now)
        if self._key_allow:
            allow = self._key_allow.get(client.id)
            if allow and not in_networks(address, allow):
                return forbidden_address()
        return client

    def anonymous(self, address: str) -> Client:
        return Client(
            self.slug,
            ANONYMOUS,
            "anonymous",
            ADDRESS_PREFIX + bucket_address(address),
            self.stats,
            limit=self.default_limit,
            max_subscriptions=self.max_subscriptions,
        )

    def _failed(self, refusal: Refusal, address: str, now: float) -> Refusal:
        bucket = ADDRESS_PREFIX + "failed:" + bucket_address(address)
        granted, wait = self._failures.take(bucket, self.failure_limit, 1, now)
        return refusal if granted else rate_limited(wait)

    def count_refused(self, refusal: Refusal, n: int = 1) -> None:
        """Count ``n`` items refused before a client was known (under ``anonymous``)."""
        key = (self.slug, ANONYMOUS, refusal.metric)
        self.stats[key] = self.stats.get(key, 0) + n

    # -- what it may do -----------------------------------------------------------------
    def screen(
        self, client: Client, chain: str, items: Sequence[Item], now: float
    ) -> Refusal | None | Awaitable[Refusal | None]:
        """Scopes and rate for ``items`` of ``client`` on ``chain``.

        Refused items get ``early``/``early_status``; items already answered locally
        (``early`` set by validation) are counted here. Returns the first refusal when no
        item is admitted, else ``None``; an awaitable of that when the limiter has to ask
        Redis first.
        """
        if client.chains is not None and chain not in client.chains:
            refusal = forbidden_chain(chain)
            mark_all(items, refusal)
            client.count(refusal.metric, len(items))
            return refusal
        first: Refusal | None = None
        candidates: Sequence[Item] = items
        if client.methods:
            candidates = []
            for item in items:
                if item.early is None and not client.allows_method(item.method):
                    first = first or forbidden_method(item.method)
                    mark(item, forbidden_method(item.method))
                    client.count("forbidden")
                else:
                    candidates.append(item)
            if not candidates:
                return first
        if client.limit is None:
            _count_local(client, candidates)
            return None
        grant = self.limiter.take(client.bucket, client.limit, len(candidates), now)
        if type(grant) is tuple:
            return _apply(client, candidates, grant)
        return _apply_later(client, candidates, grant)  # type: ignore[arg-type]

    def __repr__(self) -> str:
        jwt = " jwt" if self.jwt is not None else ""
        return (
            f"<ProfileGate {self.slug} keys={len(self.keys)}{jwt} required={self.required}"
            f" limit={self.default_limit}>"
        )


def refusal_response(refusal: Refusal, items: Sequence[Item], single: bool) -> Response:
    """The HTTP answer when no item was admitted: the refusal's status and headers, each
    item's error with its id (refused items keep the error they were marked with)."""
    for item in items:
        if item.early_status not in _REFUSED:  # not yet marked by screen()
            mark(item, refusal)
    if single:
        body = items[0].early or refusal.body()
    else:
        parts = [it.early for it in items if it.early is not None and not it.notification]
        body = b"[" + b",".join(parts) + b"]" if parts else b""
    return Response(refusal.status, body, headers=refusal.headers())


def mark(item: Item, refusal: Refusal) -> None:
    item.early = refusal.body(item.id_json)
    item.early_status = refusal.status


def mark_all(items: Sequence[Item], refusal: Refusal) -> None:
    for item in items:
        mark(item, refusal)


def _count_local(client: Client, items: Sequence[Item]) -> None:
    """Count the items validation already answered (the others are counted once run)."""
    for item in items:
        early = item.early
        if early is not None:
            client.count("rpc_error" if early.startswith(_ERROR_PREFIX) else "success")


def _apply(client: Client, candidates: Sequence[Item], grant: Grant) -> Refusal | None:
    """Mark the candidates past the ``granted`` first ones as over the rate; the refusal
    when none was granted (429 with Retry-After, over a 403 for other items)."""
    granted, wait = grant
    n = len(candidates)
    if granted < n:
        refusal = rate_limited(wait)
        for item in candidates[granted:]:
            mark(item, refusal)
        client.count("rate_limited", n - granted)
        if not granted:
            return refusal
        candidates = candidates[:granted]
    _count_local(client, candidates)
    return None


async def _apply_later(
    client: Client, candidates: Sequence[Item], grant: Awaitable[Grant]
) -> Refusal | None:
    return _apply(client, candidates, await grant)


def _chain_resolver(profile: ProfileConfig) -> Callable[[str], str | None]:
    def resolve(name: str) -> str | None:
        chain = profile.resolve_chain(name)
        return None if chain is None else chain.key

    return resolve
