"""JWT verification: the forged, expired, early, misdirected and narrowed tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lasso.auth.client import Client, Refusal
from lasso.auth.tokens import MAX_TOKEN_BYTES, JwtVerifier, looks_like_jwt
from lasso.config import JwtConfig, MethodRules, RateLimit

SECRET = "k" * 32
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def resolve(name: str) -> str | None:
    return {"ethereum": "ethereum", "eth": "ethereum", "1": "ethereum", "base": "base"}.get(name)


def verifier(**kw: Any) -> JwtVerifier:
    cfg = {
        "secret": SECRET,
        "algorithms": ("HS256",),
        "issuer": "https://issuer",
        "audience": "lasso",
    }
    cfg.update(kw)
    return JwtVerifier("p", JwtConfig(**cfg), resolve, {})


def claims(**kw: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"sub": "alice", "iss": "https://issuer", "aud": "lasso", "iat": now, "exp": now + 600}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


def hs(payload: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=alg)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A compact JWS built by hand (for algorithms PyJWT refuses to produce)."""
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    sig = b"" if key is None else hmac.new(key, signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(sig)}"


def reason(result: Client | Refusal) -> str:
    assert isinstance(result, Refusal), result
    assert result.status == 401 and result.code == -32001
    return result.reason


def test_a_valid_token_is_a_client_with_a_subject_bucket() -> None:
    """iss, aud, exp all fine: a jwt client, its bucket per subject, never the subject."""
    client = verifier().verify(hs(claims()), time.time())
    assert isinstance(client, Client) and client.kind == "jwt" and client.id == "jwt"
    assert client.bucket.startswith("jwt:jwt:") and "alice" not in client.bucket
    other = verifier().verify(hs(claims(sub="bob")), time.time())
    assert isinstance(other, Client) and other.bucket != client.bucket


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (lambda: hs(claims(exp=int(time.time()) - 120)), "token_expired"),
        (lambda: hs(claims(nbf=int(time.time()) + 120)), "token_not_yet_valid"),
        (lambda: hs(claims(iat=int(time.time()) + 120)), "token_not_yet_valid"),
        (lambda: hs(claims(iss="https://evil")), "invalid_token"),
        (lambda: hs(claims(iss=None)), "invalid_token"),
        (lambda: hs(claims(aud="someone-else")), "invalid_token"),
        (lambda: hs(claims(aud=None)), "invalid_token"),
        (lambda: hs(claims(exp=None)), "invalid_token"),
        (lambda: hs(claims(), secret="w" * 32), "invalid_token"),
        (lambda: hs(claims())[:-4] + "AAAA", "invalid_token"),
        (lambda: raw_token({"alg": "none", "typ": "JWT"}, claims(), None), "invalid_token"),
        (lambda: hs(claims(), alg="HS512", secret="k" * 64), "invalid_token"),
        (lambda: "eyJ" + "a" * MAX_TOKEN_BYTES + ".b.c", "invalid_token"),
        (lambda: "eyJnot.a.token", "invalid_token"),
    ],
    ids=[
        "expired",
        "not-before",
        "issued-in-future",
        "wrong-issuer",
        "no-issuer",
        "wrong-audience",
        "no-audience",
        "no-exp",
        "bad-signature",
        "tampered",
        "alg-none",
        "alg-not-allowed",
        "oversized",
        "garbage",
    ],
)
def test_bad_tokens_are_refused(token: Any, why: str) -> None:
    """Every forged or misdirected token is a 401 with the reason, never a client."""
    assert reason(verifier().verify(token(), time.time())) == why


def test_small_clock_skew_is_forgiven() -> None:
    """exp 10 s ago and nbf 10 s ahead pass within the 30 s leeway."""
    now = int(time.time())
    assert isinstance(
        verifier().verify(hs(claims(exp=now - 10, nbf=now + 10)), time.time()), Client
    )


def test_hs_rs_confusion_cannot_pass() -> None:
    """A token HMAC-signed with the RSA public key (PEM) fails an RS256 verifier."""
    pem = public_pem(RSA_KEY)
    v = JwtVerifier("p", JwtConfig(public_key=pem, algorithms=("RS256",)), resolve, {})
    forged = raw_token({"alg": "HS256", "typ": "JWT"}, claims(aud=None, iss=None), pem.encode())
    assert reason(v.verify(forged, time.time())) == "invalid_token"
    good = jwt.encode(claims(aud=None, iss=None), RSA_KEY, algorithm="RS256")
    assert isinstance(v.verify(good, time.time()), Client)


def test_es256_tokens_verify_with_the_public_key() -> None:
    """ES256 with a P-256 key; a token signed by another EC key fails; an ``aud`` the
    entry does not expect fails too."""
    v = JwtVerifier(
        "p", JwtConfig(public_key=public_pem(EC_KEY), algorithms=("ES256",)), resolve, {}
    )
    plain = claims(aud=None, iss=None)
    assert isinstance(v.verify(jwt.encode(plain, EC_KEY, algorithm="ES256"), time.time()), Client)
    other = ec.generate_private_key(ec.SECP256R1())
    forged = jwt.encode(plain, other, algorithm="ES256")
    assert reason(v.verify(forged, time.time())) == "invalid_token"
    unexpected = jwt.encode(claims(), EC_KEY, algorithm="ES256")
    assert reason(v.verify(unexpected, time.time())) == "invalid_token"


def test_claim_narrows_chains_methods_and_limits() -> None:
    """The lasso claim intersects chains, adds method rules and lowers limits."""
    v = verifier(
        chains=frozenset({"ethereum", "base"}),
        limit=RateLimit(rps=50, burst=100),
        methods=MethodRules(deny=("debug_*",)),
        max_subscriptions=10,
    )
    narrow = {
        "chains": ["eth", "polygon"],
        "methods": {"allow": ["eth_*"]},
        "rps_limit": 500,
        "burst_limit": 20,
        "max_subscriptions": 2,
    }
    client = v.verify(hs(claims(lasso=narrow)), time.time())
    assert isinstance(client, Client)
    assert client.chains == frozenset({"ethereum"})
    assert client.limit == RateLimit(rps=50, burst=20)
    assert client.max_subscriptions == 2
    assert client.allows_method("eth_call") and not client.allows_method("net_version")
    assert not client.allows_method("debug_x")


def test_claim_can_set_a_limit_where_the_entry_has_none() -> None:
    """An entry without a limit takes the claim's (a token can only restrict itself)."""
    client = verifier().verify(hs(claims(lasso={"rps_limit": 3})), time.time())
    assert isinstance(client, Client) and client.limit == RateLimit(rps=3, burst=3)


@pytest.mark.parametrize(
    "narrow",
    [
        "everything",
        {"chains": "ethereum"},
        {"methods": {"allow": "eth_*"}},
        {"methods": {"allow": ["eth_("]}},
        {"methods": {"grant": ["*"]}},
        {"rps_limit": 0},
        {"rps_limit": "10"},
        {"burst_limit": 5},
    ],
)
def test_malformed_claims_make_the_token_invalid(narrow: Any) -> None:
    """A claim Lasso cannot read is not ignored: the token is refused."""
    assert reason(verifier().verify(hs(claims(lasso=narrow)), time.time())) == "invalid_token"


def test_verified_tokens_are_cached_until_they_expire() -> None:
    """The second use costs no verification; after exp + leeway the cache refuses it."""
    v = verifier(leeway_s=0)
    token = hs(claims(exp=int(time.time()) + 5))
    first = v.verify(token, time.time())
    assert v.verify(token, time.time()) is first and v.verified == 1
    assert reason(v.verify(token, time.time() + 10)) == "token_expired"
    assert "verified=1" in repr(v)


def test_cache_is_bounded() -> None:
    """Many distinct tokens never grow the cache past its size."""
    v = JwtVerifier("p", JwtConfig(secret=SECRET, algorithms=("HS256",)), resolve, {}, cache_size=8)
    for i in range(50):
        assert isinstance(
            v.verify(hs(claims(sub=f"u{i}", iss=None, aud=None)), time.time()), Client
        )
    assert len(v._cache) == 8


def test_looks_like_jwt() -> None:
    """Compact JWS shape only: an API key is never mistaken for a token."""
    assert looks_like_jwt(hs(claims()))
    assert not looks_like_jwt("lasso_abcdef.ghi")
    assert not looks_like_jwt("eyJ.only-one-dot")
