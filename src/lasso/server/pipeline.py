"""The request pipeline: a short driver that carries out the attempt planner's decisions.

One call of :func:`execute` serves one JSON-RPC item (reference §2.1, §2.5, §2.6;
CONTRACT §7 "Hedging"):

1. the chain's router orders the candidate channels (filters, strategy, tiers);
2. :class:`~lasso.kernel.planner.AttemptPlanner` decides: which candidate next, with what
   timeout, when to hedge, when to answer or give up (its docstring has the rules);
3. this driver carries each decision out: breaker admission, the exchange over the
   channel's :class:`~lasso.net.transport.UpstreamTransport`, :func:`~lasso.kernel.judge.judge`
   on the answer, recording, and the resulting fact back to the planner;
4. the :class:`Outcome` holds the answer's bytes (carrying our transport id, which the caller
   replaces with the client's id) or Lasso's error object.

What gets recorded (the router maps categories to buckets, reference §2.5):

* a usable result: a success; an ``eth_blockNumber`` result is also a height sample;
* an error answer: a failure of its category (quota and capability ones are neutral for
  the breaker); a transport error: a failure when it is the provider's fault, else neutral;
* a refused attempt: nothing; an attempt cancelled because another answered first, or a
  late answer after the request ended: neutral (never a failure, never a success). A
  cancelled attempt that had outlived the hedge delay leaves its elapsed time in its
  latency window as a lower bound, so the hedge delay keeps seeing the slow tail;
* breaker transitions go to the event bus; with ``--workers`` every outcome is published
  to the node-wide table.

Without a hedge setting only one attempt is ever in flight: :func:`execute` awaits it inline
(no task, no per-attempt object: the common path costs a few calls). With one, the attempts
of the request run as tasks raced under ``asyncio.wait`` (:class:`_Race`).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from time import monotonic
from typing import Any

import orjson

from lasso.kernel.attempts import (
    Answer,
    Answered,
    Cancel,
    Decision,
    Dispatch,
    Fact,
    Fail,
    Refused,
    TimedOut,
    TransportFailed,
    Wait,
    answered,
    policy_for,
)
from lasso.kernel.classify import Category
from lasso.kernel.judge import ACCEPTED, judge
from lasso.kernel.methods import KNOWN_METHODS, method_timeout_s, parse_block_ref
from lasso.kernel.planner import AttemptPlanner
from lasso.kernel.router import Channel
from lasso.net.errors import (
    PoolTimeout,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
)
from lasso.net.http_conn import UpstreamResponse
from lasso.net.transport import UpstreamTransport
from lasso.server.runtime import ChainRuntime

__all__ = ["Outcome", "encode_upstream_request", "execute", "new_transport_id"]

_PREFIX = os.urandom(3).hex()
_counter = itertools.count(1)


def new_transport_id() -> str:
    """A private upstream id: unique per process, never seen in a result."""
    return f"lasso-{_PREFIX}-{next(_counter):x}"


def encode_upstream_request(tid: bytes, method_json: bytes, params: Any) -> bytes:
    """The upstream request body; ``tid`` is the id as JSON text (quoted)."""
    return b'{"jsonrpc":"2.0","id":%s,"method":%s,"params":%s}' % (
        tid,
        method_json,
        orjson.dumps(params),
    )


class Outcome:
    """What one item's execution produced.

    Exactly one of ``body`` (the upstream answer's bytes, carrying ``tid`` as id) and
    ``error`` (a JSON-RPC error object built by Lasso) is set. ``status`` is ``success``,
    ``rpc_error`` (the provider's error for the caller's mistake) or ``error``.
    ``hedged``: a hedge was sent; ``hedge_winner``: ``primary`` or ``hedge`` when one of
    them answered; ``hedge_skipped``: a hedge fell due but the chain's budget was spent.
    """

    __slots__ = (
        "body",
        "candidates",
        "error",
        "hedge_skipped",
        "hedge_winner",
        "hedges",
        "provider_id",
        "retries",
        "status",
        "tid",
        "transport",
        "upstream_latency",
    )

    def __init__(self, candidates: list[Channel]) -> None:
        self.body: bytes | None = None
        self.tid = b""
        self.error: dict[str, Any] | None = None
        self.provider_id: str | None = None
        self.transport = "http"
        self.retries = 0
        self.upstream_latency = 0.0
        self.candidates = candidates
        self.status = "success"
        self.hedges = 0
        self.hedge_winner: str | None = None
        self.hedge_skipped = False

    @property
    def hedged(self) -> bool:
        return self.hedges > 0


async def execute(
    rt: ChainRuntime,
    method: str,
    params: Any,
    strategy: str,
    provider_id: str | None,
    *,
    method_json: bytes | None = None,
) -> Outcome:
    """Run one JSON-RPC item through the chain's providers.

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
    router = rt.router
    now = monotonic()
    shared = rt.shared
    if shared is not None:  # --workers N: take in what other workers learned
        shared.refresh(now)
    candidates = router.candidates(method, params, strategy, now, provider_id=provider_id)
    policy = policy_for(method)
    mkey = method if method in KNOWN_METHODS else "other"
    hedging = rt.hedging
    hedge = budget = None
    if hedging is not None:
        budget = hedging.budget
        budget.note_request(now)
        if policy.hedge:
            hedge = hedging.config_for(method)
    planner = AttemptPlanner(
        candidates,
        method=method,
        now=now,
        budget_s=method_timeout_s(method),
        policy=policy,
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
    if hedge is not None:
        race = _Race(rt, planner, candidates, mkey, method, body, key, tid, policy.replay_safe)
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
        transport: UpstreamTransport | None = (
            rt.pools.get(ch.provider_id) if ch.transport == "http" else rt.ws.get(ch.provider_id)
        )
        if transport is None or not router.admit(ch, now):
            planner.receive(Refused(attempt=number))
        else:
            t0 = monotonic()
            try:
                resp = await transport.exchange(body, tid, step.timeout_s, replay_safe=replay_safe)
            except UpstreamError as exc:
                resp = None
                fact = _failure(number, exc)
            except asyncio.CancelledError:
                router.record_cancelled(ch, mkey, monotonic())
                raise
            else:
                fact = _judged(rt, ch, mkey, method, number, resp, key)
            now = monotonic()
            out.upstream_latency += now - t0
            planner.receive(fact)
            _record(rt, ch, mkey, fact, now - t0, now)
        step = planner.next(now)
    return _finish(planner, step, out, ch, resp, tid)


def _transport(rt: ChainRuntime, ch: Channel) -> UpstreamTransport | None:
    if ch.transport == "http":
        return rt.pools.get(ch.provider_id)
    return rt.ws.get(ch.provider_id)


def _judged(
    rt: ChainRuntime,
    ch: Channel,
    mkey: str,
    method: str,
    number: int,
    resp: UpstreamResponse,
    key: str,
) -> Answered:
    """Parse and judge an answer; an ``eth_blockNumber`` result is a free height sample."""
    body = resp.body
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        doc = None
    judgement = judge(
        resp.status,
        doc,
        body,
        resp.headers,
        tid=key,
        wall_now=time.time(),
        rules=ch.provider.capabilities.error_rules,
        known_method=mkey != "other",
    )
    if judgement is ACCEPTED and method == "eth_blockNumber":
        height = parse_block_ref(doc.get("result"))  # type: ignore[union-attr]
        if isinstance(height, int):
            rt.router.observe_height(ch.provider_id, height, monotonic())
    return answered(number, judgement)


def _record(
    rt: ChainRuntime, ch: Channel, mkey: str, fact: Fact, latency: float, now: float
) -> None:
    """Record what an attempt said about its provider (see the module docstring)."""
    router = rt.router
    category: Category | None = None
    if type(fact) is Answered:
        judgement = fact.judgement
        if judgement.ok:
            tr = router.record_success(ch, mkey, latency, now)
        else:
            category = judgement.category or Category.UNKNOWN_ERROR
            tr = router.record_failure(ch, mkey, category, latency, now, judgement.retry_after_s)
    elif type(fact) is TimedOut:
        category = Category.TIMEOUT
        tr = router.record_failure(ch, mkey, category, latency, now)
    elif type(fact) is TransportFailed and fact.provider_fault:
        category = fact.category
        tr = router.record_failure(ch, mkey, category, latency, now)
    else:  # a local condition: release any half-open probe slot, count nothing
        router.record_neutral(ch, mkey, now)
        return
    if tr is not None:
        rt.events.transition(rt, ch, tr)
    shared = rt.shared
    if shared is not None:
        shared.publish(ch, category, now)


def _finish(
    planner: AttemptPlanner,
    decision: Decision,
    out: Outcome,
    ch: Channel | None,
    resp: UpstreamResponse | None,
    tid: bytes,
) -> Outcome:
    """Fill ``out`` from the terminal decision; ``ch``, ``resp`` and ``tid`` are the answering
    attempt's."""
    out.retries = planner.retries
    hedges = planner.hedges
    if hedges or planner.hedge_skipped:
        out.hedges = hedges
        out.hedge_winner = planner.hedge_winner
        out.hedge_skipped = planner.hedge_skipped
    if type(decision) is not Answer:
        assert type(decision) is Fail, decision  # nothing else ends a request
        out.status = "error"
        out.error = dict(decision.error)
        out.provider_id = decision.provider
        return out
    assert ch is not None and resp is not None
    judgement = decision.judgement
    out.provider_id = ch.provider_id
    out.transport = ch.transport
    if judgement.ok:
        out.body = resp.body
        out.tid = tid
        return out
    # The caller's fault: the provider's answer goes back unchanged (its bytes when they
    # carry our id, else its error object re-encoded).
    out.status = "rpc_error"
    if judgement.error is None:  # pragma: no cover - deterministic errors carry one
        out.error = {"code": -32000, "message": judgement.message or "Upstream error"}
        out.status = "error"
    elif judgement.id_ok:
        out.body = resp.body
        out.tid = tid
    else:
        out.error = dict(judgement.error)
    return out


def _failure(number: int, exc: UpstreamError) -> Fact:
    """The planner's fact for a transport error."""
    if isinstance(exc, UpstreamTimeout) and not isinstance(exc, PoolTimeout):
        return TimedOut(attempt=number, dispatched=exc.dispatched)
    if isinstance(exc, PoolTimeout):
        message = "Upstream connection pool exhausted"
    elif isinstance(exc, UpstreamConnectError):
        message = "Upstream connection failed"
    else:
        message = "Upstream connection lost"
    return TransportFailed(
        attempt=number,
        category=Category(exc.category),
        message=message,
        dispatched=exc.dispatched,
        provider_fault=exc.provider_fault,
    )


class _Sent:
    """One raced attempt: where it went, with which id, its task and how it ended."""

    __slots__ = ("channel", "closed", "key", "resp", "started", "task", "tid")

    def __init__(self, channel: Channel, key: str, tid: bytes, started: float) -> None:
        self.channel = channel
        self.key = key  # our id as the answer must echo it
        self.tid = tid  # the same, as JSON text
        self.started = started
        self.task: asyncio.Task[tuple[Fact, UpstreamResponse | None, float]] | None = None
        self.resp: UpstreamResponse | None = None
        self.closed = False  # reported or cancelled: recorded once, never again


class _Race:
    """A hedged request: its attempts run as tasks, and the planner decides who wins."""

    __slots__ = (
        "body",
        "candidates",
        "key",
        "method",
        "mkey",
        "planner",
        "replay_safe",
        "rt",
        "sent",
        "tid",
    )

    def __init__(
        self,
        rt: ChainRuntime,
        planner: AttemptPlanner,
        candidates: list[Channel],
        mkey: str,
        method: str,
        body: bytes,
        key: str,
        tid: bytes,
        replay_safe: bool,
    ) -> None:
        self.rt = rt
        self.planner = planner
        self.candidates = candidates
        self.mkey = mkey
        self.method = method
        self.body = body
        self.key = key
        self.tid = tid
        self.replay_safe = replay_safe
        self.sent: list[_Sent | None] = []  # by attempt number; None: refused

    async def run(self, now: float, out: Outcome) -> Answer | Fail:
        """Carry out decisions until the planner answers or fails; return that decision."""
        planner = self.planner
        decision = planner.next(now)
        while True:
            match decision:
                case Dispatch(attempt=number, candidate=candidate, timeout_s=timeout):
                    sent = self.admit(candidate, now)
                    if sent is None:
                        planner.receive(Refused(attempt=number))
                    else:
                        coro = self.attempt(number, sent, timeout)
                        sent.task = asyncio.get_running_loop().create_task(coro)
                case Wait(until=until):
                    for number, sent, result in await self.wait(until):
                        out.upstream_latency += result[2]
                        self.report(number, sent, result)
                case Cancel(attempt=number, overdue=overdue):
                    self.cancel(number, overdue)
                case Answer() | Fail():
                    return decision
            now = monotonic()
            decision = planner.next(now)

    def admit(self, candidate: int, now: float) -> _Sent | None:
        """Breaker admission for a dispatch; ``None`` when it cannot go out."""
        ch = self.candidates[candidate]
        if _transport(self.rt, ch) is None or not self.rt.router.admit(ch, now):
            self.sent.append(None)
            return None
        key, tid = self.key, self.tid
        if self.sent:
            # A racing attempt gets its own id, in case two providers share one upstream
            # WebSocket (answers are matched by id).
            key = new_transport_id()
            tid = b'"%s"' % key.encode()
        sent = _Sent(ch, key, tid, now)
        self.sent.append(sent)
        return sent

    async def attempt(
        self, number: int, sent: _Sent, timeout: float
    ) -> tuple[Fact, UpstreamResponse | None, float]:
        """One exchange: the fact for the planner, the answer, and the attempt's latency."""
        ch = sent.channel
        transport = _transport(self.rt, ch)
        assert transport is not None
        tid = sent.tid
        body = self.body if tid is self.tid else self.body.replace(self.tid, tid, 1)
        t0 = monotonic()
        try:
            resp = await transport.exchange(body, tid, timeout, replay_safe=self.replay_safe)
        except UpstreamError as exc:
            return _failure(number, exc), None, monotonic() - t0
        lat = monotonic() - t0
        return _judged(self.rt, ch, self.mkey, self.method, number, resp, sent.key), resp, lat

    async def wait(
        self, until: float
    ) -> list[tuple[int, _Sent, tuple[Fact, UpstreamResponse | None, float]]]:
        """Wait for an attempt in flight to finish, or until ``until``: what finished."""
        tasks = {
            s.task: (n, s)
            for n, s in enumerate(self.sent)
            if s is not None and s.task is not None and not s.closed
        }
        timeout = until - monotonic()
        done, _ = await asyncio.wait(
            tasks, timeout=timeout if timeout > 0 else 0, return_when=asyncio.FIRST_COMPLETED
        )
        return [(*tasks[task], task.result()) for task in done]

    def report(
        self,
        number: int,
        sent: _Sent,
        result: tuple[Fact, UpstreamResponse | None, float],
    ) -> None:
        """Hand an attempt's fact to the planner and record its outcome."""
        if sent.closed:
            return
        sent.closed = True
        fact, sent.resp, lat = result
        now = monotonic()
        if self.planner.receive(fact):
            _record(self.rt, sent.channel, self.mkey, fact, lat, now)
        else:  # a loser's late outcome: neither success nor failure
            self.rt.router.record_cancelled(sent.channel, self.mkey, now)

    def cancel(self, number: int, overdue: bool) -> None:
        """Stop a losing attempt: neutral, and its elapsed time a lower bound if overdue."""
        sent = self.sent[number]
        if sent is None or sent.closed:
            return
        sent.closed = True
        if sent.task is not None:
            sent.task.cancel()
        now = monotonic()
        elapsed = now - sent.started if overdue else None
        self.rt.router.record_cancelled(sent.channel, self.mkey, now, elapsed_s=elapsed)

    def abandon(self) -> None:
        """Cancel and release every attempt still open (the request itself was cancelled)."""
        for number, sent in enumerate(self.sent):
            if sent is not None and not sent.closed:
                self.cancel(number, False)

    def finish(self, decision: Answer | Fail, out: Outcome) -> Outcome:
        if type(decision) is Answer:
            sent = self.sent[decision.attempt]
            assert sent is not None
            return _finish(self.planner, decision, out, sent.channel, sent.resp, sent.tid)
        return _finish(self.planner, decision, out, None, None, self.tid)
