"""Backfill: fetching what a stream missed over HTTP, after a gap or a failover.

``Backfill`` decisions run over the ordinary pipeline (:func:`lasso.server.pipeline.execute`,
strategy ``fastest`` pinned to one provider at a time, the lost one avoided):
``eth_blockNumber`` for an open range, then ``eth_getBlockByNumber(n, false)`` per block
(:data:`BACKFILL_CONCURRENCY` at a time) or one ``eth_getLogs`` with the stream's filter;
all under the chain's ``websocket.failover.backfill_timeout_ms``, at most
``max_backfill_blocks`` blocks (the most recent ones). The answer goes back to the kernel
as ``BackfillDone``, or ``BackfillFailed`` for it to decide what next.
"""

from __future__ import annotations

import asyncio
import logging
from time import monotonic
from typing import TYPE_CHECKING, Any

import orjson

from lasso.kernel.subscriptions import (
    Backfill,
    BackfillDone,
    BackfillFailed,
    Fact,
    parse_header,
    parse_log,
)
from lasso.server.pipeline import execute

if TYPE_CHECKING:
    from lasso.server.runtime import ChainRuntime
    from lasso.server.subscriptions.stream import Stream

__all__ = ["BACKFILL_CONCURRENCY", "BackfillError", "backfill"]

log = logging.getLogger("lasso.subscriptions")

BACKFILL_CONCURRENCY = 8
"""Blocks fetched at once by one newHeads backfill."""


class BackfillError(Exception):
    """No provider answered a backfill call usefully."""


async def backfill(stream: Stream, bf: Backfill) -> None:
    """Carry out ``bf`` for ``stream`` and feed the kernel the outcome (never raises)."""
    rt = stream.rt()
    fact: Fact
    try:
        async with asyncio.timeout(rt.config.backfill_timeout_ms / 1000):
            fact = await _fetch(stream, rt, bf)
    except Exception as exc:  # timeout, no provider, garbage: the kernel decides what next
        log.warning(
            "backfill failed",
            extra={
                "event": "subscription.backfill_failed",
                "chain": stream.chain,
                "kind": stream.kind,
                "from_block": bf.from_block,
                "to_block": bf.to_block,
                "error": str(exc) or type(exc).__name__,
            },
        )
        fact = BackfillFailed(request_id=bf.request_id)
    stream.feed(fact)


async def _fetch(stream: Stream, rt: ChainRuntime, bf: Backfill) -> Fact:
    exclude = set(bf.exclude)
    hi = bf.to_block
    if hi is None:
        head = await _call(stream, rt, "eth_blockNumber", [], exclude)
        if not isinstance(head, str):
            raise BackfillError("eth_blockNumber returned no number")
        hi = int(head, 16)
    lo = bf.from_block
    cap = rt.config.max_backfill_blocks
    if hi - lo + 1 > cap:
        lo = hi - cap + 1  # the most recent blocks; the kernel reports the skipped ones
    if hi < lo:
        return BackfillDone(request_id=bf.request_id, from_block=lo, to_block=hi)
    if stream.kind == "logs":
        flt = {**stream.key.log_filter(), "fromBlock": hex(lo), "toBlock": hex(hi)}
        logs = await _call(stream, rt, "eth_getLogs", [flt], exclude)
        if not isinstance(logs, list):
            raise BackfillError("eth_getLogs returned no list")
        entries = tuple(e for e in map(parse_log, logs) if e is not None)
        return BackfillDone(request_id=bf.request_id, from_block=lo, to_block=hi, logs=entries)
    gate = asyncio.Semaphore(BACKFILL_CONCURRENCY)

    async def block(n: int) -> Any:
        async with gate:
            try:
                return await _call(stream, rt, "eth_getBlockByNumber", [hex(n), False], exclude)
            except BackfillError:
                return None  # a missing block: the kernel retries or skips it

    blocks = await asyncio.gather(*(block(n) for n in range(lo, hi + 1)))
    headers = tuple(h for h in map(parse_header, blocks) if h is not None)
    if not headers:
        raise BackfillError(f"no block of {lo}..{hi} could be fetched")
    return BackfillDone(request_id=bf.request_id, from_block=lo, to_block=hi, headers=headers)


async def _call(
    stream: Stream, rt: ChainRuntime, method: str, params: list[Any], avoid: set[str]
) -> Any:
    """One backfill call: providers by ``fastest``, one at a time, ``avoid`` last.

    A ``null`` block (the provider has not seen it yet) moves on to the next provider.

    Raises:
        BackfillError: no provider (of up to three tried) answered with a result.
    """
    loop = asyncio.get_running_loop()
    override = stream.override
    tried: set[str] = set()
    last = "no provider"
    for _ in range(3):
        now = monotonic()
        chans = rt.router.candidates(
            method, params, "fastest", now, provider_id=override, exclude=tried | avoid
        )
        if not chans:
            chans = rt.router.candidates(
                method, params, "fastest", now, provider_id=override, exclude=tried
            )
        if not chans:
            break
        pid = chans[0].provider_id
        tried.add(pid)
        out = await execute(rt, method, params, "fastest", pid, loop)
        if out.body is None:
            last = str((out.error or {}).get("message"))
            continue
        doc = orjson.loads(out.body)
        result = doc.get("result") if isinstance(doc, dict) else None
        if result is None:
            last = f"{pid}: no result"
            continue
        return result
    raise BackfillError(f"{method}: {last}")
