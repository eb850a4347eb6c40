"""JSON-RPC over HTTP: validation, batches, local answers and responses.

The route (profile, chain, strategy, provider override, meta mode) comes from
:class:`lasso.server.route.RouteResolver`, the rule the WebSocket endpoint shares; this
module answers its rejections and runs the calls.

Validation (JSON-RPC 2.0 §4, §5, §6): an object that is not a valid request (not an
object, a bad ``id``, ``jsonrpc`` or ``method``, ``params`` not an array or object, or
nested deeper than :data:`~lasso.server.limits.MAX_PARAMS_DEPTH`) gets an error with its
``id`` or ``null``, even without an ``id``; a valid notification is executed (or refused)
silently. Ids come back exactly as sent (:mod:`lasso.server.rpc_envelope`). Batches hold up
to ``Settings.max_batch`` items, run concurrently under a per-batch and a node-wide bound
(:mod:`lasso.server.limits`), answered in order. A failure inside Lasso while serving an
item is ``-32603`` with the item's id, never an HTTP 500.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os
from collections.abc import Awaitable
from time import monotonic
from typing import TYPE_CHECKING, Any

import orjson

from lasso.auth.client import Client, Refusal
from lasso.auth.gate import ProfileGate, refusal_response
from lasso.auth.limiter import ADDRESS_PREFIX
from lasso.kernel.access import bucket_address
from lasso.kernel.filters import CREATE_METHODS
from lasso.kernel.methods import BLOCKED_METHODS, WS_ONLY_METHODS
from lasso.net.http_messages import LARGE_BODY, Body, Pieces, no_cache_requested
from lasso.net.http_server import HttpRequest, Response
from lasso.server.cache import ResponseCache
from lasso.server.limits import (
    BATCH_CONCURRENCY,
    DEFAULT_MAX_BATCH,
    MAX_PARAMS_DEPTH,
    NODE_BATCH_CONCURRENCY,
)
from lasso.server.pipeline import Outcome
from lasso.server.route import Rejection, RouteResolver
from lasso.server.rpc_envelope import (
    ID_TYPES,
    RequestIds,
    loads_request,
    splice_id,
    splice_pieces,
)
from lasso.server.runtime import ChainRuntime
from lasso.server.sticky_filters import FILTER_OWNER

if TYPE_CHECKING:
    from lasso.server.metrics import Metrics

__all__ = [
    "RpcHandler",
    "batch_cache_status",
    "batch_too_large",
    "error_body",
    "filter_owner",
    "finish_item",
]

log = logging.getLogger("lasso.rpc")

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
_NOT_REQUEST = _error_response(400, -32600, "Invalid Request: expected a JSON-RPC object or array")
_NO_CONTENT = Response(204)

_MISSING = object()
_TOO_DEEP = f"Invalid params: nested deeper than {MAX_PARAMS_DEPTH} levels"


def filter_owner(client: Client | None, address: str) -> str:
    """Who owns the filters a request makes (:data:`FILTER_OWNER`): a checked client's
    rate-limit bucket (its key, JWT subject or address), else its address (an IPv6 /64)."""
    if client is not None:
        return client.bucket
    return ADDRESS_PREFIX + bucket_address(address)


def batch_too_large(max_batch: int) -> bytes:
    """The -32600 answer to a batch of more than ``max_batch`` items."""
    return error_body(-32600, f"Invalid Request: batch too large (max {max_batch})")


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
        cache: the response cache and coalescing every item goes through
            (:mod:`lasso.server.cache`, around the pipeline).
        max_batch: most items in one batch (``Settings.max_batch``).
        batch_concurrency: items of one batch in flight at once.
        batch_node_concurrency: batch items in flight on the node, every batch (HTTP and
            WebSocket) together.
    """

    def __init__(
        self,
        *,
        routes: RouteResolver,
        metrics: Metrics,
        cache: ResponseCache,
        max_batch: int = DEFAULT_MAX_BATCH,
        batch_concurrency: int = BATCH_CONCURRENCY,
        batch_node_concurrency: int = NODE_BATCH_CONCURRENCY,
    ) -> None:
        self.routes = routes
        self.metrics = metrics
        self.cache = cache
        self.max_batch = max_batch
        self.batch_concurrency = batch_concurrency
        self.batch_slots = asyncio.Semaphore(batch_node_concurrency)
        self._too_large = Response(400, batch_too_large(max_batch))

    def __repr__(self) -> str:
        return f"<RpcHandler {self.routes!r} max_batch={self.max_batch}>"

    # -- entry point ------------------------------------------------------------------
    def handle(self, req: HttpRequest) -> Response | Awaitable[Response]:
        route = self.routes.resolve(req)
        if isinstance(route, Rejection):
            return _refuse(req, route, self.max_batch)
        rt = route.rt
        strategy = route.strategy
        provider_id = route.provider_id
        meta_mode = route.meta
        try:
            doc = orjson.loads(req.body)  # loads_request's first step, its call saved
        except orjson.JSONDecodeError:
            try:
                doc = loads_request(req.body)  # numbers orjson refuses, kept exact
            except ValueError:
                return _PARSE_ERROR
        meta = _Meta(meta_mode, monotonic()) if meta_mode else None
        gate = route.gate  # None: the profile has no auth and no limits
        no_cache = no_cache_requested(req.headers.get("cache-control", ""))
        if type(doc) is dict:
            item = self.validate_item(doc, rt, provider_id, req.path, RequestIds(req.body))
            if gate is not None:
                return self._gated(
                    gate, req, rt, [item], strategy, provider_id, meta, True, no_cache
                )
            if item.early is not None:
                if item.notification and item.early_status == 200:
                    return _NO_CONTENT
                return Response(item.early_status, item.early)
            t0 = monotonic()
            try:
                served = self.cache.serve(
                    rt, item.method, item.params, strategy, provider_id, no_cache=no_cache
                )
                if isinstance(served, tuple):  # answered from the cache: no task needed
                    done = self._finish(rt, item, strategy, None, served, t0)
                    return _respond(item, rt, strategy, meta, *done)
            except Exception:  # a bug costs this request an error, never a 500
                return _respond(item, rt, strategy, meta, *self._internal(item, None))
            owner = filter_owner(None, req.client) if item.method in CREATE_METHODS else None
            return self._run_single(
                rt, item, strategy, provider_id, meta, served=served, t0=t0, owner=owner
            )
        if type(doc) is list:
            if not doc:
                return _EMPTY_BATCH
            if len(doc) > self.max_batch:
                return self._too_large
            ids = RequestIds(req.body, doc)
            if gate is not None:
                items = [
                    self.validate_item(d, rt, provider_id, req.path, ids, i)
                    for i, d in enumerate(doc)
                ]
                return self._gated(
                    gate, req, rt, items, strategy, provider_id, meta, False, no_cache
                )
            return self.run_batch(
                rt, doc, strategy, provider_id, meta, req.path, ids, no_cache, req.client
            )
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
        no_cache: bool = False,
    ) -> Response:
        """The profile's client checks (key, scopes, rate), then the usual answer."""
        now = monotonic()
        client = gate.identify(req.headers, req.query, req.client, now)
        if isinstance(client, Refusal):
            gate.count_refused(client, len(items))
            return refusal_response(client, items, single)
        FILTER_OWNER.set(client.bucket)  # this request's task only
        verdict = gate.screen(client, rt.key, items, now)
        if verdict is not None and not isinstance(verdict, Refusal):
            verdict = await verdict
        if verdict is not None:
            return refusal_response(verdict, items, single)
        if not single:
            return await self.run_items(
                rt, items, strategy, provider_id, meta, client, no_cache=no_cache
            )
        item = items[0]
        if item.early is not None:
            if item.notification and item.early_status == 200:
                return _NO_CONTENT
            return Response(item.early_status, item.early)
        return await self._run_single(rt, item, strategy, provider_id, meta, client, no_cache)

    # -- validation -------------------------------------------------------------------
    def validate_item(
        self,
        doc: Any,
        rt: ChainRuntime,
        provider_id: str | None,
        path: str,
        ids: RequestIds,
        index: int = 0,
    ) -> _Item:
        """Check one request object of a body (item ``index`` of a batch) and decide what
        can be decided without a provider: an error, or a local answer in ``item.early``."""
        item = _Item()
        if type(doc) is not dict:
            return _invalid(item, -32600, "Invalid Request: expected an object")
        rid = doc.get("id", _MISSING)
        if rid is _MISSING:
            item.notification = True
        elif rid is None:
            pass
        elif type(rid) is int and rid:  # the common case: re-encoding is exact
            item.id_json = orjson.dumps(rid)
        elif type(rid) in ID_TYPES:
            item.id_json = ids.encode(rid, index)
        else:
            return _invalid(item, -32600, "Invalid Request: id must be a string, number or null")
        method = doc.get("method")
        version = doc.get("jsonrpc", "2.0")
        if version != "2.0":
            return _invalid(item, -32600, 'Invalid Request: jsonrpc must be "2.0"')
        if type(method) is not str or not method:
            return _invalid(item, -32600, "Invalid Request: missing method")
        params = doc.get("params")
        if params is None:
            params = []
        elif type(params) is not list and type(params) is not dict:
            return _invalid(item, -32602, "Invalid params: params must be an array or object")
        elif not ids.params_ok(params):
            return _invalid(item, -32602, _TOO_DEEP, {"max_depth": MAX_PARAMS_DEPTH})
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

    # -- execution ------------------------------------------------------------------
    async def _execute(
        self,
        rt: ChainRuntime,
        item: _Item,
        strategy: str,
        provider_id: str | None,
        client: Client | None = None,
        no_cache: bool = False,
    ) -> tuple[Body, Outcome | None, str | None]:
        """Run one batch item through the response cache and the pipeline; its answer
        bytes (our error on a Lasso failure), its outcome and how the cache answered,
        counted for ``client`` when the profile checks its clients."""
        try:
            t0 = monotonic()
            answer = self.cache.serve(
                rt, item.method, item.params, strategy, provider_id, no_cache=no_cache
            )
            if not isinstance(answer, tuple):
                answer = await answer
            return self._finish(rt, item, strategy, client, answer, t0)
        except Exception:  # a bug must cost one item an error, never the batch or a 500
            return self._internal(item, client)

    def _finish(
        self,
        rt: ChainRuntime,
        item: _Item,
        strategy: str,
        client: Client | None,
        answer: tuple[Outcome, str | None],
        t0: float,
    ) -> tuple[Body, Outcome | None, str | None]:
        out, cache = answer
        body = finish_item(out, item.id_json)
        elapsed = monotonic() - t0
        self.metrics.record_request(rt, item.method, strategy, out.status, elapsed, out.retries)
        if out.hedges or out.hedge_skipped:
            self.metrics.record_hedges(rt, out)
        if client is not None:
            client.count(out.status)
        rt.events.decision(rt, item.method, strategy, out, elapsed)
        return body, out, cache

    def _internal(self, item: _Item, client: Client | None) -> tuple[bytes, None, None]:
        log.exception(
            "request failed inside lasso",
            extra={"event": "rpc.internal_error", "method": item.method[:100]},
        )
        if client is not None:
            client.count("error")
        return error_body(-32603, "Internal error", item.id_json), None, None

    async def _run_single(
        self,
        rt: ChainRuntime,
        item: _Item,
        strategy: str,
        provider_id: str | None,
        meta: _Meta | None,
        client: Client | None = None,
        no_cache: bool = False,
        served: Awaitable[tuple[Outcome, str | None]] | None = None,
        t0: float = 0.0,
        owner: str | None = None,
    ) -> Response:
        """One request's answer (:meth:`_execute` for a single item, inlined: one coroutine
        on the hot path). ``served``: the cache's call already started at ``t0``."""
        if owner is not None:  # an unchecked client making a filter (this task only)
            FILTER_OWNER.set(owner)
        try:
            if served is None:
                t0 = monotonic()
                answer = self.cache.serve(
                    rt, item.method, item.params, strategy, provider_id, no_cache=no_cache
                )
                if not isinstance(answer, tuple):
                    answer = await answer
            else:
                answer = await served
            body, out, cache = self._finish(rt, item, strategy, client, answer, t0)
        except Exception:  # a bug must cost the request an error, never a 500
            body, out, cache = self._internal(item, client)
        if meta is None and not item.notification:  # _respond's usual answer, inlined
            return Response(200, body, headers=_CACHE_HEADER[cache])
        return _respond(item, rt, strategy, meta, body, out, cache)

    async def run_batch(
        self,
        rt: ChainRuntime,
        docs: list[Any],
        strategy: str,
        provider_id: str | None,
        meta: _Meta | None,
        path: str,
        ids: RequestIds,
        no_cache: bool = False,
        address: str | None = None,
    ) -> Response:
        """Answer a batch (already checked for size): every item concurrently, at most
        ``batch_concurrency`` of this batch and ``batch_slots`` of the node at a time; the
        answers in request order, notifications left out (204 when none is left).
        ``address``: the unchecked client's, owner of the filters it makes."""
        if address is not None:
            FILTER_OWNER.set(filter_owner(None, address))  # this request's task only
        items = [self.validate_item(d, rt, provider_id, path, ids, i) for i, d in enumerate(docs)]
        return await self.run_items(rt, items, strategy, provider_id, meta, no_cache=no_cache)

    async def run_items(
        self,
        rt: ChainRuntime,
        items: list[_Item],
        strategy: str,
        provider_id: str | None,
        meta: _Meta | None,
        client: Client | None = None,
        *,
        no_cache: bool = False,
    ) -> Response:
        """Answer validated batch items (:meth:`run_batch`'s rule): early answers as they
        are, the others executed and, for a checked client, counted."""
        results: list[Body | None] = [it.early for it in items]
        outcomes: list[Outcome | None] = [None] * len(items)
        caches: list[str | None] = [None] * len(items)
        pending = [i for i, it in enumerate(items) if it.early is None]
        queue = iter(pending)
        slots = self.batch_slots

        async def worker() -> None:
            for i in queue:
                async with slots:
                    results[i], outcomes[i], caches[i] = await self._execute(
                        rt, items[i], strategy, provider_id, client, no_cache
                    )

        n = min(self.batch_concurrency, len(pending))
        if n == 1:
            await worker()
        elif n > 1:
            await asyncio.gather(*(worker() for _ in range(n)))
        if meta is not None and meta.mode == "body":
            return _batch_body_meta(meta, rt, strategy, items, results, outcomes, caches)
        parts = [
            r for r, it in zip(results, items, strict=True) if r is not None and not it.notification
        ]
        if not parts:
            return _NO_CONTENT
        body = _batch_body(parts)
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


def _respond(
    item: _Item,
    rt: ChainRuntime,
    strategy: str,
    meta: _Meta | None,
    body: Body,
    out: Outcome | None,
    cache: str | None,
) -> Response:
    """The answer to a single request: ``X-Lasso-Cache`` when it was cacheable, and
    ``include_meta`` (with ``cache``) when asked."""
    if item.notification:
        return _NO_CONTENT
    if meta is None:
        return Response(200, body, headers=_CACHE_HEADER[cache])
    info = _meta_object(meta, rt, strategy, out, monotonic())
    if cache is not None:
        info["cache"] = cache
    if meta.mode == "body" and isinstance(body, Pieces):  # joined to add a member (a copy)
        body = body.join()
    if meta.mode == "body" and not isinstance(body, Pieces) and body.endswith(b"}"):
        body = body[:-1] + b',"lasso_meta":' + orjson.dumps(info) + b"}"
        headers = [("X-Lasso-Request-Id", meta.request_id), *_CACHE_HEADER[cache]]
        return Response(200, body, headers=headers)
    return Response(200, body, headers=[*_meta_headers(meta, info), *_CACHE_HEADER[cache]])


def _batch_body_meta(
    meta: _Meta,
    rt: ChainRuntime,
    strategy: str,
    items: list[_Item],
    results: list[Body | None],
    outcomes: list[Outcome | None],
    caches: list[str | None],
) -> Response:
    """``include_meta=body`` on a batch. The answer stays a JSON array of response
    objects (JSON-RPC 2.0 §6), so each response object carries its own ``lasso_meta``:
    the request's id, strategy and end-to-end time, the item's provider, candidates,
    retries, latencies and ``cache``, with ``batch_size`` and ``batch_index`` (its place
    in the request). Notifications are still left out; the request id is also the
    ``X-Lasso-Request-Id`` header."""
    now = monotonic()
    parts: list[bytes | bytearray] = []
    for i, (body, item) in enumerate(zip(results, items, strict=True)):
        if body is None or item.notification:
            continue
        if isinstance(body, Pieces):  # joined to add a member (a copy)
            body = body.join()
        info = _meta_object(meta, rt, strategy, outcomes[i], now)
        if caches[i] is not None:
            info["cache"] = caches[i]
        info["batch_size"] = len(items)
        info["batch_index"] = i
        body = body.rstrip()
        if body.endswith(b"}"):
            body = body[:-1] + b',"lasso_meta":' + orjson.dumps(info) + b"}"
        parts.append(body)
    if not parts:
        return _NO_CONTENT
    cache = _CACHE_HEADER[batch_cache_status(caches)]
    headers = [("X-Lasso-Request-Id", meta.request_id), *cache]
    return Response(200, b"[" + b",".join(parts) + b"]", headers=headers)


def _refuse(req: HttpRequest, route: Rejection, max_batch: int) -> Response:
    """Refuse a request for its route, with the rejection's HTTP status: a request object
    gets the error with its own id; a batch (of at most ``max_batch`` items) an array
    with the error once per item, each with that item's id (``null`` for an item that is
    not an object or has an id of the wrong type), notifications left out as JSON-RPC
    §6 says (a batch of notifications only: an empty body); anything else one error
    with ``id: null``."""
    status, code, message, data = route.status, route.code, route.message, route.data
    try:
        doc = loads_request(req.body)
    except ValueError:
        doc = None
    if type(doc) is list and 0 < len(doc) <= max_batch:
        ids = RequestIds(req.body, doc)
        parts = [
            error_body(code, message, _id_of(item, ids, i), data)
            for i, item in enumerate(doc)
            if not _is_notification(item)
        ]
        return Response(status, b"[" + b",".join(parts) + b"]" if parts else b"")
    id_json = _id_of(doc, RequestIds(req.body), 0) if type(doc) is dict else b"null"
    return Response(status, error_body(code, message, id_json, data))


def _is_notification(doc: Any) -> bool:
    """A request object without ``id`` that is otherwise valid in shape (a method name,
    ``jsonrpc`` "2.0", ``params`` absent, an array or an object): JSON-RPC §6 answers
    nothing for it. Anything else without an ``id`` (``{}``) is an invalid request, which
    is answered."""
    if type(doc) is not dict or "id" in doc:
        return False
    method = doc.get("method")
    params = doc.get("params", [])
    return (
        type(method) is str
        and bool(method)
        and doc.get("jsonrpc", "2.0") == "2.0"
        and type(params) in (list, dict)
    )


def _id_of(doc: Any, ids: RequestIds, index: int) -> bytes:
    """The id of request object ``doc`` (item ``index`` of the body) as sent, or ``null``."""
    rid = doc.get("id") if type(doc) is dict else None
    if type(rid) in ID_TYPES:
        return ids.encode(rid, index)
    return b"null"


def _invalid(item: _Item, code: int, message: str, data: Any = None) -> _Item:
    """Make ``item`` an invalid request: answered (id or null) even without an id."""
    item.notification = False
    item.early = error_body(code, message, item.id_json, data)
    item.early_status = 400
    return item


def finish_item(out: Outcome, id_json: bytes) -> Body:
    """The client-facing bytes: upstream bytes with the client's id restored, or our error.

    A large answer (from :data:`~lasso.net.http_messages.LARGE_BODY`) comes back as
    :class:`~lasso.net.http_messages.Pieces` around the id: never copied, so the answer of
    a coalesced group stays as it is for the others.
    """
    body = out.body
    if body is not None:
        if len(body) >= LARGE_BODY:
            return splice_pieces(body, out.tid, id_json)
        return splice_id(body, out.tid, id_json)
    try:
        err = orjson.dumps(out.error)
    except orjson.JSONEncodeError:  # an upstream error object orjson cannot re-encode
        err = orjson.dumps(_plain_error(out.error))
    return b'{"jsonrpc":"2.0","error":%s,"id":%s}' % (err, id_json)


def _batch_body(parts: list[Body]) -> Body:
    """The JSON array of a batch's answers; pieces when one of them is (no join of a
    large answer)."""
    flat = [p for p in parts if not isinstance(p, Pieces)]
    if len(flat) == len(parts):
        return b"[" + b",".join(flat) + b"]"
    pieces: list[bytes | bytearray | memoryview] = [b"["]
    for i, part in enumerate(parts):
        if i:
            pieces.append(b",")
        if isinstance(part, Pieces):
            pieces += part.parts
        else:
            pieces.append(part)
    pieces.append(b"]")
    return Pieces(tuple(pieces))


def _plain_error(error: Any) -> dict[str, Any]:
    """``error`` without ``data``, its code and message checked (for odd upstream errors)."""
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return {
        "code": code if type(code) is int else -32603,
        "message": message if isinstance(message, str) else "Upstream error",
    }


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
        info["hedged"] = out.hedges > 0
        if out.hedges:
            info["hedge_winner"] = out.hedge_winner
        info["upstream_latency_ms"] = round(up, 3)
        info["lasso_overhead_ms"] = round(max(0.0, e2e - up), 3)
        if out.provider_id is not None:
            info["selected_provider"] = {"id": out.provider_id, "protocol": out.transport}
        if out.error is not None:
            info["error"] = _plain_error(out.error)
        if out.extra:  # a flow's own members (get_logs, broadcast)
            info.update(out.extra)
    return info


def _meta_headers(meta: _Meta, info: dict[str, Any]) -> list[tuple[str, str]]:
    headers = [("X-Lasso-Request-Id", meta.request_id)]
    encoded = base64.urlsafe_b64encode(orjson.dumps(info)).rstrip(b"=")
    if len(encoded) <= MAX_META_HEADER:
        headers.append(("X-Lasso-Meta", encoded.decode()))
    return headers
