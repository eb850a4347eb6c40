"""ClientAccess: gates per profile, reloads that keep buckets, subscription caps, views."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from lasso.auth.client import Client
from lasso.auth.limiter import LocalLimiter
from lasso.auth.service import ClientAccess
from lasso.config import RateLimit
from lasso.profiles import parse_profile

KEY = "lasso_service-test-key-000"
BODY = "chains:\n  ethereum:\n    chain_id: 1\n    providers: [{id: a, url: 'http://a'}]\n"


def profiles(front: str, slug: str = "p") -> dict[str, Any]:
    text = f"---\nname: P\n{front}---\n{BODY}"
    return {slug: parse_profile(text, f"{slug}.yml", {})}


def keyed(rps: int = 5, subs: int = 2) -> dict[str, Any]:
    return profiles(
        f"auth:\n  max_subscriptions: {subs}\n  keys:\n    - id: app\n      key: {KEY}\n"
        f"      rps_limit: {rps}\n"
    )


def client(access: ClientAccess, slug: str = "p") -> Client:
    gate = access.gate(slug)
    assert gate is not None
    found = gate.identify({"x-lasso-api-key": KEY}, "", "127.0.0.1", 0.0)
    assert isinstance(found, Client)
    return found


def test_only_gated_profiles_get_a_gate() -> None:
    """A profile without auth or rps_limit has no gate: its requests skip every check."""
    access = ClientAccess({**keyed(), **profiles("", slug="open")})
    assert access.gate("open") is None and access.gate("p") is not None


def test_reload_applies_new_limits_and_keeps_buckets() -> None:
    """Tokens spent before a reload stay spent; the new rate applies at once."""
    access = ClientAccess(keyed(rps=3))
    c = client(access)
    assert access.local.take(c.bucket, c.limit, 3, 0.0) == (3, 0.0)  # type: ignore[arg-type]
    access.reload(keyed(rps=100))
    c2 = client(access)
    assert c2.limit == RateLimit(rps=100, burst=100) and access.generation == 1
    granted, _ = access.local.take(c2.bucket, c2.limit, 1, 0.0)  # type: ignore[arg-type]
    assert granted == 0  # the same bucket, still empty


def test_removed_key_is_unknown_after_reload() -> None:
    """A key dropped from the profile no longer identifies anyone."""
    access = ClientAccess(keyed())
    access.reload(profiles("auth:\n  keys: [{id: other, key: another-key-of-16-chars}]\n"))
    gate = access.gate("p")
    assert gate is not None
    refused = gate.identify({"x-lasso-api-key": KEY}, "", "127.0.0.1", 0.0)
    assert not isinstance(refused, Client) and refused.reason == "invalid_key"


def test_subscription_cap_per_client() -> None:
    """max_subscriptions per client: the third is refused with -32005; releasing frees one."""
    access = ClientAccess(keyed(subs=2))
    c = client(access)
    assert access.acquire_subscription(c) is None
    assert access.acquire_subscription(c) is None
    refused = access.acquire_subscription(c)
    assert refused is not None and refused.code == -32005 and "max 2" in refused.message
    access.release_subscription(c)
    assert access.acquire_subscription(c) is None
    access.release_subscription(c, 5)
    assert access.subscriptions == {}


def test_view_lists_configured_keys_and_counts_without_secrets() -> None:
    """Every key appears (even idle); counts fold into requests/errors/limited/refused."""
    access = ClientAccess(keyed())
    c = client(access)
    for status in ("success", "success", "error", "rpc_error", "rate_limited", "forbidden"):
        c.count(status)
    access.gate("p").count_refused(access.gate("p").identify({}, "", "x", 0.0))  # type: ignore[union-attr,arg-type]
    view = access.view("p")
    rows = {r["key"]: r for r in view["clients"]}
    assert rows["app"]["requests"] == 6 and rows["app"]["errors"] == 2
    assert rows["app"]["limited"] == 1 and rows["app"]["refused"] == 1
    assert rows["app"]["rps_limit"] == 5 and rows["anonymous"]["refused"] == 1
    assert view["auth_required"] is True and view["limiter"]["mode"] == "local"
    assert KEY not in repr(view)


def test_worker_snapshots_are_merged() -> None:
    """Counts of other workers (their snapshot rows) add to this one's."""
    other = ClientAccess(keyed())
    client(other).count("success", 3)
    access = ClientAccess(keyed(), peer_snapshots=lambda: [{"clients": other.snapshot()}])
    client(access).count("success", 2)
    assert access.counts()[("p", "app", "success")] == 5


def test_prometheus_series() -> None:
    """lasso_client_requests_total{profile,key,status} and the subscription gauge."""
    access = ClientAccess(keyed())
    c = client(access)
    c.count("success")
    access.acquire_subscription(c)

    class Adapter:
        def collect(self) -> Any:
            return access.collect("node-1", 0.0)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Adapter())  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    assert (
        'lasso_client_requests_total{key="app",node_id="node-1",profile="p",status="success"} 1.0'
        in text
    )
    assert 'lasso_client_subscriptions{key="app",node_id="node-1",profile="p"} 1.0' in text


def test_local_share_scales_rate_and_burst() -> None:
    """A process owning a quarter of a limit admits a quarter of the burst (at least 1)."""
    limiter = LocalLimiter(share=0.25)
    assert limiter.take("key:a", RateLimit(rps=8, burst=8), 10, 0.0)[0] == 2
    assert limiter.take("key:b", RateLimit(rps=1, burst=1), 10, 0.0)[0] == 1
    assert limiter.take("ip:1.2.3.4", RateLimit(rps=8, burst=8), 10, 0.0)[0] == 2
    assert len(limiter.addresses) == 1 and len(limiter.named) == 2
    assert "share=0.250" in repr(limiter)
