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

Without a hedge setting only one attempt is ever in flight and it is awaited inline; with
one, attempts run as tasks raced under ``asyncio.wait``.
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
    Dispatch,
    Fact,
    Fail,
    Refused,
    TimedOut,
    TransportFailed,
    Wait,
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


class _Sent:
    """One attempt as the driver knows it: where it went, with which id, and how it ended."""

    __slots__ = ("channel", "closed", "key", "resp", "started", "task", "tid")

    def __init__(self, channel: Channel, key: str, tid: bytes, started: float) -> None:
        self.channel = channel
        self.key = key  # our id as the answer must echo it
        self.tid = tid  # the same, as JSON text
        self.started = started
        self.task: asyncio.Task[_Result] | None = None
        self.resp: UpstreamResponse | None = None
        self.closed = False  # reported or cancelled: recorded once, never again


_Result = tuple[Fact, UpstreamResponse | None, float]


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
        cancels every attempt in flight, records them neutral, and propagates.
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
    run = _Run(rt, planner, candidates, mkey, method, body, key, tid, policy.replay_safe)
    try:
        decision = await run.drive(now, concurrent=hedge is not None)
    finally:
        run.abandon()  # on cancellation: stop and release every attempt still in flight
    return run.outcome(decision, Outcome(candidates))


class _Run:
    """The driver state of one request: its planner, its attempts and their tasks."""

    __slots__ = (
        "body",
        "candidates",
        "concurrent",
        "key",
        "latency",
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
        self.latency = 0.0  # upstream time of the attempts that finished
        self.concurrent = False

    async def drive(self, now: float, *, concurrent: bool) -> Answer | Fail:
        """Carry out decisions until the planner answers or fails; return that decision."""
        self.concurrent = concurrent
        planner = self.planner
        decision = planner.next(now)
        while True:
            match decision:
                case Dispatch(attempt=number, candidate=candidate, timeout_s=timeout):
                    sent = self.admit(candidate, now)
                    if sent is None:
                        planner.receive(Refused(attempt=number))
                    elif concurrent:
                        coro = self.attempt(number, sent, timeout)
                        sent.task = asyncio.get_running_loop().create_task(coro)
                    else:
                        self.report(number, sent, await self.attempt(number, sent, timeout))
                case Wait(until=until):
                    await self.wait(until)
                case Cancel(attempt=number, overdue=overdue):
                    self.cancel(number, overdue)
                case Answer() | Fail():
                    return decision
            now = monotonic()
            decision = planner.next(now)

    def transport(self, ch: Channel) -> UpstreamTransport | None:
        rt = self.rt
        if ch.transport == "http":
            return rt.pools.get(ch.provider_id)
        return rt.ws.get(ch.provider_id)

    def admit(self, candidate: int, now: float) -> _Sent | None:
        """Breaker admission for a dispatch; ``None`` when it cannot go out."""
        ch = self.candidates[candidate]
        if self.transport(ch) is None or not self.rt.router.admit(ch, now):
            self.sent.append(None)
            return None
        key, tid = self.key, self.tid
        if self.concurrent and self.sent:
            # A racing attempt gets its own id, in case two providers share one upstream
            # WebSocket (answers are matched by id).
            key = new_transport_id()
            tid = b'"%s"' % key.encode()
        sent = _Sent(ch, key, tid, now)
        self.sent.append(sent)
        return sent

    async def attempt(self, number: int, sent: _Sent, timeout: float) -> _Result:
        """One exchange: the fact for the planner, the answer, and the attempt's latency."""
        ch = sent.channel
        transport = self.transport(ch)
        assert transport is not None
        tid = sent.tid
        body = self.body if tid is self.tid else self.body.replace(self.tid, tid, 1)
        t0 = monotonic()
        try:
            resp = await transport.exchange(body, tid, timeout, replay_safe=self.replay_safe)
        except UpstreamError as exc:
            return _failure(number, exc), None, monotonic() - t0
        lat = monotonic() - t0
        try:
            doc = orjson.loads(resp.body) if resp.body else None
        except orjson.JSONDecodeError:
            doc = None
        judgement = judge(
            resp.status,
            doc,
            resp.body,
            resp.headers,
            tid=sent.key,
            wall_now=time.time(),
            rules=ch.provider.capabilities.error_rules,
            known_method=self.mkey != "other",
        )
        if judgement is ACCEPTED and self.method == "eth_blockNumber":
            height = parse_block_ref(doc.get("result"))  # type: ignore[union-attr]
            if isinstance(height, int):  # a free height sample for the lag tracking
                self.rt.router.observe_height(ch.provider_id, height, monotonic())
        return Answered(attempt=number, judgement=judgement), resp, lat

    def report(self, number: int, sent: _Sent, result: _Result) -> None:
        """Hand an attempt's fact to the planner and record its outcome."""
        if sent.closed:
            return
        sent.closed = True
        fact, resp, lat = result
        sent.resp = resp
        self.latency += lat
        counted = self.planner.receive(fact)
        rt = self.rt
        router = rt.router
        ch = sent.channel
        now = monotonic()
        if not counted:  # a loser's late outcome
            router.record_neutral(ch, self.mkey, now, dispatched=True)
            return
        category: Category | None = None
        if fact.kind == "answered":
            judgement = fact.judgement
            if judgement.ok:
                tr = router.record_success(ch, self.mkey, lat, now)
            else:
                category = judgement.category or Category.UNKNOWN_ERROR
                tr = router.record_failure(
                    ch, self.mkey, category, lat, now, judgement.retry_after_s
                )
        elif fact.kind == "timed_out":
            category = Category.TIMEOUT
            tr = router.record_failure(ch, self.mkey, category, lat, now)
        elif fact.kind == "failed" and fact.provider_fault:
            category = fact.category
            tr = router.record_failure(ch, self.mkey, category, lat, now)
        else:  # a local condition: release any half-open probe slot, count nothing
            router.record_neutral(ch, self.mkey, now)
            return
        if tr is not None:
            rt.events.transition(rt, ch, tr)
        shared = rt.shared
        if shared is not None:
            shared.publish(ch, category, now)

    async def wait(self, until: float) -> None:
        """Wait for an attempt in flight to finish, or until ``until``; report what did."""
        tasks = {
            s.task: (n, s)
            for n, s in enumerate(self.sent)
            if s is not None and s.task is not None and not s.closed
        }
        if not tasks:  # pragma: no cover - the planner waits only with attempts in flight
            raise RuntimeError("wait with nothing in flight")
        timeout = until - monotonic()
        done, _ = await asyncio.wait(
            tasks, timeout=timeout if timeout > 0 else 0, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            number, sent = tasks[task]
            self.report(number, sent, task.result())

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
        """Cancel and release every attempt still open (the request itself was cancelled,
        or ended while losers were in flight)."""
        for number, sent in enumerate(self.sent):
            if sent is not None and not sent.closed:
                self.cancel(number, False)

    def outcome(self, decision: Answer | Fail, out: Outcome) -> Outcome:
        """Fill ``out`` from the terminal decision."""
        planner = self.planner
        out.retries = planner.retries
        out.hedges = planner.hedges
        out.hedge_winner = planner.hedge_winner
        out.hedge_skipped = planner.hedge_skipped
        out.upstream_latency = self.latency
        if isinstance(decision, Fail):
            out.status = "error"
            out.error = dict(decision.error)
            out.provider_id = decision.provider
            return out
        sent = self.sent[decision.attempt]
        assert sent is not None and sent.resp is not None
        judgement = decision.judgement
        out.provider_id = sent.channel.provider_id
        out.transport = sent.channel.transport
        if judgement.ok:
            out.body = sent.resp.body
            out.tid = sent.tid
            return out
        # The caller's fault: the provider's answer goes back unchanged (its bytes when
        # they carry our id, else its error object re-encoded).
        out.status = "rpc_error"
        if judgement.error is None:  # pragma: no cover - deterministic errors carry one
            out.error = {"code": -32000, "message": judgement.message or "Upstream error"}
            out.status = "error"
        elif judgement.id_ok:
            out.body = sent.resp.body
            out.tid = sent.tid
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
