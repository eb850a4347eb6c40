"""One attempt's exchange as the pipeline handles it, and what a request produced.

Shared by the two drivers, :func:`lasso.server.pipeline.execute` (one attempt at a time) and
:class:`lasso.server.race.Race` (hedged attempts raced as tasks):

* :class:`Outcome`: what one JSON-RPC item's execution produced, for the caller;
* :func:`new_transport_id`, :func:`encode_upstream_request`: our private upstream id and the
  request bytes carrying it;
* :func:`transport_of`: a channel's :class:`~lasso.net.transport.UpstreamTransport`;
* :func:`judged`: parse (``rpc_envelope.read_answer``: a large one by its envelope) and
  judge an answer into the planner's fact (an ``eth_blockNumber``
  result also feeds the height tracking);
* :func:`failure_fact`: the planner's fact for a transport error;
* :func:`record`: what an attempt said about its provider, into the router (see
  ``lasso.server.pipeline`` for the rules; a failure also becomes the channel's last
  error), the event bus and, with ``--workers``, the node-wide table;
* :func:`finish`: the :class:`Outcome` of the planner's terminal decision.
"""

from __future__ import annotations

import itertools
import os
import time
from time import monotonic
from typing import Any

import orjson

from lasso.kernel.attempts import (
    Answer,
    Answered,
    Decision,
    Fact,
    Fail,
    TimedOut,
    TransportFailed,
    answered,
)
from lasso.kernel.classify import Category
from lasso.kernel.judge import ACCEPTED, judge
from lasso.kernel.methods import parse_block_ref
from lasso.kernel.planner import AttemptPlanner
from lasso.kernel.router import Channel
from lasso.net.errors import PoolTimeout, UpstreamConnectError, UpstreamError, UpstreamTimeout
from lasso.net.http_conn import UpstreamResponse
from lasso.net.transport import UpstreamTransport
from lasso.server.faults import answer_fault, fault_of
from lasso.server.rpc_envelope import read_answer
from lasso.server.runtime import ChainRuntime

__all__ = [
    "Outcome",
    "encode_upstream_request",
    "failure_fact",
    "finish",
    "judged",
    "new_transport_id",
    "record",
    "transport_of",
]

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
        self.body: bytes | bytearray | None = None
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


def transport_of(rt: ChainRuntime, ch: Channel) -> UpstreamTransport | None:
    if ch.transport == "http":
        return rt.pools.get(ch.provider_id)
    return rt.ws.get(ch.provider_id)


def judged(
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
    doc = read_answer(body)  # a large answer: its envelope only, the result validated
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
        height = parse_block_ref(doc.get("result"))
        if isinstance(height, int):
            rt.router.observe_height(ch.provider_id, height, monotonic())
    return answered(number, judgement)


def record(
    rt: ChainRuntime,
    ch: Channel,
    mkey: str,
    fact: Fact,
    latency: float,
    now: float,
    resp: UpstreamResponse | None = None,
    exc: UpstreamError | None = None,
) -> None:
    """Record what an attempt said about its provider (see ``lasso.server.pipeline``); a
    failure also becomes the channel's last error, described from the answer ``resp`` or
    the transport error ``exc`` (``lasso.server.faults``)."""
    router = rt.router
    category: Category | None = None
    if type(fact) is Answered:
        judgement = fact.judgement
        if judgement.ok:
            tr = router.record_success(ch, mkey, latency, now)
        else:
            category = judgement.category or Category.UNKNOWN_ERROR
            error = None if judgement.error is None else dict(judgement.error)
            status = 200 if resp is None else resp.status
            fault = answer_fault(status, category, judgement.message, error)
            tr = router.record_failure(
                ch, mkey, category, latency, now, judgement.retry_after_s, fault=fault
            )
    elif type(fact) is TimedOut or (type(fact) is TransportFailed and fact.provider_fault):
        category = fact.category if type(fact) is TransportFailed else Category.TIMEOUT
        fault = None if exc is None else fault_of(exc)
        tr = router.record_failure(ch, mkey, category, latency, now, fault=fault)
    else:  # a local condition: release any half-open probe slot, count nothing
        router.record_neutral(ch, mkey, now)
        return
    if tr is not None:
        rt.events.transition(rt, ch, tr)
    shared = rt.shared
    if shared is not None:
        shared.publish(ch, category, now)


def finish(
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
    if planner.may_hedge:
        out.hedges = planner.hedges
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


def failure_fact(number: int, exc: UpstreamError) -> Fact:
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
