"""JSON-RPC over HTTP: validation, batches, local answers and responses.

The route (profile, chain, strategy, provider override, meta mode) comes from
:class:`lasso.server.route.RouteResolver`, the rule the WebSocket endpoint shares; this
module answers its rejections and runs the calls.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
from collections.abc import Awaitable
from time import monotonic
from typing import TYPE_CHECKING, Any

import orjson

from lasso.auth.client import Client, Refusal
from lasso.auth.gate import ProfileGate, refusal_response
from lasso.kernel.methods import BLOCKED_METHODS, WS_ONLY_METHODS
from lasso.net.http_server import HttpRequest, Response
from lasso.server.pipeline import Outcome, execute
from lasso.server.route import Rejection, RouteResolver
from lasso.server.runtime import ChainRuntime

if TYPE_CHECKING:
    from lasso.server.metrics import Metrics

__all__ = ["RpcHandler", "error_body", "finish_item", "MAX_BATCH"]

MAX_BATCH = 50
BATCH_CONCURRENCY = 4
MAX_META_HEADER = 4096

_REQ_PREFIX = os.urandom(4).hex()
_req_counter = itertools.count(1)


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
    """Serves ``POST /rpc/...``.

    Args:
        routes: the route resolver (shared with the WebSocket endpoint).
        metrics: the node's request counters.
    """

    def __init__(self, *, routes: RouteResolver, metrics: Metrics) -> None:
        self.routes = routes
        self.metrics = metrics

    def __repr__(self) -> str:
        return f"<RpcHandler {self.routes!r}>"

    # -- entry point ------------------------------------------------------------------
    def handle(self, req: HttpRequest) -> Response | Awaitable[Response]:
        route = self.routes.resolve(req)
        if isinstance(route, Rejection):
            return _error_response(route.status, route.code, route.message, route.data)
        rt = route.rt
        strategy = route.strategy
        provider_id = route.provider_id
        meta_mode = route.meta
        try:
            doc = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            return _PARSE_ERROR
        meta = _Meta(meta_mode, monotonic()) if meta_mode else None
        gate = route.gate  # None: the profile has no auth and no limits
        if isinstance(doc, dict):
            item = self.validate_item(doc, rt, provider_id, req.path)
            if gate is not None:
                return self._gated(gate, req, rt, [item], strategy, provider_id, meta, True)
            if item.early is not None:
                if item.notification and item.early_status == 200:
                    return _NO_CONTENT
                return Response(item.early_status, item.early)
            return self._run_single(rt, item, strategy, provider_id, meta)
        if isinstance(doc, list):
            if not doc:
                return _EMPTY_BATCH
            if len(doc) > MAX_BATCH:
                return _BATCH_TOO_LARGE
            if gate is not None:
                items = [self.validate_item(d, rt, provider_id, req.path) for d in doc]
                return self._gated(gate, req, rt, items, strategy, provider_id, meta, False)
            return self.run_batch(rt, doc, strategy, provider_id, meta, req.path)
        return _NOT_REQUEST

    # -- client checks (lasso.auth) ---------------------------------------------------
    async def _gated(
        self,
        gate: ProfileGate,
        req: HttpRequest,
        rt: ChainRuntime,
        items: list[_Item],
        strategy: str,
        provider_id: str | None,
        meta: _Meta | None,
        single: bool,
    ) -> Response:
        """The profile's client checks (key, scopes, rate), then the usual answer."""
        now = monotonic()
        client = gate.identify(req.headers, req.query, req.client, now)
        if isinstance(client, Refusal):
            gate.count_refused(client, len(items))
            return refusal_response(client, items, single)
        verdict = gate.screen(client, rt.key, items, now)
        if verdict is not None and not isinstance(verdict, Refusal):
            verdict = await verdict
        if verdict is not None:
            return refusal_response(verdict, items, single)
        if not single:
            return await self.run_items(rt, items, strategy, provider_id, meta, client)
        item = items[0]
        if item.early is not None:
            if item.notification and item.early_status == 200:
                return _NO_CONTENT
            return Response(item.early_status, item.early)
        return await self._run_single(rt, item, strategy, provider_id, meta, client)

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
        provider_id: str | None,
        meta: _Meta | None,
        client: Client | None = None,
    ) -> Response:
        loop = asyncio.get_running_loop()
        t0 = monotonic()
        out = await execute(rt, item.method, item.params, strategy, provider_id, loop)
        body = finish_item(out, item.id_json)
        elapsed = monotonic() - t0
        self.metrics.record_request(rt, item.method, strategy, out.status, elapsed, out.retries)
        if client is not None:
            client.count(out.status)
        rt.events.decision(rt, item.method, strategy, out, elapsed)
        if item.notification:
            return _NO_CONTENT
        if meta is None:
            return Response(200, body)
        info = _meta_object(meta, rt, strategy, out, monotonic())
        if meta.mode == "body" and body.endswith(b"}"):
            body = body[:-1] + b',"lasso_meta":' + orjson.dumps(info) + b"}"
            return Response(200, body, headers=[("X-Lasso-Request-Id", meta.request_id)])
        return Response(200, body, headers=_meta_headers(meta, info))

    # -- batch ------------------------------------------------------------------------
    async def run_batch(
        self,
        rt: ChainRuntime,
        docs: list[Any],
        strategy: str,
        provider_id: str | None,
        meta: _Meta | None,
        path: str,
    ) -> Response:
        items = [self.validate_item(d, rt, provider_id, path) for d in docs]
        return await self.run_items(rt, items, strategy, provider_id, meta)

    async def run_items(
        self,
        rt: ChainRuntime,
        items: list[_Item],
        strategy: str,
        provider_id: str | None,
        meta: _Meta | None,
        client: Client | None = None,
    ) -> Response:
        """Answer validated batch items: early answers as they are, the rest executed."""
        loop = asyncio.get_running_loop()
        results: list[bytes | None] = [None] * len(items)
        outcomes: list[Outcome | None] = [None] * len(items)
        pending = [i for i, it in enumerate(items) if it.early is None]
        for i, it in enumerate(items):
            if it.early is not None:
                results[i] = it.early
        queue = iter(pending)

        async def worker() -> None:
            for i in queue:
                it = items[i]
                t0 = monotonic()
                out = await execute(rt, it.method, it.params, strategy, provider_id, loop)
                elapsed = monotonic() - t0
                self.metrics.record_request(
                    rt, it.method, strategy, out.status, elapsed, out.retries
                )
                if client is not None:
                    client.count(out.status)
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
        if meta is None:
            return Response(200, body)
        first = next((o for o in outcomes if o is not None), None)
        info: dict[str, Any] = (
            _meta_object(meta, rt, strategy, first, monotonic())
            if first
            else {"request_id": meta.request_id}
        )
        info["batch_size"] = len(items)
        return Response(200, body, headers=_meta_headers(meta, info))


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
