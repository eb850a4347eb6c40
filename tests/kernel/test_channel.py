"""Channels and breaker sharing: URL normalization, breaker keys, the registry, Channel."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest

from lasso.config import Capabilities, ChainConfig, Limits, ProviderConfig
from lasso.kernel import channel as channel_module
from lasso.kernel.breaker import BreakerConfig, BreakerState, CircuitBreaker
from lasso.kernel.channel import (
    DEFAULT_BLOCK_AGE_METHODS,
    BreakerRegistry,
    Channel,
    breaker_key,
    normalize_url,
)
from lasso.kernel.router import ChainRouter

from kernel_router_support import make, provider, trip

# -- normalize_url and breaker_key -------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("HTTPS://Host.Example:443/v1/KEY/", "https://host.example/v1/KEY"),
        ("http://host:80", "http://host"),
        ("http://host:8545/", "http://host:8545"),
        ("wss://host:443/ws?key=Abc", "wss://host/ws?key=Abc"),
        ("https://user:pw@host/x", "https://user:pw@host/x"),
    ],
)
def test_normalize_url(url: str, expected: str) -> None:
    """Scheme and host lower-cased, default port and trailing slash dropped."""
    assert normalize_url(url) == expected


def test_instance_key_scopes_by_auth_headers_and_isolation() -> None:
    """The key is the normalized URL, prefixed by a header digest and, if isolated, the profile."""
    url = "https://A.example:443/rpc/"
    plain = provider("a", url=url)
    assert breaker_key(plain, url, "p1") == breaker_key(plain, url, "p2") == normalize_url(url)
    keyed = provider("a", url=url, headers={"x-api-key": "secret", "authorization": "Bearer A"})
    same = provider("b", url=url, headers={"authorization": "Bearer A", "x-api-key": "secret"})
    other = provider("a", url=url, headers={"x-api-key": "other", "authorization": "Bearer A"})
    key = breaker_key(keyed, url, "p1")
    assert key.endswith("|" + normalize_url(url))
    assert "secret" not in key  # only a digest of the headers enters the key
    assert key == breaker_key(same, url, "p2")  # header order and provider id do not matter
    assert key != breaker_key(other, url, "p1")
    isolated = provider("a", url=url, sharing_mode="isolated")
    assert breaker_key(isolated, url, "p1") == "p1|" + normalize_url(url)
    assert breaker_key(isolated, url, "p1") != breaker_key(isolated, url, "p2")


# -- the registry ------------------------------------------------------------------------


def test_registry_creates_one_closed_breaker_per_key_and_transport() -> None:
    """get() creates a closed breaker on first use, then returns that same one."""
    reg = BreakerRegistry(BreakerConfig(), random.Random(0))
    first = reg.get("https://a.example", "http")
    assert isinstance(first, CircuitBreaker)
    assert first.state(0.0) is BreakerState.CLOSED
    assert reg.get("https://a.example", "http") is first
    assert reg.get("https://a.example", "ws") is not first
    assert [key for key, _ in reg] == [("https://a.example", "http"), ("https://a.example", "ws")]


def test_breakers_shared_across_profiles_by_url() -> None:
    """Two profiles naming the same upstream share one breaker; isolated ones do not."""
    reg = BreakerRegistry(BreakerConfig(), random.Random(0))
    r1 = make([provider("a", url="https://A.example:443/rpc/")], registry=reg, profile="p1")
    r2 = make([provider("x", url="https://a.example/rpc")], registry=reg, profile="p2")
    r3 = make(
        [provider("a", url="https://a.example/rpc", sharing_mode="isolated")],
        registry=reg,
        profile="p3",
    )
    assert r1.channels[0].breaker is r2.channels[0].breaker
    assert r3.channels[0].breaker is not r1.channels[0].breaker
    assert len(reg) == 2
    assert len(list(reg)) == 2
    assert repr(reg) == "<BreakerRegistry breakers=2>"
    # The evidence is per router, the breaker state is shared.
    trip(r1, r1.channels[0], 0.0)
    assert r2.candidates("eth_call", [], "priority", 0.0) == []
    assert r2.channels[0].evidence.total_failures == 0


def test_breakers_are_shared_per_url_and_auth_headers() -> None:
    """Same URL and headers share a breaker across profiles; other API keys get their own."""

    def chain(headers: dict[str, str]) -> ChainConfig:
        p = ProviderConfig(id="p", name="p", url="https://rpc.example/v1", headers=headers)
        return ChainConfig(key="c", chain_id=1, name="c", providers=(p,))

    reg = BreakerRegistry(BreakerConfig(), random.Random(1))
    a = ChainRouter(chain({"authorization": "Bearer A"}), reg, random.Random(1), profile="x")
    a2 = ChainRouter(chain({"authorization": "Bearer A"}), reg, random.Random(1), profile="y")
    b = ChainRouter(chain({"authorization": "Bearer B"}), reg, random.Random(1), profile="x")
    assert a.channels[0].breaker is a2.channels[0].breaker
    assert a.channels[0].breaker is not b.channels[0].breaker


# -- Channel -----------------------------------------------------------------------------


def test_channel_fields_from_provider() -> None:
    """A channel copies the provider's identity; HTTP starts connected, WS does not."""
    breaker = CircuitBreaker(BreakerConfig(), random.Random(0))
    p = provider("a", priority=4, archival=False)
    http = Channel(p, "http", breaker)
    ws = Channel(p, "ws", breaker)
    assert (http.key, http.provider_id, http.priority, http.archival) == ("a:http", "a", 4, False)
    assert http.connected and not ws.connected
    assert http.probe_status == "unknown"
    assert http.breaker is ws.breaker
    assert http.methods == {}
    assert repr(ws) == (
        f"<Channel a:ws connected=False breaker={breaker!r} ewma=0.0ms ok=0 fail=0 methods=0>"
    )


def test_channel_supports_unless_method_or_category_listed() -> None:
    """supports() is false for an unsupported method or category, true otherwise."""
    breaker = CircuitBreaker(BreakerConfig(), random.Random(0))
    caps = Capabilities(
        unsupported_methods=frozenset({"eth_getLogs"}), unsupported_categories=frozenset({"trace"})
    )
    ch = Channel(provider("a", capabilities=caps), "http", breaker)
    assert not ch.supports("eth_getLogs", "logs")
    assert not ch.supports("trace_block", "trace")
    assert ch.supports("eth_call", "state")
    assert ch.supports("made_up", None)
    plain = Channel(provider("b"), "http", breaker)
    assert plain.supports("eth_getLogs", "logs") and plain.supports("trace_block", "trace")


def test_block_age_methods_default() -> None:
    """max_block_age covers the default state-read methods unless block_age_methods is set."""
    breaker = CircuitBreaker(BreakerConfig(), random.Random(0))
    default = Channel(provider("a"), "http", breaker)
    assert default._block_age_methods == DEFAULT_BLOCK_AGE_METHODS
    listed = Capabilities(limits=Limits(max_block_age=64, block_age_methods=("eth_getBalance",)))
    ch = Channel(provider("b", capabilities=listed), "http", breaker)
    assert ch._block_age_methods == frozenset({"eth_getBalance"})
    assert ch._has_limits and not default._has_limits


# -- public surface ----------------------------------------------------------------------


def test_public_surface_and_standalone_import() -> None:
    """Every name in __all__ exists, and the module imports alone in a fresh interpreter."""
    assert all(hasattr(channel_module, name) for name in channel_module.__all__)
    assert len(set(channel_module.__all__)) == len(channel_module.__all__)
    subprocess.run([sys.executable, "-c", "import lasso.kernel.channel"], check=True)
