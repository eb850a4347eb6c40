"""The request pipeline: candidates, admission, dispatch, classification, failover.

One call of :func:`execute` serves one JSON-RPC item. It asks the chain's router for an
ordered candidate list, then tries channels in order under the method's deadline
(reference §2.1, §2.5, §2.6):

* a success, or an upstream error that is the caller's fault (revert, invalid params),
  ends the request: the upstream bytes are passed back untouched;
* rate limits and capability errors (method missing, block range, pruned state) move on
  to the next provider and never count against the provider's breaker;
* provider failures (5xx, resets, bad JSON, timeouts) count against the breaker and move
  on only when the method is replay-safe; for anything else (``eth_sendRawTransaction``,
  filters, unknown methods) a failure after the bytes left is terminal, because we cannot
  know whether the provider acted on it. A failure before dispatch (connection refused)
  is always retried elsewhere.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from time import monotonic
from typing import Any

import orjson

from lasso.kernel.classify import (
    Bucket,
    Category,
    bucket_of,
    classify_http_status,
    classify_rpc_error,
    is_quota_body,
    parse_retry_after,
)
from lasso.kernel.methods import (
    KNOWN_METHODS,
    is_replay_safe,
    method_timeout_s,
    parse_block_ref,
)
from lasso.kernel.router import Channel
from lasso.net.errors import PoolTimeout, UpstreamConnectError, UpstreamError, UpstreamTimeout
from lasso.server.faults import answer_fault, fault_of
from lasso.server.runtime import ChainRuntime

__all__ = ["Outcome", "execute", "encode_upstream_request", "MIN_ATTEMPT_S"]

MIN_ATTEMPT_S = 0.025
FIRST_ATTEMPT_SHARE = 0.6
MAX_ADMISSIONS = 16

_PREFIX = os.urandom(3).hex().encode()
_counter = itertools.count(1)


def new_transport_id() -> bytes:
    """A private upstream id, quoted: unique per process, never seen in a result."""
    return b'"lasso-%s-%x"' % (_PREFIX, next(_counter))


def encode_upstream_request(tid: bytes, method_json: bytes, params: Any) -> bytes:
    return b'{"jsonrpc":"2.0","id":%s,"method":%s,"params":%s}' % (
        tid,
        method_json,
        orjson.dumps(params),
    )


class Outcome:
    """What one item's execution produced.

    Exactly one of ``body`` (upstream response bytes carrying ``tid`` as id) and
    ``error`` (a JSON-RPC error object built by Lasso) is set.
    """

    __slots__ = (
        "body",
        "tid",
        "error",
        "provider_id",
        "transport",
        "retries",
        "upstream_latency",
        "candidates",
        "status",
    )

    def __init__(self) -> None:
        self.body: bytes | None = None
        self.tid = b""
        self.error: dict[str, Any] | None = None
        self.provider_id: str | None = None
        self.transport = "http"
        self.retries = 0
        self.upstream_latency = 0.0
        self.candidates: list[Channel] = []
        self.status = "success"


def _retry_after_header(headers: dict[bytes, bytes]) -> float | None:
    raw = headers.get(b"retry-after")
    if raw is None:
        return None
    return parse_retry_after(raw, time.time())  # seconds or an HTTP date


def _error_retry_after(err: dict[str, Any]) -> float | None:
    data = err.get("data")
    if isinstance(data, dict):
        for key, scale in (("retry_after_ms", 0.001), ("retry_after", 1.0), ("retryAfter", 1.0)):
            value = data.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return float(value) * scale
    return None


class _Verdict:
    """The judgement of one upstream answer."""

    __slots__ = ("ok", "category", "error", "retry_after", "message", "id_ok", "result")

    def __init__(
        self,
        ok: bool,
        category: Category | None = None,
        error: dict[str, Any] | None = None,
        retry_after: float | None = None,
        message: str = "",
        id_ok: bool = False,
        result: Any = None,
    ) -> None:
        self.ok = ok
        self.result = result  # the parsed result, only when judge() was asked for it
        self.category = category
        self.error = error
        self.retry_after = retry_after
        self.message = message
        self.id_ok = id_ok


_OK = _Verdict(True)


def judge(
    status: int,
    body: bytes,
    headers: dict[bytes, bytes],
    tid: bytes,
    ch: Channel,
    want_result: bool = False,
) -> _Verdict:
    """Classify an upstream HTTP answer (reference §5.3).

    With ``want_result`` a success carries the parsed ``result`` (so that callers needing
    it, such as the height tracking of ``eth_blockNumber``, do not parse the body twice).
    """
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    rules = ch.provider.capabilities.error_rules
    if isinstance(doc, dict):
        err = doc.get("error")
        if status == 200 and err is None:
            if "result" in doc and orjson.dumps(doc.get("id")) == tid:
                return _Verdict(True, result=doc["result"]) if want_result else _OK
            return _Verdict(False, Category.PROTOCOL_ERROR, message="Invalid upstream response")
        if isinstance(err, dict) and isinstance(err.get("code"), int):
            code = err["code"]
            message = err.get("message")
            cat = classify_rpc_error(
                code, message if isinstance(message, str) else "", err.get("data"), rules
            )
            if status == 429 or (  # a 403 "forbidden: daily quota exceeded" is a quota
                status == 403
                and bucket_of(cat) is Bucket.PROVIDER_FAILURE
                and is_quota_body(status, body)
            ):
                cat = Category.RATE_LIMIT
            ra = _error_retry_after(err)
            if ra is None:
                ra = _retry_after_header(headers)
            id_ok = orjson.dumps(doc.get("id")) == tid
            return _Verdict(False, cat, err, ra, message if isinstance(message, str) else "", id_ok)
    if status != 200:
        cat = classify_http_status(status, body)
        return _Verdict(
            False,
            cat,
            retry_after=_retry_after_header(headers),
            message=f"Provider infrastructure error (HTTP {status})",
        )
    return _Verdict(False, Category.PROTOCOL_ERROR, message="Invalid upstream response")


_CLIENT_CODES = {
    Category.TIMEOUT: -32007,
    Category.NETWORK_ERROR: -32004,
    Category.RATE_LIMIT: -32005,
}


async def execute(
    rt: ChainRuntime,
    method: str,
    params: Any,
    strategy: str,
    provider_id: str | None,
    loop: asyncio.AbstractEventLoop,
    *,
    method_json: bytes | None = None,
) -> Outcome:
    """Run one JSON-RPC item through the chain's providers. Never raises for upstream faults."""
    out = Outcome()
    router = rt.router
    now = monotonic()
    budget = method_timeout_s(method)
    deadline = now + budget
    replay_safe = is_replay_safe(method)
    max_dispatches = 3 if replay_safe else 1
    mkey = method if method in KNOWN_METHODS else "other"
    is_block_number = method == "eth_blockNumber"

    shared = rt.shared
    if shared is not None:  # --workers N: take in what other workers learned
        shared.refresh(now)
    candidates = router.candidates(method, params, strategy, now, provider_id=provider_id)
    out.candidates = candidates
    if not candidates:
        out.error = _no_channels(rt, method, now)
        out.status = "error"
        return out

    tid = new_transport_id()
    out.tid = tid
    body = encode_upstream_request(
        tid, method_json if method_json is not None else orjson.dumps(method), params
    )
    dispatches = 0
    admissions = 0
    attempts = 0
    skipped_open = 0
    excluded: set[str] = set()
    last: _Verdict | None = None
    last_provider: str | None = None
    tried: list[str] = []

    for ch in candidates:
        pid = ch.provider.id
        if pid in excluded:
            continue
        if ch.transport == "http":
            pool, ws = rt.pools.get(pid), None
        else:  # a WS channel: its upstream connection (None until the registry has one)
            pool, ws = None, rt.ws.get(pid)
        if pool is None and ws is None:
            continue
        admissions += 1
        if admissions > MAX_ADMISSIONS:
            break
        now = monotonic()
        remaining = deadline - now
        if remaining < MIN_ATTEMPT_S:
            last = last or _Verdict(False, Category.TIMEOUT, message="Request deadline exhausted")
            break
        if dispatches >= max_dispatches:
            break
        if not router.admit(ch, now):
            skipped_open += 1
            continue
        if dispatches == 0 and replay_safe:
            timeout = min(remaining, max(MIN_ATTEMPT_S, FIRST_ATTEMPT_SHARE * budget))
        else:
            timeout = remaining
        attempts += 1
        tried.append(pid)
        t0 = monotonic()
        try:
            if ws is not None:
                resp = await ws.request_raw(body, tid, timeout)
            else:
                assert pool is not None
                resp = await pool.request(body, timeout, retry_stale=replay_safe)
        except UpstreamError as exc:
            t1 = monotonic()
            out.upstream_latency += t1 - t0
            cat = Category(exc.category)
            if isinstance(exc, PoolTimeout):
                msg = "Upstream connection pool exhausted"
            elif isinstance(exc, UpstreamTimeout):
                msg = "Request timeout"
            elif isinstance(exc, UpstreamConnectError):
                msg = "Upstream connection failed"
            else:
                msg = "Upstream connection lost"
            if exc.provider_fault and not isinstance(exc, PoolTimeout):
                tr = router.record_failure(ch, mkey, cat, t1 - t0, t1, fault=fault_of(exc))
                if tr is not None:
                    rt.events.transition(rt, ch, tr)
                if shared is not None:
                    shared.publish(ch, cat, t1)
            else:  # a local condition: release any half-open probe slot, count nothing
                router.record_neutral(ch, mkey, t1)
            last = _Verdict(False, cat, message=msg)
            last_provider = pid
            if exc.dispatched:
                dispatches += 1
                if not replay_safe:
                    out.error = _indeterminate(pid, msg)
                    break
            continue
        except asyncio.CancelledError:
            router.record_neutral(ch, mkey, monotonic())
            raise
        t1 = monotonic()
        lat = t1 - t0
        out.upstream_latency += lat
        dispatches += 1
        verdict = judge(resp.status, resp.body, resp.headers, tid, ch, is_block_number)
        if verdict.ok:
            tr = router.record_success(ch, mkey, lat, t1)
            if tr is not None:
                rt.events.transition(rt, ch, tr)
            if shared is not None:
                shared.publish(ch, None, t1)
            if is_block_number:  # a free height sample for the lag tracking
                height = parse_block_ref(verdict.result)
                if isinstance(height, int):
                    router.observe_height(pid, height, t1)
            out.body = resp.body
            out.provider_id = pid
            out.transport = ch.transport
            out.retries = attempts - 1
            return out
        cat = verdict.category or Category.UNKNOWN_ERROR
        bucket = bucket_of(cat)
        fault = answer_fault(resp.status, cat, verdict.message, verdict.error)
        tr = router.record_failure(ch, mkey, cat, lat, t1, verdict.retry_after, fault=fault)
        if tr is not None:
            rt.events.transition(rt, ch, tr)
        if shared is not None:
            shared.publish(ch, cat, t1)
        if bucket is Bucket.DETERMINISTIC:
            # The caller's fault: the provider's answer goes back unchanged (bytes when
            # they carry our id, else the error object re-encoded).
            out.status = "rpc_error"
            out.provider_id = pid
            out.transport = ch.transport
            out.retries = attempts - 1
            if verdict.error is None:
                out.error = {"code": -32000, "message": verdict.message or "Upstream error"}
                out.status = "error"
            elif verdict.id_ok:
                out.body = resp.body
            else:
                out.error = verdict.error
            return out
        last = verdict
        last_provider = pid
        if bucket is Bucket.QUOTA or bucket is Bucket.CAPABILITY:
            dispatches -= 1  # the provider refused; it did not act on the request
            if cat is Category.METHOD_NOT_FOUND:
                excluded.add(pid)
            continue
        if not replay_safe:
            out.error = _indeterminate(pid, verdict.message or "Upstream error")
            break

    out.retries = max(0, attempts - 1)
    out.status = "error"
    if out.error is not None:
        out.provider_id = last_provider
        return out
    if attempts == 0:
        out.error = _no_channels(rt, method, monotonic())
        return out
    out.provider_id = last_provider
    out.error = _exhausted(rt, last, last_provider, tried, monotonic())
    return out


def _indeterminate(provider: str, message: str) -> dict[str, Any]:
    return {
        "code": -32000,
        "message": "Upstream dispatch outcome is indeterminate",
        "data": {
            "provider": provider,
            "reason": message,
            "hint": "the request was sent and may have been executed; it is not retried",
        },
    }


def _no_channels(rt: ChainRuntime, method: str, now: float) -> dict[str, Any]:
    retry = rt.router.retry_after(now)
    if retry is not None:
        ms = max(1, int(retry * 1000))
        return {
            "code": -32000,
            "message": (
                f"No available providers for {method}: circuits open, retry after {ms / 1000:.1f}s"
            ),
            "data": {"retry_after_ms": ms},
        }
    return {"code": -32000, "message": f"No available providers for {method}"}


def _exhausted(
    rt: ChainRuntime, last: _Verdict | None, provider: str | None, tried: list[str], now: float
) -> dict[str, Any]:
    data: dict[str, Any] = {"providers_tried": tried}
    if last is not None:
        cat = last.category or Category.UNKNOWN_ERROR
        if last.error is not None:
            code = last.error.get("code")
            message = last.error.get("message", "")
        else:
            code = _CLIENT_CODES.get(cat, -32002)
            message = last.message
        data["last_error"] = {
            "provider": provider,
            "code": code,
            "message": message,
            "category": str(cat),
        }
        if last.retry_after is not None and cat is Category.RATE_LIMIT:
            data["retry_after_ms"] = int(last.retry_after * 1000)
    retry = rt.router.retry_after(now)
    if retry is not None and "retry_after_ms" not in data:
        data["retry_after_ms"] = max(1, int(retry * 1000))
    reason = data.get("last_error", {}).get("message") or "no provider answered"
    return {"code": -32000, "message": f"All providers failed: {reason}", "data": data}
