"""Endpoint discovery for ``lasso probe``: what one JSON-RPC provider supports.

:func:`probe_endpoint` talks only to the given endpoint (over aiohttp and the
``websockets`` client; convenience matters more than speed here) and returns a JSON-ready
report; :func:`recommendation` turns it into profile settings. The checks:

* **connectivity**: ``eth_chainId`` (against an expected chain id), ``eth_blockNumber``,
  ``web3_clientVersion``;
* **method support** for the registry categories of a level (critical: core; standard:
  + state, network, eip1559, mempool; full: + eip4844, filters, batch, node_admin, debug,
  trace, txpool), each call with minimal valid parameters. A result, or an error that
  blames the parameters (invalid params, revert, unknown block), means *supported*;
  ``method not found``/``not supported`` means *unsupported* (:func:`verdict`);
* **``eth_getLogs`` block-range limit**: a binary search over 100, 500, 1k, 2k, 5k, 10k and
  50k blocks ending at the head (with an address matching nothing, so results stay
  empty; 1, 5, 10 and 50 when even 100 is refused). Only range-type errors count as a
  limit: result-size errors mean the range was accepted, timeouts say nothing. A number in
  the error message within the bracket refines the limit;
* **batches**: sizes 2, 10, 50 and 100, until one fails;
* **archive access**: ``eth_getBalance`` at block 100 (when the chain is long enough);
* **WebSocket**: connect, a unary call, and ``eth_subscribe`` to ``newHeads``, ``logs``
  and ``newPendingTransactions``, waiting a bounded time for a first event of each.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from typing import Any

import aiohttp
import orjson

from lasso.kernel.classify import Bucket, Category, bucket_of, classify_rpc_error
from lasso.kernel.methods import METHODS_BY_CATEGORY
from lasso.probes.health import parse_quantity

__all__ = [
    "ARCHIVE_BLOCK",
    "BATCH_SIZES",
    "LEVELS",
    "LOG_RANGES",
    "SUBSCRIPTIONS",
    "probe_endpoint",
    "recommendation",
    "verdict",
]

LEVELS: dict[str, tuple[str, ...]] = {
    "critical": ("core",),
    "standard": ("core", "state", "network", "eip1559", "mempool"),
    "full": (
        "core", "state", "network", "eip1559", "mempool", "eip4844", "filters", "batch",
        "node_admin", "debug", "trace", "txpool",
    ),
}  # fmt: skip
LOG_RANGES = (100, 500, 1_000, 2_000, 5_000, 10_000, 50_000)
SMALL_LOG_RANGES = (1, 5, 10, 50)
BATCH_SIZES = (2, 10, 50, 100)
ARCHIVE_BLOCK = 100
SUBSCRIPTIONS = ("newHeads", "logs", "newPendingTransactions")
ZERO_ADDR = "0x" + "00" * 20
ZERO_HASH = "0x" + "00" * 32
_TX = {"from": ZERO_ADDR, "to": ZERO_ADDR, "data": "0x"}

# Minimal valid params per method; "H" is replaced by the head as hex.
_PARAMS: dict[str, list[Any]] = {
    "eth_getBalance": [ZERO_ADDR, "latest"],
    "eth_getCode": [ZERO_ADDR, "latest"],
    "eth_getTransactionByHash": [ZERO_HASH],
    "eth_getTransactionReceipt": [ZERO_HASH],
    "eth_getBlockByNumber": ["latest", False],
    "eth_getBlockByHash": [ZERO_HASH, False],
    "eth_getBlockTransactionCountByHash": [ZERO_HASH],
    "eth_getBlockTransactionCountByNumber": ["latest"],
    "eth_getUncleCountByBlockHash": [ZERO_HASH],
    "eth_getUncleCountByBlockNumber": ["latest"],
    "eth_getUncleByBlockHashAndIndex": [ZERO_HASH, "0x0"],
    "eth_getUncleByBlockNumberAndIndex": ["latest", "0x0"],
    "eth_getTransactionByBlockHashAndIndex": [ZERO_HASH, "0x0"],
    "eth_getTransactionByBlockNumberAndIndex": ["latest", "0x0"],
    "eth_call": [_TX, "latest"],
    "eth_estimateGas": [_TX],
    "eth_getStorageAt": [ZERO_ADDR, "0x0", "latest"],
    "eth_getTransactionCount": [ZERO_ADDR, "latest"],
    "eth_createAccessList": [_TX, "latest"],
    "eth_getProof": [ZERO_ADDR, [], "latest"],
    "web3_sha3": ["0x68656c6c6f"],
    "eth_feeHistory": ["0x1", "latest", []],
    "eth_sendRawTransaction": ["0x00"],  # undecodable: rejected before any broadcast
    "eth_getLogs": [{"fromBlock": "H", "toBlock": "H", "address": ZERO_ADDR}],
    "eth_newFilter": [{"fromBlock": "latest", "address": ZERO_ADDR}],
    "eth_getFilterChanges": ["0x0"],
    "eth_getFilterLogs": ["0x0"],
    "eth_uninstallFilter": ["0x0"],
    "eth_getBlockReceipts": ["H"],
    "debug_traceTransaction": [ZERO_HASH],
    "debug_traceBlockByNumber": ["H", {"tracer": "callTracer"}],
    "debug_traceBlockByHash": [ZERO_HASH, {"tracer": "callTracer"}],
    "debug_traceCall": [_TX, "latest", {"tracer": "callTracer"}],
    "debug_storageRangeAt": [ZERO_HASH, 0, ZERO_ADDR, "0x0", 1],
    "debug_getModifiedAccountsByNumber": ["H"],
    "debug_getModifiedAccountsByHash": [ZERO_HASH],
    "trace_block": ["H"],
    "trace_transaction": [ZERO_HASH],
    "trace_call": [_TX, ["trace"], "latest"],
    "trace_callMany": [[[_TX, ["trace"]]], "latest"],
    "trace_rawTransaction": ["0x00", ["trace"]],
    "trace_replayBlockTransactions": ["H", ["trace"]],
    "trace_replayTransaction": [ZERO_HASH, ["trace"]],
    "trace_filter": [{"fromBlock": "H", "toBlock": "H", "toAddress": [ZERO_ADDR]}],
    "trace_get": [ZERO_HASH, ["0x0"]],
}
_SKIP = frozenset({"eth_subscribe", "eth_unsubscribe"})  # WebSocket only: see --ws

_RESULT_SIZE = re.compile(
    r"query returned more than|response size|too many (?:results|logs)|result set too large"
    r"|results? limit|logs? limit",
    re.IGNORECASE,
)
_RANGE = re.compile(
    r"range|too many blocks|block limit|blocks? (?:is|are) limited|is limited to", re.I
)


class _Http:
    """One JSON-RPC endpoint over aiohttp: every call returns ``(status, doc, ms, error)``."""

    def __init__(self, session: aiohttp.ClientSession, url: str, timeout: float) -> None:
        self.session, self.url, self.timeout = session, url, timeout
        self._id = 0

    async def post(self, payload: Any) -> tuple[int | None, Any, float, str | None]:
        t0 = time.perf_counter()
        try:
            async with self.session.post(
                self.url,
                data=orjson.dumps(payload),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError:
            return None, None, (time.perf_counter() - t0) * 1000, "timeout"
        except aiohttp.ClientError as exc:
            return None, None, (time.perf_counter() - t0) * 1000, describe_client_error(exc)
        ms = (time.perf_counter() - t0) * 1000
        try:
            return status, orjson.loads(raw), ms, None
        except orjson.JSONDecodeError:
            return status, None, ms, f"HTTP {status}: not JSON ({raw[:80]!r})"

    async def call(
        self, method: str, params: list[Any]
    ) -> tuple[int | None, Any, float, str | None]:
        self._id += 1
        return await self.post(
            {"jsonrpc": "2.0", "id": self._id, "method": method, "params": params}
        )


def describe_client_error(exc: aiohttp.ClientError) -> str:
    """An aiohttp failure in plain words: what failed (resolution, refusal, TLS...) and
    where, without aiohttp's ``ssl:default``-style internals."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"{exc.host}:{exc.port}"
        os_error = exc.os_error
        if isinstance(exc, aiohttp.ClientConnectorCertificateError):
            return f"TLS certificate of {where} rejected: {exc.certificate_error}"
        if isinstance(exc, aiohttp.ClientConnectorSSLError):
            return f"TLS handshake with {where} failed: {os_error}"
        if isinstance(exc, aiohttp.ClientConnectorDNSError) or isinstance(
            os_error, socket.gaierror
        ):
            return f"cannot resolve {exc.host}: {os_error.strerror or os_error}"
        if isinstance(os_error, ConnectionRefusedError) or "[Errno 111]" in str(os_error):
            return f"connection refused by {where}"
        return f"cannot connect to {where}: {os_error.strerror or os_error}"
    return f"{type(exc).__name__}: {exc}"


def _error_of(doc: Any) -> tuple[int | None, str, Any]:
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return None, "", None
    code = err.get("code")
    message = err.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        message if isinstance(message, str) else "",
        err.get("data"),
    )


def verdict(status: int | None, doc: Any, error: str | None) -> tuple[str, int | None, str]:
    """``(status, code, detail)`` of one method call: ``supported``, ``unsupported``,
    ``rate_limited``, ``unauthorized``, ``timeout`` or ``error``."""
    if error == "timeout":
        return "timeout", None, "no answer in time"
    if status in (401, 402, 403):
        return "unauthorized", None, f"HTTP {status}"
    if status == 429:
        return "rate_limited", None, "HTTP 429"
    if isinstance(doc, dict) and "result" in doc and "error" not in doc:
        return "supported", None, ""
    code, message, data = _error_of(doc)
    if code is None:
        return "error", None, error or f"HTTP {status}: not a JSON-RPC answer"
    cat = classify_rpc_error(code, message, data)
    detail = message[:100]
    if cat in (Category.METHOD_NOT_FOUND, Category.METHOD_ERROR, Category.CAPABILITY_VIOLATION):
        return "unsupported", code, detail
    if cat is Category.RATE_LIMIT:
        return "rate_limited", code, detail
    if cat is Category.AUTH_ERROR:
        return "unauthorized", code, detail
    if bucket_of(cat) is Bucket.PROVIDER_FAILURE:
        return "error", code, detail
    return "supported", code, detail  # the method ran and blamed our minimal params


def _fill(params: Any, head_hex: str) -> Any:
    if params == "H":
        return head_hex
    if isinstance(params, list):
        return [_fill(p, head_hex) for p in params]
    if isinstance(params, dict):
        return {k: _fill(v, head_hex) for k, v in params.items()}
    return params


async def probe_endpoint(
    url: str,
    *,
    ws_url: str | None = None,
    chain_id: int | None = None,
    timeout: float = 10.0,
    level: str = "standard",
    subscription_wait: float = 15.0,
    concurrency: int = 5,
) -> dict[str, Any]:
    """Probe one endpoint and return the JSON-ready report (see the module docstring)."""
    report: dict[str, Any] = {"url": url, "ws_url": ws_url, "level": level, "reachable": False}
    async with aiohttp.ClientSession() as session:
        http = _Http(session, url, timeout)
        status, doc, ms, error = await http.call("eth_chainId", [])
        report["latency_ms"] = round(ms, 2)
        got = parse_quantity(doc.get("result")) if isinstance(doc, dict) else None
        if got is None:
            report["error"] = error or verdict(status, doc, error)[2] or f"HTTP {status}"
            return report
        report["reachable"] = True
        report["chain_id"] = got
        report["chain_id_ok"] = None if chain_id is None else report["chain_id"] == chain_id
        _, doc, _, _ = await http.call("eth_blockNumber", [])
        report["head"] = parse_quantity(doc.get("result")) if isinstance(doc, dict) else None
        _, doc, _, _ = await http.call("web3_clientVersion", [])
        version = doc.get("result") if isinstance(doc, dict) else None
        report["client_version"] = version if isinstance(version, str) else None
        head_n = report["head"] or 0
        report["methods"] = await _probe_methods(http, level, hex(head_n), concurrency)
        report["logs"] = await _probe_log_range(http, head_n)
        report["batch"] = await _probe_batch(http)
        report["archive"] = await _probe_archive(http, head_n)
    if ws_url:
        report["websocket"] = await _probe_ws(ws_url, timeout, subscription_wait)
    return report


async def _probe_methods(
    http: _Http, level: str, head_hex: str, concurrency: int
) -> list[dict[str, Any]]:
    sem = asyncio.Semaphore(concurrency)

    async def one(category: str, method: str) -> dict[str, Any]:
        async with sem:
            status, doc, ms, error = await http.call(
                method, _fill(_PARAMS.get(method, []), head_hex)
            )
        state, code, detail = verdict(status, doc, error)
        return {"method": method, "category": category, "status": state, "code": code,
                "detail": detail, "ms": round(ms, 2)}  # fmt: skip

    jobs = [
        one(cat, m) for cat in LEVELS[level] for m in METHODS_BY_CATEGORY[cat] if m not in _SKIP
    ]
    return list(await asyncio.gather(*jobs))


async def _probe_log_range(http: _Http, head: int) -> dict[str, Any]:
    tested: list[dict[str, Any]] = []

    async def accepts(span: int) -> bool | None:
        if span > head + 1:
            return None
        spec = {"fromBlock": hex(head - span + 1), "toBlock": hex(head), "address": ZERO_ADDR}
        status, doc, ms, error = await http.call("eth_getLogs", [spec])
        state, code, detail = verdict(status, doc, error)
        if state == "supported" or (code is not None and _RESULT_SIZE.search(detail)):
            ok: bool | None = True
        elif code is not None and _RANGE.search(detail):
            ok = False
        else:
            ok = None  # a timeout or another error says nothing about the range
        tested.append(
            {"range": span, "accepted": ok, "detail": detail or state, "ms": round(ms, 2)}
        )
        return ok

    async def bisect(ranges: tuple[int, ...]) -> tuple[int, int]:
        lo, hi = -1, len(ranges)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if await accepts(ranges[mid]):
                lo = mid
            else:
                hi = mid
        return lo, hi

    lo, hi = await bisect(LOG_RANGES)
    ranges: tuple[int, ...] = LOG_RANGES
    if lo < 0 and tested and tested[-1]["accepted"] is False:
        ranges = SMALL_LOG_RANGES + LOG_RANGES[:1]
        lo, hi = await bisect(ranges)
    out: dict[str, Any] = {
        "tested": sorted(tested, key=lambda t: t["range"]),
        "max_block_range": None,
    }
    last_fail = (
        next((t for t in tested if t["range"] == ranges[hi]), None) if hi < len(ranges) else None
    )
    if last_fail is None:
        out["verdict"] = f"no range limit up to {ranges[lo]} blocks" if lo >= 0 else "not tested"
    elif last_fail["accepted"] is None:
        out["verdict"] = (
            f"accepts {ranges[lo] if lo >= 0 else 0}; {ranges[hi]}: {last_fail['detail']}"
        )
    else:
        low = ranges[lo] if lo >= 0 else 0
        found = [
            int(n) for n in re.findall(r"\d+", last_fail["detail"]) if low <= int(n) < ranges[hi]
        ]
        out["max_block_range"] = max(found) if found else max(low, 1)
        out["verdict"] = f"limited: between {low} and {ranges[hi]} blocks"
    return out


async def _probe_batch(http: _Http) -> dict[str, Any]:
    tested: list[dict[str, Any]] = []
    best = 0
    for size in BATCH_SIZES:
        batch = [
            {"jsonrpc": "2.0", "id": i, "method": "eth_chainId", "params": []} for i in range(size)
        ]
        status, doc, _ms, error = await http.post(batch)
        ok = (
            isinstance(doc, list)
            and len(doc) == size
            and all(isinstance(d, dict) and "result" in d for d in doc)
        )
        detail = "" if ok else (error or verdict(status, doc, error)[2] or f"HTTP {status}")
        tested.append({"size": size, "ok": ok, "detail": detail})
        if not ok:
            break
        best = size
    return {"supported": best > 0, "max_size": best or None, "tested": tested}


async def _probe_archive(http: _Http, head: int) -> dict[str, Any]:
    if head < ARCHIVE_BLOCK + 1024:
        return {"archival": None, "block": ARCHIVE_BLOCK, "detail": "chain too short to tell"}
    status, doc, _ms, error = await http.call("eth_getBalance", [ZERO_ADDR, hex(ARCHIVE_BLOCK)])
    if isinstance(doc, dict) and "result" in doc:
        return {"archival": True, "block": ARCHIVE_BLOCK, "detail": ""}
    state, code, detail = verdict(status, doc, error)
    cat = classify_rpc_error(code, detail) if code is not None else None
    pruned = (
        Category.REQUIRES_ARCHIVAL,
        Category.CAPABILITY_VIOLATION,
        Category.BLOCK_NOT_AVAILABLE,
    )
    archival = False if cat in pruned else None
    return {"archival": archival, "block": ARCHIVE_BLOCK, "detail": detail or state}


async def _probe_ws(ws_url: str, timeout: float, wait: float) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    out: dict[str, Any] = {"url": ws_url, "connected": False, "subscriptions": {}}
    t0 = time.perf_counter()
    try:
        async with connect(ws_url, open_timeout=timeout, max_size=16 * 2**20) as ws:
            out["connected"] = True
            out["connect_ms"] = round((time.perf_counter() - t0) * 1000, 2)
            await ws.send(
                orjson.dumps(
                    {"jsonrpc": "2.0", "id": 0, "method": "eth_chainId", "params": []}
                ).decode()
            )
            subs: dict[str, dict[str, Any]] = {
                k: {"status": "timeout", "detail": ""} for k in SUBSCRIPTIONS
            }
            for i, kind in enumerate(SUBSCRIPTIONS, 1):
                params: list[Any] = [kind, {}] if kind == "logs" else [kind]
                await ws.send(
                    orjson.dumps(
                        {"jsonrpc": "2.0", "id": i, "method": "eth_subscribe", "params": params}
                    ).decode()
                )
            by_sub: dict[str, str] = {}
            t1 = time.perf_counter()
            deadline = t1 + max(timeout, wait)
            pending = set(SUBSCRIPTIONS)
            while pending and time.perf_counter() < deadline:
                try:
                    raw = await asyncio.wait_for(ws.recv(), deadline - time.perf_counter())
                except TimeoutError:
                    break
                msg = orjson.loads(raw)
                if not isinstance(msg, dict):
                    continue
                if msg.get("id") == 0:
                    out["unary"] = "result" in msg
                elif isinstance(msg.get("id"), int) and 1 <= msg["id"] <= len(SUBSCRIPTIONS):
                    kind = SUBSCRIPTIONS[msg["id"] - 1]
                    if isinstance(msg.get("result"), str):
                        by_sub[msg["result"]] = kind
                        subs[kind] = {"status": "subscribed", "detail": "no event yet"}
                        deadline = min(deadline, time.perf_counter() + wait)
                    else:
                        subs[kind] = {"status": "unsupported", "detail": _error_of(msg)[1][:100]}
                        pending.discard(kind)
                elif msg.get("method") == "eth_subscription":
                    note = msg.get("params")
                    sid = note.get("subscription") if isinstance(note, dict) else None
                    kind_of = by_sub.get(sid) if isinstance(sid, str) else None
                    if kind_of is not None and kind_of in pending:
                        ms = round((time.perf_counter() - t1) * 1000, 1)
                        subs[kind_of] = {
                            "status": "supported",
                            "detail": f"first event after {ms} ms",
                        }
                        pending.discard(kind_of)
            out["subscriptions"] = subs
    except (OSError, TimeoutError, orjson.JSONDecodeError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # websockets' handshake and protocol errors
        out["error"] = f"{type(exc).__name__}: {exc}"
    return out


def recommendation(report: dict[str, Any]) -> dict[str, Any]:
    """The capability settings the report suggests (the snippet's content)."""
    rec: dict[str, Any] = {}
    methods = report.get("methods") or []
    by_cat: dict[str, list[dict[str, Any]]] = {}
    for row in methods:
        by_cat.setdefault(row["category"], []).append(row)
    categories = sorted(
        c for c, rows in by_cat.items() if rows and all(r["status"] == "unsupported" for r in rows)
    )
    unsupported = sorted(
        r["method"]
        for r in methods
        if r["status"] == "unsupported" and r["category"] not in categories
    )
    if categories:
        rec["unsupported_categories"] = categories
    if unsupported:
        rec["unsupported_methods"] = unsupported
    mbr = (report.get("logs") or {}).get("max_block_range")
    if mbr:
        rec["max_block_range"] = mbr
    if (report.get("archive") or {}).get("archival") is False:
        rec["archival"] = False
    ws = report.get("websocket")
    if ws and ws.get("connected"):
        rec["ws_url"] = ws["url"]
        if ws["subscriptions"].get("newHeads", {}).get("status") == "unsupported":
            rec["subscribe_new_heads"] = False
    return rec
