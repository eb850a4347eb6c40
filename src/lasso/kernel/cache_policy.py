"""What an answer depends on, when it may be stored, and when a stored one may be served.

The response cache (CONTRACT §7, docs/caching.md) asks three questions, all answered here
without IO:

1. :func:`classify` (per request): what does the answer depend on? Nothing (chain
   constants), one block by number or by hash, a transaction (its block comes from the
   answer), the head (``latest``/``safe``/``finalized`` tags and realtime methods), or it
   is never cached (writes, filters, subscriptions, ``pending``, unknown methods).
2. :func:`ticket` (at request start, against what the node knows then) and :func:`admit`
   (when the answer is back): may this answer be stored, and as what
   (a :class:`Stamp`)? The stamp is taken from what the node knew *before* the call, so
   an answer computed on a chain the node has since seen replaced is labelled with the
   old chain and never passes :func:`valid` again.
3. :func:`valid` (per hit): is a stored stamp still true?

=========  ================================================  ==========================
stamp      stored when                                       served while
=========  ================================================  ==========================
STATIC     chain constants (``eth_chainId``, ``net_version``)  always (until evicted)
FINAL      the block is at or below the finalized height     always (until evicted)
ANCHORED   the block is above it and the node holds its      the node still holds that
           hash (:class:`~lasso.kernel.blockwindow.BlockWindow`)  hash at that height
HEAD       a head answer, with the head at request start     the head is unchanged, no
                                                             reorg seen, TTL not over
=========  ================================================  ==========================

Never stored: errors (the caller checks), ``null`` (a block, transaction or receipt that
may still appear), answers about blocks above the node's head, answers from a provider
known to be below the block asked about, answers whose own block hash contradicts what
the node holds, a pending transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, NamedTuple

from lasso.kernel.blockwindow import BlockWindow
from lasso.kernel.methods import logs_block_range, parse_block_ref

__all__ = [
    "Depends",
    "Kind",
    "Request",
    "Rule",
    "RULES",
    "Stamp",
    "Verify",
    "from_answer",
    "admit",
    "answer_identity",
    "classify",
    "normalize",
    "ticket",
    "valid",
]


class Depends(StrEnum):
    """What an answer depends on."""

    STATIC = "static"
    BLOCK = "block"  # one block by number (and, for ranges, everything below it)
    HASH = "hash"  # one block by hash
    TX = "tx"  # a transaction by hash: its block comes from the answer
    HEAD = "head"  # the head: tags and realtime methods
    NEVER = "never"


class Verify(StrEnum):
    """Where an answer names the block it is about, checked before it is stored."""

    NONE = "none"  # state reads: the answer carries no block identity
    BLOCK = "block"  # a block object: ``number`` and ``hash``
    ITEM = "item"  # a transaction or receipt: ``blockNumber`` and ``blockHash``
    LIST = "list"  # receipts or logs: each element's ``blockNumber`` and ``blockHash``


class Kind(IntEnum):
    """How a stored answer stays true (the table in the module docstring)."""

    STATIC = 0
    FINAL = 1
    ANCHORED = 2
    HEAD = 3
    ANSWER = 4  # a ticket only: the answer decides (never stored)


@dataclass(frozen=True, slots=True)
class Rule:
    """One method's row: ``kind`` is how its params name what it depends on."""

    kind: str  # static | head | numbered | by_hash | tx | logs
    index: int = 0  # the block parameter (numbered)
    verify: Verify = Verify.NONE
    missing_is_latest: bool = False  # numbered: an absent trailing block parameter


_N = Verify.NONE
RULES: dict[str, Rule] = {
    "eth_chainId": Rule("static"),
    "net_version": Rule("static"),
    "eth_blockNumber": Rule("head"),
    "eth_gasPrice": Rule("head"),
    "eth_maxPriorityFeePerGas": Rule("head"),
    "eth_blobBaseFee": Rule("head"),
    "eth_getBlockByNumber": Rule("numbered", 0, Verify.BLOCK),
    "eth_getBlockTransactionCountByNumber": Rule("numbered", 0),
    "eth_getUncleCountByBlockNumber": Rule("numbered", 0),
    "eth_getUncleByBlockNumberAndIndex": Rule("numbered", 0),
    "eth_getTransactionByBlockNumberAndIndex": Rule("numbered", 0, Verify.ITEM),
    "eth_getBlockReceipts": Rule("numbered", 0, Verify.LIST),
    "eth_call": Rule("numbered", 1, _N, True),
    "eth_getBalance": Rule("numbered", 1, _N, True),
    "eth_getCode": Rule("numbered", 1, _N, True),
    "eth_getTransactionCount": Rule("numbered", 1, _N, True),
    "eth_getStorageAt": Rule("numbered", 2, _N, True),
    # Required block parameters (or, for eth_estimateGas, clients that default to pending).
    "eth_getProof": Rule("numbered", 2),
    "eth_estimateGas": Rule("numbered", 1),
    "eth_createAccessList": Rule("numbered", 1),
    "eth_feeHistory": Rule("numbered", 1),
    "debug_traceCall": Rule("numbered", 1),
    "debug_traceBlockByNumber": Rule("numbered", 0),
    "trace_block": Rule("numbered", 0),
    "trace_replayBlockTransactions": Rule("numbered", 0),
    "trace_call": Rule("numbered", 2),
    "trace_callMany": Rule("numbered", 1),
    "eth_getBlockByHash": Rule("by_hash", 0, Verify.BLOCK),
    "eth_getBlockTransactionCountByHash": Rule("by_hash"),
    "eth_getUncleCountByBlockHash": Rule("by_hash"),
    "eth_getUncleByBlockHashAndIndex": Rule("by_hash"),
    "eth_getTransactionByBlockHashAndIndex": Rule("by_hash", 0, Verify.ITEM),
    "debug_traceBlockByHash": Rule("by_hash"),
    "eth_getTransactionByHash": Rule("tx", 0, Verify.ITEM),
    "eth_getTransactionReceipt": Rule("tx", 0, Verify.ITEM),
    "eth_getLogs": Rule("logs", 0, Verify.LIST),
}
"""Every cacheable method. Anything else (writes, filters, subscriptions, txpool, the
transaction tracers, unknown methods) is never cached."""


@dataclass(frozen=True, slots=True)
class Request:
    """What one request's answer depends on (:func:`classify`)."""

    depends: Depends
    verify: Verify = Verify.NONE
    number: int | None = None  # BLOCK: the highest block the answer depends on
    low: int | None = None  # BLOCK (logs): the lowest
    block_hash: str | None = None  # HASH, lowercase
    tag: str | None = None  # HEAD through a block tag (latest, safe, finalized)
    head_value: bool = False  # HEAD: the answer is the head itself (eth_blockNumber)


_NEVER = Request(Depends.NEVER)
_STATIC = Request(Depends.STATIC)
_REALTIME = Request(Depends.HEAD)
_BLOCK_NUMBER = Request(Depends.HEAD, head_value=True)
_HEAD_TAGS = frozenset({"latest", "safe", "finalized"})


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and len(value) == 66 and value[:2] in ("0x", "0X")


def _numbered(ref: int | str, verify: Verify, low: int | None = None) -> Request:
    if isinstance(ref, int):
        return Request(Depends.BLOCK, verify, number=ref, low=low)
    if ref == "earliest":
        return Request(Depends.BLOCK, verify, number=0, low=low)
    if ref in _HEAD_TAGS:
        return Request(Depends.HEAD, verify, tag=ref)
    return _NEVER  # pending


def classify(method: str, params: Any) -> Request:
    """What the answer to ``method(params)`` depends on. Never raises: malformed params
    are :attr:`Depends.NEVER` (the upstream's error is never cached)."""
    rule = RULES.get(method)
    if rule is None:
        return _NEVER
    kind = rule.kind
    if kind == "static":
        return _STATIC
    if kind == "head":
        return _BLOCK_NUMBER if method == "eth_blockNumber" else _REALTIME
    if not isinstance(params, list):
        return _NEVER
    if kind == "numbered":
        index = rule.index
        if index >= len(params):
            if index == len(params) and rule.missing_is_latest:
                return Request(Depends.HEAD, rule.verify, tag="latest")
            return _NEVER
        value = params[index]
        if isinstance(value, dict) and "blockHash" in value:  # EIP-1898
            pinned = value["blockHash"]
            if not _is_hash(pinned):
                return _NEVER
            return Request(Depends.HASH, rule.verify, block_hash=pinned.lower())
        if method == "eth_getBlockReceipts" and _is_hash(value):
            return Request(Depends.HASH, rule.verify, block_hash=value.lower())
        ref = parse_block_ref(value)
        return _NEVER if ref is None else _numbered(ref, rule.verify)
    if not params:
        return _NEVER
    first = params[0]
    if kind == "by_hash":
        if not _is_hash(first):
            return _NEVER
        return Request(Depends.HASH, rule.verify, block_hash=first.lower())
    if kind == "tx":
        return Request(Depends.TX, rule.verify) if _is_hash(first) else _NEVER
    # logs
    if isinstance(first, dict) and first.get("blockHash") is not None:
        pinned = first["blockHash"]
        if not _is_hash(pinned):
            return _NEVER
        return Request(Depends.HASH, rule.verify, block_hash=pinned.lower())
    span = logs_block_range(params)
    if span is None:
        return _NEVER
    lo, hi = span
    if lo == "pending" or hi == "pending":
        return _NEVER
    if isinstance(hi, str) and hi != "earliest" or isinstance(lo, str) and lo != "earliest":
        return Request(Depends.HEAD, rule.verify, tag="latest")  # a range reaching a tag
    low = 0 if lo == "earliest" else lo
    high = 0 if hi == "earliest" else hi
    assert isinstance(low, int) and isinstance(high, int)
    if low > high:
        return _NEVER
    return Request(Depends.BLOCK, rule.verify, number=high, low=low)


def normalize(params: Any) -> Any:
    """``params`` for a cache and coalescing key: ``0x`` strings in lowercase (hex is
    case-insensitive), everything else as given. Serialize with sorted object keys.

    Only changes that cannot change an answer are made: a tag or a block number is kept as
    written, because nodes reject some spellings (``"Latest"``, ``"0x01"``) that others
    would accept, and two requests merged by the key must get the same answer.
    """
    if isinstance(params, str):
        return params.lower() if params[:2] in ("0x", "0X") else params
    if isinstance(params, list):
        return [normalize(v) for v in params]
    if isinstance(params, dict):
        return {k: normalize(v) for k, v in params.items()}
    return params


# -- stamps ------------------------------------------------------------------------------


class Stamp(NamedTuple):
    """How a stored answer stays true (see the module docstring).

    An immutable value like the frozen dataclasses elsewhere, but a named tuple: one is
    made per cacheable request, and a tuple is five times cheaper to build.

    ``number``: the anchor height (ANCHORED), the block (FINAL, when known), the head
    it was answered at (HEAD), or the finalized height when the request started (ANSWER
    tickets; -1 when none was known).
    ``block_hash``: the anchor's hash (ANCHORED). ``epoch``: the window's reorg count
    when it was answered (HEAD). ``expires``: monotonic seconds (HEAD).
    """

    kind: Kind
    number: int = 0
    block_hash: str | None = None
    epoch: int = 0
    expires: float = float("inf")


STATIC_STAMP = Stamp(Kind.STATIC)
FINAL_STAMP = Stamp(Kind.FINAL)


def from_answer(finalized: int | None) -> Stamp:
    """A ticket whose stamp the answer decides (transactions, blocks by hash), with the
    finalized height at request start: only blocks final *before* the call went out make
    the answer final, since a block finalized during the call may have been replaced
    between the answer and its finalization."""
    return Stamp(Kind.ANSWER, number=-1 if finalized is None else finalized)


def ticket(
    req: Request,
    *,
    head: int | None,
    finalized: int | None,
    window: BlockWindow,
    now: float,
    ttl_s: float,
) -> Stamp | None:
    """At request start: what an answer may be stored as, or ``None`` if it may not.

    Args:
        req: the request's :func:`classify`.
        head: the newest head this node knows (``None``: unknown).
        finalized: the finalized height (:class:`~lasso.kernel.blockwindow.Finality`).
        window: the node's block window for the chain.
        now: monotonic seconds.
        ttl_s: the chain's realtime TTL (``0``: head answers are not cached).

    Returns:
        A :class:`Stamp` (of kind :attr:`Kind.ANSWER` when :func:`admit` decides from the
        answer), or ``None``.
    """
    depends = req.depends
    if depends is Depends.STATIC:
        return STATIC_STAMP
    if depends is Depends.HEAD:
        if head is None or ttl_s <= 0:
            return None
        return Stamp(Kind.HEAD, head, None, window.epoch, now + ttl_s)
    if depends is Depends.BLOCK:
        n = req.number
        assert n is not None
        if head is None or n > head:
            return None  # a block that may still appear
        if finalized is not None and n <= finalized:
            return FINAL_STAMP
        anchor = window.hash_at(n)
        return None if anchor is None else Stamp(Kind.ANCHORED, number=n, block_hash=anchor)
    if depends is Depends.HASH:
        assert req.block_hash is not None
        n = window.height_of(req.block_hash)
        if n is not None:
            if finalized is not None and n <= finalized:
                return Stamp(Kind.FINAL, number=n)
            return Stamp(Kind.ANCHORED, number=n, block_hash=req.block_hash)
        return None if req.verify is Verify.NONE else from_answer(finalized)
    if depends is Depends.TX:
        return from_answer(finalized)
    return None


def _quantity(value: object) -> int | None:
    if isinstance(value, str) and value[:2] == "0x" and 2 < len(value) <= 18:
        try:
            return int(value, 16)
        except ValueError:
            return None
    return None


def answer_identity(verify: Verify, result: object) -> tuple[int, str] | None:
    """``(number, hash)`` of the block an answer names (BLOCK and ITEM), or ``None``."""
    if not isinstance(result, dict):
        return None
    if verify is Verify.BLOCK:
        number, block_hash = result.get("number"), result.get("hash")
    else:
        number, block_hash = result.get("blockNumber"), result.get("blockHash")
    n = _quantity(number)
    if n is None or not _is_hash(block_hash):
        return None
    assert isinstance(block_hash, str)
    return n, block_hash.lower()


def _list_agrees(result: object, low: int, high: int, window: BlockWindow) -> bool:
    """Every element names a block in ``low..high`` whose hash the window does not
    contradict (receipts and logs of a fork the node does not follow are refused)."""
    if not isinstance(result, list):
        return False
    for item in result:
        ident = answer_identity(Verify.ITEM, item)
        if ident is None:
            return False
        n, block_hash = ident
        if not low <= n <= high:
            return False
        known = window.hash_at(n)
        if known is not None and known != block_hash:
            return False
    return True


def admit(
    req: Request,
    stamp: Stamp,
    result: object,
    *,
    head: int | None,
    window: BlockWindow,
    provider_has_block: bool,
) -> Stamp | None:
    """When a successful answer is back: the stamp to store it with, or ``None``.

    Args:
        req: the request's :func:`classify`.
        stamp: its :func:`ticket`, taken at request start.
        result: the parsed ``result`` of the answer.
        head: the newest head the node knows *now*.
        window: the node's block window (now).
        provider_has_block: whether the answering provider is not known to be below the
            block the ticket is about (the head, for HEAD tickets).
    """
    if result is None:
        return None
    kind = stamp.kind
    if kind is Kind.ANSWER:
        return _from_answer(req, result, head, stamp.number, window)
    if kind is Kind.STATIC:
        return stamp
    if not provider_has_block:
        return None
    if kind is Kind.HEAD:
        if stamp.epoch != window.epoch:
            return None  # a reorg was seen while the call was out
        if req.head_value or (req.verify is Verify.BLOCK and req.tag == "latest"):
            value = _quantity(result) if req.head_value else _quantity(_get(result, "number"))
            if value is None or value != head:
                return None
            if value == stamp.number:
                return stamp
            return Stamp(Kind.HEAD, number=value, epoch=stamp.epoch, expires=stamp.expires)
        return stamp if head == stamp.number else None
    if kind is Kind.ANCHORED and window.hash_at(stamp.number) != stamp.block_hash:
        return None  # the anchor was replaced while the call was out
    verify = req.verify
    if verify is Verify.NONE:
        return stamp
    if verify is Verify.LIST:
        n = stamp.number if req.number is None else req.number
        low = req.low if req.low is not None else n
        return stamp if _list_agrees(result, low, n, window) else None
    ident = answer_identity(verify, result)
    if ident is None:
        return None
    n, block_hash = ident
    if req.depends is Depends.HASH:
        return stamp if block_hash == req.block_hash else None
    if n != req.number:
        return None
    if kind is Kind.ANCHORED:
        return stamp if block_hash == stamp.block_hash else None
    known = window.hash_at(n)
    return stamp if known is None or known == block_hash else None


def _get(result: object, key: str) -> object:
    return result.get(key) if isinstance(result, dict) else None


def _from_answer(
    req: Request,
    result: object,
    head: int | None,
    finalized: int,
    window: BlockWindow,
) -> Stamp | None:
    """Transactions, receipts and blocks by hash: the answer names its block.
    ``finalized``: the finalized height when the request started (-1: none)."""
    if req.verify is Verify.LIST:
        if not isinstance(result, list) or not result:
            return None  # an empty list names no block
        ident = answer_identity(Verify.ITEM, result[0])
        if ident is None or not _list_agrees(result, ident[0], ident[0], window):
            return None
    else:
        ident = answer_identity(req.verify, result)
        if ident is None:
            return None  # unknown, or a pending transaction (no block yet)
    n, block_hash = ident
    if req.depends is Depends.HASH and block_hash != req.block_hash:
        return None
    if head is None or n > head:
        return None
    known = window.hash_at(n)
    if n <= finalized and (known is None or known == block_hash):
        return Stamp(Kind.FINAL, number=n)
    if known == block_hash:
        return Stamp(Kind.ANCHORED, number=n, block_hash=block_hash)
    return None


def valid(stamp: Stamp, *, head: int | None, window: BlockWindow, now: float) -> bool:
    """Whether a stored answer may be served now (the table in the module docstring)."""
    kind = stamp.kind
    if kind is Kind.STATIC or kind is Kind.FINAL:
        return True
    if kind is Kind.ANCHORED:
        return window.hash_at(stamp.number) == stamp.block_hash
    if kind is Kind.ANSWER:
        return False
    return stamp.number == head and stamp.epoch == window.epoch and now < stamp.expires
