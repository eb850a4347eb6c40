"""``eth_getLogs`` through the driver: tags resolved, split by the providers' limits, merged
in block order, failing whole (CONTRACT §8).

The flow of :func:`lasso.server.pipeline.execute` for ``eth_getLogs``. The decisions are
the kernel's (:mod:`lasso.kernel.getlogs`); this module carries them out, every request
(and every chunk) through the attempt planner like any read:

1. The candidates the route allows (its strategy or provider override; open circuits left
   out) give the chunk size: the largest ``eth_getLogs`` range limit among those that have
   the range's last block (step 3; the configured ``limits.max_block_range`` or one
   learned from the provider's errors); no proactive split when any of them has no limit.
2. :func:`~lasso.kernel.getlogs.plan_get_logs` resolves ``latest``/``earliest`` (and
   ``safe``/``finalized`` when known) against the served head, refuses a range wider than
   ``routing.get_logs.max_range`` (``-32602`` with ``data.max_range``), and passes a
   ``blockHash`` filter or a range that fits as one request.
3. Only providers known to have the range's last block are used (a node behind
   ``toBlock`` silently answers a short range); the chunk size comes from their limits.
   When none of the route's providers is known to have it (Lasso's heights lag the
   client's knowledge, or the route pins a provider behind it), each is asked its height
   first (``eth_blockNumber``). If another provider has the block and none of these does,
   the request fails (``-32000``, ``data.behind``) rather than answer part of the range.
4. A request that fits runs as one; if the providers reject it as too large (range or
   result size), it is split reactively from there.
5. Chunks run with at most ``routing.get_logs.max_parallel`` in flight for the request and
   :data:`~lasso.server.limits.NODE_LOG_CHUNKS` for the node, lowest blocks first; each goes
   to providers known to have its last block. A chunk rejected as too large is split
   again (to the size the error names, else in halves) and the provider's limit is learned.
   The answer is the chunks' logs in block order; if a chunk fails, the request fails with
   its error (the other chunks are cancelled): never a partial answer.

``include_meta`` carries ``get_logs``: the resolved range, the number of chunks sent and the
providers that answered them.
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Any

import orjson

from lasso.kernel.getlogs import (
    Chunk,
    LogsSplit,
    PlanKind,
    behind_error,
    chunk_params,
    chunk_size_for,
    learned_limit,
    plan_get_logs,
)
from lasso.kernel.logs_limits import LogsLimit, LogsLimitKind, logs_limit
from lasso.server.exchange import Executor, Outcome
from lasso.server.runtime import ChainRuntime

__all__ = ["get_logs"]

_NOT_LOGS = {
    "code": -32000,
    "message": "eth_getLogs: a provider answered something other than logs",
}


async def get_logs(
    rt: ChainRuntime,
    method: str,
    params: Any,
    strategy: str,
    provider_id: str | None,
    run: Executor,
) -> Outcome:
    """Run one ``eth_getLogs`` (see the module docstring)."""
    router = rt.router
    now = monotonic()
    # Every provider the route allows, whatever the range (the limit filter comes per
    # chunk): the chunk size is chosen among those that have the range's last block.
    pool = router.candidates(method, None, strategy, now, provider_id=provider_id)
    settings = rt.config.get_logs
    consensus = router.state.consensus(now)
    plan = plan_get_logs(
        params, router.head, consensus, chunk_size=None, max_range=settings.max_range
    )
    lo, hi = plan.lo, plan.hi
    able = list(dict.fromkeys(ch.provider_id for ch in pool))
    if plan.kind is PlanKind.PASS and lo is not None and hi is not None and lo <= hi:
        able = await _able(rt, able, hi, strategy, run)
        if not able:
            out = Outcome(pool)
            out.fail(behind_error(hi))
            return out
        size = chunk_size_for([router.logs_range_limit(p) for p in able])
        if size is not None and hi - lo + 1 > size:
            plan = plan_get_logs(
                params, router.head, consensus, chunk_size=size, max_range=settings.max_range
            )
    if plan.kind is PlanKind.REJECT:
        out = Outcome(pool)
        assert plan.error is not None
        out.fail(plan.error, "rpc_error")
        return out
    if plan.kind is PlanKind.PASS:
        out = await run(rt, method, plan.params, strategy, provider_id)
        if out.status == "success" or lo is None or hi is None or lo > hi:
            return out
        limit = _too_large(out)
        if limit is None:
            return out
        whole = Chunk(lo, hi)
        split = LogsSplit((whole,), max_parallel=settings.max_parallel)
        split.next_chunks()
        limit = _learn(rt, out, limit, whole, able)
        if not split.too_large(whole, limit):
            rt.consistency.count("chunks", "failed")
            return _failed(out, split)
        rt.consistency.count("chunks", "resplit")
    else:
        split = LogsSplit(plan.chunks, max_parallel=settings.max_parallel)
    assert lo is not None and hi is not None
    return await _run_split(
        rt, split, plan.params, strategy, provider_id, run, pool, able, (lo, hi)
    )


async def _run_split(
    rt: ChainRuntime,
    split: LogsSplit,
    template: Any,
    strategy: str,
    provider_id: str | None,
    run: Executor,
    pool: list[Any],
    able: list[str],
    span: tuple[int, int],
) -> Outcome:
    """Run a split request's chunks to the end: the merged answer or the first failure;
    ``able``: the providers that have the range, ``span``: the range."""
    state = rt.consistency
    state.count("splits")
    slots = state.logs_slots
    loop = asyncio.get_running_loop()
    running: dict[asyncio.Task[Outcome], Chunk] = {}
    failure: Outcome | None = None
    providers: dict[str, None] = {}
    sent = retries = 0
    t0 = monotonic()

    async def chunk_call(chunk: Chunk) -> Outcome:
        async with slots:  # the node-wide bound
            return await run(
                rt, "eth_getLogs", chunk_params(template, chunk), strategy, provider_id
            )

    try:
        while split.error is None:
            for chunk in split.next_chunks():
                running[loop.create_task(chunk_call(chunk))] = chunk
                sent += 1
            if not running:
                break
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=running.__getitem__):
                chunk = running.pop(task)
                out = task.result()
                retries += out.retries
                if split.error is not None:
                    continue  # the request already failed: later answers are dropped
                if out.provider_id is not None:
                    providers[out.provider_id] = None
                if out.status == "success":
                    logs = _logs(out)
                    if logs is None:
                        split.failed(dict(_NOT_LOGS))
                    elif split.succeeded(chunk, logs):
                        state.count("chunks", "ok")
                        continue
                    state.count("chunks", "failed")
                    continue
                limit = _too_large(out)
                if limit is not None:
                    limit = _learn(rt, out, limit, chunk, able)
                    if split.too_large(chunk, limit):
                        state.count("chunks", "resplit")
                        continue
                else:
                    failure = out  # the chunk's own error (a provider's, or Lasso's)
                    split.failed(out.error or {"code": -32000, "message": "eth_getLogs failed"})
                state.count("chunks", "failed")
    finally:
        for task in running:  # failing whole (or the client left): stop the rest
            task.cancel()
        if running:
            await asyncio.wait(running)
    if split.error is not None:
        return failure if failure is not None else _failed(Outcome(pool), split)
    out = Outcome(pool)
    out.answer(orjson.dumps(split.result()))
    out.provider_id = next(iter(providers), None)
    out.retries = retries
    out.upstream_latency = monotonic() - t0
    out.extra = {
        "get_logs": {
            "from": hex(span[0]),
            "to": hex(span[1]),
            "chunks": sent,
            "providers": list(providers),
        }
    }
    return out


_MAX_HEIGHT_CHECKS = 3


async def _able(
    rt: ChainRuntime, providers: list[str], block: int, strategy: str, run: Executor
) -> list[str]:
    """The providers that may be asked for logs up to ``block``: those known to have it;
    when none is, each is asked its height first (at most three); all of them when nobody
    at all has it (a block from the future: they answer it as they do); none when only
    providers outside ``providers`` have it."""
    state = rt.router.state
    known = [p for p in providers if state.known_to_have(p, block)]
    if known or not providers:
        return known
    checks = [run(rt, "eth_blockNumber", [], strategy, p) for p in providers[:_MAX_HEIGHT_CHECKS]]
    await asyncio.gather(*checks)  # their answers feed the heights (and the head)
    known = [p for p in providers if state.known_to_have(p, block)]
    if known:
        return known
    top = state.max_height
    return providers if top is None or top < block else []


def _logs(out: Outcome) -> list[Any] | None:
    if type(out.result) is list:  # parsed once already, when the answer was judged
        return out.result
    if out.body is None:
        return None
    doc = out.doc  # as parsed to judge it: whole up to 4 KiB
    if type(doc) is not dict or type(doc.get("result")) is not list:
        try:
            doc = orjson.loads(out.body)
        except orjson.JSONDecodeError:
            return None
    result = doc.get("result") if type(doc) is dict else None
    return result if type(result) is list else None


def _too_large(out: Outcome) -> LogsLimit | None:
    """The limit a failed request's error reads as (range or result size), if any."""
    if out.status == "success":
        return None
    return logs_limit(out.error_message())


def _learn(
    rt: ChainRuntime, out: Outcome, limit: LogsLimit, chunk: Chunk, able: list[str]
) -> LogsLimit:
    """The providers rejected ``chunk`` as too large: remember the range limit of the one
    that said so last (each one that named its limit has been learned as it answered), and
    return the limit to re-split by: for a range limit, the largest one now known among
    the providers that have the range, so that the re-split chunks fit at least one."""
    router = rt.router
    pid = out.provider_id
    if pid is not None:
        current = router.logs_range_limit(pid)
        learned = learned_limit(limit, chunk.span, current)
        if learned is not None and learned != current:
            router.learn_logs_range_limit(pid, learned)
    if limit.kind is LogsLimitKind.RESULTS:
        return limit
    size = chunk_size_for([router.logs_range_limit(p) for p in able])
    if size is not None and size < chunk.span:
        return LogsLimit(LogsLimitKind.RANGE, size)
    return limit


def _failed(out: Outcome, split: LogsSplit) -> Outcome:
    assert split.error is not None
    out.fail(split.error)
    return out
