"""Block-consistent reads: what a read needs of a provider, and whether an answer may go out.

CONTRACT §8. Providers a few blocks apart answer the same question differently: the one
behind says ``null`` for a block it has not seen, "header not found" for its state, or an
older block for ``latest``. None of that is the provider's fault, and none of it may reach
the client while another provider has the block. The rules, decided here without IO:

1. :func:`plan_read` looks at a request once and returns a :class:`ReadPlan` (``None`` for
   the many methods no rule touches): the block the answer must come from at least
   (``min_block``, for the router's candidate order), whether only providers *known* to
   have it should be asked (``strict``: ``eth_getLogs``, whose answer from a node behind
   ``toBlock`` can be silently short), and how to judge the answer.
2. :func:`judge_result` judges a successful answer: ``SERVE`` (possibly with a replacement
   result: an ``eth_blockNumber`` clamped to the served head) or ``BEHIND`` (retry on
   another provider; record nothing against this one).
3. :func:`is_behind_error` does the same for error answers that mean "not there yet".
4. :func:`check_answer` is what the request path calls: the provider's judgement (from
   :func:`.judge.judge`) and its parsed answer in, the judgement to act on out: the same,
   :data:`BEHIND` (the planner fails over at no cost to the provider), or an accepted one
   with a ``replacement`` result.

A provider is *known to have* block N when it reported a height of at least N (probe,
newHeads, an answer): :meth:`~.chainstate.ChainState.known_to_have`. A ``null`` block from a
provider known to have it is the truth, and so is one from any provider when nobody is
known to have it yet (a block from the future is ``null`` everywhere).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol, TypeVar

from .classify import Category
from .head import HEAD_TAGS, HeadTracker
from .judge import Judgement
from .methods import block_param_index, block_params, logs_block_range, parse_block_ref

if TYPE_CHECKING:
    from .chainstate import ChainState

__all__ = [
    "BEHIND",
    "NULL_MEANS_MISSING",
    "PLANNED_METHODS",
    "ReadPlan",
    "Verdict",
    "check_answer",
    "is_behind_error",
    "judge_result",
    "keep_known",
    "plan_read",
]

NULL_MEANS_MISSING: frozenset[str] = frozenset(
    {
        "eth_getBlockByNumber",
        "eth_getBlockReceipts",
        "eth_getBlockTransactionCountByNumber",
        "eth_getUncleCountByBlockNumber",
        "eth_getTransactionByBlockNumberAndIndex",
        "eth_getUncleByBlockNumberAndIndex",
    }
)
"""By-number block reads whose ``null`` may mean "this provider has not seen the block"."""

# Block-number reads of state: a "latest" one should come from a provider at the served head.
_LATEST_READS: frozenset[str] = frozenset(
    {
        "eth_call",
        "eth_getBalance",
        "eth_getCode",
        "eth_getTransactionCount",
        "eth_getStorageAt",
        "eth_getProof",
        "eth_estimateGas",
        "eth_createAccessList",
    }
)


# Reads by hash of something in a block: a provider behind the served head may not have it
# yet, so a ``null`` from one is retried on a provider at that head (read-after-seen: a
# client that was told the head is H gets ``null`` only if no block up to H has it).
_HASH_READS: frozenset[str] = frozenset(
    {
        "eth_getBlockByHash",
        "eth_getTransactionByHash",
        "eth_getTransactionReceipt",
        "eth_getTransactionByBlockHashAndIndex",
        "eth_getBlockTransactionCountByHash",
    }
)

PLANNED_METHODS: frozenset[str] = frozenset(
    {"eth_blockNumber", "eth_getLogs"} | NULL_MEANS_MISSING | _LATEST_READS | _HASH_READS
)
"""Methods :func:`plan_read` may return a plan for; for every other one it returns ``None``
(the request path checks this set first: one lookup for the many unplanned requests)."""

BEHIND = Judgement(
    ok=False,
    category=Category.BLOCK_NOT_AVAILABLE,
    message="the providers that answered are behind the requested block",
)
"""The judgement of an answer from a provider behind the block asked about: fail over (the
capability bucket gives the dispatch back); recorded neutral, not against the provider."""


class Verdict(Enum):
    """What to do with an answer."""

    SERVE = "serve"
    BEHIND = "behind"  # the provider lacks the block: retry elsewhere, not its fault


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadPlan:
    """What consistency asks of one read.

    Attributes:
        min_block: the lowest block the answer may come from (the router's ``min_block``).
        strict: ask only providers known to have ``min_block`` when any is (see
            :func:`keep_known`).
        block: the block number the request names, when the answer is judged by it.
        tag: the head tag whose served number the answer must not fall below.
        clamp_head: an ``eth_blockNumber``: clamp the answer to the served head.
        null_is_missing: a ``null`` answer for ``block`` may be a provider behind.
        observe: an answer for ``block`` proves the provider has it (a by-number read;
            not a lookup by hash, where ``block`` is the served head).

    :attr:`checks_answer` says whether an answer needs :func:`check_answer` at all (a
    ``latest`` state read only routes by ``min_block``).
    """

    min_block: int | None = None
    strict: bool = False
    block: int | None = None
    tag: str | None = None
    clamp_head: bool = False
    null_is_missing: bool = False
    observe: bool = True

    @property
    def checks_answer(self) -> bool:
        return self.clamp_head or self.block is not None or self.tag is not None


_CLAMP_HEAD = ReadPlan(clamp_head=True)
_latest = ReadPlan(min_block=-1)  # the plan of a "latest" state read, kept per head value


def _latest_plan(top: int) -> ReadPlan:
    """``ReadPlan(min_block=top)``, built once per head value (every ``latest`` read of a
    block asks the same; plans are values)."""
    global _latest
    plan = _latest
    if plan.min_block != top:
        plan = _latest = ReadPlan(min_block=top)
    return plan


def plan_read(method: str, params: object, head: HeadTracker) -> ReadPlan | None:
    """The consistency rules for one request, or ``None`` when none applies.

    Args:
        method: the JSON-RPC method.
        params: its params (tags in ``eth_getLogs`` should already be resolved to numbers
            by the splitter; a tag left there is judged like ``latest``).
        head: the chain's served head.
    """
    if method == "eth_blockNumber":
        # Clamping makes the answer monotonic whoever gives it, so the route need not
        # prefer providers at the served head (that would cost every request a height check).
        return _CLAMP_HEAD
    if method == "eth_getLogs":
        bounds = logs_block_range(params)
        if bounds is None:
            return None
        hi = bounds[1]
        if type(hi) is int:
            return ReadPlan(min_block=hi, strict=True, block=hi)
        return ReadPlan(min_block=head.head, strict=True)
    if method in NULL_MEANS_MISSING:
        refs = block_params(method, params)
        if not refs:
            return None
        ref = refs[0]
        if type(ref) is int:
            return ReadPlan(block=ref, null_is_missing=True)
        if ref in HEAD_TAGS and method == "eth_getBlockByNumber":
            return ReadPlan(min_block=head.tag(str(ref)), tag=str(ref))
        return None
    if method in _LATEST_READS:
        index = block_param_index(method)
        if index is not None and type(params) is list and head.head is not None:
            value = params[index] if index < len(params) else "latest"
            if value == "latest":  # the usual state read, without parsing
                return _latest_plan(head.head)
        refs = block_params(method, params)
        if len(refs) != 1:
            return None
        ref = refs[0]
        if type(ref) is int:  # state at a block: "header not found" from one behind is retried
            return ReadPlan(block=ref)
        if ref == "latest" and head.head is not None:
            return ReadPlan(min_block=head.head)
        return None
    if method in _HASH_READS and head.head is not None:
        top = head.head
        return ReadPlan(min_block=top, block=top, null_is_missing=True, observe=False)
    return None


class _HasProvider(Protocol):
    @property
    def provider_id(self) -> str: ...


_C = TypeVar("_C", bound=_HasProvider)


def keep_known(candidates: Sequence[_C], block: int, state: ChainState) -> list[_C]:
    """The candidates known to have ``block``, in order.

    When none of them is: all of them if no provider at all is known to have it (a block
    from the future is missing everywhere: they answer it as they do), else none (only
    providers outside the list have it: any of these could answer short).
    """
    known = [c for c in candidates if state.known_to_have(c.provider_id, block)]
    if known:
        return known
    top = state.max_height
    return list(candidates) if top is None or top < block else []


def judge_result(
    plan: ReadPlan,
    result: object,
    provider_id: str,
    state: ChainState,
    head: HeadTracker,
    now: float,
) -> tuple[Verdict, object | None]:
    """Judge a successful answer to a planned read.

    Records what the answer teaches: the provider's height (a block it returned) and the
    served head (a clamped ``eth_blockNumber``, an accepted tag block).

    Returns:
        ``(SERVE, None)`` to pass the answer through, ``(SERVE, replacement)`` to answer
        ``replacement`` as the result instead (a clamped head, as a hex quantity), or
        ``(BEHIND, None)``: the provider lacks the block; retry on another one.
    """
    if plan.clamp_head:
        height = parse_block_ref(result)
        if type(height) is not int:
            return Verdict.SERVE, None
        state.observe_height(provider_id, height, now)
        served = head.serve_head(height)
        return Verdict.SERVE, (None if served == height else hex(served))
    if plan.tag is not None:
        number = _block_number(result)
        if number is None:
            return Verdict.BEHIND, None  # no block for a tag: the provider is not ready
        state.observe_block(provider_id, number, now)
        if head.accept_tag_block(plan.tag, number):
            return Verdict.SERVE, None
        return Verdict.BEHIND, None
    block = plan.block
    if block is None:
        return Verdict.SERVE, None
    if result is None and plan.null_is_missing:
        if state.known_to_have(provider_id, block):
            return Verdict.SERVE, None
        top = state.max_height
        return (Verdict.BEHIND if top is not None and top >= block else Verdict.SERVE), None
    if result is not None and plan.null_is_missing and plan.observe:  # it has the block
        state.observe_block(provider_id, block, now)
    return Verdict.SERVE, None


def check_answer(
    plan: ReadPlan,
    judgement: Judgement,
    doc: object,
    provider_id: str,
    state: ChainState,
    head: HeadTracker,
    now: float,
) -> Judgement:
    """The judgement to act on for one answer to a planned read.

    Args:
        plan: the read's plan (:func:`plan_read`).
        judgement: the provider's answer as :func:`.judge.judge` judged it.
        doc: the answer parsed (its ``result`` is read when the judgement is ok).
        provider_id: who answered.
        state: the chain's heights (learns from the answer).
        head: the chain's served head (moves with a served ``eth_blockNumber`` or tag).
        now: monotonic seconds.

    Returns:
        ``judgement`` itself; :data:`BEHIND` for a ``null``, an older tag block or a
        "header not found" from a provider behind a block another has; or an accepted
        judgement whose ``replacement`` is the served head (a clamped ``eth_blockNumber``).
    """
    if judgement.ok:
        result = doc.get("result") if type(doc) is dict else None
        if plan.clamp_head:  # the hot one (eth_blockNumber): judge_result's first rule, inline
            height = parse_block_ref(result)
            if type(height) is not int:
                return judgement
            state.observe_height(provider_id, height, now)
            served = head.serve_head(height)
            if served == height:
                return judgement
            return Judgement(ok=True, id_ok=judgement.id_ok, replacement=hex(served))
        verdict, replacement = judge_result(plan, result, provider_id, state, head, now)
        if verdict is Verdict.BEHIND:
            return BEHIND
        if replacement is not None:
            return Judgement(ok=True, id_ok=judgement.id_ok, replacement=str(replacement))
        return judgement
    if judgement.error is not None and is_behind_error(plan, judgement.message, provider_id, state):
        return BEHIND
    return judgement


# Errors a node gives for a block or state it has not reached (geth, erigon, reth, anvil,
# Nethermind wordings). Lower-cased search.
_BEHIND_ERROR = re.compile(
    r"header not found|unknown block|block not found|block range extends beyond current"
    r"|beyond current head|block #?\d+ not found|requested block \w+ not found"
    r"|after last accepted block|future block"
)


def is_behind_error(plan: ReadPlan, message: str, provider_id: str, state: ChainState) -> bool:
    """Whether an error answer to a planned read means "this provider is behind".

    True when the message reads as a missing block (``header not found``, ``block range
    extends beyond current head block``…), the read names a block the provider is not known
    to have, and some provider is known to have it: then the caller retries elsewhere
    instead of returning the error. Otherwise the error is the answer.
    """
    block = plan.block if plan.block is not None else plan.min_block
    if block is None or state.known_to_have(provider_id, block):
        return False
    top = state.max_height
    if top is None or top < block:
        return False
    return _BEHIND_ERROR.search(message[:512].lower()) is not None


def _block_number(result: object) -> int | None:
    if isinstance(result, dict):
        number = parse_block_ref(result.get("number"))
        if type(number) is int:
            return number
    return None
