"""Idempotent ``eth_sendRawTransaction`` and broadcasts (CONTRACT §8).

The flow of :func:`lasso.server.pipeline.execute` for sends. The rules are the kernel's
(:mod:`lasso.kernel.transactions`); this module runs them:

1. The hash is computed here (:func:`~lasso.kernel.keccak.tx_hash`, keccak-256 of the raw
   bytes). Params that are not one ``0x`` hex string go to the provider as sent, which
   answers them.
2. The send runs through the planner under the idempotent-write policy
   (:data:`~lasso.kernel.attempts.IDEMPOTENT_WRITE`): a send that failed after dispatch is
   sent to another provider (a rebroadcast is harmless); if none answers, the error says
   the outcome is indeterminate.
3. Its answer is settled: a result is the answer; "already known" and kin answer the hash;
   "nonce too low" and kin answer the hash when the same provider has this very
   transaction (``eth_getTransactionByHash``, pinned to it), else the error; any other
   error is the client's answer.
4. ``routing.broadcast: N`` (N > 1, and no provider override) sends it to the first N
   providers the route's strategy orders (healthy ones: open circuits are left out) at
   once. The first acceptance answers; a rejection answers only when no leg accepts; if
   every leg failed, the remaining providers are tried as in step 2. Legs still out after
   the answer run on (held by the chain's state) and are counted when they end:
   ``lasso_broadcast_legs_total{outcome}`` (``accepted``, ``rejected``, ``failed``), and
   ``include_meta`` carries ``broadcast`` (the providers and the counts at answer time).
"""

from __future__ import annotations

import asyncio
from time import monotonic
from typing import Any

import orjson

from lasso.kernel.keccak import tx_hash
from lasso.kernel.transactions import Broadcast, Decision, Leg, send_error_kind, verify_by_hash
from lasso.server.exchange import Executor, Outcome
from lasso.server.runtime import ChainRuntime

__all__ = ["send_raw_transaction"]

_CHECK = "eth_getTransactionByHash"
_LEG_OUTCOME = {Leg.ACCEPTED: "accepted", Leg.REJECTED: "rejected", Leg.RETRY: "failed"}


async def send_raw_transaction(
    rt: ChainRuntime,
    method: str,
    params: Any,
    strategy: str,
    provider_id: str | None,
    run: Executor,
) -> Outcome:
    """Send a signed transaction (see the module docstring)."""
    raw = params[0] if isinstance(params, list) and len(params) == 1 else None
    tx = tx_hash(raw)
    if tx is None:
        return await run(rt, method, params, strategy, provider_id)
    if rt.config.broadcast > 1 and provider_id is None:
        return await _broadcast(rt, method, params, strategy, tx, run)
    out = await run(rt, method, params, strategy, provider_id)
    await _settle(rt, out, tx, strategy, run)
    return out


async def _settle(rt: ChainRuntime, out: Outcome, tx: str, strategy: str, run: Executor) -> Leg:
    """What one send's outcome means (step 3); ``out`` is made the hash answer when the
    transaction is accepted by any wording."""
    if out.status == "success":
        return Leg.ACCEPTED
    if out.status != "rpc_error":
        return Leg.RETRY
    kind = send_error_kind(out.error_message())
    if kind is Leg.VERIFY and out.provider_id is not None:
        check = await run(rt, _CHECK, [tx], strategy, out.provider_id)
        if check.status == "success" and check.body is not None:
            try:
                result = orjson.loads(check.body).get("result")
            except (orjson.JSONDecodeError, AttributeError):
                result = None
            if verify_by_hash(result, tx):
                kind = Leg.ACCEPTED
    if kind is Leg.ACCEPTED:
        out.answer(b'"%s"' % tx.encode())
        return Leg.ACCEPTED
    return Leg.REJECTED


async def _leg(
    rt: ChainRuntime,
    method: str,
    params: Any,
    strategy: str,
    tx: str,
    provider_id: str,
    run: Executor,
) -> tuple[Leg, Outcome]:
    """One broadcast leg, pinned to ``provider_id``; counted when it ends."""
    out = await run(rt, method, params, strategy, provider_id)
    leg = await _settle(rt, out, tx, strategy, run)
    rt.consistency.count("legs", _LEG_OUTCOME[leg])
    return leg, out


async def _broadcast(
    rt: ChainRuntime, method: str, params: Any, strategy: str, tx: str, run: Executor
) -> Outcome:
    candidates = rt.router.candidates(method, params, strategy, monotonic())
    providers = list(dict.fromkeys(ch.provider_id for ch in candidates))[: rt.config.broadcast]
    if len(providers) < 2:
        out = await run(rt, method, params, strategy, None)
        await _settle(rt, out, tx, strategy, run)
        return out
    loop = asyncio.get_running_loop()
    legs = {loop.create_task(_leg(rt, method, params, strategy, tx, p, run)) for p in providers}
    state = Broadcast(tx)
    state.launched(len(legs))
    answer: Outcome | None = None
    failed: Outcome | None = None
    try:
        while answer is None and legs:
            done, legs = await asyncio.wait(legs, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                leg, out = task.result()
                decision = state.record(leg, out)
                if decision is Decision.ANSWER:
                    answer = out
                elif decision is Decision.REJECT:
                    answer = state.rejection
                elif leg is Leg.RETRY:
                    failed = out
    finally:
        for task in legs:  # out after the answer (or the client left): they run on
            rt.consistency.keep(task)
    if answer is None:  # every leg failed: the other providers, as a single send would
        answer = await run(rt, method, params, strategy, None, exclude=providers)
        if answer.status == "error" and answer.provider_id is None and failed is not None:
            answer = failed  # nobody else to try: the legs' failure is the answer
        else:
            await _settle(rt, answer, tx, strategy, run)
    answer.extra = {
        "broadcast": {
            "providers": providers,
            "accepted": state.accepted,
            "rejected": state.rejected,
            "failed": state.retried,
            "pending": state.outstanding,
        }
    }
    return answer
