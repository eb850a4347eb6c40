"""The client side of a profile's front matter: ``rps_limit``, ``burst_limit`` and ``auth``.

Read by :func:`parse_clients` with the same checks as the rest of the profile (file, line
and key path for every problem; "did you mean" for unknown keys and chains). The result
is resolved, so the request path never recomputes it: each key and the JWT entry carry
their effective :class:`~lasso.config.RateLimit` (their own, else the profile's) and
subscription cap. The rules (docs/security.md):

- ``rps_limit`` (≥ 1) is per client: per key, per JWT subject, else per client address.
  ``burst_limit`` defaults to ``rps_limit`` and needs it.
- ``auth.required`` defaults to true as soon as the profile lists keys or a JWT entry.
- A key gives exactly one of ``key`` (the secret, at least 16 characters; only its
  SHA-256 is kept) and ``key_sha256`` (64 hex digits). Two entries with the same secret
  are an error, so a request always names exactly one key.
- ``chains`` scopes name chain keys, aliases or chain ids of this profile.
- ``methods`` is ``{allow: [...], deny: [...]}`` of glob patterns over method names.
- ``auth.jwt`` has exactly one of ``secret`` (HS256/384/512, at least as many bytes as the
  hash) and ``public_key`` (PEM; RS*/PS* for RSA keys of 2048 bits or more, ES* for EC
  keys on the algorithm's curve). ``algorithms`` defaults to the one family the key
  allows, so an HS/RS confusion cannot be configured.
- ``allow_ips`` and ``trusted_proxies`` are IP addresses or CIDR blocks.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from lasso.config import ApiKeyConfig, AuthConfig, ChainConfig, JwtConfig, MethodRules, RateLimit
from lasso.profiles_schema import (
    Reporter,
    Section,
    YScalar,
    as_bool,
    as_ident,
    as_int,
    as_str,
    suggest,
)

__all__ = ["AUTH_KEYS", "JWT_ALGORITHMS", "MIN_KEY_LENGTH", "parse_clients"]

AUTH_KEYS = ("required", "keys", "jwt", "allow_ips", "trusted_proxies", "max_subscriptions")
_KEY_KEYS = (
    "id key key_sha256 rps_limit burst_limit chains methods allow_ips max_subscriptions"
).split()
_JWT_KEYS = (
    "id secret public_key algorithms issuer audience leeway_s claim rps_limit burst_limit "
    "chains methods max_subscriptions"
).split()
JWT_ALGORITHMS = "HS256 HS384 HS512 RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512".split()
MIN_KEY_LENGTH = 16
MAX_LEEWAY_S = 300
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_GLOB = re.compile(r"[A-Za-z0-9_*?]+")
_HASH_BYTES = {"256": 32, "384": 48, "512": 64}
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}


def parse_clients(
    rep: Reporter, fm: Section, chains: Mapping[str, ChainConfig] | None
) -> dict[str, Any]:
    """Read ``rps_limit``, ``burst_limit`` and ``auth`` from the front matter.

    Args:
        rep: where problems go.
        fm: the front-matter section.
        chains: the profile's chains, or ``None`` when the body could not be read (chain
            scopes are then not checked).

    Returns:
        The :class:`~lasso.config.ProfileConfig` fields that were set.
    """
    rps = fm.get("rps_limit", as_int, 1)
    burst = fm.get("burst_limit", as_int, 1)
    if burst is not None and fm.node("rps_limit") is None:
        rep.error(fm.key_line("burst_limit"), "burst_limit", "needs rps_limit")
    default = None if rps is None else RateLimit(rps=rps, burst=burst or rps)
    out: dict[str, Any] = {"rps_limit": rps, "burst_limit": burst}
    if "auth" in fm.entries:
        out["auth"] = _auth(rep, fm.sub("auth", AUTH_KEYS), default, chains)
    return out


def _auth(
    rep: Reporter,
    sec: Section,
    default: RateLimit | None,
    chains: Mapping[str, ChainConfig] | None,
) -> AuthConfig:
    max_subs = sec.get("max_subscriptions", as_int, 1)
    keys: list[ApiKeyConfig] = []
    first_id: dict[str, int] = {}
    first_digest: dict[bytes, str] = {}
    for item, path in sec.each("keys"):
        key = _key(rep, Section(rep, item, path, _KEY_KEYS, line=item.line), default, chains)
        if key is None:
            continue
        line = item.line
        if key.id in first_id:
            msg = f"duplicate key id {key.id!r} (first at line {first_id[key.id]})"
            rep.error(line, f"{path}.id", msg)
            continue
        if key.key_sha256 in first_digest:
            other = first_digest[key.key_sha256]
            rep.error(line, path, f"the same secret as key {other!r}: each key needs its own")
            continue
        first_id[key.id] = line
        first_digest[key.key_sha256] = key.id
        keys.append(
            key
            if key.max_subscriptions is not None or max_subs is None
            else _with_subs(key, max_subs)
        )
    jwt = None
    if sec.node("jwt") is not None:
        jwt = _jwt(rep, sec.sub("jwt", _JWT_KEYS), default, chains, max_subs)
        if jwt is not None and jwt.id in first_id:
            rep.error(sec.key_line("jwt"), "auth.jwt.id", f"{jwt.id!r} is also a key id")
    required = sec.get("required", as_bool)
    if required and sec.node("keys") is None and sec.node("jwt") is None:
        rep.error(
            sec.key_line("required"),
            "auth.required",
            "true with no keys and no jwt: every request would be refused (add keys or a jwt)",
        )
    return AuthConfig(
        required=required if required is not None else bool(keys) or jwt is not None,
        keys=tuple(keys),
        jwt=jwt,
        allow_ips=_networks(rep, sec, "allow_ips"),
        trusted_proxies=_networks(rep, sec, "trusted_proxies"),
        max_subscriptions=max_subs,
    )


def _with_subs(key: ApiKeyConfig, max_subs: int) -> ApiKeyConfig:
    return ApiKeyConfig(
        id=key.id,
        key_sha256=key.key_sha256,
        limit=key.limit,
        chains=key.chains,
        methods=key.methods,
        allow_ips=key.allow_ips,
        max_subscriptions=max_subs,
    )


def _key(
    rep: Reporter,
    sec: Section,
    default: RateLimit | None,
    chains: Mapping[str, ChainConfig] | None,
) -> ApiKeyConfig | None:
    kid = sec.need("id", as_ident, "key id")
    digest = _secret_digest(rep, sec)
    limit = _limit(rep, sec, default)
    scope = _chains(rep, sec, chains)
    methods = _methods(rep, sec)
    allow_ips = _networks(rep, sec, "allow_ips")
    max_subs = sec.get("max_subscriptions", as_int, 1)
    if kid is None or digest is None:
        return None
    return ApiKeyConfig(
        id=kid,
        key_sha256=digest,
        limit=limit,
        chains=scope,
        methods=methods,
        allow_ips=allow_ips,
        max_subscriptions=max_subs,
    )


def _secret_digest(rep: Reporter, sec: Section) -> bytes | None:
    """The SHA-256 of the key: from ``key`` (hashed here) or ``key_sha256``; never both."""
    has_key, has_hash = sec.node("key") is not None, sec.node("key_sha256") is not None
    if has_key and has_hash:
        rep.error(sec.key_line("key_sha256"), f"{sec.path}.key_sha256", "conflicts with 'key'")
        return None
    if not has_key and not has_hash:
        if sec.ok:
            rep.error(sec.line, sec.path, "needs 'key' or 'key_sha256'")
        return None
    if has_key:
        secret = sec.get("key", as_str)
        if secret is None:
            return None
        if len(secret) < MIN_KEY_LENGTH or secret != secret.strip():
            # never echo the secret: say only what is wrong with it
            what = "has leading or trailing spaces" if secret != secret.strip() else "too short"
            rep.error(
                sec.key_line("key"),
                f"{sec.path}.key",
                f"{what} (at least {MIN_KEY_LENGTH} characters; `lasso keys new` makes one)",
            )
            return None
        return hashlib.sha256(secret.encode()).digest()
    text = sec.get("key_sha256", as_str)
    if text is None:
        return None
    if not _HEX64.fullmatch(text):
        rep.error(sec.key_line("key_sha256"), f"{sec.path}.key_sha256", "expected 64 hex digits")
        return None
    return bytes.fromhex(text)


def _limit(rep: Reporter, sec: Section, default: RateLimit | None) -> RateLimit | None:
    """The entry's own limit over the profile's: ``rps_limit`` and ``burst_limit``."""
    rps = sec.get("rps_limit", as_int, 1)
    burst = sec.get("burst_limit", as_int, 1)
    if rps is None and burst is None:
        return default
    if rps is None:
        if default is None:
            rep.error(sec.key_line("burst_limit"), f"{sec.path}.burst_limit", "needs rps_limit")
            return None
        return RateLimit(rps=default.rps, burst=burst or default.burst)
    return RateLimit(rps=rps, burst=burst or rps)


def _chains(
    rep: Reporter, sec: Section, chains: Mapping[str, ChainConfig] | None
) -> frozenset[str] | None:
    """Chain keys named by key, alias or chain id; ``None`` when absent (every chain)."""
    if sec.node("chains") is None:
        return None
    names: dict[str, str] = {}
    for key, chain in (chains or {}).items():
        names[key] = key
        names[str(chain.chain_id)] = key
        for alias in chain.aliases:
            names.setdefault(alias, key)
    out: set[str] = set()
    for item, path in sec.each("chains"):
        if isinstance(item, YScalar) and type(item.value) is int and item.text is None:
            text: str | None = str(item.value)  # a chain id such as 1
        else:
            text = as_str(rep, item, path)
        if text is None or chains is None:
            continue
        if text not in names:
            hint = suggest(text, list(chains))
            rep.error(item.line, path, f"unknown chain {text!r} in this profile{hint}")
            continue
        out.add(names[text])
    return frozenset(out)


def _methods(rep: Reporter, sec: Section) -> MethodRules | None:
    if sec.node("methods") is None:
        return None
    rules = sec.sub("methods", ("allow", "deny"))
    lists: dict[str, tuple[str, ...]] = {}
    for name in ("allow", "deny"):
        patterns: list[str] = []
        for item, path in rules.each(name):
            text = as_str(rep, item, path)
            if text is not None and not _GLOB.fullmatch(text):
                msg = f"invalid method pattern {text!r}: letters, digits, '_', '*' and '?' only"
                rep.error(item.line, path, msg)
            elif text is not None:
                patterns.append(text)
        lists[name] = tuple(patterns)
    return MethodRules(allow=lists["allow"], deny=lists["deny"])


def _networks(rep: Reporter, sec: Section, key: str) -> tuple[str, ...]:
    """IP addresses or CIDR blocks, normalized (``10.1.2.3/8`` becomes ``10.0.0.0/8``)."""
    out: list[str] = []
    for item, path in sec.each(key):
        text = as_str(rep, item, path)
        if text is None:
            continue
        try:
            out.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError:
            rep.error(item.line, path, f"expected an IP address or CIDR block, got {text!r}")
    return tuple(out)


def _jwt(
    rep: Reporter,
    sec: Section,
    default: RateLimit | None,
    chains: Mapping[str, ChainConfig] | None,
    max_subs: int | None,
) -> JwtConfig | None:
    jid = sec.get("id", as_ident, "JWT id")
    secret = sec.get("secret", as_str)
    pem = sec.get("public_key", as_str)
    algorithms: list[str] = []
    for item, path in sec.each("algorithms"):
        alg = as_str(rep, item, path)
        if alg is not None and alg not in JWT_ALGORITHMS:
            hint = suggest(alg, JWT_ALGORITHMS) or f"; expected one of {', '.join(JWT_ALGORITHMS)}"
            rep.error(item.line, path, f"unsupported algorithm {alg!r}{hint}")
        elif alg is not None:
            algorithms.append(alg)
    leeway = sec.get("leeway_s", as_int, 0)
    if leeway is not None and leeway > MAX_LEEWAY_S:
        rep.error(sec.key_line("leeway_s"), f"{sec.path}.leeway_s", f"at most {MAX_LEEWAY_S}")
    values: dict[str, Any] = {
        "id": jid,
        "issuer": sec.get("issuer", as_str),
        "audience": sec.get("audience", as_str),
        "leeway_s": leeway,
        "claim": sec.get("claim", as_str),
        "limit": _limit(rep, sec, default),
        "chains": _chains(rep, sec, chains),
        "methods": _methods(rep, sec),
        "max_subscriptions": sec.get("max_subscriptions", as_int, 1) or max_subs,
    }
    has_secret, has_pem = sec.node("secret") is not None, sec.node("public_key") is not None
    if has_secret and has_pem:
        rep.error(sec.key_line("public_key"), f"{sec.path}.public_key", "conflicts with 'secret'")
        return None
    if not has_secret and not has_pem:
        if sec.ok:
            rep.error(sec.line, sec.path, "needs 'secret' (HS*) or 'public_key' (RS*, PS*, ES*)")
        return None
    if secret is None and pem is None:
        return None  # already reported
    if secret is not None:
        algs = _hmac_algorithms(rep, sec, secret, algorithms)
    else:
        assert pem is not None
        algs = _key_algorithms(rep, sec, pem, algorithms)
    if algs is None:
        return None
    given = {k: v for k, v in values.items() if v is not None}
    return JwtConfig(secret=secret, public_key=pem, algorithms=algs, **given)


def _hmac_algorithms(
    rep: Reporter, sec: Section, secret: str, algorithms: list[str]
) -> tuple[str, ...] | None:
    algs = tuple(algorithms) or ("HS256",)
    line, path = sec.key_line("algorithms"), f"{sec.path}.algorithms"
    if any(not a.startswith("HS") for a in algs):
        rep.error(line, path, "a 'secret' verifies HS256, HS384 or HS512 only")
        return None
    need = max(_HASH_BYTES[a[2:]] for a in algs)
    if len(secret.encode()) < need:
        rep.error(
            sec.key_line("secret"),
            f"{sec.path}.secret",
            f"too short for {'/'.join(algs)}: at least {need} bytes (RFC 7518 §3.2)",
        )
        return None
    return algs


def _key_algorithms(
    rep: Reporter, sec: Section, pem: str, algorithms: list[str]
) -> tuple[str, ...] | None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    line, path = sec.key_line("public_key"), f"{sec.path}.public_key"
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        rep.error(line, path, "not a PEM public key (-----BEGIN PUBLIC KEY-----)")
        return None
    alg_line, alg_path = sec.key_line("algorithms"), f"{sec.path}.algorithms"
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            rep.error(line, path, f"RSA key of {key.key_size} bits: at least 2048")
            return None
        algs = tuple(algorithms) or ("RS256",)
        if any(a[:2] not in ("RS", "PS") for a in algs):
            rep.error(alg_line, alg_path, "an RSA key verifies RS* and PS* algorithms only")
            return None
        return algs
    if isinstance(key, ec.EllipticCurvePublicKey):
        curve = key.curve.name
        fits = [a for a, c in _EC_CURVES.items() if c == curve]
        if not fits:
            rep.error(line, path, f"unsupported curve {curve} (P-256, P-384 or P-521)")
            return None
        algs = tuple(algorithms) or (fits[0],)
        if any(a not in fits for a in algs):
            rep.error(alg_line, alg_path, f"a {curve} key verifies {fits[0]} only")
            return None
        return algs
    rep.error(line, path, "only RSA and EC public keys are supported")
    return None
