"""The values crossing the attempt planner's boundary: policies, facts in, decisions out,
and the JSON-RPC error objects a failed request ends with.

Facts and decisions are small frozen values tagged with a ``Literal`` ``kind``, so a
``match`` over :data:`Fact` or :data:`Decision` is checked for exhaustiveness. Attempts are
numbered by the planner in dispatch order (0, 1, ...); facts name the attempt they are about.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .classify import Category, client_error_code
from .judge import ACCEPTED, Judgement
from .methods import REPLAY_SAFE_METHODS

__all__ = [
    "FILTER_CREATE",
    "IDEMPOTENT_WRITE",
    "READ",
    "WRITE",
    "Answer",
    "Answered",
    "Cancel",
    "Cancelled",
    "Decision",
    "Dispatch",
    "DispatchPolicy",
    "Fact",
    "Fail",
    "Refused",
    "TimedOut",
    "TransportFailed",
    "Wait",
    "answer",
    "answered",
    "exhausted_error",
    "indeterminate_error",
    "method_not_found_error",
    "no_channels_error",
    "policy_for",
]


# -- dispatch policies ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchPolicy:
    """How often and how boldly one request may be sent (reference §2.1, §2.5).

    Attributes:
        name: for logs and docs.
        max_dispatches: sends that may reach a provider, in all (refusals, connection
            errors, quota and capability answers give theirs back).
        replay_safe: a failure after the bytes left may be retried on another provider
            (and a stale keep-alive connection may be resent on).
        writes: the request may change state, so a failure after dispatch that is not
            answered by a later attempt is reported as indeterminate.
        hedge: a second attempt may race the first (CONTRACT §7 "Hedging").
        first_share: the share of the method's budget the first attempt may use, so
            that a slow first provider leaves time to fail over; ``None``: all of it.
    """

    name: str
    max_dispatches: int
    replay_safe: bool
    writes: bool
    hedge: bool
    first_share: float | None


READ = DispatchPolicy(
    name="replay_safe_read",
    max_dispatches=3,
    replay_safe=True,
    writes=False,
    hedge=True,
    first_share=0.6,
)
"""Reads: up to three sends, failover after any failure, hedging allowed."""

WRITE = DispatchPolicy(
    name="single_dispatch",
    max_dispatches=1,
    replay_safe=False,
    writes=True,
    hedge=False,
    first_share=None,
)
"""Everything else that is not known to be replay-safe (filter polls, which consume the
changes they return; unknown methods): one send; a failure after it is indeterminate."""

IDEMPOTENT_WRITE = DispatchPolicy(
    name="idempotent_write",
    max_dispatches=3,
    replay_safe=True,
    writes=True,
    hedge=False,
    first_share=0.6,
)
"""``eth_sendRawTransaction`` (CONTRACT §8): a signed transaction is the same transaction
however often it is sent, so a send that failed after dispatch (it may have landed) is sent
to another provider; if none answers, the failure is still reported as indeterminate. The
first attempt gets 60 % of the budget, leaving time for that retry. Never hedged: a second
copy racing the first is what ``routing.broadcast`` is for."""

FILTER_CREATE = DispatchPolicy(
    name="filter_create",
    max_dispatches=3,
    replay_safe=True,
    writes=False,
    hedge=False,
    first_share=0.6,
)
"""``eth_newFilter`` and kin: a creation that failed after dispatch may be retried on another
provider (an orphan filter on the first expires there by itself); never hedged, which would
make one orphan per request."""

_IDEMPOTENT_WRITES = frozenset({"eth_sendRawTransaction"})
_FILTER_CREATES = frozenset(
    {"eth_newFilter", "eth_newBlockFilter", "eth_newPendingTransactionFilter"}
)


def policy_for(method: str) -> DispatchPolicy:
    """The dispatch policy of ``method``: :data:`READ` when it is replay-safe,
    :data:`IDEMPOTENT_WRITE` for ``eth_sendRawTransaction``, :data:`FILTER_CREATE` for the
    filter creations, else :data:`WRITE`."""
    if method in REPLAY_SAFE_METHODS:
        return READ
    if method in _IDEMPOTENT_WRITES:
        return IDEMPOTENT_WRITE
    if method in _FILTER_CREATES:
        return FILTER_CREATE
    return WRITE


# -- facts: what happened to an attempt ---------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Refused:
    """The attempt never left: its breaker did not admit it, or the channel has no
    transport right now. Nothing is counted against anyone."""

    kind: Literal["refused"] = "refused"
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Answered:
    """The provider answered; ``judgement`` says what the answer means."""

    kind: Literal["answered"] = "answered"
    attempt: int
    judgement: Judgement


@dataclass(frozen=True, slots=True, kw_only=True)
class TransportFailed:
    """No answer: connection refused, reset, unparseable HTTP, pool exhausted...

    ``dispatched`` says whether the bytes may have reached the provider (a non-replay-safe
    request may then have acted); ``provider_fault`` whether it counts against its health.
    """

    kind: Literal["failed"] = "failed"
    attempt: int
    category: Category
    message: str
    dispatched: bool
    provider_fault: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TimedOut:
    """The attempt's timeout passed without a complete answer (``dispatched``: after the
    request was sent, the usual case)."""

    kind: Literal["timed_out"] = "timed_out"
    attempt: int
    dispatched: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancelled:
    """The attempt ended by cancellation. Expected after a :class:`Cancel`; otherwise it
    is read as a failure after dispatch (nobody knows what the provider did)."""

    kind: Literal["cancelled"] = "cancelled"
    attempt: int


Fact = Refused | Answered | TransportFailed | TimedOut | Cancelled

_SHARED = 16  # attempt numbers whose usual values are built once (a request makes at most 10)
_ANSWERED_OK = tuple(Answered(attempt=i, judgement=ACCEPTED) for i in range(_SHARED))


def answered(attempt: int, judgement: Judgement) -> Answered:
    """``Answered(attempt=attempt, judgement=judgement)``; the usual one, a result, is a
    shared value (facts are values: the hot path allocates none for them)."""
    if judgement is ACCEPTED and attempt < _SHARED:
        return _ANSWERED_OK[attempt]
    return Answered(attempt=attempt, judgement=judgement)


# -- decisions: what to do next -------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Dispatch:
    """Send attempt ``attempt`` to candidate ``candidate`` (an index into the list the
    planner was given) with ``timeout_s``; report what happened with a fact."""

    kind: Literal["dispatch"] = "dispatch"
    attempt: int
    candidate: int
    timeout_s: float
    reason: Literal["first", "failover", "hedge"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Wait:
    """Wait for an attempt in flight to finish, or until ``until`` (monotonic seconds:
    a hedge falls due or the deadline passes), then ask again."""

    kind: Literal["wait"] = "wait"
    until: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Cancel:
    """Stop attempt ``attempt``: another answered first, or the deadline passed. It counts
    as neither success nor failure. ``overdue``: it had run longer than the hedge delay
    (or to the deadline), so its elapsed time is a lower bound on its latency."""

    kind: Literal["cancel"] = "cancel"
    attempt: int
    overdue: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """Answer the client with attempt ``attempt``'s response: a result, or an error that
    is the caller's fault (``judgement`` says which). Terminal."""

    kind: Literal["answer"] = "answer"
    attempt: int
    judgement: Judgement


@dataclass(frozen=True, slots=True, kw_only=True)
class Fail:
    """Answer the client with Lasso's JSON-RPC ``error`` object. Terminal. ``provider``:
    the provider whose failure the error reports, if one."""

    kind: Literal["fail"] = "fail"
    error: Mapping[str, Any]
    provider: str | None = None


Decision = Dispatch | Wait | Cancel | Answer | Fail

_ANSWER_OK = tuple(Answer(attempt=i, judgement=ACCEPTED) for i in range(_SHARED))


def answer(attempt: int, judgement: Judgement) -> Answer:
    """``Answer(attempt=attempt, judgement=judgement)``, shared for a result (see
    :func:`answered`)."""
    if judgement is ACCEPTED and attempt < _SHARED:
        return _ANSWER_OK[attempt]
    return Answer(attempt=attempt, judgement=judgement)


# -- client-facing errors (CONTRACT §3, reference §2.6) ---------------------------------------


def no_channels_error(method: str, retry_after_s: float | None) -> dict[str, Any]:
    """No provider could be tried: ``-32000``; with ``data.retry_after_ms`` when circuits
    are open (the soonest one to half-open)."""
    if retry_after_s is not None:
        ms = max(1, int(retry_after_s * 1000))
        return {
            "code": -32000,
            "message": (
                f"No available providers for {method}: circuits open, retry after {ms / 1000:.1f}s"
            ),
            "data": {"retry_after_ms": ms},
        }
    return {"code": -32000, "message": f"No available providers for {method}"}


def indeterminate_error(provider: str, message: str) -> dict[str, Any]:
    """A request that may change state failed after it was sent: it may have acted."""
    return {
        "code": -32000,
        "message": "Upstream dispatch outcome is indeterminate",
        "data": {
            "provider": provider,
            "reason": message,
            "hint": "the request was sent and may have been executed; it is not retried",
        },
    }


def method_not_found_error(tried: list[str]) -> dict[str, Any]:
    """Every provider tried said the method does not exist: the standard ``-32601``."""
    return {"code": -32601, "message": "Method not found", "data": {"providers_tried": tried}}


def exhausted_error(
    last: Judgement | None,
    provider: str | None,
    tried: list[str],
    retry_after_s: float | None,
) -> dict[str, Any]:
    """Every attempt failed: ``-32000 "All providers failed: <last reason>"`` with
    ``data.providers_tried``, ``data.last_error`` (the provider's own code and message, or
    the client code of the transport outcome) and ``data.retry_after_ms`` (a rate-limited
    last answer's hint, else the soonest open circuit)."""
    data: dict[str, Any] = {"providers_tried": tried}
    if last is not None:
        cat = last.category or Category.UNKNOWN_ERROR
        if last.error is not None:
            code = last.error.get("code")
            message = last.error.get("message", "")
        else:
            code = client_error_code(cat)
            message = last.message
        data["last_error"] = {
            "provider": provider,
            "code": code,
            "message": message,
            "category": str(cat),
        }
        if last.retry_after_s is not None and cat is Category.RATE_LIMIT:
            data["retry_after_ms"] = int(last.retry_after_s * 1000)
    if retry_after_s is not None and "retry_after_ms" not in data:
        data["retry_after_ms"] = max(1, int(retry_after_s * 1000))
    reason = data.get("last_error", {}).get("message") or "no provider answered"
    return {"code": -32000, "message": f"All providers failed: {reason}", "data": data}
