"""JSON-RPC over HTTP: routes, validation, batches, local answers and responses.

Route grammar (CONTRACT §3)::

    /rpc[/profile/<profile>]/<chain>
    /rpc[/profile/<profile>]/<strategy>/<chain>
    /rpc[/profile/<profile>]/provider/<provider_id>/<chain>
    /rpc[/profile/<profile>]/<chain>/<provider_id>

Literal strategy names and ``provider`` win over chain names, so ``/rpc/fastest/1`` is
always the fastest strategy on chain 1.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
from collections.abc import Awaitable
from time import monotonic
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from lasso.config import canonical_strategy
from lasso.kernel.methods import BLOCKED_METHODS, WS_ONLY_METHODS
from lasso.net.http_server import HttpRequest, Response
from lasso.server.pipeline import Outcome
from lasso.server.runtime import ChainRuntime

if TYPE_CHECKING:
    from lasso.server.app import LassoApp

__all__ = [
    "RpcRoute",
    "parse_rpc_path",
    "RpcHandler",
    "error_body",
    "finish_item",
    "batch_cache_status",
    "MAX_BATCH",
]

MAX_BATCH = 50
BATCH_CONCURRENCY = 4
MAX_META_HEADER = 4096

_REQ_PREFIX = os.urandom(4).hex()
_req_counter = itertools.count(1)


class RpcRoute:
    __slots__ = ("profile", "strategy", "chain", "provider_id")

    def __init__(
        self, profile: str | None, strategy: str | None, chain: str, provider_id: str | None
    ):
        self.profile = profile
        self.strategy = strategy
        self.chain = chain
        self.provider_id = provider_id

    def __repr__(self) -> str:
        return f"<RpcRoute {self.profile}/{self.strategy}/{self.chain}/{self.provider_id}>"


def parse_rpc_path(path: str, prefix: str = "/rpc/") -> RpcRoute | None:
    """Split an RPC path into its parts, or ``None`` when it matches no route."""
    if not path.startswith(prefix):
        return None
    segs = [s for s in path[len(prefix) :].split("/") if s]
    profile = None
    if len(segs) >= 2 and segs[0] == "profile":
        profile = segs[1]
        segs = segs[2:]
    if len(segs) == 1:
        return RpcRoute(profile, None, segs[0], None)
    if len(segs) == 2:
        strategy = canonical_strategy(segs[0])
        if strategy is not None:
            return RpcRoute(profile, strategy, segs[1], None)
        return RpcRoute(profile, None, segs[0], segs[1])
    if len(segs) == 3 and segs[0] == "provider":
        return RpcRoute(profile, None, segs[2], segs[1])
    return None


def error_body(code: int, message: str, id_json: bytes = b"null", data: Any = None) -> bytes:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return b'{"jsonrpc":"2.0","error":%s,"id":%s}' % (orjson.dumps(err), id_json)


def _error_response(status: int, code: int, message: str, data: Any = None) -> Response:
    return Response(status, error_body(code, message, b"null", data))


_PARSE_ERROR = _error_response(400, -32700, "Parse error: Invalid JSON")
_EMPTY_BATCH = _error_response(400, -32600, "Invalid Request: empty batch")
_BATCH_TOO_LARGE = _error_response(
    400, -32600, f"Invalid Request: batch too large (max {MAX_BATCH})"
)
_NOT_REQUEST = _error_response(400, -32600, "Invalid Request: expected a JSON-RPC object or array")
_NO_CONTENT = Response(204)

_MISSING = object()


class _Item:
    """One validated request of a single call or a batch."""

    __slots__ = ("id_json", "method", "params", "notification", "early", "early_status")

    def __init__(self) -> None:
        self.early_status = 200
        self.id_json = b"null"
        self.method = ""
        self.params: Any = None
        self.notification = False
        self.early: bytes | None = None  # an answer decided without any upstream


class _Meta:
    __slots__ = ("mode", "request_id", "started")

    def __init__(self, mode: str, started: float) -> None:
        self.mode = mode
        self.request_id = f"{_REQ_PREFIX}-{next(_req_counter):x}"
        self.started = started


class RpcHandler:
    """Serves ``POST /rpc/...``."""

    def __init__(self, app: LassoApp) -> None:
        self.app = app
        self._routes: dict[str, RpcRoute | None] = {}

    # -- entry point ------------------------------------------------------------------
    def handle(self, req: HttpRequest) -> Response | Awaitable[Response]:
        route: Any = self._routes.get(req.path, _MISSING)
        if route is _MISSING:
            route = parse_rpc_path(req.path)
            if len(self._routes) < 4096:
                self._routes[req.path] = route
        if route is None:
            return _error_response(404, -32601, f"No JSON-RPC route at {req.path}")
        assert isinstance(route, RpcRoute)
        runtime = self.app.runtime
        profile = runtime.profile(route.profile)
        if profile is None:
            return _error_response(
                404,
                -32000,
                f"Profile '{route.profile or runtime.default_profile}' not found",
                {"error_type": "profile_not_found", "available_profiles": sorted(runtime.profiles)},
            )
        rt = profile.resolve(route.chain)
        if rt is None:
            return _error_response(
                400,
                -32602,
                f"Unsupported chain: Unknown chain '{route.chain}' "
                f"in profile '{profile.config.slug}'",
                {"available_chains": sorted(profile.chains)},
            )
        strategy = route.strategy or rt.config.default_strategy
        provider_id = route.provider_id
        meta_mode = ""
        if req.query:
            qs = parse_qs(req.query)
            meta_mode = (qs.get("include_meta") or [""])[0]
            override = (
                qs.get("provider_override") or qs.get("provider_id") or qs.get("provider") or [""]
            )[0]
            if provider_id is None and override:
                provider_id = override
            if route.strategy is None:
                qstrat = (qs.get("strategy") or [""])[0]
                if qstrat and canonical_strategy(qstrat):
                    strategy = canonical_strategy(qstrat) or strategy
        if not meta_mode:
            meta_mode = req.headers.get("x-lasso-include-meta", "")
        if provider_id is None:
            provider_id = req.headers.get("x-lasso-provider") or None
        if provider_id is not None and rt.config.provider(provider_id) is None:
            return _error_response(
                400,
                -32602,
                f"Provider '{provider_id}' not found for chain '{rt.key}'",
                {"available_providers": [p.id for p in rt.config.providers]},
            )
        if meta_mode not in ("headers", "body"):
            meta_mode = ""

        no_cache = "no-cache" in req.headers.get("cache-control", "")
        try:
            doc = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            return _PARSE_ERROR
        meta = _Meta(meta_mode, monotonic()) if meta_mode else None
        if isinstance(doc, dict):
            item = self.validate_item(doc, rt, provider_id, req.path)
            if item.early is not None:
                if item.notification and item.early_status == 200:
                    return _NO_CONTENT
                return Response(item.early_status, item.early)
            t0 = monotonic()
            served = self.app.cache.serve(
                rt, item.method, item.params, strategy, provider_id, no_cache=no_cache
            )
            if isinstance(served, tuple):  # answered from the cache: no task needed
                return self._respond(rt, item, strategy, meta, served, t0)
            return self._run_single(rt, item, strategy, meta, served, t0)
        if isinstance(doc, list):
            if not doc:
                return _EMPTY_BATCH
            if len(doc) > MAX_BATCH:
                return _BATCH_TOO_LARGE
            return self.run_batch(rt, doc, strategy, provider_id, meta, req.path, no_cache)
        return _NOT_REQUEST

    # -- validation -------------------------------------------------------------------
    def validate_item(
        self, doc: Any, rt: ChainRuntime, provider_id: str | None, path: str
    ) -> _Item:
        item = _Item()
        if not isinstance(doc, dict):
            item.early = error_body(-32600, "Invalid Request: expected an object")
            item.early_status = 400
            return item
        rid = doc.get("id", _MISSING)
        if rid is _MISSING:
            item.notification = True
        elif rid is None or isinstance(rid, str | int | float) and not isinstance(rid, bool):
            item.id_json = orjson.dumps(rid)
        else:
            item.early = error_body(-32600, "Invalid Request: id must be a string, number or null")
            item.early_status = 400
            return item
        method = doc.get("method")
        version = doc.get("jsonrpc", "2.0")
        if version != "2.0":
            item.early = error_body(-32600, 'Invalid Request: jsonrpc must be "2.0"', item.id_json)
            item.early_status = 400
            return item
        if not isinstance(method, str) or not method:
            item.early = error_body(-32600, "Invalid Request: missing method", item.id_json)
            item.early_status = 400
            return item
        params = doc.get("params")
        if params is None:
            params = []
        elif not isinstance(params, list | dict):
            item.early = error_body(
                -32602, "Invalid params: params must be an array or object", item.id_json
            )
            item.early_status = 400
            return item
        item.method = method
        item.params = params
        if method in WS_ONLY_METHODS:
            item.early = error_body(
                -32601,
                "Method not supported over HTTP. Use WebSocket connection for subscriptions.",
                item.id_json,
                {"websocket_url": "/ws" + path},
            )
        elif method in BLOCKED_METHODS:
            item.early = error_body(
                -32601,
                f"Method not supported by proxy: {method} (Lasso never holds keys)",
                item.id_json,
            )
        elif method == "eth_chainId" and not params and provider_id is None:
            item.early = b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (
                item.id_json,
                rt.chain_id_result,
            )
        return item

    # -- single -----------------------------------------------------------------------
    async def _run_single(
        self,
        rt: ChainRuntime,
        item: _Item,
        strategy: str,
        meta: _Meta | None,
        pending: Awaitable[tuple[Outcome, str | None]],
        t0: float,
    ) -> Response:
        return self._respond(rt, item, strategy, meta, await pending, t0)

    def _respond(
        self,
        rt: ChainRuntime,
        item: _Item,
        strategy: str,
        meta: _Meta | None,
        served: tuple[Outcome, str | None],
        t0: float,
    ) -> Response:
        out, cache = served
        body = finish_item(out, item.id_json)
        elapsed = monotonic() - t0
        self.app.metrics.record_request(rt, item.method, strategy, out.status, elapsed, out.retries)
        rt.events.decision(rt, item.method, strategy, out, elapsed)
        if item.notification:
            return _NO_CONTENT
        if meta is None:
            return Response(200, body, headers=_CACHE_HEADER[cache])
        info = _meta_object(meta, rt, strategy, out, monotonic())
        if cache is not None:
            info["cache"] = cache
        if meta.mode == "body" and body.endswith(b"}"):
            body = body[:-1] + b',"lasso_meta":' + orjson.dumps(info) + b"}"
            headers = [("X-Lasso-Request-Id", meta.request_id), *_CACHE_HEADER[cache]]
            return Response(200, body, headers=headers)
        return Response(200, body, headers=[*_meta_headers(meta, info), *_CACHE_HEADER[cache]])

    # -- batch ------------------------------------------------------------------------
    async def run_batch(
        self,
        rt: ChainRuntime,
        docs: list[Any],
        strategy: str,
        provider_id: str | None,
        meta: _Meta | None,
        path: str,
        no_cache: bool = False,
    ) -> Response:
        items = [self.validate_item(d, rt, provider_id, path) for d in docs]
        results: list[bytes | None] = [None] * len(items)
        outcomes: list[Outcome | None] = [None] * len(items)
        caches: list[str | None] = [None] * len(items)
        execute = self.app.cache.execute
        pending = [i for i, it in enumerate(items) if it.early is None]
        for i, it in enumerate(items):
            if it.early is not None:
                results[i] = it.early
        queue = iter(pending)

        async def worker() -> None:
            for i in queue:
                it = items[i]
                t0 = monotonic()
                out, caches[i] = await execute(
                    rt, it.method, it.params, strategy, provider_id, no_cache=no_cache
                )
                elapsed = monotonic() - t0
                self.app.metrics.record_request(
                    rt, it.method, strategy, out.status, elapsed, out.retries
                )
                rt.events.decision(rt, it.method, strategy, out, elapsed)
                outcomes[i] = out
                results[i] = finish_item(out, it.id_json)

        n = min(BATCH_CONCURRENCY, len(pending))
        if n == 1:
            await worker()
        elif n > 1:
            await asyncio.gather(*(worker() for _ in range(n)))
        parts = [
            r for r, it in zip(results, items, strict=True) if r is not None and not it.notification
        ]
        if not parts:
            return _NO_CONTENT
        body = b"[" + b",".join(parts) + b"]"
        cache = batch_cache_status(caches)
        if meta is None:
            return Response(200, body, headers=_CACHE_HEADER[cache])
        first = next((o for o in outcomes if o is not None), None)
        info: dict[str, Any] = (
            _meta_object(meta, rt, strategy, first, monotonic())
            if first
            else {"request_id": meta.request_id}
        )
        info["batch_size"] = len(items)
        if cache is not None:
            info["cache"] = cache
            info["cache_items"] = caches
        return Response(200, body, headers=[*_meta_headers(meta, info), *_CACHE_HEADER[cache]])


_CACHE_HEADER: dict[str | None, list[tuple[str, str]]] = {
    None: [],
    "hit": [("X-Lasso-Cache", "HIT")],
    "miss": [("X-Lasso-Cache", "MISS")],
    "bypass": [("X-Lasso-Cache", "BYPASS")],
}


def batch_cache_status(caches: list[str | None]) -> str | None:
    """A batch's ``X-Lasso-Cache``: HIT when every cacheable item was a hit, MISS when
    any was a miss, else BYPASS; none when no item was cacheable."""
    seen = [c for c in caches if c is not None]
    if not seen:
        return None
    if all(c == "hit" for c in seen):
        return "hit"
    return "miss" if "miss" in seen else "bypass"


def finish_item(out: Outcome, id_json: bytes) -> bytes:
    """The client-facing bytes: upstream bytes with the client's id restored, or our error."""
    if out.body is not None:
        return out.body.replace(out.tid, id_json, 1)
    return b'{"jsonrpc":"2.0","error":%s,"id":%s}' % (orjson.dumps(out.error), id_json)


def _meta_object(
    meta: _Meta, rt: ChainRuntime, strategy: str, out: Outcome | None, now: float
) -> dict[str, Any]:
    e2e = (now - meta.started) * 1000
    info: dict[str, Any] = {
        "version": "1.0",
        "request_id": meta.request_id,
        "strategy": strategy,
        "chain_id": str(rt.config.chain_id),
        "chain": rt.key,
        "profile": rt.profile,
        "transport": "http",
        "end_to_end_latency_ms": round(e2e, 3),
    }
    if out is not None:
        up = out.upstream_latency * 1000
        info["candidate_providers"] = [f"{c.provider.id}:{c.transport}" for c in out.candidates]
        info["retries"] = out.retries
        info["upstream_latency_ms"] = round(up, 3)
        info["lasso_overhead_ms"] = round(max(0.0, e2e - up), 3)
        if out.provider_id is not None:
            info["selected_provider"] = {"id": out.provider_id, "protocol": out.transport}
        if out.error is not None:
            info["error"] = {"code": out.error.get("code"), "message": out.error.get("message")}
    return info


def _meta_headers(meta: _Meta, info: dict[str, Any]) -> list[tuple[str, str]]:
    headers = [("X-Lasso-Request-Id", meta.request_id)]
    encoded = base64.urlsafe_b64encode(orjson.dumps(info)).rstrip(b"=")
    if len(encoded) <= MAX_META_HEADER:
        headers.append(("X-Lasso-Meta", encoded.decode()))
    return headers
