"""Route resolution (lasso.server.route): one rule for HTTP and WebSocket requests."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lasso.kernel.breaker import BreakerConfig
from lasso.kernel.router import BreakerRegistry
from lasso.net.http_server import HttpRequest
from lasso.profiles import parse_profile
from lasso.server import route as route_module
from lasso.server.route import (
    MAX_CACHED,
    Rejection,
    ResolvedRoute,
    RouteResolver,
    RpcRoute,
    parse_rpc_path,
)
from lasso.server.runtime import PoolRegistry, Runtime

PUBLIC = """---
name: Public
slug: public
---
chains:
  ethereum:
    chain_id: 1
    aliases: [eth]
    routing:
      default_strategy: priority
    providers:
      - id: alpha
        url: http://127.0.0.1:1
      - id: bravo
        url: http://127.0.0.1:2
"""
TEAM = PUBLIC.replace("slug: public", "slug: team").replace("ethereum:", "other:")


def _runtime(*texts: str) -> Runtime:
    rng = random.Random(3)
    profiles = {}
    for text in texts or (PUBLIC, TEAM):
        prof = parse_profile(text, f"{'team' if 'slug: team' in text else 'public'}.yml", {})
        profiles[prof.slug] = prof
    return Runtime(
        profiles, pools=PoolRegistry(), breakers=BreakerRegistry(BreakerConfig(), rng), rng=rng
    )


def _req(path: str, query: str = "", headers: dict[str, str] | None = None) -> HttpRequest:
    return HttpRequest("POST", path, query, headers or {}, b"", "127.0.0.1:5555", True)


@pytest.fixture
def resolver() -> RouteResolver:
    runtime = _runtime()
    return RouteResolver(lambda: runtime)


def _ok(result: ResolvedRoute | Rejection) -> ResolvedRoute:
    assert isinstance(result, ResolvedRoute), result
    return result


def _no(result: ResolvedRoute | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


def test_exports() -> None:
    """__all__ is the resolver, its two answers, the path parser and the prefixes."""
    assert sorted(route_module.__all__) == sorted(
        [
            "HTTP_PREFIX",
            "WS_PREFIX",
            "Rejection",
            "ResolvedRoute",
            "RouteResolver",
            "RpcRoute",
            "parse_rpc_path",
        ]
    )


@pytest.mark.parametrize(
    ("path", "parts"),
    [
        ("/rpc/ethereum", (None, None, "ethereum", None)),
        ("/rpc/fastest/1", (None, "fastest", "1", None)),
        ("/rpc/round-robin/eth", (None, "load-balanced", "eth", None)),
        ("/rpc/provider/bravo/ethereum", (None, None, "ethereum", "bravo")),
        ("/rpc/ethereum/bravo", (None, None, "ethereum", "bravo")),
        ("/rpc/profile/team/other", ("team", None, "other", None)),
        ("/rpc/profile/team/priority/other", ("team", "priority", "other", None)),
        ("/rpc/profile/team/provider/alpha/other", ("team", None, "other", "alpha")),
        ("/rpc//ethereum/", (None, None, "ethereum", None)),
    ],
)
def test_parse_rpc_path(path: str, parts: tuple[Any, ...]) -> None:
    """Each route form of CONTRACT §3 splits into profile, strategy, chain and provider."""
    profile, strategy, chain, provider = parts
    assert parse_rpc_path(path) == RpcRoute(
        profile=profile, strategy=strategy, chain=chain, provider_id=provider
    )


@pytest.mark.parametrize("path", ["/rpc/", "/rpc/a/b/c/d", "/rpc/x/provider/y", "/api/rpc/1"])
def test_parse_rpc_path_rejects_other_shapes(path: str) -> None:
    """Paths of no route form (or under another prefix) parse to None."""
    assert parse_rpc_path(path) is None


@given(st.text(alphabet="/abcdefprovider-0123456789", max_size=40))
def test_parse_rpc_path_never_raises(tail: str) -> None:
    """Any path yields a route or None, and a route always names a chain."""
    route = parse_rpc_path("/rpc/" + tail)
    assert route is None or route.chain


def test_defaults_come_from_the_profile_and_chain(resolver: RouteResolver) -> None:
    """The default profile, the chain's default strategy, no override, no meta."""
    got = _ok(resolver.resolve(_req("/rpc/eth")))
    assert (got.rt.profile, got.rt.key, got.strategy, got.provider_id, got.meta) == (
        "public",
        "ethereum",
        "priority",
        None,
        "",
    )


@pytest.mark.parametrize("websocket", [False, True])
@pytest.mark.parametrize(
    ("path", "query", "headers", "provider"),
    [
        ("/provider/alpha/ethereum", "", {}, "alpha"),
        ("/ethereum/alpha", "provider=bravo", {"x-lasso-provider": "bravo"}, "alpha"),
        ("/ethereum", "provider_override=alpha&provider_id=bravo", {}, "alpha"),
        ("/ethereum", "provider_id=bravo&provider=alpha", {}, "bravo"),
        ("/ethereum", "provider=alpha", {"x-lasso-provider": "bravo"}, "alpha"),
        ("/ethereum", "", {"x-lasso-provider": "bravo"}, "bravo"),
        ("/ethereum", "provider=", {}, None),
    ],
)
def test_provider_override_precedence_is_the_same_on_both_transports(
    resolver: RouteResolver,
    websocket: bool,
    path: str,
    query: str,
    headers: dict[str, str],
    provider: str | None,
) -> None:
    """Path, then provider_override, provider_id, provider, then X-Lasso-Provider."""
    prefix = "/ws/rpc" if websocket else "/rpc"
    got = _ok(resolver.resolve(_req(prefix + path, query, headers), websocket=websocket))
    assert got.provider_id == provider


@pytest.mark.parametrize("websocket", [False, True])
@pytest.mark.parametrize(
    ("query", "headers"),
    [("provider=zulu", {}), ("", {"x-lasso-provider": "zulu"})],
)
def test_unknown_override_is_rejected_on_both_transports(
    resolver: RouteResolver, websocket: bool, query: str, headers: dict[str, str]
) -> None:
    """An override the chain does not configure: 400, -32602, the available providers."""
    prefix = "/ws/rpc" if websocket else "/rpc"
    why = _no(resolver.resolve(_req(prefix + "/ethereum", query, headers), websocket=websocket))
    assert (why.status, why.code) == (400, -32602)
    assert why.message == "Provider 'zulu' not found for chain 'ethereum'"
    assert why.data == {"available_providers": ["alpha", "bravo"]}


@pytest.mark.parametrize(
    ("path", "query", "strategy"),
    [
        ("/rpc/ethereum", "strategy=fastest", "fastest"),
        ("/rpc/ethereum", "strategy=round-robin", "load-balanced"),
        ("/rpc/ethereum", "strategy=", "priority"),
        ("/rpc/latency-weighted/ethereum", "strategy=fastest", "latency-weighted"),
    ],
)
def test_strategy_from_path_then_query_then_chain(
    resolver: RouteResolver, path: str, query: str, strategy: str
) -> None:
    """The path's strategy wins over the query's, which wins over the chain's."""
    assert _ok(resolver.resolve(_req(path, query))).strategy == strategy


@pytest.mark.parametrize("websocket", [False, True])
@pytest.mark.parametrize(
    ("path", "query", "name", "valid"),
    [
        ("/ethereum", "strategy=bogus", "strategy", route_module.STRATEGY_CHOICES),
        ("/fastest/ethereum", "strategy=Fastest", "strategy", route_module.STRATEGY_CHOICES),
        ("/ethereum", "strategy=round_robin", "strategy", route_module.STRATEGY_CHOICES),
        ("/ethereum", "include_meta=yes", "include_meta", ("headers", "body", "none")),
    ],
)
def test_a_query_value_outside_its_choices_is_400_listing_them(
    resolver: RouteResolver, websocket: bool, path: str, query: str, name: str, valid: Any
) -> None:
    """?strategy= and ?include_meta= with a value they do not take: 400, -32602, the
    parameter and its valid values in data, on both transports (never silently ignored)."""
    prefix = "/ws/rpc" if websocket else "/rpc"
    why = _no(resolver.resolve(_req(prefix + path, query), websocket=websocket))
    assert (why.status, why.code) == (400, -32602)
    assert why.message.startswith(f"Invalid {name} ") and "use one of " in why.message
    assert why.data == {"parameter": name, "valid_values": list(valid)}


@pytest.mark.parametrize(
    ("query", "headers", "meta"),
    [
        ("include_meta=headers", {}, "headers"),
        ("include_meta=body", {"x-lasso-include-meta": "headers"}, "body"),
        ("", {"x-lasso-include-meta": "body"}, "body"),
        ("include_meta=none", {"x-lasso-include-meta": "body"}, ""),
        ("include_meta=", {}, ""),
        ("", {"x-lasso-include-meta": "yes"}, ""),
    ],
)
def test_meta_mode_from_query_then_header(
    resolver: RouteResolver, query: str, headers: dict[str, str], meta: str
) -> None:
    """include_meta comes from the query (none: no meta), else the header; the header's
    unknown modes mean none."""
    assert _ok(resolver.resolve(_req("/rpc/ethereum", query, headers))).meta == meta


@pytest.mark.parametrize(
    ("path", "websocket", "status", "code", "message"),
    [
        ("/rpc/a/b/c/d", False, 404, -32601, "No JSON-RPC route at /rpc/a/b/c/d"),
        ("/ws/rpc/a/b/c/d", True, 404, -32601, "No WebSocket JSON-RPC route at /ws/rpc/a/b/c/d"),
        ("/rpc/nochain", False, 400, -32602, None),
        ("/rpc/profile/nope/ethereum", False, 404, -32000, "Profile 'nope' not found"),
    ],
)
def test_rejections(
    resolver: RouteResolver,
    path: str,
    websocket: bool,
    status: int,
    code: int,
    message: str | None,
) -> None:
    """Unknown route, chain or profile: the status, code and message the contract names."""
    why = _no(resolver.resolve(_req(path), websocket=websocket))
    assert (why.status, why.code) == (status, code)
    if message is not None:
        assert why.message == message


def test_unknown_chain_lists_the_available_ones(resolver: RouteResolver) -> None:
    """An unknown chain names the profile and the chains it has."""
    why = _no(resolver.resolve(_req("/rpc/profile/team/ethereum")))
    assert why.message == "Unsupported chain: Unknown chain 'ethereum' in profile 'team'"
    assert why.data == {"available_chains": ["other"]}


def test_a_websocket_path_is_not_an_http_route(resolver: RouteResolver) -> None:
    """The prefixes do not mix: /ws/rpc/... over HTTP and /rpc/... over WS are 404."""
    assert _no(resolver.resolve(_req("/ws/rpc/ethereum"))).status == 404
    assert _no(resolver.resolve(_req("/rpc/ethereum"), websocket=True)).status == 404


def test_path_only_answers_are_cached_per_runtime() -> None:
    """A path-only request reuses its answer until the runtime is swapped (a reload)."""
    current = [_runtime()]
    resolver = RouteResolver(lambda: current[0])
    first = _ok(resolver.resolve(_req("/rpc/ethereum")))
    assert resolver.resolve(_req("/rpc/ethereum")) is first
    assert _ok(resolver.resolve(_req("/rpc/ethereum", "strategy=fastest"))) is not first
    current[0] = _runtime(PUBLIC.replace("default_strategy: priority", "default_strategy: fastest"))
    second = _ok(resolver.resolve(_req("/rpc/ethereum")))
    assert second.rt is current[0].profiles["public"].chains["ethereum"]
    assert second.strategy == "fastest"
    assert _no(resolver.resolve(_req("/rpc/profile/team/other"))).status == 404  # team is gone


def test_cache_is_bounded(resolver: RouteResolver) -> None:
    """Past MAX_CACHED paths, new paths resolve each time and nothing more is kept."""
    for i in range(MAX_CACHED + 10):
        resolver.resolve(_req(f"/rpc/chain{i}"))
    assert repr(resolver) == f"<RouteResolver cached={MAX_CACHED} paths={MAX_CACHED}>"
    assert _no(resolver.resolve(_req("/rpc/another"))).status == 400


def test_resolved_routes_are_frozen(resolver: RouteResolver) -> None:
    """Answers are shared between requests, so they cannot be changed."""
    got = _ok(resolver.resolve(_req("/rpc/ethereum")))
    with pytest.raises(AttributeError):
        got.strategy = "fastest"  # type: ignore[misc]


def test_routes_carry_the_profiles_gate_and_follow_reloads() -> None:
    """A gated profile's route carries its gate (cached with the path, renewed with the
    runtime); an open profile's carries none, as does a resolver given no gates."""
    from lasso.auth import ClientAccess

    gated = PUBLIC.replace("slug: public\n", "slug: public\nrps_limit: 5\n")
    current = [_runtime(gated, TEAM)]
    access = ClientAccess({p.config.slug: p.config for p in current[0].profiles.values()})
    resolver = RouteResolver(lambda: current[0], gates=access.gate)
    first = _ok(resolver.resolve(_req("/rpc/ethereum")))
    assert first.gate is access.gate("public") and first.gate is not None
    assert _ok(resolver.resolve(_req("/rpc/profile/team/other"))).gate is None
    current[0] = _runtime(gated, TEAM)
    access.reload({p.config.slug: p.config for p in current[0].profiles.values()})
    second = _ok(resolver.resolve(_req("/rpc/ethereum")))
    assert second.gate is access.gate("public") and second.gate is not first.gate
    assert _ok(RouteResolver(lambda: current[0]).resolve(_req("/rpc/ethereum"))).gate is None
