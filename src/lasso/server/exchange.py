"""One attempt's exchange as the pipeline handles it, and what a request produced.

Shared by the two drivers, :func:`lasso.server.pipeline.execute` (one attempt at a time) and
:class:`lasso.server.race.Race` (hedged attempts raced as tasks):

* :class:`Outcome`: what one JSON-RPC item's execution produced, for the caller;
* :func:`new_transport_id`, :func:`encode_upstream_request`: our private upstream id and the
  request bytes carrying it;
* :func:`transport_of`: a channel's :class:`~lasso.net.transport.UpstreamTransport`;
* :func:`judged`: parse (``rpc_envelope.read_answer``: a large one by its envelope) and
  judge an answer into the planner's fact; for a planned read (CONTRACT §8,
  :func:`lasso.kernel.consistency.check_answer`) the answer is also checked against the
  block it had to come from, and teaches heights and the served head;
* :func:`failure_fact`: the planner's fact for a transport error;
* :func:`record`: what an attempt said about its provider, into the router (see
  ``lasso.server.pipeline`` for the rules; a failure also becomes the channel's last
  error), the event bus and, with ``--workers``, the node-wide table;
* :func:`finish`: the :class:`Outcome` of the planner's terminal decision;
* :func:`result_body`: the bytes of an answer Lasso makes (a clamped head, a transaction's
  hash, a Lasso filter id, merged logs), in the provider answers' layout;
* :class:`Executor`: what a flow of :mod:`lasso.server.pipeline` runs its requests through.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Awaitable, Collection
from time import monotonic
from typing import Any, Protocol

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
from lasso.kernel.consistency import BEHIND, ReadPlan, check_answer
from lasso.kernel.getlogs import learned_limit
from lasso.kernel.judge import judge
from lasso.kernel.logs_limits import logs_limit
from lasso.kernel.planner import AttemptPlanner
from lasso.kernel.router import Channel
from lasso.net.errors import PoolTimeout, UpstreamConnectError, UpstreamError, UpstreamTimeout
from lasso.net.http_conn import UpstreamResponse
from lasso.net.transport import UpstreamTransport
from lasso.server.faults import answer_fault, fault_of
from lasso.server.rpc_envelope import LARGE_RESULT, read_answer
from lasso.server.runtime import ChainRuntime

__all__ = [
    "Executor",
    "Outcome",
    "encode_upstream_request",
    "failure_fact",
    "finish",
    "judged",
    "new_transport_id",
    "record",
    "result_body",
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
    ``extra``: more ``include_meta`` members from a flow (``get_logs``, ``broadcast``).
    ``result``: the answer's ``result`` as parsed when judged, for a caller that asked to
    keep it (``run(..., keep_result=True)``: it merges results); ``None`` otherwise.
    ``doc``: the answer as it was parsed to judge it
    (:func:`~lasso.server.rpc_envelope.read_answer`: the whole document up to 4 KiB or
    when the result was read, else its envelope with ``result`` as
    :data:`~lasso.server.rpc_envelope.LARGE_RESULT`) while ``body`` is the provider's
    answer as it came; ``None`` otherwise (Lasso's own answers, errors, a clamped head).
    Shared, never to be mutated: the response cache reads it instead of parsing ``body``
    again.
    """

    __slots__ = (
        "body",
        "candidates",
        "doc",
        "error",
        "extra",
        "hedge_skipped",
        "hedge_winner",
        "hedges",
        "provider_id",
        "result",
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
        self.extra: dict[str, Any] | None = None
        self.result: Any = None
        self.doc: Any = None

    @property
    def hedged(self) -> bool:
        return self.hedges > 0

    def error_message(self) -> str:
        """The error's message (Lasso's, or the provider's when its bytes are passed
        through); ``""`` for a result."""
        error = self.error
        if error is None and self.body is not None and self.status != "success":
            try:
                doc = orjson.loads(self.body)
            except orjson.JSONDecodeError:
                return ""
            error = doc.get("error") if type(doc) is dict else None
        message = error.get("message") if isinstance(error, dict) else None
        return message if isinstance(message, str) else ""

    def answer(self, result_json: bytes) -> None:
        """Make this a success answering ``result_json`` (JSON text), with our id."""
        if not self.tid:
            self.tid = b'"%s"' % new_transport_id().encode()
        self.body = result_body(self.tid, result_json)
        self.doc = None
        self.error = None
        self.status = "success"

    def fail(self, error: dict[str, Any], status: str = "error") -> None:
        """Make this an error answer with Lasso's ``error`` object."""
        self.body = None
        self.doc = None
        self.error = error
        self.status = status


class Executor(Protocol):
    """Runs one JSON-RPC request through the attempt planner
    (:func:`lasso.server.pipeline.run`), with the route's strategy and provider override;
    ``exclude`` leaves providers out."""

    def __call__(
        self,
        rt: ChainRuntime,
        method: str,
        params: Any,
        strategy: str,
        provider_id: str | None,
        *,
        exclude: Collection[str] = (),
        keep_result: bool = False,
    ) -> Awaitable[Outcome]: ...


def result_body(tid: bytes, result_json: bytes) -> bytes:
    """An answer Lasso makes: our id (JSON text) and the result (JSON text), laid out as
    providers' answers are (the response cache reads the result at a fixed offset)."""
    return b'{"jsonrpc":"2.0","id":%s,"result":%s}' % (tid, result_json)


def transport_of(rt: ChainRuntime, ch: Channel) -> UpstreamTransport | None:
    if ch.transport == "http":
        return rt.pools.get(ch.provider_id)
    return rt.ws.get(ch.provider_id)


def _whole(doc: Any, body: bytes | bytearray) -> Any:
    """``doc`` with its ``result`` parsed when :func:`read_answer` left it as
    :data:`LARGE_RESULT` (its envelope only); ``doc`` itself if that fails."""
    if type(doc) is dict and doc.get("result") is LARGE_RESULT:
        try:
            whole = orjson.loads(body)
        except orjson.JSONDecodeError:  # valid JSON beyond orjson's bounds (a huge number)
            return doc
        if type(whole) is dict:
            return whole
    return doc


def judged(
    rt: ChainRuntime,
    ch: Channel,
    mkey: str,
    method: str,
    number: int,
    resp: UpstreamResponse,
    key: str,
    plan: ReadPlan | None = None,
    docs: dict[int, Any] | None = None,
    whole: bool = False,
) -> Answered:
    """Parse and judge an answer; a planned read's answer is checked against its plan (an
    ``eth_blockNumber`` result is a height sample and clamped to the served head). With
    ``docs``, the parsed document is kept there under the attempt's number (for
    :attr:`Outcome.doc`); ``whole``: a large answer's result is parsed too (a caller reads
    it)."""
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
    if whole or (plan is not None and plan.tag is not None):
        doc = _whole(doc, body)  # the result itself is read: a large one parsed whole
    if docs is not None:
        docs[number] = doc
    if plan is not None:
        router = rt.router
        judgement = check_answer(
            plan, judgement, doc, ch.provider_id, router.state, router.head, monotonic()
        )
        if judgement.replacement is not None:
            rt.consistency.count("retries", "clamped")
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
        elif judgement is BEHIND:  # behind the block asked about: not the provider's fault
            router.record_neutral(ch, mkey, now)
            rt.consistency.count("retries", "behind")
            return
        else:
            category = judgement.category or Category.UNKNOWN_ERROR
            if category is Category.CAPABILITY_VIOLATION and mkey == "eth_getLogs":
                _learn_logs_limit(rt, ch, judgement.message)
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
    doc: Any = None,
    whole: bool = False,
) -> Outcome:
    """Fill ``out`` from the terminal decision; ``ch``, ``resp``, ``tid`` and ``doc`` (its
    body as judged) are the answering attempt's. ``whole``: set ``out.result`` from ``doc``
    (``run(..., keep_result=True)``)."""
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
        replacement = judgement.replacement
        if replacement is None:
            out.body = resp.body
            out.doc = doc
            if whole and type(doc) is dict:
                out.result = doc.get("result")
        else:
            out.body = result_body(tid, orjson.dumps(replacement))
            if whole:
                out.result = replacement
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


def _learn_logs_limit(rt: ChainRuntime, ch: Channel, message: str) -> None:
    """A provider said an ``eth_getLogs`` range was too wide and named its limit: the
    router routes and splits by it from now on (without a number the splitter learns from
    the range it sent, :mod:`lasso.server.logs_split`)."""
    limit = logs_limit(message)
    if limit is not None and limit.max_blocks is not None:
        current = rt.router.logs_range_limit(ch.provider_id)
        learned = learned_limit(limit, limit.max_blocks + 1, current)
        if learned is not None:
            rt.router.learn_logs_range_limit(ch.provider_id, learned)


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
