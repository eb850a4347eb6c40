"""Tests for lasso.profiles_auth: rps_limit, burst_limit and auth in the front matter."""

from __future__ import annotations

import hashlib
import textwrap

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lasso.config import RateLimit
from lasso.profiles import ConfigError, parse_profile

BODY = """\
chains:
  ethereum:
    chain_id: 1
    aliases: [eth]
    providers:
      - id: a
        url: http://a.example
  base:
    chain_id: 8453
    providers:
      - id: b
        url: http://b.example
"""
SECRET = "s3cret-key-of-at-least-16"


def profile(front: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    text = "---\nname: P\n" + textwrap.dedent(front) + "---\n" + BODY
    return parse_profile(text, "p.yml", env or {})


def problems(front: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        profile(front, env)
    return [str(p) for p in exc.value.problems]


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def test_no_auth_and_no_limit_is_ungated() -> None:
    """A profile without auth or rps_limit has no client checks at all."""
    p = profile("")
    assert p.auth is None and p.limit is None and not p.gated


def test_profile_limit_burst_defaults_to_rps() -> None:
    """rps_limit alone gives a bucket whose burst equals the rate."""
    p = profile("rps_limit: 20\n")
    assert p.limit == RateLimit(rps=20, burst=20) and p.gated and p.auth is None


def test_burst_without_rps_is_an_error() -> None:
    """burst_limit needs rps_limit (file, line and key named)."""
    assert problems("burst_limit: 5\n") == ["p.yml:3: burst_limit: needs rps_limit"]


def test_keys_are_stored_as_digests_with_resolved_limits_and_scopes() -> None:
    """A key keeps its SHA-256 only, inherits the profile limit, resolves chain names."""
    p = profile(
        f"""\
        rps_limit: 10
        burst_limit: 30
        auth:
          keys:
            - id: frontend
              key: {SECRET}
              chains: [eth, 8453]
              methods: {{allow: ["eth_*"], deny: [eth_sendRawTransaction]}}
            - id: backend
              key_sha256: {"ab" * 32}
              rps_limit: 100
              max_subscriptions: 3
              allow_ips: [10.1.2.3/8]
        """
    )
    assert p.auth is not None and p.auth.required is True
    front, back = p.auth.keys
    assert front.key_sha256 == hashlib.sha256(SECRET.encode()).digest()
    assert front.limit == RateLimit(rps=10, burst=30)
    assert front.chains == frozenset({"ethereum", "base"})
    assert front.methods is not None and front.methods.deny == ("eth_sendRawTransaction",)
    assert back.key_sha256 == bytes.fromhex("ab" * 32)
    assert back.limit == RateLimit(rps=100, burst=100)
    assert back.max_subscriptions == 3 and back.allow_ips == ("10.0.0.0/8",)
    assert SECRET not in repr(p)


def test_secret_from_environment_is_never_echoed() -> None:
    """A too-short key is reported without its text."""
    found = problems(
        """\
        auth:
          keys:
            - id: k
              key: ${SHORT}
        """,
        {"SHORT": "tiny-secret"},
    )
    assert found == [
        "p.yml:6: auth.keys[0].key: too short (at least 16 characters; `lasso keys new` makes one)"
    ]
    assert "tiny-secret" not in found[0]


@pytest.mark.parametrize(
    ("front", "expected"),
    [
        (
            "auth:\n  keys:\n    - id: k\n",
            "p.yml:5: auth.keys[0]: needs 'key' or 'key_sha256'",
        ),
        (
            f"auth:\n  keys:\n    - id: k\n      key: {SECRET}\n      key_sha256: {'a' * 64}\n",
            "p.yml:7: auth.keys[0].key_sha256: conflicts with 'key'",
        ),
        (
            "auth:\n  keys:\n    - id: k\n      key_sha256: abc\n",
            "p.yml:6: auth.keys[0].key_sha256: expected 64 hex digits",
        ),
        (
            f"auth:\n  keys:\n    - id: k\n      key: {SECRET}\n      chains: [ethereun]\n",
            "p.yml:7: auth.keys[0].chains[0]: unknown chain 'ethereun' in this profile, "
            "did you mean 'ethereum'?",
        ),
        (
            f"auth:\n  keys:\n    - id: k\n      key: {SECRET}\n"
            "      methods: {allow: ['eth_(']}\n",
            "p.yml:7: auth.keys[0].methods.allow[0]: invalid method pattern 'eth_(': "
            "letters, digits, '_', '*' and '?' only",
        ),
        (
            f"auth:\n  keys:\n    - id: k\n      key: {SECRET}\n      rps_limt: 3\n",
            "p.yml:7: auth.keys[0].rps_limt: unknown key 'rps_limt', did you mean 'rps_limit'?",
        ),
        (
            "auth:\n  allow_ips: [10.0.0.300]\n",
            "p.yml:4: auth.allow_ips[0]: expected an IP address or CIDR block, got '10.0.0.300'",
        ),
        (
            "auth:\n  requird: true\n",
            "p.yml:4: auth.requird: unknown key 'requird', did you mean 'required'?",
        ),
        (
            "api_keys: [abc]\n",
            "p.yml:3: api_keys: unknown key 'api_keys' (replaced by 'auth.keys': a list of "
            "{id, key or key_sha256}; see docs/security.md)",
        ),
    ],
    ids=[
        "no-secret",
        "both-secrets",
        "bad-digest",
        "unknown-chain",
        "bad-pattern",
        "typo",
        "bad-ip",
        "auth-typo",
        "api-keys",
    ],
)
def test_key_errors_name_file_line_and_key(front: str, expected: str) -> None:
    """Each mistake is one line: file, line, key path, what is wrong."""
    assert expected in problems(front)


def test_duplicate_ids_and_secrets_are_errors() -> None:
    """Two keys may share neither an id nor a secret."""
    found = problems(
        f"""\
        auth:
          keys:
            - id: a
              key: {SECRET}
            - id: a
              key: {SECRET}x
            - id: c
              key: {SECRET}
        """
    )
    assert found == [
        "p.yml:7: auth.keys[1].id: duplicate key id 'a' (first at line 5)",
        "p.yml:9: auth.keys[2]: the same secret as key 'a': each key needs its own",
    ]


def test_required_defaults_follow_the_configured_credentials() -> None:
    """auth with keys requires them; auth with only address rules does not."""
    assert profile(f"auth:\n  keys: [{{id: a, key: {SECRET}}}]\n").auth.required is True  # type: ignore[union-attr]
    only_ips = profile("auth:\n  allow_ips: [127.0.0.1]\n  trusted_proxies: ['::1']\n").auth
    assert only_ips is not None and only_ips.required is False
    assert only_ips.allow_ips == ("127.0.0.1/32",) and only_ips.trusted_proxies == ("::1/128",)
    optional = profile(f"auth:\n  required: false\n  keys: [{{id: a, key: {SECRET}}}]\n").auth
    assert optional is not None and optional.required is False


def test_required_without_any_credential_is_an_error() -> None:
    """auth.required: true with no keys and no jwt would refuse every request: an error
    with file, line and key; with keys (even an empty list's sibling jwt) it is fine."""
    assert problems("auth:\n  allow_ips: [10.0.0.0/8]\n  required: true\n") == [
        "p.yml:5: auth.required: true with no keys and no jwt: every request would be "
        "refused (add keys or a jwt)"
    ]
    assert profile(f"auth:\n  required: true\n  keys: [{{id: a, key: {SECRET}}}]\n").auth


def test_jwt_with_secret_defaults_to_hs256() -> None:
    """A secret verifies HS256 unless told otherwise; it stays out of repr."""
    secret = "x" * 32
    jwt = profile(
        f"rps_limit: 5\nauth:\n  jwt:\n    secret: '{secret}'\n    issuer: https://i\n"
        "    audience: lasso\n    chains: [base]\n"
    ).auth.jwt  # type: ignore[union-attr]
    assert jwt is not None and jwt.algorithms == ("HS256",) and jwt.issuer == "https://i"
    assert jwt.limit == RateLimit(rps=5, burst=5) and jwt.chains == frozenset({"base"})
    assert secret not in repr(jwt)


def test_jwt_secret_shorter_than_the_hash_is_refused() -> None:
    """RFC 7518: an HMAC key at least as long as the hash."""
    found = problems(f"auth:\n  jwt:\n    secret: '{'x' * 40}'\n    algorithms: [HS512]\n")
    assert found == [
        "p.yml:5: auth.jwt.secret: too short for HS512: at least 64 bytes (RFC 7518 §3.2)"
    ]


def test_jwt_public_keys_pin_their_algorithm_family() -> None:
    """RSA keys verify RS*/PS*, EC keys their curve's ES*; HS with a key is refused."""
    rsa_pem = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    ec_pem = pem(ec.generate_private_key(ec.SECP256R1()))
    env = {"RSA": rsa_pem, "EC": ec_pem}
    rs = profile("auth:\n  jwt:\n    public_key: ${RSA}\n", env).auth.jwt  # type: ignore[union-attr]
    es = profile("auth:\n  jwt:\n    public_key: ${EC}\n", env).auth.jwt  # type: ignore[union-attr]
    assert rs is not None and rs.algorithms == ("RS256",)
    assert es is not None and es.algorithms == ("ES256",)
    found = problems("auth:\n  jwt:\n    public_key: ${RSA}\n    algorithms: [HS256]\n", env)
    assert found == [
        "p.yml:6: auth.jwt.algorithms: an RSA key verifies RS* and PS* algorithms only"
    ]
    found = problems("auth:\n  jwt:\n    public_key: ${EC}\n    algorithms: [ES384]\n", env)
    assert found == ["p.yml:6: auth.jwt.algorithms: a secp256r1 key verifies ES256 only"]


@pytest.mark.parametrize(
    ("front", "expected"),
    [
        ("auth:\n  jwt:\n    issuer: x\n", "p.yml:4: auth.jwt: needs 'secret' (HS*) or"),
        ("auth:\n  jwt:\n    public_key: nope\n", "p.yml:5: auth.jwt.public_key: not a PEM"),
        (
            f"auth:\n  jwt:\n    secret: '{'x' * 32}'\n    algorithms: [none]\n",
            "p.yml:6: auth.jwt.algorithms[0]: unsupported algorithm 'none'",
        ),
        (
            f"auth:\n  jwt:\n    secret: '{'x' * 32}'\n    leeway_s: 3600\n",
            "p.yml:6: auth.jwt.leeway_s: at most 300",
        ),
    ],
    ids=["no-key", "bad-pem", "alg-none", "leeway"],
)
def test_jwt_errors(front: str, expected: str) -> None:
    """JWT mistakes are reported like every other key."""
    assert any(p.startswith(expected) for p in problems(front))
