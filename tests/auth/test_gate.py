"""ProfileGate: credentials, address rules, scopes, rate and counting, without sockets."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import jwt
import pytest

from lasso.auth.client import Client, Refusal, Stats
from lasso.auth.gate import FAILURE_LIMIT, ProfileGate, credential_of, refusal_response
from lasso.auth.limiter import Grant, LocalLimiter
from lasso.config import RateLimit
from lasso.profiles import parse_profile

KEY_A = "lasso_frontend-key-0123456789"
KEY_B = "lasso_backend-key-9876543210"
JWT_SECRET = "j" * 32

PROFILE = f"""\
---
name: P
rps_limit: 2
burst_limit: 3
auth:
  required: true
  trusted_proxies: [10.0.0.0/8]
  keys:
    - id: frontend
      key: {KEY_A}
      chains: [ethereum]
      methods: {{allow: ["eth_*"], deny: ["eth_sendRawTransaction"]}}
    - id: backend
      key_sha256: {hashlib.sha256(KEY_B.encode()).hexdigest()}
      rps_limit: 100
      allow_ips: [192.0.2.0/24]
  jwt:
    secret: '{JWT_SECRET}'
---
chains:
  ethereum:
    chain_id: 1
    providers: [{{id: a, url: "http://a"}}]
  base:
    chain_id: 8453
    providers: [{{id: b, url: "http://b"}}]
"""


class Item:
    """A request item as lasso.server.rpc validates it."""

    def __init__(self, method: str, id_json: bytes = b"1", early: bytes | None = None) -> None:
        self.method = method
        self.id_json = id_json
        self.notification = False
        self.early = early
        self.early_status = 200


def gate(text: str = PROFILE, limiter: Any = None) -> tuple[ProfileGate, Stats]:
    stats: Stats = {}
    profile = parse_profile(text, "p.yml", {})
    g = ProfileGate(profile, limiter or LocalLimiter(), LocalLimiter(), stats, wall=time.time)
    return g, stats


def who(g: ProfileGate, headers: dict[str, str], query: str = "", peer: str = "192.0.2.1") -> Any:
    return g.identify(headers, query, peer, 0.0)


@pytest.mark.parametrize(
    ("headers", "query", "expected"),
    [
        ({"x-lasso-api-key": " k1 "}, "", "k1"),
        ({"authorization": "Bearer k2"}, "", "k2"),
        ({"authorization": "bearer   k3"}, "", "k3"),
        ({"authorization": "Basic Zm9vOmJhcg=="}, "", None),
        ({}, "include_meta=body&key=k4", "k4"),
        ({}, "monkey=1", None),
        ({}, "key=", None),
        ({"x-lasso-api-key": "k5", "authorization": "Bearer k6"}, "key=k7", "k5"),
        ({}, "", None),
    ],
)
def test_credential_sources(headers: dict[str, str], query: str, expected: str | None) -> None:
    """Header, then bearer, then ?key=; other schemes are no credential."""
    assert credential_of(headers, query) == expected


def test_each_way_of_presenting_a_key_finds_it() -> None:
    """Header, bearer and query all name the same client, shared per key."""
    g, _ = gate()
    clients = [
        who(g, {"x-lasso-api-key": KEY_A}),
        who(g, {"authorization": f"Bearer {KEY_A}"}),
        who(g, {}, f"key={KEY_A}"),
    ]
    assert all(isinstance(c, Client) and c.id == "frontend" for c in clients)
    assert clients[0] is clients[1] is clients[2]


def test_missing_and_wrong_keys_are_401_counted_as_anonymous() -> None:
    """No key and a wrong key are both refused; the refusal names no secret."""
    g, _ = gate()
    missing, wrong = who(g, {}), who(g, {"x-lasso-api-key": KEY_A + "x"})
    assert isinstance(missing, Refusal) and missing.reason == "missing_credentials"
    assert isinstance(wrong, Refusal) and wrong.reason == "invalid_key"
    assert KEY_A not in wrong.message and KEY_A.encode() not in wrong.body(b"7")
    assert ("WWW-Authenticate", 'Bearer realm="lasso"') in missing.headers()


def test_guessing_keys_is_throttled_per_address() -> None:
    """After the profile's burst of failures, an address gets 429 instead of 401."""
    g, _ = gate()
    answers = [who(g, {"x-lasso-api-key": f"guess-{i}"}) for i in range(6)]
    assert [a.status for a in answers] == [401, 401, 401, 429, 429, 429]
    assert who(g, {"x-lasso-api-key": "guess"}, peer="192.0.2.99").status == 401


def test_failure_limit_applies_without_a_profile_limit() -> None:
    """A profile without rps_limit still throttles failed authentications."""
    g, _ = gate(PROFILE.replace("rps_limit: 2\nburst_limit: 3\n", ""))
    answers = [who(g, {}).status for _ in range(FAILURE_LIMIT.burst + 1)]
    assert answers[-1] == 429 and answers[0] == 401


def test_key_allow_ips_and_trusted_proxies() -> None:
    """backend works from 192.0.2.0/24 only; behind a trusted proxy the forwarded address counts."""
    g, _ = gate()
    assert who(g, {"x-lasso-api-key": KEY_B}, peer="192.0.2.7").id == "backend"
    far = who(g, {"x-lasso-api-key": KEY_B}, peer="198.51.100.7")
    assert isinstance(far, Refusal) and (far.status, far.code) == (403, -32001)
    proxied = {"x-lasso-api-key": KEY_B, "x-forwarded-for": "192.0.2.8"}
    assert who(g, proxied, peer="10.1.1.1").id == "backend"
    spoofed = {"x-lasso-api-key": KEY_B, "x-forwarded-for": "192.0.2.8"}
    assert isinstance(who(g, spoofed, peer="198.51.100.7"), Refusal)


def test_profile_allow_ips_refuses_other_addresses() -> None:
    """auth.allow_ips applies to every request, keyed or not."""
    g, _ = gate(PROFILE.replace("required: true", "required: true\n  allow_ips: [10.9.0.0/16]"))
    refused = who(g, {"x-lasso-api-key": KEY_A}, peer="192.0.2.1")
    assert isinstance(refused, Refusal) and refused.reason == "address_not_allowed"


def test_anonymous_clients_are_limited_per_address() -> None:
    """Without auth.required, no key means an anonymous client bucketed by address."""
    g, _ = gate(PROFILE.replace("required: true", "required: false"))
    anon = who(g, {}, peer="2001:db8::1")
    assert isinstance(anon, Client) and anon.id == "anonymous"
    assert anon.bucket == "ip:2001:db8::/64" and anon.limit == RateLimit(rps=2, burst=3)


def test_jwt_bearer_is_verified_and_api_keys_are_not_taken_for_tokens() -> None:
    """A Bearer JWT is a jwt client; a bad one is 401 invalid_token."""
    g, _ = gate()
    token = jwt.encode({"sub": "s", "exp": int(time.time()) + 60}, JWT_SECRET, algorithm="HS256")
    client = who(g, {"authorization": f"Bearer {token}"})
    assert isinstance(client, Client) and client.kind == "jwt"
    bad = who(g, {"authorization": f"Bearer {token[:-2]}xx"})
    assert isinstance(bad, Refusal) and bad.reason == "invalid_token"


def test_screen_refuses_chains_out_of_scope() -> None:
    """frontend may use ethereum only: every item of a base request is 403/-32602."""
    g, _ = gate()
    client = who(g, {"x-lasso-api-key": KEY_A})
    items = [Item("eth_call", b'"a"'), Item("eth_call", b"2")]
    refusal = g.screen(client, "base", items, 0.0)
    assert isinstance(refusal, Refusal) and (refusal.status, refusal.code) == (403, -32602)
    assert all(it.early_status == 403 and b'"id":' in it.early for it in items)
    assert items[0].early.endswith(b'"id":"a"}')


def test_screen_refuses_methods_item_by_item() -> None:
    """Out-of-scope methods get 403/-32601 in place; the rest are admitted."""
    g, stats = gate()
    client = who(g, {"x-lasso-api-key": KEY_A})
    items = [Item("eth_blockNumber"), Item("debug_traceCall", b"2"), Item("eth_sendRawTransaction")]
    assert g.screen(client, "ethereum", items, 0.0) is None
    assert items[0].early is None
    assert items[1].early_status == 403 and b"-32601" in items[1].early
    assert stats[("p", "frontend", "forbidden")] == 2


def test_screen_grants_a_batch_partially_and_counts() -> None:
    """Burst 3: a batch of five runs three; two get -32005 with retry_after_ms."""
    g, stats = gate()
    client = who(g, {"x-lasso-api-key": KEY_A})
    items = [Item("eth_blockNumber", str(i).encode()) for i in range(5)]
    assert g.screen(client, "ethereum", items, 0.0) is None
    assert [it.early is None for it in items] == [True, True, True, False, False]
    assert b'"retry_after_ms":500' in items[3].early and items[3].early_status == 429
    assert stats[("p", "frontend", "rate_limited")] == 2
    again = [Item("eth_blockNumber")]
    refusal = g.screen(client, "ethereum", again, 0.0)
    assert isinstance(refusal, Refusal) and refusal.status == 429
    assert ("Retry-After", "1") in refusal.headers()


def test_locally_answered_items_are_counted_by_the_gate() -> None:
    """eth_chainId answered locally counts as success, a validation error as rpc_error."""
    g, stats = gate(PROFILE.replace("rps_limit: 2\nburst_limit: 3\n", ""))
    client = who(g, {"x-lasso-api-key": KEY_A})
    items = [
        Item("eth_chainId", early=b'{"jsonrpc":"2.0","id":1,"result":"0x1"}'),
        Item("", early=b'{"jsonrpc":"2.0","error":{"code":-32600}}'),
    ]
    assert g.screen(client, "ethereum", items, 0.0) is None
    assert stats[("p", "frontend", "success")] == 1 and stats[("p", "frontend", "rpc_error")] == 1


def test_screen_awaits_a_limiter_that_must_ask_elsewhere() -> None:
    """A limiter answering with an awaitable makes screen awaitable, same outcome."""

    class Slow:
        def take(self, bucket: str, limit: RateLimit, cost: int, now: float) -> Any:
            async def later() -> Grant:
                return 0, 2.0

            return later()

    g, _ = gate(limiter=Slow())
    client = who(g, {"x-lasso-api-key": KEY_A})
    verdict = g.screen(client, "ethereum", [Item("eth_call")], 0.0)
    assert not isinstance(verdict, Refusal) and verdict is not None
    refusal = asyncio.run(verdict)  # type: ignore[arg-type]
    assert isinstance(refusal, Refusal) and refusal.retry_after_s == 2.0


def test_refusal_response_for_single_and_batch() -> None:
    """The refusal's status and headers; each item's error with its id; notifications dropped."""
    g, _ = gate()
    refusal = who(g, {})
    single = refusal_response(refusal, [Item("eth_call", b'"x"')], True)
    assert single.status == 401 and single.body.endswith(b'"id":"x"}')
    note = Item("eth_call")
    note.notification = True
    batch = refusal_response(refusal, [Item("eth_call", b"1"), note, Item("eth_call", b"3")], False)
    assert batch.body.startswith(b"[") and batch.body.count(b"-32001") == 2
    assert refusal_response(refusal, [note], False).body == b""
    assert "keys=2" in repr(g) and "jwt" in repr(g)
