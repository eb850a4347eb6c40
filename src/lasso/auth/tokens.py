"""Bearer JWTs (``auth.jwt``), verified with PyJWT: :class:`JwtVerifier`.

A token is accepted when its signature verifies with the configured key under one of the
configured algorithms (pinned: ``alg: none`` and HS/RS confusion cannot pass), it carries
``exp`` and has not expired, its ``nbf`` and ``iat`` are not in the future (both with
``leeway_s``), and its ``iss`` and ``aud`` match when the profile names them.

The claim named by ``auth.jwt.claim`` (``lasso`` by default) may **narrow** what the
token allows, never widen it::

    {"sub": "team-7", "exp": 1767225600,
     "lasso": {"chains": ["ethereum"], "methods": {"allow": ["eth_*"], "deny": []},
               "rps_limit": 10, "burst_limit": 20, "max_subscriptions": 5}}

``chains`` is intersected with the entry's chains, ``methods`` must pass as well as the
entry's rules, the limits are the smaller of the claim's and the entry's. A malformed
claim makes the token invalid. Each subject (``sub``) gets its own rate-limit bucket;
tokens without ``sub`` share the entry's. Verified tokens are remembered (bounded) until
they expire, so a client reusing its token costs a dictionary lookup, not a signature.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import jwt

from lasso.auth.client import Client, Refusal, Stats, unauthorized
from lasso.config import JwtConfig, MethodRules, RateLimit
from lasso.kernel.access import MethodMatcher

__all__ = ["JwtVerifier", "looks_like_jwt", "MAX_TOKEN_BYTES"]

MAX_TOKEN_BYTES = 8192
CACHE_SIZE = 4096
_GLOB = re.compile(r"[A-Za-z0-9_*?]{1,128}")
_MAX_PATTERNS = 64


def looks_like_jwt(credential: str) -> bool:
    """A compact JWS: ``eyJ...`` (a base64url JSON header) and exactly two dots."""
    return credential.startswith("eyJ") and credential.count(".") == 2


class _BadClaim(Exception):
    pass


class JwtVerifier:
    """Verifies the Bearer JWTs of one profile and turns them into :class:`Client` values.

    Args:
        profile: the profile's slug.
        config: the ``auth.jwt`` entry (limits and scopes already resolved).
        resolve_chain: a chain key, alias or id to its chain key (``None`` if unknown).
        stats: the node's client counters (for the clients it makes).
    """

    def __init__(
        self,
        profile: str,
        config: JwtConfig,
        resolve_chain: Callable[[str], str | None],
        stats: Stats,
        *,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.profile = profile
        self.config = config
        self._resolve_chain = resolve_chain
        self._stats = stats
        self._cache_size = cache_size
        self._cache: OrderedDict[str, Client] = OrderedDict()
        if config.secret is not None:
            self._key: Any = config.secret
        else:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            assert config.public_key is not None
            self._key = load_pem_public_key(config.public_key.encode())
        self._methods = (MethodMatcher(config.methods),) if config.methods else ()
        require = ["exp"]
        if config.issuer is not None:
            require.append("iss")
        if config.audience is not None:
            require.append("aud")
        self._options: Any = {"require": require}
        self.verified = 0

    def verify(self, token: str, now: float) -> Client | Refusal:
        """The client of ``token`` at wall-clock time ``now``, or why it is refused."""
        cached = self._cache.get(token)
        if cached is not None:
            assert cached.expires_at is not None
            if now < cached.expires_at + self.config.leeway_s:
                return cached
            del self._cache[token]
            return unauthorized("token_expired")
        if len(token) > MAX_TOKEN_BYTES:
            return unauthorized("invalid_token")
        cfg = self.config
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=list(cfg.algorithms),
                issuer=cfg.issuer,
                audience=cfg.audience,
                leeway=cfg.leeway_s,
                options=self._options,
            )
            client = self._client(claims)
        except jwt.ExpiredSignatureError:
            return unauthorized("token_expired")
        except jwt.ImmatureSignatureError:
            return unauthorized("token_not_yet_valid")
        except (jwt.InvalidTokenError, _BadClaim):
            return unauthorized("invalid_token")
        self.verified += 1
        cache = self._cache
        if len(cache) >= self._cache_size:
            cache.popitem(last=False)
        cache[token] = client
        return client

    def _client(self, claims: dict[str, Any]) -> Client:
        cfg = self.config
        exp = claims["exp"]
        if not isinstance(exp, int | float) or isinstance(exp, bool):
            raise _BadClaim
        sub = claims.get("sub")
        if sub is not None and not isinstance(sub, str):
            raise _BadClaim
        bucket = f"jwt:{cfg.id}"
        if sub:
            bucket += ":" + hashlib.sha256(sub.encode()).hexdigest()[:24]
        narrow = claims.get(cfg.claim)
        chains, methods = cfg.chains, self._methods
        limit, max_subs = cfg.limit, cfg.max_subscriptions
        if narrow is not None:
            if not isinstance(narrow, dict):
                raise _BadClaim
            chains = self._chains(narrow.get("chains"), chains)
            if narrow.get("methods") is not None:
                methods = (*methods, MethodMatcher(_rules(narrow["methods"])))
            limit = _narrow_limit(limit, narrow.get("rps_limit"), narrow.get("burst_limit"))
            max_subs = _smaller(max_subs, _positive(narrow.get("max_subscriptions")))
        return Client(
            self.profile,
            cfg.id,
            "jwt",
            bucket,
            self._stats,
            limit=limit,
            chains=chains,
            methods=methods,
            max_subscriptions=max_subs,
            expires_at=float(exp),
        )

    def _chains(self, value: Any, configured: frozenset[str] | None) -> frozenset[str] | None:
        if value is None:
            return configured
        if not isinstance(value, list) or not all(isinstance(c, str | int) for c in value):
            raise _BadClaim
        named = {self._resolve_chain(str(c)) for c in value[:256]} - {None}
        keys = frozenset(c for c in named if c is not None)
        return keys if configured is None else keys & configured

    def __repr__(self) -> str:
        return (
            f"<JwtVerifier {self.profile}/{self.config.id} {'/'.join(self.config.algorithms)}"
            f" cached={len(self._cache)} verified={self.verified}>"
        )


def _patterns(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > _MAX_PATTERNS:
        raise _BadClaim
    if not all(isinstance(p, str) and _GLOB.fullmatch(p) for p in value):
        raise _BadClaim
    return tuple(value)


def _rules(value: Any) -> MethodRules:
    if not isinstance(value, dict) or set(value) - {"allow", "deny"}:
        raise _BadClaim
    return MethodRules(allow=_patterns(value.get("allow")), deny=_patterns(value.get("deny")))


def _positive(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise _BadClaim
    return value


def _smaller(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _narrow_limit(limit: RateLimit | None, rps: Any, burst: Any) -> RateLimit | None:
    claim_rps, claim_burst = _positive(rps), _positive(burst)
    if claim_rps is None and claim_burst is None:
        return limit
    if limit is None:
        if claim_rps is None:
            raise _BadClaim  # a burst without a rate limits nothing
        return RateLimit(rps=claim_rps, burst=claim_burst or claim_rps)
    return RateLimit(
        rps=_smaller(limit.rps, claim_rps) or limit.rps,
        burst=_smaller(limit.burst, claim_burst) or limit.burst,
    )
