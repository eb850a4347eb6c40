"""Route resolution for JSON-RPC over HTTP and WebSocket: one rule for both endpoints.

Route grammar (CONTRACT §3, §4), under ``/rpc/`` for HTTP and ``/ws/rpc/`` for WebSocket::

    /rpc[/profile/<profile>]/<chain>
    /rpc[/profile/<profile>]/<strategy>/<chain>
    /rpc[/profile/<profile>]/provider/<provider_id>/<chain>
    /rpc[/profile/<profile>]/<chain>/<provider_id>

Literal strategy names and ``provider`` win over chain names, so ``/rpc/fastest/1`` is
always the fastest strategy on chain 1.

:meth:`RouteResolver.resolve` turns a request (path, query, headers, peer) into a
:class:`ResolvedRoute` or a :class:`Rejection`, which the endpoints render (an HTTP error
answer, or a refused upgrade with the same status and JSON-RPC error body). The rules:

* profile: the path's, else the runtime's default; unknown → 404, ``-32000``;
* chain: a key, an alias or the decimal chain id; unknown → 400, ``-32602``;
* strategy: the path's, else ``?strategy=``, else the chain's ``default_strategy``;
  a ``?strategy=`` that names no strategy → 400, ``-32602`` listing the choices (also
  when the path names one);
* provider override, highest precedence first (reference §1.2): the path, the query
  parameters ``provider_override``, ``provider_id`` and ``provider``, the header
  ``X-Lasso-Provider``; one the chain does not configure → 400, ``-32602``;
* meta mode: ``?include_meta=`` else the header ``X-Lasso-Include-Meta``, ``headers`` or
  ``body``; ``none`` or no value: none. Another query value → 400, ``-32602`` listing the
  choices; the header is lenient (anything else: none), as proxies may set it.
  WebSocket connections carry it but answer no meta.

A request without a query string and without those two headers resolves from its path
alone: that answer is cached per path (bounded) for the current runtime, so the HTTP hot
path pays two dict lookups. A rule that reads anything else of the request (say, an API
key) must run before that cache.

The route also carries the profile's client checks (``gate``, :mod:`lasso.auth`), or
``None`` for a profile without ``auth`` and ``rps_limit``. They read the request's
credentials and address, so the endpoints run them per request after resolution: the
cached part is only *which* gate applies (gates are rebuilt with the runtime on reload).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from lasso.config import STRATEGIES, canonical_strategy

if TYPE_CHECKING:
    from lasso.auth.gate import ProfileGate
    from lasso.net.http_server import HttpRequest
    from lasso.server.runtime import ChainRuntime, Runtime

__all__ = [
    "HTTP_PREFIX",
    "WS_PREFIX",
    "Rejection",
    "ResolvedRoute",
    "RouteResolver",
    "RpcRoute",
    "parse_rpc_path",
]

HTTP_PREFIX = "/rpc/"
WS_PREFIX = "/ws/rpc/"
MAX_CACHED = 4096
"""Paths whose resolution is remembered per runtime; past it, new paths resolve each time."""

_META_MODES = ("headers", "body")
META_CHOICES = ("headers", "body", "none")
"""The values ``?include_meta=`` takes (``none``, or no value: no meta)."""
STRATEGY_CHOICES = (*STRATEGIES, "round-robin")
"""The values ``?strategy=`` takes (``round-robin`` is ``load-balanced``)."""
_OVERRIDE_PARAMS = ("provider_override", "provider_id", "provider")


@dataclass(frozen=True, slots=True, kw_only=True)
class RpcRoute:
    """The parts of an RPC path, before any lookup."""

    profile: str | None
    strategy: str | None
    chain: str
    provider_id: str | None


def parse_rpc_path(path: str, prefix: str = HTTP_PREFIX) -> RpcRoute | None:
    """Split an RPC path into its parts, or ``None`` when it matches no route."""
    if not path.startswith(prefix):
        return None
    segs = [s for s in path[len(prefix) :].split("/") if s]
    profile = None
    if len(segs) >= 2 and segs[0] == "profile":
        profile = segs[1]
        segs = segs[2:]
    if len(segs) == 1:
        return RpcRoute(profile=profile, strategy=None, chain=segs[0], provider_id=None)
    if len(segs) == 2:
        strategy = canonical_strategy(segs[0])
        if strategy is not None:
            return RpcRoute(profile=profile, strategy=strategy, chain=segs[1], provider_id=None)
        return RpcRoute(profile=profile, strategy=None, chain=segs[0], provider_id=segs[1])
    if len(segs) == 3 and segs[0] == "provider":
        return RpcRoute(profile=profile, strategy=None, chain=segs[2], provider_id=segs[1])
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ResolvedRoute:
    """Where a request goes.

    Attributes:
        rt: the chain of the profile (of the runtime current at resolution).
        strategy: the canonical strategy name.
        provider_id: the provider override, or ``None``.
        meta: ``"headers"``, ``"body"`` or ``""`` (no ``include_meta``).
        gate: the profile's client checks, or ``None`` when it has none.
    """

    rt: ChainRuntime
    strategy: str
    provider_id: str | None
    meta: str
    gate: ProfileGate | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """Why a request has no route: the HTTP status and the JSON-RPC error to answer with."""

    status: int
    code: int
    message: str
    data: Any = None


def _bad_value(name: str, value: str, valid: tuple[str, ...]) -> Rejection:
    """A query parameter with a value outside its choices: 400, ``-32602``, the choices."""
    return Rejection(
        status=400,
        code=-32602,
        message=f"Invalid {name} {value[:64]!r}: use one of {', '.join(valid)}",
        data={"parameter": name, "valid_values": list(valid)},
    )


class RouteResolver:
    """Resolves JSON-RPC requests of both transports against the current runtime.

    Args:
        runtime: the runtime serving now (reloads swap it; the cache follows).
        gates: a profile slug to its client checks (``None``: the profile has none);
            without it no route carries a gate.
    """

    __slots__ = ("_runtime", "_gates", "_cached_for", "_cache", "_paths")

    def __init__(
        self,
        runtime: Callable[[], Runtime],
        gates: Callable[[str], ProfileGate | None] | None = None,
    ) -> None:
        self._runtime = runtime
        self._gates = gates
        self._cached_for: Runtime | None = None
        self._cache: dict[str, ResolvedRoute | Rejection] = {}
        self._paths: dict[str, RpcRoute | None] = {}  # parsing does not need the runtime

    def __repr__(self) -> str:
        return f"<RouteResolver cached={len(self._cache)} paths={len(self._paths)}>"

    def resolve(self, req: HttpRequest, *, websocket: bool = False) -> ResolvedRoute | Rejection:
        """The route of ``req`` (a ``POST /rpc/...`` or a ``GET /ws/rpc/...`` upgrade).

        Args:
            req: the request: its path, query string, headers and peer address.
            websocket: resolve under ``/ws/rpc/`` (and name WebSocket in a 404).

        Returns:
            A :class:`ResolvedRoute`, or the :class:`Rejection` to answer with.
        """
        runtime = self._runtime()
        headers = req.headers
        if req.query or "x-lasso-provider" in headers or "x-lasso-include-meta" in headers:
            return self._resolve(runtime, req, websocket)
        if runtime is not self._cached_for:
            self._cache.clear()
            self._cached_for = runtime
        key = req.path if not websocket else "ws:" + req.path
        found = self._cache.get(key)
        if found is None:
            found = self._resolve(runtime, req, websocket)
            if len(self._cache) < MAX_CACHED:
                self._cache[key] = found
        return found

    def _parse(self, path: str, prefix: str) -> RpcRoute | None:
        key = path if prefix is HTTP_PREFIX else "ws:" + path
        try:
            return self._paths[key]
        except KeyError:
            route = parse_rpc_path(path, prefix)
            if len(self._paths) < MAX_CACHED:
                self._paths[key] = route
            return route

    def _resolve(
        self, runtime: Runtime, req: HttpRequest, websocket: bool
    ) -> ResolvedRoute | Rejection:
        route = self._parse(req.path, WS_PREFIX if websocket else HTTP_PREFIX)
        if route is None:
            kind = "WebSocket JSON-RPC" if websocket else "JSON-RPC"
            return Rejection(status=404, code=-32601, message=f"No {kind} route at {req.path}")
        profile = runtime.profile(route.profile)
        if profile is None:
            return Rejection(
                status=404,
                code=-32000,
                message=runtime.profile_not_found(route.profile),
                data={
                    "error_type": "profile_not_found",
                    "available_profiles": sorted(runtime.profiles),
                },
            )
        rt = profile.resolve(route.chain)
        if rt is None:
            return Rejection(
                status=400,
                code=-32602,
                message=f"Unsupported chain: Unknown chain '{route.chain}' "
                f"in profile '{profile.config.slug}'",
                data={"available_chains": sorted(profile.chains)},
            )
        strategy = route.strategy or rt.config.default_strategy
        provider_id = route.provider_id
        meta = ""
        if req.query:
            qs = parse_qs(req.query)
            meta = (qs.get("include_meta") or [""])[0]
            if meta and meta not in META_CHOICES:
                return _bad_value("include_meta", meta, META_CHOICES)
            if provider_id is None:
                provider_id = next((qs[k][0] for k in _OVERRIDE_PARAMS if k in qs), None)
            asked = (qs.get("strategy") or [""])[0]
            if asked:
                named = canonical_strategy(asked)
                if named is None:
                    return _bad_value("strategy", asked, STRATEGY_CHOICES)
                if route.strategy is None:
                    strategy = named
        if not meta:
            meta = req.headers.get("x-lasso-include-meta", "")
        if provider_id is None:
            provider_id = req.headers.get("x-lasso-provider") or None
        if provider_id is not None and rt.config.provider(provider_id) is None:
            return Rejection(
                status=400,
                code=-32602,
                message=f"Provider '{provider_id}' not found for chain '{rt.key}'",
                data={"available_providers": [p.id for p in rt.config.providers]},
            )
        return ResolvedRoute(
            rt=rt,
            strategy=strategy,
            provider_id=provider_id,
            meta=meta if meta in _META_MODES else "",
            gate=self._gates(profile.config.slug) if self._gates is not None else None,
        )
