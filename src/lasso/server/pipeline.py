"""The request pipeline: the front door of every JSON-RPC item, and the short driver that
carries out the attempt planner's decisions.

:func:`execute` serves one JSON-RPC item (reference §2.1, §2.5, §2.6; CONTRACT §7, §8).
Most methods go straight to :func:`run`; a few need more than one planned request, and go
through their *flow*, which runs its requests through :func:`run` (it is given it: see
:class:`~lasso.server.exchange.Executor`):

* ``eth_getLogs``: :mod:`lasso.server.logs_split` (tags resolved, split by the providers'
  limits, chunks merged in block order, failing whole);
* ``eth_sendRawTransaction``: :mod:`lasso.server.sends` (the hash computed here, "already
  known" and a mined "nonce too low" answered with it, ``routing.broadcast``);
* the filter methods: :mod:`lasso.server.sticky_filters` (Lasso's filter ids, bound to the
  provider that made the filter).

:func:`run` serves one request:

1. block-consistent reads (CONTRACT §8): :func:`~lasso.kernel.consistency.plan_read` says
   which block the answer must come from; the router puts providers without it last (and
   an ``eth_getLogs`` goes only to providers known to have its last block, when any is);
2. the chain's router orders the candidate channels (filters, strategy, tiers);
3. :class:`~lasso.kernel.planner.AttemptPlanner` decides: which candidate next, with what
   timeout, when to hedge, when to answer or give up (its docstring has the rules);
4. this driver carries each decision out: breaker admission, the exchange over the
   channel's :class:`~lasso.net.transport.UpstreamTransport`, :func:`~lasso.kernel.judge.judge`
   on the answer (and, for a planned read, :func:`~lasso.kernel.consistency.check_answer`:
   a provider behind the block is failed over at no cost to it, an ``eth_blockNumber`` is
   clamped to the served head), recording, and the resulting fact back to the planner;
5. the :class:`Outcome` holds the answer's bytes (carrying our transport id, which the caller
   replaces with the client's id) or Lasso's error object.

What gets recorded (the router maps categories to buckets, reference §2.5):

* a usable result: a success; an ``eth_blockNumber`` result is also a height sample;
* an error answer: a failure of its category (quota and capability ones are neutral for
  the breaker); a transport error: a failure when it is the provider's fault, else neutral;
* an answer from a provider behind the block asked about: neutral;
* a refused attempt: nothing; an attempt cancelled because another answered first, or a
  late answer after the request ended: neutral (never a failure, never a success). A
  cancelled attempt that had outlived the hedge delay leaves its elapsed time in its
  latency window as a lower bound, so the hedge delay keeps seeing the slow tail;
* breaker transitions go to the event bus; with ``--workers`` every outcome is published
  to the node-wide table.

Without a hedge setting only one attempt is ever in flight: :func:`run` awaits it inline
(no task, no per-attempt object: the common path costs a few calls). With one,
:class:`~lasso.server.race.Race` awaits the first attempt inline too and runs hedges as
tasks from a timer.
The helpers both share (judging, recording, the outcome) are in :mod:`lasso.server.exchange`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection
from time import monotonic
from typing import Any

import orjson

from lasso.kernel.attempts import Answer, Dispatch, Refused, policy_for
from lasso.kernel.consistency import PLANNED_METHODS, keep_known, plan_read
from lasso.kernel.getlogs import behind_error
from lasso.kernel.methods import KNOWN_METHODS, method_timeout_s
from lasso.kernel.planner import AttemptPlanner
from lasso.kernel.router import Channel
from lasso.net.errors import UpstreamError
from lasso.net.http_conn import UpstreamResponse
from lasso.net.transport import UpstreamTransport
from lasso.server.exchange import (
    Executor,
    Outcome,
    encode_upstream_request,
    failure_fact,
    finish,
    judged,
    new_transport_id,
    record,
)
from lasso.server.logs_split import get_logs
from lasso.server.race import Race
from lasso.server.runtime import ChainRuntime
from lasso.server.sends import send_raw_transaction
from lasso.server.sticky_filters import FILTER_FLOWS

# Outcome and the id helpers live in lasso.server.exchange; re-exported for the callers.
__all__ = ["Outcome", "encode_upstream_request", "execute", "new_transport_id", "run"]

Flow = Callable[[ChainRuntime, str, Any, str, "str | None", Executor], Awaitable[Outcome]]
"""A method that needs more than one planned request: ``(rt, method, params, strategy,
provider_id, run)``."""

_FLOWS: dict[str, Flow] = {
    "eth_getLogs": get_logs,
    "eth_sendRawTransaction": send_raw_transaction,
    **FILTER_FLOWS,
}


def execute(
    rt: ChainRuntime,
    method: str,
    params: Any,
    strategy: str,
    provider_id: str | None,
    *,
    method_json: bytes | None = None,
) -> Awaitable[Outcome]:
    """Run one JSON-RPC item through the chain's providers: its flow when it has one (the
    module docstring), else :func:`run`. Await the result.

    Args:
        rt: the chain of the profile the request was routed to.
        method: the JSON-RPC method.
        params: its params (list or dict).
        strategy: the route's strategy (a ``method_overrides`` strategy replaces it).
        provider_id: a client's provider override: only that provider's channels.
        method_json: ``method`` as JSON text, when the caller has it already.

    Returns:
        The outcome; upstream faults never raise. Cancellation (the client went away)
        cancels the attempts in flight, records them neutral, and propagates.
    """
    flow = _FLOWS.get(method)  # a plain function: no coroutine frame of its own
    if flow is None:
        return run(rt, method, params, strategy, provider_id, method_json=method_json)
    return flow(rt, method, params, strategy, provider_id, run)


async def run(
    rt: ChainRuntime,
    method: str,
    params: Any,
    strategy: str,
    provider_id: str | None,
    *,
    method_json: bytes | None = None,
    exclude: Collection[str] = (),
    keep_result: bool = False,
) -> Outcome:
    """Run one request through the attempt planner (steps 1-5 of the module docstring).

    Args: as :func:`execute`; ``exclude``: provider ids left out; ``keep_result``: set
    ``Outcome.result`` to the answer's parsed result (parsed once, to judge it).

    Returns:
        The outcome; upstream faults never raise.
    """
    router = rt.router
    now = monotonic()
    shared = rt.shared
    if shared is not None:  # --workers N: take in what other workers learned
        shared.refresh(now)
    plan = plan_read(method, params, router.head) if method in PLANNED_METHODS else None
    if plan is None or plan.min_block is None:
        candidates = router.candidates(
            method, params, strategy, now, provider_id=provider_id, exclude=exclude
        )
    else:
        min_block = plan.min_block
        candidates = router.candidates(
            method,
            params,
            strategy,
            now,
            provider_id=provider_id,
            exclude=exclude,
            min_block=min_block,
        )
        if plan.strict and min_block is not None and candidates:
            candidates = keep_known(candidates, min_block, router.state)
            if not candidates:  # only providers outside this route's have the block
                out = Outcome(candidates)
                out.fail(behind_error(min_block))
                return out
    check = plan if plan is not None and plan.checks_answer else None  # answers to check
    policy = policy_for(method)
    mkey = method if method in KNOWN_METHODS else "other"
    hedging = rt.hedging
    hedge = budget = None
    if hedging is not None:
        budget = hedging.budget
        budget.note_request(now)
        if policy.hedge:
            hedge = hedging.config_for(method)
    budget_s = method_timeout_s(method)
    if hedge is None:
        planner = AttemptPlanner(
            candidates, method, now, budget_s, policy, circuits=router.retry_after
        )
    else:
        planner = AttemptPlanner(
            candidates,
            method,
            now,
            budget_s,
            policy,
            hedge=hedge,
            budget=budget,
            method_key=mkey,
            circuits=router.retry_after,
        )
    key = new_transport_id()
    tid = b'"%s"' % key.encode()
    body = encode_upstream_request(
        tid, method_json if method_json is not None else orjson.dumps(method), params
    )
    out = Outcome(candidates)
    docs: dict[int, Any] = {}  # the judged documents by attempt: the answer's is out.doc
    if hedge is not None:
        race = Race(
            rt,
            planner,
            candidates,
            mkey,
            method,
            body,
            key,
            tid,
            policy.replay_safe,
            check,
            docs,
            keep_result,
        )
        try:
            decision = await race.run(now, out)
        finally:
            race.abandon()  # on cancellation: stop and release every attempt in flight
        return race.finish(decision, out)

    # One attempt at a time: nothing is in flight when the planner is asked, so it answers
    # Dispatch, Answer or Fail, never Wait or Cancel.
    replay_safe = policy.replay_safe
    ch: Channel | None = None
    resp: UpstreamResponse | None = None
    step = planner.next(now)
    while type(step) is Dispatch:
        number = step.attempt
        ch = candidates[step.candidate]
        transport: UpstreamTransport | None = (  # exchange.transport_of, inlined: hot path
            rt.pools.get(ch.provider_id) if ch.transport == "http" else rt.ws.get(ch.provider_id)
        )
        if transport is None or not router.admit(ch, now):
            planner.receive(Refused(attempt=number))
        else:
            t0 = monotonic()
            error: UpstreamError | None = None
            try:
                resp = await transport.exchange(body, tid, step.timeout_s, replay_safe=replay_safe)
            except UpstreamError as exc:
                resp, error = None, exc
                fact = failure_fact(number, exc)
            except asyncio.CancelledError:
                router.record_cancelled(ch, mkey, monotonic())
                raise
            else:
                fact = judged(rt, ch, mkey, method, number, resp, key, check, docs, keep_result)
            now = monotonic()
            out.upstream_latency += now - t0
            planner.receive(fact)
            record(rt, ch, mkey, fact, now - t0, now, resp, error)
        step = planner.next(now)
    if type(step) is Answer:
        return finish(planner, step, out, ch, resp, tid, docs.get(step.attempt), keep_result)
    return finish(planner, step, out, ch, resp, tid)
